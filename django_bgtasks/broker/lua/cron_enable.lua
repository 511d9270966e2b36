-- cron_enable: switch a periodic entry on or off (every host sees it at its next tick).
-- Switching on restarts counting from now, so the ticks missed while off never fire.
-- KEYS: the queue's keys, then KEYS[28] = the queue's cron state hash, KEYS[29] = the
--       entry's history list.
-- ARGV: name, '1' (on) or '0' (off), mark_ms (the newest tick at or before now)
-- Returns: 1 when the entry changed, 0 when it already was so.
local name, on, mark = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3])
local now = now_ms()
local stored, present = cron_state(KEYS[28], name)
-- An entry no scheduler has seen yet is on: switching it on changes nothing.
if not present and on then return 0 end
local state = stored or {last = math.min(mark, now), spec = '', enabled = on, task = ''}
if present and (state.enabled ~= false) == on then return 0 end
state.enabled = on
if on then state.last = math.max(tonumber(state.last), math.min(mark, now)) end
redis.call('HSET', KEYS[28], name, cjson.encode(state))
cron_note(KEYS[29], state.last, now, on and 'enabled' or 'disabled')
return 1
