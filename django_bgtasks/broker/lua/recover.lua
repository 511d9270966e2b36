-- recover: return tasks whose lease expired (their worker died) to the head of pending
-- at once, or to dead when that attempt was their last.
-- KEYS: the queue's keys.
-- ARGV: limit, dead_max_tasks, dead_max_age_ms
-- Returns: {recovered_ids, killed_ids, next_expiry_ms|false, now_ms}
local limit, dead_max, dead_age = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local recovered, killed = {}, {}
local ids = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', K_ACTIVE, id)
  local info, problem = get_info(id)
  local err = 'WorkerLost: the lease expired while the task was running (worker '
    .. tostring(info.worker) .. ' was killed or lost its connection)'
  return_lost(id, info, problem, now, err, dead_max, dead_age, recovered, killed)
end
notify(#recovered)
local head = redis.call('ZRANGE', K_ACTIVE, 0, 0, 'WITHSCORES')
local next_expiry = false
if head[2] then next_expiry = tonumber(head[2]) end
return {recovered, killed, next_expiry, now}
