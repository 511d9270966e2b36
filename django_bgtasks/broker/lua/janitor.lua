-- janitor: trim the dead set (age, then size), and the cancelled and expired sets the
-- same way; drop completed tasks whose result expired and unique locks that expired; at
-- most `limit` of each per call. Also, a page of the queue's limits (wake the waiters of
-- one with room and nothing to wake them: a safety net) and of its fair keys (forget
-- those served), from the caller's cursors.
-- KEYS: the queue's keys.
-- ARGV: dead_max_tasks, dead_max_age_ms, limit, limits_cursor, fair_cursor,
--       cancelled_max_tasks, cancelled_max_age_ms, expired_max_tasks, expired_max_age_ms
--       ('' for a set that is not trimmed)
-- Returns: {dead_removed, completed_removed, locks_removed, more (0/1), limits_cursor,
--           woken, fair_cursor, cancelled_removed, expired_removed}
local dead_max, dead_age, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local dead_removed, dead_more = trim_set(K_DEAD, now, dead_max, dead_age, limit)
-- Cancelled and expired tasks, kept like the dead ones (each with its own limits).
local function trim_ended(zset, max_tasks, max_age)
  max_tasks, max_age = tonumber(max_tasks or ''), tonumber(max_age or '')
  if not max_tasks or not max_age then return 0, false end
  return trim_set(zset, now, max_tasks, max_age, limit)
end
local cancelled_removed, cancelled_more = trim_ended(K_CANCELLED, ARGV[6], ARGV[7])
local expired_removed, expired_more = trim_ended(K_EXPIRED, ARGV[8], ARGV[9])
local done = redis.call('ZRANGEBYSCORE', K_COMPLETED, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(done) do
  redis.call('ZREM', K_COMPLETED, id)
  forget(id)
end
local locks = redis.call('ZRANGEBYSCORE', K_UNIQUE_EXP, '-inf', now, 'LIMIT', 0, limit)
for _, lock in ipairs(locks) do
  redis.call('ZREM', K_UNIQUE_EXP, lock)
  redis.call('HDEL', K_UNIQUE, lock)
end
local more = 0
if dead_more or cancelled_more or expired_more or #done == limit or #locks == limit then
  more = 1
end
local limits_cursor, woken, fair_cursor = '0', 0, '0'
if redis.call('EXISTS', K_LIMITS) == 1 then
  limits_cursor, woken = flow().heal_limits(ARGV[4] or '0', limit, now)
end
if redis.call('EXISTS', K_FAIR) == 1 then fair_cursor = flow().trim_fair(ARGV[5] or '0', limit) end
return {dead_removed, #done, #locks, more, limits_cursor, woken, fair_cursor,
        cancelled_removed, expired_removed}
