-- enqueue: add one new task, pending or scheduled.
-- KEYS: the queue's keys (see _common.lua).
-- ARGV: id, msg_json, priority, run_at_ms ('' = none; absolute, client clock),
--       delay_ms ('' = none; relative to Redis' clock), unique_key ('' = none),
--       unique_ttl_ms, max_retries, wake_channel
-- Returns: {'ok', state, due_ms} | {'exists', id} | {'locked', holder_id}
-- Safe to apply twice: the same id with the same message is reported 'ok' again.
local id, msg, priority = ARGV[1], ARGV[2], tonumber(ARGV[3])
local run_at, delay, lock = ARGV[4], ARGV[5], ARGV[6]
local lock_ttl, max_retries, channel = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]

local existing = redis.call('HGET', K_MSG, id)
if existing then
  if existing == msg then
    local info = get_info(id) or blank_info()
    return {'ok', info.state, tostring(info.run_after or '')}
  end
  return {'exists', id}
end

local now = now_ms()
if lock ~= '' then
  local expiry = redis.call('ZSCORE', K_UNIQUE_EXP, lock)
  local holder = redis.call('HGET', K_UNIQUE, lock)
  if expiry and tonumber(expiry) > now and holder and holder ~= id then
    return {'locked', holder}
  end
  redis.call('HSET', K_UNIQUE, lock, id)
  redis.call('ZADD', K_UNIQUE_EXP, now + lock_ttl, lock)
end

local due = now
if run_at ~= '' then due = tonumber(run_at) elseif delay ~= '' then due = now + tonumber(delay) end

local info = {attempts = 0, max_retries = max_retries, priority = priority,
              enqueued_at = now, run_after = due}
if lock ~= '' then info.unique_key = lock end
redis.call('HSET', K_MSG, id, msg)
if due > now then
  info.state = 'scheduled'
  put_info(id, info)
  redis.call('ZADD', K_SCHEDULED, due, id)
  wake_if_earliest(K_SCHEDULED, id, due, channel)
else
  info.state = 'pending'
  put_info(id, info)
  redis.call('ZADD', K_PENDING, pending_score(priority, false), id)
  notify(1)
end
return {'ok', info.state, tostring(due)}
