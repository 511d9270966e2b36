-- cron_fire: fire a periodic entry's due ticks, exactly once each, whichever host calls.
-- There is no leader: every scheduler proposes ticks; this script admits a tick only if
-- it is due on Redis' clock and newer than the entry's never-expiring "last tick" mark,
-- advancing the mark and enqueuing the tick's task in the same atomic call.
-- KEYS: the queue's keys, then KEYS[28] = the queue's cron state hash (name -> JSON
--       {last, spec, enabled, task}), KEYS[29] = this entry's history list.
-- ARGV: name, spec_id (changes when the schedule or its options change), mark_ms (the
--       newest tick at or before now: where a new or changed entry starts counting),
--       policy ('latest' | 'all' | 'skip'), max_lateness_ms ('' = none), overlap
--       ('allow' | 'skip'), priority, max_retries, omitted (how many older due ticks
--       the host left out, e.g. '0', '50' or '10000+'), the task's limits JSON and fair
--       key ('' = none: see add_task), then 3 fields per proposed tick, in ascending
--       order: tick_ms, task id, message JSON.
-- Returns: {outcome, fired_ids, last_ms} where outcome is 'fired', 'nothing due',
--          'disabled', 'started' (a new or changed entry: mark set, nothing fired),
--          'skipped' (missed ticks under policy skip, too late, or overlapping).
local name, spec, mark = ARGV[1], ARGV[2], tonumber(ARGV[3])
local policy, max_late, overlap = ARGV[4], tonumber(ARGV[5]), ARGV[6]
local priority, max_retries = tonumber(ARGV[7]), tonumber(ARGV[8])
local omitted_text = ARGV[9]
local limits, fair = ARGV[10], ARGV[11]
local omitted = tonumber(string.match(omitted_text, '^%d+')) or 0
local K_CRON, K_HISTORY = KEYS[28], KEYS[29]
local now = now_ms()

local function remember(state)
  redis.call('HSET', K_CRON, name, cjson.encode(state))
end

local function note(tick, outcome, id)
  cron_note(K_HISTORY, tick, now, outcome, id)
end

local state = cron_state(K_CRON, name)

-- A new entry, or one whose schedule changed, starts from now: no backlog fires at once.
if not state or state.spec ~= spec then
  local enabled = true
  if state and state.enabled == false then enabled = false end
  state = {last = math.min(mark, now), spec = spec, enabled = enabled, task = ''}
  remember(state)
  note(state.last, 'started')
  return {'started', {}, state.last}
end
if state.enabled == false then return {'disabled', {}, state.last} end

-- The proposed ticks that are due and newer than the mark (stale or early ones are
-- dropped: a host with a slow clock, or one paused mid-call, cannot fire twice).
local due = {}
for base = 12, #ARGV, 3 do
  local tick = tonumber(ARGV[base])
  if tick and tick > state.last and tick <= now then
    due[#due + 1] = {tick = tick, id = ARGV[base + 1], msg = ARGV[base + 2]}
  end
end
if #due == 0 then return {'nothing due', {}, state.last} end
-- The host's count of older ticks holds only if it knew the mark: every offered tick due.
if #due < (#ARGV - 11) / 3 then omitted, omitted_text = 0, '0' end
local more = ''
if string.sub(omitted_text, -1) == '+' then more = '+' end

local newest = due[#due].tick
local chosen = {}
if policy == 'all' then
  chosen = due
elseif policy == 'skip' then
  -- Only a tick right after the mark (nothing missed in between) fires.
  if #due == 1 and omitted == 0 then chosen = due end
else
  chosen = {due[#due]}
end

local fired = {}
for _, candidate in ipairs(chosen) do
  local busy = state.task ~= '' and (redis.call('ZSCORE', K_PENDING, state.task)
    or redis.call('ZSCORE', K_ACTIVE, state.task)
    or redis.call('ZSCORE', K_WAITING, state.task))
  if max_late and now - candidate.tick > max_late then
    note(candidate.tick, 'too late')
  elseif overlap == 'skip' and busy then
    note(candidate.tick, 'overlap', state.task)
  else
    local status = add_task(candidate.id, candidate.msg, priority, now, '', 0, max_retries,
                            now, limits, fair)
    if status == 'ok' then
      fired[#fired + 1] = candidate.id
      state.task = candidate.id
      note(candidate.tick, 'fired', candidate.id)
    else
      note(candidate.tick, status, candidate.id)
    end
  end
end
local missed = #due - #chosen + omitted
if missed > 0 then note(newest, 'missed ' .. missed .. more) end
state.last = newest
remember(state)
notify(#fired)
if #fired > 0 then return {'fired', fired, newest} end
return {'skipped', {}, newest}
