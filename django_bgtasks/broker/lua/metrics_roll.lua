-- metrics_roll: turn a queue's monotonic metrics into windows (a worker's maintenance
-- process calls it about twice a minute; every call may be repeated or run by two hosts
-- at once: it only ever adds what changed since the last one).
-- KEYS[1] = the queue's metrics hash, KEYS[2] = the values it had at the last roll
--       (the base), KEYS[3] = the ring slot of the current 5 minutes (ring of 288: a day),
--       KEYS[4] = the per-minute totals hash (field minute % 1440 -> "minute processed
--       failed").
-- ARGV[1] = the ring position KEYS[3] is for (the caller's clock chose it).
-- Returns: {'ok', fields changed} | {'init', 0} (first roll: counting starts now) |
--          {'slot', position}: Redis' clock is in another slot; call again with that one.
-- A slot holds what changed in its 5 minutes: field -> increase, '@' -> slot number (a
-- slot left from an earlier day is emptied before reuse). Processed: every run's end
-- ('d|' counts) and every end without a run but 'expired' and 'cancelled'; failed: runs
-- retried or dead, and the dead without a run (the daily counters' meaning).
local SLOT_MS, RING, MINUTES, KEEP_MS = 300000, 288, 1440, 25 * 3600 * 1000
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slot, minute = math.floor(now / SLOT_MS), math.floor(now / 60000)
if slot % RING ~= tonumber(ARGV[1]) then return {'slot', slot % RING} end

local current = redis.call('HGETALL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 0 then
  -- No base (the first roll, or Redis lost it): what was counted before is no window's.
  redis.call('HSET', KEYS[2], '@', now)
  for i = 1, #current, 2 do redis.call('HSET', KEYS[2], current[i], current[i + 1]) end
  return {'init', 0}
end
local base = {}
local stored = redis.call('HGETALL', KEYS[2])
for i = 1, #stored, 2 do base[stored[i]] = tonumber(stored[i + 1]) end

if redis.call('HGET', KEYS[3], '@') ~= tostring(slot) then
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[3], '@', slot)
end
local processed, failed, changed = 0, 0, 0
for i = 1, #current, 2 do
  local field, value = current[i], tonumber(current[i + 1])
  local was = base[field] or 0
  if value and value ~= was then
    -- Lower than before: the hash was reset (deleted by hand): all of it is new.
    local delta = value > was and value - was or value
    redis.call('HINCRBY', KEYS[3], field, delta)
    redis.call('HSET', KEYS[2], field, value)
    changed = changed + 1
    local kind = string.sub(field, 1, 2)
    if kind == 'd|' then
      local outcome = string.match(field, '|([^|]+)|%d+$')
      processed = processed + delta
      if outcome == 'retried' or outcome == 'dead' then failed = failed + delta end
    elseif kind == 'f|' then
      local state = string.match(field, '|([^|]+)$')
      if state == 'dead' or state == 'retried' then
        processed, failed = processed + delta, failed + delta
      elseif state == 'succeeded' then
        processed = processed + delta
      end
    end
  end
end
redis.call('PEXPIRE', KEYS[3], KEEP_MS)
if processed > 0 then
  local field = tostring(minute % MINUTES)
  local p, f = processed, failed
  local old = redis.call('HGET', KEYS[4], field)
  if old then
    local m, op, of = string.match(old, '^(%d+) (%d+) (%d+)$')
    if tonumber(m) == minute then p, f = p + tonumber(op), f + tonumber(of) end
  end
  redis.call('HSET', KEYS[4], field, minute .. ' ' .. p .. ' ' .. f)
  redis.call('PEXPIRE', KEYS[4], KEEP_MS)
end
return {'ok', changed}
