-- bulk_claim: a maintenance process takes the next bulk job of the queue to run, under a
-- lease it renews with every batch. Atomic, so with several hosts one runner holds a
-- job at a time; a job whose runner stopped (its lease expired) is taken over, and goes
-- on with what remains (its batches are idempotent: "every dead task" is what is left).
-- KEYS: the queue's keys, then {q}:bulk.
-- ARGV: runner id, lease ms
-- Returns: the JSON of the job this runner now holds (its own running job first, else
--          the oldest queued or abandoned one), or false when there is none.
local K_BULK = KEYS[28]
local runner, lease = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local entries = redis.call('HGETALL', K_BULK)  -- bounded: see bulk_queue.lua
local chosen
for i = 1, #entries, 2 do
  local job = bulk_job(K_BULK, entries[i])
  if job and job.status == 'running' and job.runner == runner then
    chosen = job  -- its runner asks again (after an error): it goes on
    break
  end
  local free = job and (job.status == 'queued' or
                        (job.status == 'running' and (tonumber(job.lease_until) or 0) < now))
  if free and (not chosen or (tonumber(job.requested_at) or 0) <
                             (tonumber(chosen.requested_at) or 0)) then
    chosen = job
  end
end
if not chosen then return false end
if chosen.status == 'running' and chosen.runner ~= runner then
  chosen.takeovers = (tonumber(chosen.takeovers) or 0) + 1
end
chosen.status, chosen.runner, chosen.lease_until = 'running', runner, now + lease
chosen.started_at = chosen.started_at or now
chosen.updated_at = now
local text = cjson.encode(chosen)
redis.call('HSET', K_BULK, chosen.id, text)
return text
