-- enqueue: add new tasks, each pending or scheduled (one call for a whole batch).
-- KEYS: the queue's keys (see _common.lua).
-- ARGV: wake_channel, then 8 fields per task: id, msg_json, priority,
--       run_at_ms ('' = none; absolute, producer's clock), delay_ms ('' = none; from
--       Redis' clock), unique_key ('' = none), unique_ttl_ms, max_retries
-- Returns: a flat list, 3 entries per task in order: 'ok', state, due_ms |
--          'exists', id, '' | 'locked', holder_id, ''
-- Safe to apply twice: the same id with the same message is reported 'ok' again.
local channel = ARGV[1]
local now = now_ms()
local replies, pushed = {}, 0
local earliest_scheduled = false

local function reply(a, b, c)
  replies[#replies + 1] = a
  replies[#replies + 1] = b
  replies[#replies + 1] = c
end

for base = 2, #ARGV, 8 do
  local id, msg, priority = ARGV[base], ARGV[base + 1], tonumber(ARGV[base + 2])
  local run_at, delay, lock = ARGV[base + 3], ARGV[base + 4], ARGV[base + 5]
  local lock_ttl, max_retries = tonumber(ARGV[base + 6]), tonumber(ARGV[base + 7])
  local holder = false
  if lock ~= '' then
    local expiry = redis.call('ZSCORE', K_UNIQUE_EXP, lock)
    local current = redis.call('HGET', K_UNIQUE, lock)
    if expiry and tonumber(expiry) > now and current and current ~= id then
      holder = current
    end
  end
  if holder then
    reply('locked', holder, '')
  elseif redis.call('HSETNX', K_MSG, id, msg) == 0 then
    -- Already there: a resent call (same message) succeeded before; anything else is
    -- another task holding this id.
    if redis.call('HGET', K_MSG, id) == msg then
      local info = get_info(id)
      reply('ok', info.state, tostring(info.run_after or ''))
    else
      reply('exists', id, '')
    end
  else
    if lock ~= '' then
      redis.call('HSET', K_UNIQUE, lock, id)
      redis.call('ZADD', K_UNIQUE_EXP, now + lock_ttl, lock)
    end
    local due = now
    if run_at ~= '' then due = tonumber(run_at) elseif delay ~= '' then due = now + tonumber(delay) end
    local state = 'pending'
    if due > now then state = 'scheduled' end
    -- Built by hand: cjson.encode of a fresh record was a measurable share of the call.
    local info = '{"state":"' .. state .. '","attempts":0,"max_retries":' .. max_retries
      .. ',"priority":' .. priority .. ',"enqueued_at":' .. now .. ',"run_after":' .. due
    if lock ~= '' then info = info .. ',"unique_key":' .. cjson.encode(lock) end
    redis.call('HSET', K_INFO, id, info .. '}')
    if state == 'scheduled' then
      redis.call('ZADD', K_SCHEDULED, due, id)
      if not earliest_scheduled or due < earliest_scheduled then earliest_scheduled = due end
    else
      redis.call('ZADD', K_PENDING, pending_score(priority, false), id)
      pushed = pushed + 1
    end
    reply('ok', state, tostring(due))
  end
end

if pushed > 0 then notify(pushed) end
if earliest_scheduled then
  local head = redis.call('ZRANGE', K_SCHEDULED, 0, 0, 'WITHSCORES')
  if tonumber(head[2]) == earliest_scheduled then
    redis.call('PUBLISH', channel, earliest_scheduled)
  end
end
return replies
