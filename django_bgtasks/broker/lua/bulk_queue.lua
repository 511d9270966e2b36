-- bulk_queue: queue a bulk job, "run all" (requeue), "delete all" or "cancel all" of one
-- state of the queue. A worker's maintenance process runs it later (bulk_claim, bulk_step): an HTTP
-- request only writes this record, whatever the state holds.
-- KEYS: the queue's keys, then {q}:bulk.
-- ARGV: job id, state, action ('requeue' | 'delete' | 'cancel'), requested by, finished jobs to keep
-- Returns: {'ok', job JSON}: queued (or already queued by this very request, resent);
--          {'exists', job JSON}: the same action on the same state is queued or running;
--          {'empty', ''}: the state holds no task, nothing was queued.
local K_BULK = KEYS[28]
local id, state, action, by, keep = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if not BULK_ACTIONS[action] or not BULK_ACTIONS[action][state] then
  return redis.error_reply('ERR bulk ' .. tostring(action) .. ' of ' .. tostring(state) ..
                           ' tasks is not possible')
end
local mine = redis.call('HGET', K_BULK, id)
if mine then return {'ok', mine} end

-- The hash is small (at most `keep` finished jobs plus one active job per state and
-- action, 8 in all): reading it whole is bounded.
local entries = redis.call('HGETALL', K_BULK)
local finished = {}
for i = 1, #entries, 2 do
  local job = bulk_job(K_BULK, entries[i])
  if job and (job.status == 'queued' or job.status == 'running') then
    if job.state == state and job.action == action then return {'exists', entries[i + 1]} end
  else
    -- Finished, or damaged (outside writes): the oldest of these go first.
    local at = job and (tonumber(job.finished_at) or tonumber(job.requested_at)) or 0
    table.insert(finished, {entries[i], at})
  end
end

local total = redis.call('ZCARD', BULK_SETS[state])
if total == 0 then return {'empty', ''} end
local now = now_ms()
local text = cjson.encode({id = id, state = state, action = action, requested_by = by,
                           requested_at = now, status = 'queued', done = 0, total = total,
                           takeovers = 0})
redis.call('HSET', K_BULK, id, text)
if #finished > keep then
  table.sort(finished, function(a, b) return a[2] > b[2] end)
  for i = keep + 1, #finished do redis.call('HDEL', K_BULK, finished[i][1]) end
end
return {'ok', text}
