-- bulk_step: one batch of a bulk job: the tasks at the front of the job's state go
-- through the same transition as requeue.lua / delete.lua / cancel.lua, and the job's
-- progress and lease are written in the same call, so its count is exactly what was
-- moved, whoever runs the next batch.
-- A job acts on at most as many tasks as the state held when it was queued (its total),
-- from the front of the set: a requeued task that fails again, or tasks that keep coming,
-- cannot keep it running forever.
-- KEYS: the queue's keys, then {q}:bulk.
-- ARGV: job id, runner id, lease ms, batch size
-- Returns: the job's JSON after this batch (status 'running', or 'done' when nothing is
--          left to do), or false when this runner no longer holds the job.
local K_BULK = KEYS[28]
local id, runner, lease, batch = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local job = bulk_job(K_BULK, id)
if not job or job.status ~= 'running' or job.runner ~= runner then return false end
local set = BULK_SETS[job.state]
local limit = math.min(batch, job.total - job.done)
local ids = {}
local now = now_ms()
-- Running tasks asked to stop stay in their set: a cursor walks it instead (ZSCAN: every
-- task there all along is seen), and only a first ask counts.
local walk = job.action == 'cancel' and job.state == 'active'
if limit > 0 and walk then
  local cursor = job.cursor
  if type(cursor) ~= 'string' or not string.match(cursor, '^%d+$') then cursor = '0' end
  local page = redis.call('ZSCAN', set, cursor, 'COUNT', limit)
  job.cursor = page[1]
  for i = 1, #page[2], 2 do ids[#ids + 1] = page[2][i] end
elseif limit > 0 then
  ids = redis.call('ZRANGE', set, 0, limit - 1)
end
local moved = 0
if #ids > 0 then
  if job.action == 'requeue' then
    moved = #requeue_ids(ids)
    notify(moved)
  elseif job.action == 'cancel' then
    local cancelled, _, _, _, asked = cancel_ids(ids, is_string(job.requested_by)
                                                 and job.requested_by or '', now)
    moved = #cancelled + asked
  else
    moved = #(delete_ids(ids))
  end
end
job.done = job.done + moved
job.updated_at = now
if walk then
  if limit <= 0 or job.cursor == '0' or job.done >= job.total then
    job.status, job.finished_at, job.lease_until, job.cursor = 'done', now, nil, nil
  else
    job.lease_until = now + lease
  end
elseif moved == 0 or job.done >= job.total or redis.call('ZCARD', set) == 0 then
  if #ids > 0 and moved == 0 then
    -- Only outside damage makes this (an id both in the set and running): stop here
    -- rather than read the same ids again and again.
    job.note = 'stopped at ' .. #ids .. ' tasks that could not be moved (running)'
  end
  job.status, job.finished_at, job.lease_until = 'done', now, nil
else
  job.lease_until = now + lease
end
local text = cjson.encode(job)
redis.call('HSET', K_BULK, id, text)
return text
