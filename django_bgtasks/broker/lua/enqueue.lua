-- enqueue: add new tasks, each pending or scheduled (one call for a whole batch).
-- KEYS: the queue's keys (see _common.lua).
-- ARGV: wake_channel, then 13 fields per task: id, msg_json, priority,
--       run_at_ms ('' = none; absolute, producer's clock), delay_ms ('' = none; from
--       Redis' clock), unique_key ('' = none), unique_ttl_ms, max_retries,
--       limits (JSON, '' = none: see is_limits in _common.lua), fair key ('' = none),
--       expires ('' = never; ms from Redis' clock, or '@' and an absolute time in ms),
--       workflow barriers (JSON {{workflow id, member index}, ...}, '' = none),
--       blocked ('1' = held until its workflow releases it, '' = no)
-- Returns: a flat list, 4 entries per task in order: 'ok', state, due_ms, enqueued_ms
--          (Redis' clock, as stored; a resent call's first write) |
--          'exists', id, '', '' | 'locked', holder_id, '', ''
-- Safe to apply twice: the same id with the same message is reported 'ok' again.
-- KEYS[28] = the queue's "listed" marker: when it is missing (never listed, or Redis lost
-- its data), the reply starts with 'unlisted' and the caller lists the queue (the queue
-- set is in no queue's slot, so a script cannot write it) and then sets the marker.
local channel = ARGV[1]
local now = now_ms()
local replies, pushed = {}, 0
METRICS = {}  -- one write per task name and call (flush_metrics)
local earliest_scheduled = false

local function reply(a, b, c, d)
  replies[#replies + 1] = a
  replies[#replies + 1] = b
  replies[#replies + 1] = c
  replies[#replies + 1] = d
end

for base = 2, #ARGV, 13 do
  local id, msg, priority = ARGV[base], ARGV[base + 1], tonumber(ARGV[base + 2])
  local run_at, delay, lock = ARGV[base + 3], ARGV[base + 4], ARGV[base + 5]
  local lock_ttl, max_retries = tonumber(ARGV[base + 6]), tonumber(ARGV[base + 7])
  local due = now
  if run_at ~= '' then due = tonumber(run_at) elseif delay ~= '' then due = now + tonumber(delay) end
  local expires, expires_at = ARGV[base + 10], nil
  if expires ~= '' then
    if string.byte(expires) == 64 then  -- '@': absolute
      expires_at = tonumber(string.sub(expires, 2))
    else
      expires_at = now + tonumber(expires)
    end
  end
  local status, value, added_due, added, enqueued_at = add_task(
    id, msg, priority, due, lock, lock_ttl, max_retries, now, ARGV[base + 8], ARGV[base + 9],
    expires_at, ARGV[base + 11], ARGV[base + 12] == '1')
  if not added or value == 'blocked' then  -- nothing to wake
  elseif value == 'pending' then
    pushed = pushed + 1
  elseif (not earliest_scheduled or due < earliest_scheduled) then
    earliest_scheduled = due
  end
  reply(status, value, added_due and tostring(added_due) or '',
        enqueued_at and tostring(enqueued_at) or '')
end

if pushed > 0 then notify(pushed) end
if earliest_scheduled then
  local head = redis.call('ZRANGE', K_SCHEDULED, 0, 0, 'WITHSCORES')
  if tonumber(head[2]) == earliest_scheduled then
    redis.call('PUBLISH', channel, earliest_scheduled)
  end
end
flush_metrics()
if redis.call('EXISTS', KEYS[28]) == 0 then table.insert(replies, 1, 'unlisted') end
return replies
