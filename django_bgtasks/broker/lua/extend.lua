-- extend: renew the leases of a worker's running tasks (its heartbeat).
-- KEYS: the queue's keys.
-- ARGV: lease_ms, then pairs id, attempt
-- Returns: the ids that are no longer this worker's (lease lost and recovered).
local lease_ms = tonumber(ARGV[1])
local now = now_ms()
local lost = {}
for i = 2, #ARGV, 2 do
  local id, attempt = ARGV[i], tonumber(ARGV[i + 1])
  local info, problem = get_info(id)
  if not problem and info.state == 'active' and info.attempts == attempt
      and redis.call('ZSCORE', K_ACTIVE, id) then
    redis.call('ZADD', K_ACTIVE, 'XX', now + lease_ms, id)
  else
    table.insert(lost, id)
  end
end
return lost
