-- release: the supervisor saw a worker process die; return the tasks it had claimed now,
-- rather than when their leases expire (recover.lua's job, which stays the safety net).
-- KEYS: the queue's keys, then KEYS[28] = the queue's claims hash (claim.lua).
-- ARGV: worker_id (the dead process's), error, dead_max_tasks, dead_max_age_ms
-- Returns: {returned_ids, killed_ids, cancelled_ids} (cancelled: their cancel was requested)
-- Scans the active set (as large as the tasks running right now) for that worker's tasks.
local worker, err = ARGV[1], ARGV[2]
local dead_max, dead_age = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local returned, killed, cancelled = {}, {}, {}
redis.call('HDEL', KEYS[28], worker)
for _, id in ipairs(redis.call('ZRANGE', K_ACTIVE, 0, -1)) do
  local info, problem = get_info(id)
  -- A record too damaged to name its worker is left to recover.lua (its lease expires).
  if info.worker == worker then
    redis.call('ZREM', K_ACTIVE, id)
    return_lost(id, info, problem, now, err, dead_max, dead_age, returned, killed, cancelled)
  end
end
notify(#returned)
return {returned, killed, cancelled}
