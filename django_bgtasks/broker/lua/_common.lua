-- Helpers prepended to every script (broker/scripts.py joins them).
-- KEYS[1..15] are always the queue's keys, in keys.QUEUE_KEY_NAMES order; every key a
-- script touches is declared, so each script runs in the queue's one Cluster slot.
local K_PENDING, K_ACTIVE, K_SCHEDULED, K_RETRY = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_DEAD, K_COMPLETED, K_MSG, K_INFO = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_ERRORS, K_RESULT, K_UNIQUE, K_UNIQUE_EXP = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local K_NOTIFY, K_SEQ, K_PAUSED = KEYS[13], KEYS[14], KEYS[15]

-- Wake-up tokens are hints, not work: a bounded list is enough to wake every idle worker.
local NOTIFY_MAX = 64
-- Failed attempts kept per task for the admin's history.
local ERRORS_KEEP = 10

-- Decisions use Redis' clock, never a worker's, so hosts with skewed clocks agree.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Higher priority first (-100..100), FIFO within a priority; a task put back at the
-- head (graceful shutdown, lease recovery) sorts before every waiting task of its priority.
local function pending_score(priority, at_head)
  local seq = redis.call('INCR', K_SEQ)
  local base = (100 - (tonumber(priority) or 0)) * 2e13 + 1e13
  if at_head then return base - seq end
  return base + seq
end

local function notify(n)
  -- A full list already wakes every idle worker: skip the write (the common case under
  -- load, where it saves two commands per call).
  if n <= 0 then return end
  local room = NOTIFY_MAX - redis.call('LLEN', K_NOTIFY)
  if n > room then n = room end
  if n <= 0 then return end
  local tokens = {}
  for i = 1, n do tokens[i] = '1' end
  redis.call('RPUSH', K_NOTIFY, unpack(tokens))
end

-- A record that is missing or not JSON must not stop the script: the worker turns the
-- task into a readable error instead.
local function get_info(id)
  local raw = redis.call('HGET', K_INFO, id)
  if raw then
    local ok, info = pcall(cjson.decode, raw)
    if ok and type(info) == 'table' then return info end
  end
  return nil
end

local function blank_info()
  return {state = 'pending', attempts = 0, max_retries = 0, priority = 0}
end

local function put_info(id, info)
  redis.call('HSET', K_INFO, id, cjson.encode(info))
end

local function is_set(v)
  return v ~= nil and v ~= cjson.null and v ~= ''
end

local function append_error(id, entry)
  local list = {}
  local raw = redis.call('HGET', K_ERRORS, id)
  if raw then
    local ok, decoded = pcall(cjson.decode, raw)
    if ok and type(decoded) == 'table' then list = decoded end
  end
  table.insert(list, entry)
  while #list > ERRORS_KEEP do table.remove(list, 1) end
  redis.call('HSET', K_ERRORS, id, cjson.encode(list))
end

local function release_unique(id, info)
  local lock = info.unique_key
  if is_set(lock) and redis.call('HGET', K_UNIQUE, lock) == id then
    redis.call('HDEL', K_UNIQUE, lock)
    redis.call('ZREM', K_UNIQUE_EXP, lock)
  end
end

local function forget(id)
  redis.call('HDEL', K_MSG, id)
  redis.call('HDEL', K_INFO, id)
  redis.call('HDEL', K_ERRORS, id)
  redis.call('HDEL', K_RESULT, id)
end

-- Drop dead tasks older than max_age_ms, then the oldest beyond max_tasks, at most
-- `limit` in one call. Returns how many were removed and whether more remain.
local function trim_dead(now, max_tasks, max_age_ms, limit)
  local removed = 0
  local old = redis.call('ZRANGEBYSCORE', K_DEAD, '-inf', '(' .. (now - max_age_ms),
                         'LIMIT', 0, limit)
  for _, id in ipairs(old) do
    redis.call('ZREM', K_DEAD, id)
    forget(id)
    removed = removed + 1
  end
  local excess = redis.call('ZCARD', K_DEAD) - max_tasks
  local room = limit - removed
  local more = excess > room
  if excess > room then excess = room end
  if excess > 0 then
    local ids = redis.call('ZRANGE', K_DEAD, 0, excess - 1)
    for _, id in ipairs(ids) do
      redis.call('ZREM', K_DEAD, id)
      forget(id)
      removed = removed + 1
    end
  end
  return removed, more or #old == limit
end

local function error_entry(info, now, err, tb)
  return {attempt = info.attempts, at = now, error = err, traceback = tb,
          worker = info.worker}
end

-- Move a task (already out of its previous set) to the dead set, trimmed to the limits.
local function kill(id, info, now, err, tb, dead_max_tasks, dead_max_age_ms)
  info.state = 'dead'
  info.finished_at = now
  info.last_error = err
  put_info(id, info)
  append_error(id, error_entry(info, now, err, tb))
  release_unique(id, info)
  -- Deaths in the same millisecond must still sort by age for the size trim, so the
  -- score carries a sub-millisecond sequence (the integer part stays "died at", in ms).
  local seq = redis.call('INCR', K_SEQ) % 1000
  redis.call('ZADD', K_DEAD, now + seq / 1000, id)
  trim_dead(now, dead_max_tasks, dead_max_age_ms, 100)
end

-- Tell pollers (every host) when `id` became the earliest entry of `zset`.
local function wake_if_earliest(zset, id, due, channel)
  local head = redis.call('ZRANGE', zset, 0, 0)
  if head[1] == id then redis.call('PUBLISH', channel, due) end
end

