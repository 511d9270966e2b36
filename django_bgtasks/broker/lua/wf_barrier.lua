-- wf_barrier: a workflow's barrier, in the workflow's own slot (KEYS[1], a HASH); it runs
-- without the queue prelude. Its members live in queues (other slots): their ends reach it
-- through their queues' outboxes (announce_final), carried by a forwarder that may die at
-- any point and be replaced, so every report must be safe to apply twice.
--   * Each member is counted once: its final state is d:<index>; a second report of the
--     same end (its forwarder died before taking it out of the outbox, or the member ran
--     twice: at-least-once) returns the actions its first report returned (a:<index>),
--     which are themselves safe to apply twice (wf_release, cancel). Only one change of a
--     counted end is taken: a failed member (dead, requeued by hand) that later succeeds.
--   * What follows a step is decided by the report that completes it, once.
-- Fields: meta (JSON: n members, steps {{first, count, group(0/1)}, ...} in order, fin =
-- the on_complete member or -1, ids = explicit member ids (a dependency gate) or absent,
-- noinput = true when no step gets the previous one's results), q:<step> (the members'
-- queue: one name, or a JSON list per member), state (running, succeeded, failed,
-- cancelled), reason, created, finished (ms), d:<i> final state, e:<i> why it failed,
-- r:<i> result JSON (kept while a later step needs it), w:<i> = 1 when the workflow
-- cancelled it, a:<i> actions of its report, c:<state> counts, n:<step> members ended,
-- f:<step> of them failed, fails (main members failed), nfm (main members ended),
-- nf (all members ended), fired (on_complete released).
-- ARGV[1] = op:
--   'create', meta JSON, then field/value pairs (q:<step>) -> 1 (created) | 0 (exists)
--   'report', workflow id, keep_ms (kept this long once every member ended), then 4 per
--     report: index, state, result JSON ('' = none), error -> actions
--   'cancel', workflow id, reason -> actions (cancel every member not ended; a dependency
--     gate's dependencies are not its members to cancel)
-- Actions: a list of {op, queue, text, ids...}: op 'release' (text: the input to splice
-- in, '' = none) or 'cancel' (text: who cancels, "workflow <id>: <reason>").
local H = KEYS[1]
local op = ARGV[1]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

if op == 'create' then
  if redis.call('HSETNX', H, 'meta', ARGV[2]) == 0 then return 0 end
  redis.call('HSET', H, 'state', 'running', 'created', now_ms(), 'nf', 0, 'nfm', 0,
             'fails', 0)
  -- a long chain has a field per step: written in slices (unpack has a bounded stack)
  for start = 3, #ARGV, 1000 do
    redis.call('HSET', H, unpack(ARGV, start, math.min(start + 999, #ARGV)))
  end
  return 1
end

local raw = redis.call('HGET', H, 'meta')
if not raw then return {} end  -- gone (kept time over, deleted): nothing to decide
local meta = cjson.decode(raw)
local wf_id = ARGV[2]
local steps = meta.steps
local last_main = #steps - 1  -- 0-based

local function member_id(j)
  if type(meta.ids) == 'table' then return meta.ids[j + 1] end
  return wf_id .. '.' .. j
end

local function step_of(j)
  if j == meta.fin then return 'fin' end
  for k = 0, last_main do
    local s = steps[k + 1]
    if j >= s[1] and j < s[1] + s[2] then return k end
  end
  return nil
end

local function span(k)
  if k == 'fin' then return meta.fin, 1 end
  return steps[k + 1][1], steps[k + 1][2]
end

-- {queue = {ids...}} for the members j of step k for which keep(j) is true.
local function by_queue(k, keep)
  local first, count = span(k)
  local raw_q = redis.call('HGET', H, 'q:' .. k)
  local q = raw_q and cjson.decode(raw_q) or 'default'
  local out = {}
  for j = first, first + count - 1 do
    if keep(j) then
      local name = q
      if type(q) == 'table' then name = q[j - first + 1] end
      out[name] = out[name] or {}
      table.insert(out[name], member_id(j))
    end
  end
  return out
end

local actions = {}
local function act(kind, groups, text)
  for queue, ids in pairs(groups) do
    local a = {kind, queue, text}
    for _, id in ipairs(ids) do a[#a + 1] = id end
    actions[#actions + 1] = a
  end
end

local function always() return true end

-- The input of step k: the previous step's result (a call), or the list of its results
-- (a group), as JSON text joined from the stored texts (never re-encoded).
-- Fields `prefix`..j for j = first..first+count-1, read in slices (unpack's stack is
-- bounded: a 10,000-member step is read in 10 calls).
local function read_span(prefix, first, count)
  local values = {}
  for start = first, first + count - 1, 1000 do
    local fields = {}
    for j = start, math.min(start + 999, first + count - 1) do
      fields[#fields + 1] = prefix .. j
    end
    local got = redis.call('HMGET', H, unpack(fields))
    for i = 1, #fields do values[#values + 1] = got[i] end
  end
  return values
end

local function input_of(k)
  if meta.noinput or k == 0 then return '' end
  local first, count = span(k - 1)
  local results = read_span('r:', first, count)
  for i = 1, #results do
    if not results[i] then results[i] = 'null' end
  end
  local is_group = steps[k][3]
  if (is_group == false or is_group == 0) and count == 1 then return results[1] end
  return '[' .. table.concat(results, ',') .. ']'
end

-- on_complete's input: {"succeeded": [ids], "failed": [{"id", "state", "error"}]}.
local function summary()
  local ok, bad = {}, {}
  for k = 0, last_main do
    local first, count = span(k)
    local states = read_span('d:', first, count)
    local errors = read_span('e:', first, count)
    for i = 1, count do
      local j = first + i - 1
      if states[i] == 'completed' then
        ok[#ok + 1] = member_id(j)
      else
        bad[#bad + 1] = {id = member_id(j), state = states[i] or 'unknown',
                         error = errors[i] or ''}
      end
    end
  end
  local ok_json = #ok > 0 and cjson.encode(ok) or '[]'
  local bad_json = #bad > 0 and cjson.encode(bad) or '[]'
  return '{"succeeded":' .. ok_json .. ',"failed":' .. bad_json .. '}'
end

-- The stored description of one report's actions, expanded into commands.
local function expand(desc)
  for _, d in ipairs(desc) do
    if d[1] == 'release' then
      act('release', by_queue(d[2], always), input_of(d[2]))
    elseif d[1] == 'cancel' then
      local keep = function(j) return redis.call('HEXISTS', H, 'w:' .. j) == 1 end
      for k = d[2], last_main do act('cancel', by_queue(k, keep), d[3]) end
    elseif d[1] == 'finally' then
      act('release', by_queue('fin', always), summary())
    end
  end
end

-- The counters, read at most once per call and written once at its end (flush): a
-- forwarder's call reports many members, each of which moves four of them.
local counters, dirty = {}, {}
-- The workflow's state, read once per call; set_state writes it through.
local wf_state = nil
local function get_state()
  if wf_state == nil then wf_state = redis.call('HGET', H, 'state') or 'unknown' end
  return wf_state
end
local function set_state(value, ...)
  wf_state = value
  redis.call('HSET', H, 'state', value, ...)
end

local function field_number(name)
  local v = counters[name]
  if v == nil then
    v = tonumber(redis.call('HGET', H, name) or '0') or 0
    counters[name] = v
  end
  return v
end
local function bump(name, by)
  counters[name] = field_number(name) + by
  dirty[name] = true
end
local function flush()
  local args = {}
  for name in pairs(dirty) do
    args[#args + 1] = name
    args[#args + 1] = counters[name]
  end
  if #args > 0 then redis.call('HSET', H, unpack(args)) end
end

local uncounted = false  -- a count went down in this call (a revival)
local function count(j, k, state, why, sign, written)
  if sign < 0 then uncounted = true end
  bump('c:' .. state, sign)
  bump('nf', sign)
  if k ~= 'fin' then
    bump('n:' .. k, sign)
    bump('nfm', sign)
    if state ~= 'completed' then
      bump('f:' .. k, sign)
      bump('fails', sign)
    end
  end
  if sign > 0 then
    if not written then redis.call('HSET', H, 'd:' .. j, state) end
    if state ~= 'completed' and why ~= '' then redis.call('HSET', H, 'e:' .. j, why) end
  else
    redis.call('HDEL', H, 'd:' .. j, 'e:' .. j, 'w:' .. j)
  end
end

-- The workflow cancels the members of the steps after `k` that have not ended: counted
-- cancelled here at once (so the end of the workflow does not wait for the forwarder),
-- marked w:<j> so that a resumed workflow can bring them back.
local function cancel_after(k, reason)
  local any = false
  for s = k + 1, last_main do
    local first, n = span(s)
    for j = first, first + n - 1 do
      if redis.call('HEXISTS', H, 'd:' .. j) == 0 then
        count(j, s, 'cancelled', reason, 1)
        redis.call('HSET', H, 'w:' .. j, '1')
        any = true
      end
    end
  end
  return any
end

-- A resumed workflow: the members it cancelled in steps after `k` are not ended any more.
local function uncancel_after(k)
  for s = k + 1, last_main do
    local first, n = span(s)
    for j = first, first + n - 1 do
      if redis.call('HEXISTS', H, 'w:' .. j) == 1 then count(j, s, 'cancelled', '', -1) end
    end
  end
end


local function decide(j, k, state, why, revived)
  local desc = {}
  if k == 'fin' then return desc end
  local by = 'workflow ' .. wf_id .. ': '
  if state ~= 'completed' then
    local reason = member_id(j) .. ' ended ' .. state
    if why ~= '' then reason = reason .. ': ' .. why end
    if get_state() == 'running' then
      set_state('failed', 'reason', reason)
    end
    if cancel_after(k, by .. reason) then desc[#desc + 1] = {'cancel', k + 1, by .. reason} end
  else
    local _, n = span(k)
    local cancelled = get_state() == 'cancelled'
    if field_number('n:' .. k) == n and field_number('f:' .. k) == 0 and not cancelled then
      if revived and k < last_main then uncancel_after(k) end
      if k < last_main and field_number('fails') > 0 then
        -- a member of a later step failed already (cancelled while blocked): the rest of
        -- the workflow cannot run as written
        local reason = by .. (redis.call('HGET', H, 'reason') or 'a later member failed')
        if cancel_after(k, reason) then desc[#desc + 1] = {'cancel', k + 1, reason} end
      elseif k < last_main then
        desc[#desc + 1] = {'release', k + 1}
      end
      if field_number('fails') == 0 then
        local now_state = get_state()
        if now_state == 'failed' then
          set_state('running')
          redis.call('HDEL', H, 'reason')
          now_state = 'running'
        end
        if k == last_main and now_state == 'running' then
          set_state('succeeded')
        end
      end
    end
  end
  local main = steps[last_main + 1][1] + steps[last_main + 1][2]
  if meta.fin >= 0 and field_number('nfm') == main
      and redis.call('HSETNX', H, 'fired', '1') == 1 then
    desc[#desc + 1] = {'finally'}
  end
  return desc
end

local function settle_end(keep_ms)
  if field_number('nf') >= meta.n then
    if redis.call('HSETNX', H, 'finished', now_ms()) == 1 then
      redis.call('PEXPIRE', H, keep_ms)
    end
  elseif uncounted and redis.call('HDEL', H, 'finished') == 1 then
    redis.call('PERSIST', H)
  end
end

if op == 'cancel' then
  local reason = ARGV[3]
  local st = redis.call('HGET', H, 'state')
  -- a failed workflow with nothing left to run keeps its state and the reason it failed
  if st == 'running' or (st == 'failed' and field_number('nf') < meta.n) then
    redis.call('HSET', H, 'state', 'cancelled', 'reason', reason)
  end
  local unended = function(j) return redis.call('HEXISTS', H, 'd:' .. j) == 0 end
  local by = 'workflow ' .. wf_id .. ' cancelled'
  if reason ~= '' then by = by .. ': ' .. reason end
  -- a dependency gate's first step is the tasks it waits for: not its to cancel
  local from = 0
  if type(meta.ids) == 'table' then from = 1 end
  for k = from, last_main do act('cancel', by_queue(k, unended), by) end
  -- on_complete is left to run once every member has ended: it runs in every case
  return actions
end

-- op == 'report'
local keep_ms = tonumber(ARGV[3])
for base = 4, #ARGV, 4 do
  local j, state, result, why = tonumber(ARGV[base]), ARGV[base + 1], ARGV[base + 2],
                                 ARGV[base + 3]
  local k = step_of(j)
  if k ~= nil then
    -- the common case, a first report, in one command
    local fresh = redis.call('HSETNX', H, 'd:' .. j, state) == 1
    local old = not fresh and redis.call('HGET', H, 'd:' .. j)
    local revived = old and old ~= 'completed' and state == 'completed'
    if not fresh and not revived then
      local stored = redis.call('HGET', H, 'a:' .. j)
      if stored then expand(cjson.decode(stored)) end
    else
      if revived then count(j, k, old, '', -1) end
      count(j, k, state, why, 1, fresh)
      if state == 'completed' and result ~= '' and k ~= 'fin' and k < last_main then
        redis.call('HSET', H, 'r:' .. j, result)
      end
      local desc = decide(j, k, state, why, revived)
      if #desc > 0 then
        redis.call('HSET', H, 'a:' .. j, cjson.encode(desc))
        expand(desc)
      elseif revived then
        redis.call('HDEL', H, 'a:' .. j)
      end
    end
  end
end
flush()
settle_end(keep_ms)
return actions
