-- recover: return tasks whose lease expired (their worker died) to the head of pending
-- at once, or to dead when that attempt was their last, or to cancelled when their cancel
-- was requested.
-- KEYS: the queue's keys, then KEYS[28] = the queue's claims hash (claim.lua),
--       KEYS[29] = the queue's sweep marker (STRING: the end of a grace period, in ms).
-- ARGV: limit, dead_max_tasks, dead_max_age_ms, lease_ms (the caller's)
-- Returns: {recovered_ids, killed_ids, next_expiry_ms|false, now_ms, cancelled_ids}
-- A lease expires when its worker stops renewing it, but also when Redis itself could not
-- be reached or stalled (every lease expires at once then, through nobody's fault). The
-- sweepers leave a marker that lives half a lease; a sweep that finds none knows nobody
-- watched for that long, and waits one lease before recovering anything, so that live
-- workers renew first. The price: after a full outage, orphans wait one lease longer.
local K_CLAIMS, K_SWEPT = KEYS[28], KEYS[29]
local limit, dead_max, dead_age = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lease_ms = tonumber(ARGV[4])
local now = now_ms()
local recovered, killed, cancelled = {}, {}, {}
local grace_until = tonumber(redis.call('GET', K_SWEPT) or '') or now + lease_ms
redis.call('SET', K_SWEPT, grace_until, 'PX', math.max(100, math.floor(lease_ms / 2)))
if now < grace_until then return {recovered, killed, grace_until, now, cancelled} end
local ids = redis.call('ZRANGEBYSCORE', K_ACTIVE, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(ids) do
  redis.call('ZREM', K_ACTIVE, id)
  local info, problem = get_info(id)
  -- The worker is presumed gone: its record of a claim it may never have seen goes too.
  if is_string(info.worker) then redis.call('HDEL', K_CLAIMS, info.worker) end
  local err = 'WorkerLost: the lease expired while the task was running (worker '
    .. tostring(info.worker) .. ' was killed or lost its connection)'
  return_lost(id, info, problem, now, err, dead_max, dead_age, recovered, killed, cancelled)
end
notify(#recovered)
local head = redis.call('ZRANGE', K_ACTIVE, 0, 0, 'WITHSCORES')
local next_expiry = false
if head[2] then next_expiry = tonumber(head[2]) end
return {recovered, killed, next_expiry, now, cancelled}
