-- extend: renew the leases of a worker's running tasks (its heartbeat).
-- KEYS: the queue's keys.
-- ARGV: lease_ms, then pairs id, attempt
-- Returns: the ids that are no longer this worker's (recovered, and started again since).
-- A lease that expired and was recovered while nobody started the task again is taken
-- back (regain_lost): the renewal shows its worker is alive and still running it.
local lease_ms = tonumber(ARGV[1])
local now = now_ms()
local lost = {}
for i = 2, #ARGV, 2 do
  local id, attempt = ARGV[i], tonumber(ARGV[i + 1])
  local info, problem = get_info(id)
  if problem or info.attempts ~= attempt then
    table.insert(lost, id)
  elseif info.state == 'active' and redis.call('ZSCORE', K_ACTIVE, id) then
    redis.call('ZADD', K_ACTIVE, 'XX', now + lease_ms, id)
  elseif regain_lost(id, info, attempt) then
    put_info(id, info)
    redis.call('ZADD', K_ACTIVE, now + lease_ms, id)
  else
    table.insert(lost, id)
  end
end
return lost
