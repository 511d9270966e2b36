-- Helpers prepended to every script (broker/scripts.py joins them).
-- KEYS[1..27] are always the queue's keys, in keys.QUEUE_KEY_NAMES order (a script's own
-- keys follow, from KEYS[28]); every key a script touches is declared, so each script runs
-- in the queue's one Cluster slot.
local K_PENDING, K_ACTIVE, K_SCHEDULED, K_RETRY = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_DEAD, K_COMPLETED, K_MSG, K_INFO = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local K_ERRORS, K_RESULT, K_UNIQUE, K_UNIQUE_EXP = KEYS[9], KEYS[10], KEYS[11], KEYS[12]
local K_NOTIFY, K_SEQ, K_PAUSED = KEYS[13], KEYS[14], KEYS[15]
local K_WAITING, K_LIMITS, K_LWAIT = KEYS[16], KEYS[17], KEYS[18]
local K_LWAKE, K_FAIR = KEYS[19], KEYS[20]
local K_CANCELLED, K_EXPIRED, K_RWAIT, K_FINISHED = KEYS[21], KEYS[22], KEYS[23], KEYS[24]
local K_BLOCKED, K_WFOUT, K_METRICS = KEYS[25], KEYS[26], KEYS[27]

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

-- A printable excerpt of stored bytes, for an error message: the bytes may be anything,
-- and the message is stored as JSON, read by Python and shown in the admin.
local function excerpt(raw)
  local text = string.gsub(string.sub(raw, 1, 80), '[^\32-\126]', function(c)
    return string.format('\\x%02x', string.byte(c))
  end)
  if #raw > 80 then text = text .. '...' end
  return "'" .. text .. "'"
end

-- True when `s` is UTF-8 as Python decodes it (strictly: no surrogates, no overlongs).
-- Workers and the admin hold task ids as text; an id that is not could never be acked.
local function is_utf8(s)
  if not string.find(s, '[\128-\255]') then return true end
  local i, n = 1, #s
  while i <= n do
    local c, len, lo, hi = string.byte(s, i), 1, 0x80, 0xBF
    if c >= 0xC2 and c <= 0xDF then len = 2
    elseif c >= 0xE0 and c <= 0xEF then
      len = 3
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      len = 4
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
    elseif c >= 0x80 then return false end
    for j = 1, len - 1 do
      local b = string.byte(s, i + j)
      if not b or b < lo or b > hi then return false end
      lo, hi = 0x80, 0xBF
    end
    i = i + len
  end
  return true
end

local function blank_info()
  return {state = 'pending', attempts = 0, max_retries = 0, priority = 0}
end

local STATE_NAMES = {pending = true, active = true, scheduled = true, retry = true,
                     dead = true, completed = true, waiting = true, cancelled = true,
                     expired = true, blocked = true}
local floor, huge = math.floor, math.huge

local function is_finite(v)
  return type(v) == 'number' and v == v and v > -huge and v < huge
end

local function is_whole(v)
  return is_finite(v) and v >= 0 and v == floor(v)
end

-- The attempt count is the lease token an ack must match, so it must survive cjson's
-- 14-digit numbers; no task is claimed a billion times.
local function is_attempts(v) return is_whole(v) and v < 1e9 end
local function is_priority(v) return is_finite(v) and v >= -100 and v <= 100 end
local function is_state(v) return type(v) == 'string' and STATE_NAMES[v] == true end
local function is_string(v) return type(v) == 'string' end
local function is_true(v) return v == true end

-- A task's limits, as enqueue.lua stored them: {{limit id, concurrency, rate count,
-- rate period ms}, ...}, 0 meaning "no such limit".
local function is_limits(v)
  if type(v) ~= 'table' or #v == 0 or #v > 16 then return false end
  for _, spec in ipairs(v) do
    if type(spec) ~= 'table' or type(spec[1]) ~= 'string' or spec[1] == ''
        or string.find(spec[1], '[%z\1]') or not is_whole(spec[2]) or not is_whole(spec[3])
        or not is_whole(spec[4]) or (spec[3] > 0 and spec[4] <= 0) then
      return false
    end
  end
  return true
end

-- A cancel request (cancel.lua; the worker's self-cancel): who asked, and when (ms).
local function is_cancel(v)
  return type(v) == 'table' and is_string(v.by) and is_finite(v.at)
end

-- A run's progress as the worker's renewal writes it (apply_progress).
local function is_progress(v)
  return type(v) == 'table' and is_finite(v.current) and is_finite(v.updated_at)
    and (v.total == cjson.null or is_finite(v.total))
    and (v.message == cjson.null or is_string(v.message))
end

-- The barriers a workflow member or a dependency reports its end to: {{workflow id,
-- member index}, ...} (announce_final).
local function is_wf(v)
  if type(v) ~= 'table' or #v == 0 or #v > 1000 then return false end
  for _, t in ipairs(v) do
    if type(t) ~= 'table' or type(t[1]) ~= 'string' or not is_whole(t[2]) then
      return false
    end
  end
  return true
end

-- Every field the scripts write to a record, its check, and whether a task can run
-- without it (the first four). Built when a damaged record needs it: a table made on
-- every call of every script is Redis time spent for nothing (about 0.2 us each).
local function info_fields()
  return {
    {'state', is_state, true}, {'attempts', is_attempts, true},
    {'max_retries', is_whole, true}, {'priority', is_priority, true},
    {'enqueued_at', is_finite}, {'run_after', is_finite}, {'started_at', is_finite},
    {'finished_at', is_finite}, {'worker', is_string}, {'last_error', is_string},
    {'unique_key', is_string}, {'lost', is_attempts},
    {'limits', is_limits}, {'held', is_true}, {'fair', is_string},
    {'waiting_for', is_string}, {'wait_member', is_string}, {'woken', is_string},
    {'waiting_since', is_finite}, {'expires_at', is_finite},
    {'cancel', is_cancel}, {'progress', is_progress}, {'wf', is_wf},
  }
end

-- The fields of `stored` that pass their check, on a blank record, and the first
-- required field that does not (nil when none). Anything else is outside damage, and is
-- dropped: cjson cannot write back all it reads (NaN, 1e999).
local function sanitize(stored)
  local info, bad = blank_info(), nil
  for _, field in ipairs(info_fields()) do
    local name, valid, required = field[1], field[2], field[3]
    if valid(stored[name]) then
      info[name] = stored[name]
    elseif required and not bad then
      bad = name
    end
  end
  return info, bad
end

-- The task's record, and why it cannot be trusted (nil when it can). A record damaged
-- from outside (a foreign write, a bad restore) must never stop a script: callers get
-- its sound fields on a blank record, plus the reason, and the claim sends such a task to
-- the dead queue with that reason instead of running it on guessed attempts and retries.
local function get_info(id)
  local raw = redis.call('HGET', K_INFO, id)
  if not raw then return blank_info(), 'is missing' end
  local ok, info = pcall(cjson.decode, raw)
  if not ok or type(info) ~= 'table' or info[1] ~= nil then
    return blank_info(), 'is not a JSON object: ' .. excerpt(raw)
  end
  -- Runs twice per task (claim, ack): check in place what the scripts read, and copy
  -- field by field only a record that fails.
  local a, m, p = info.attempts, info.max_retries, info.priority
  if STATE_NAMES[info.state] == true
      and type(a) == 'number' and a >= 0 and a < 1e9 and a == floor(a)
      and type(m) == 'number' and m >= 0 and m < huge and m == floor(m)
      and type(p) == 'number' and p >= -100 and p <= 100
      and (info.unique_key == nil or type(info.unique_key) == 'string')
      and (info.worker == nil or type(info.worker) == 'string')
      and (info.run_after == nil or is_finite(info.run_after))
      and (info.fair == nil or type(info.fair) == 'string') then
    -- `limits` is checked where it is used (the claim, release_limits, hold_limits): once
    -- per task and call rather than on every read of a record.
    return info, nil
  end
  local clean, bad = sanitize(info)
  if bad then return clean, 'has no valid ' .. bad .. ': ' .. excerpt(raw) end
  return clean, nil
end

local function put_info(id, info)
  local ok, text = pcall(cjson.encode, info)
  -- A field left by outside damage that cjson cannot write back (NaN): keep the sound ones.
  if not ok then text = cjson.encode((sanitize(info))) end
  redis.call('HSET', K_INFO, id, text)
end

local function is_set(v)
  return v ~= nil and v ~= cjson.null and v ~= ''
end

local function append_error(id, entry)
  local list = {}
  local raw = redis.call('HGET', K_ERRORS, id)
  if raw then
    local ok, stored = pcall(cjson.decode, raw)
    -- Only a JSON array of entries is a history; anything else is damage and is replaced.
    -- Copy just the entries that are kept: bounded work whatever the array holds.
    if ok and type(stored) == 'table' then
      for i = math.max(1, #stored - ERRORS_KEEP + 2), #stored do
        if type(stored[i]) == 'table' then table.insert(list, stored[i]) end
      end
    end
  end
  table.insert(list, entry)
  local ok, text = pcall(cjson.encode, list)
  -- An old entry may hold what cjson cannot write back (NaN): keep the new one alone.
  if not ok then text = cjson.encode({entry}) end
  redis.call('HSET', K_ERRORS, id, text)
end

local function release_unique(id, info)
  local lock = info.unique_key
  if is_set(lock) and redis.call('HGET', K_UNIQUE, lock) == id then
    redis.call('HDEL', K_UNIQUE, lock)
    redis.call('ZREM', K_UNIQUE_EXP, lock)
  end
end

-- Metrics (docs/metrics.md): monotonic counts per task name in the queue's K_METRICS
-- hash, written by the transitions themselves (no extra round trip). Fields, with the
-- task's name as it stands in its message:
--   'e|<task>'                    enqueued
--   'l|<task>|<b>', 'ls|<task>'   started: queue latency (due -> start) bucket b, sum (ms)
--   'd|<task>|<outcome>|<b>', 'ds|<task>|<outcome>'
--                                 a run that ended (succeeded, retried, dead, cancelled):
--                                 its duration's bucket and sum (ms); claim.lua writes them
--   'f|<task>|<state>'            ended without a run ending it (dead, cancelled, expired,
--                                 retried: a lost lease; dead: an unusable task)
-- The hot scripts (enqueue, claim) gather a call's counts in METRICS and write each field
-- once (flush_metrics); elsewhere a count is written at once. Few closures here: every
-- script call pays for the prelude's (claim.lua keeps the histograms' own code).
local METRICS = nil
local function tally(field, n)
  if METRICS then
    METRICS[field] = (METRICS[field] or 0) + n
  else
    redis.call('HINCRBY', K_METRICS, field, n)
  end
end

-- The task's name from the start of its message ('?' when it cannot be read there): a
-- message is written by encode() as {"id":...,"name":"...", ...}. A record keeps the
-- head of a long message, so a long message is not read whole for its name.
local function task_name(id, info, msg)
  if not msg then
    msg = (info and type(info.head) == 'string' and info.head) or redis.call('HGET', K_MSG, id)
    if not msg then return '?' end
  end
  return string.match(msg, '"name":"([^"\\]*)"') or '?'
end

local function flush_metrics()
  for field, n in pairs(METRICS) do redis.call('HINCRBY', K_METRICS, field, n) end
  METRICS = {}
end

-- get_result(wait=...) callers register in K_RWAIT (id -> how many wait); a transition
-- that ends an awaited task adds it to the K_FINISHED stream, whose readers (XREAD BLOCK)
-- wake at once. A call looks for waiters once (HLEN), not once per task it ends.
-- A workflow member's (or a dependency's) end also goes to the queue's outbox (K_WFOUT),
-- in this same transition: a forwarder carries it to the barriers in `info.wf`, which
-- live in other slots, and takes it out once they counted it (docs/workflows.md). `result`
-- is the return value's JSON (completed), `why` the error or reason (any other end).
-- FORWARD lists the entries written (id, entry, id, entry...), for the script's reply: the
-- forwarder then has them without reading the outbox.
local FINISHED_KEEP = 10000  -- stream entries kept (approximately): waiters read the newest
local any_waiters = nil
local FORWARD = {}
-- COUNTED: the id whose end the caller counts itself (a run's end, with its duration).
local COUNTED = nil
local function announce_final(id, state, info, result, why)
  if COUNTED ~= id then
    tally('f|' .. task_name(id, info) .. '|' .. (state == 'completed' and 'succeeded' or state), 1)
  end
  if info and info.wf and is_wf(info.wf) then
    local cause = why
    if not cause and state ~= 'completed' then
      cause = info.last_error
      if is_cancel(info.cancel) and info.cancel.by ~= '' then
        cause = 'cancelled by ' .. info.cancel.by
      end
    end
    if state ~= 'completed' and not cause then cause = state end
    local entry = {s = state, r = result or cjson.null, e = cause or cjson.null, t = info.wf}
    local text = cjson.encode(entry)
    redis.call('HSET', KEYS[26], id, text)
    FORWARD[#FORWARD + 1] = id
    FORWARD[#FORWARD + 1] = text
  end
  if any_waiters == nil then any_waiters = redis.call('HLEN', K_RWAIT) > 0 end
  if not any_waiters or redis.call('HDEL', K_RWAIT, id) == 0 then return end
  redis.call('XADD', K_FINISHED, 'MAXLEN', '~', FINISHED_KEEP, '*', 'id', id, 'state', state)
end

local function forget(id)
  redis.call('HDEL', K_MSG, id)
  redis.call('HDEL', K_INFO, id)
  redis.call('HDEL', K_ERRORS, id)
  redis.call('HDEL', K_RESULT, id)
end

-- Flow control (docs/limits.md) ------------------------------------------------------
-- A limit lives in the slot of the queue whose tasks it counts (K_LIMITS): taking a slot
-- at claim and giving it back are part of the very transitions that start and end a run,
-- so a slot cannot outlive its run, whatever dies, and a failover keeps both or neither.
-- These functions are built on first use in a call (flow()): a script that meets no task
-- with limits or a fair key, the hot path of every queue without flow control, creates
-- none of them. Creating them costs Redis time on every call of every script: measured,
-- the prelude went from 5.0 to 8.2 us per call while they were plain locals.
local FLOW = nil
local CACHE_LIMITS = false  -- claim.lua: read and write each limit once per call
local function flow()
  if FLOW then return FLOW end
  local WAKE_BATCH = 100  -- waiters one rate wake-up moves at most (bounded work)

  -- A limit's stored state, {run, tok, ts, c, rn, rp}: runs holding it, rate tokens left at
  -- ts (ms), and the values of the task that used it last (what the admin shows).
  -- A claim admits and releases many runs of the same limits in one call: claim.lua sets
  -- limit_cache to {} so that each limit is read once and written once (flush_limits, before
  -- it returns) instead of once per run. nil (every other script): each change is written
  -- at once. Entries: lid -> {st = state, write = nil | 'set' | 'del'}.
  local limit_cache = CACHE_LIMITS and {} or nil
  -- Limits found without waiters in this call (cached like their state; park clears it).
  local limit_no_waiters = {}

  local function limit_state(lid)
    local cached = limit_cache and limit_cache[lid]
    if cached then return cached.st end
    local raw = redis.call('HGET', K_LIMITS, lid)
    local st = nil
    if raw then
      local ok, decoded = pcall(cjson.decode, raw)
      if ok and type(decoded) == 'table' then st = decoded end
    end
    st = st or {}
    if not is_whole(st.run) then st.run = 0 end
    if not is_finite(st.tok) or not is_finite(st.ts) then st.tok, st.ts = nil, nil end
    if limit_cache then limit_cache[lid] = {st = st} end
    return st
  end

  local function put_limit(lid, st)
    if limit_cache then
      limit_cache[lid] = {st = st, write = 'set'}
    else
      redis.call('HSET', K_LIMITS, lid, cjson.encode(st))
    end
  end

  local function drop_limit(lid)
    if limit_cache then
      limit_cache[lid] = {st = {run = 0}, write = 'del'}  -- what a missing entry reads as
    else
      redis.call('HDEL', K_LIMITS, lid)
    end
  end

  -- Write what the call changed (claim.lua, before it returns), and stop caching.
  local function flush_limits()
    for lid, entry in pairs(limit_cache or {}) do
      if entry.write == 'set' then
        redis.call('HSET', K_LIMITS, lid, cjson.encode(entry.st))
      elseif entry.write == 'del' then
        redis.call('HDEL', K_LIMITS, lid)
      end
    end
    limit_cache = nil
  end

  -- Tokens of a rate limit at `now`: a bucket that holds `rn` tokens (a burst of the rate's
  -- count) and gains rn per rp ms, on Redis' clock.
  local function refill(st, rn, rp, now)
    if rn <= 0 then return end
    local tok, ts = st.tok, st.ts
    if tok == nil or tok > rn then tok, ts = rn, now end
    if now > ts then tok = math.min(rn, tok + (now - ts) * rn / rp) end
    st.tok, st.ts = tok, now
  end

  -- When the bucket next holds a whole token (ms).
  local function next_token(st, rn, rp, now)
    return now + math.max(1, math.ceil((1 - st.tok) * rp / rn))
  end

  local function save_limit(lid, st, rn)
    local idle = st.run == 0 and (rn <= 0 or (st.tok or rn) >= rn)
    if idle and #redis.call('ZRANGEBYLEX', K_LWAIT, '[' .. lid .. '\0', '[' .. lid .. '\1',
                            'LIMIT', 0, 1) == 0 then
      drop_limit(lid)  -- nothing to remember: the hash holds live limits
    else
      put_limit(lid, st)
    end
  end

  -- Take a slot of every limit in `specs` for a run starting now, or none: returns true, or
  -- false, the limit that refused, a reason to show, and when a rate token is due (or nil).
  local function admit(specs, now)
    local states = {}
    for i, spec in ipairs(specs) do
      local lid, c, rn, rp = spec[1], spec[2], spec[3], spec[4]
      local st = limit_state(lid)
      st.c, st.rn, st.rp = c, rn, rp
      refill(st, rn, rp, now)
      if c > 0 and st.run >= c then
        return false, lid, st.run .. '/' .. c .. ' running', nil
      end
      if rn > 0 and st.tok < 1 then
        local due = next_token(st, rn, rp, now)
        local unit = ({[1000] = 's', [60000] = 'm', [3600000] = 'h'})[rp] or (rp .. ' ms')
        return false, lid, string.format('rate %d/%s, next start in %.1f s', rn, unit,
                                         (due - now) / 1000), due
      end
      states[i] = st
    end
    for i, spec in ipairs(specs) do
      local st = states[i]
      st.run = st.run + 1
      if spec[3] > 0 then st.tok = st.tok - 1 end
      put_limit(spec[1], st)
    end
    return true
  end

  -- A popped task that a limit refused waits, charged no attempt, until that limit wakes it:
  -- in the waiting set (its place in pending kept as the score) and among the limit's
  -- waiters, ordered by that place (priority, then FIFO or fair turn).
  local function park(id, info, score, lid, why, due, now, channel)
    local member = lid .. '\0' .. string.format('%017.0f', score) .. '\0' .. id
    info.state = 'waiting'
    info.waiting_for = 'limit ' .. lid .. ': ' .. why
    info.wait_member = member
    if not is_finite(info.waiting_since) then info.waiting_since = now end
    put_info(id, info)
    redis.call('ZADD', K_WAITING, score, id)
    redis.call('ZADD', K_LWAIT, 0, member)
    limit_no_waiters[lid] = nil
    if due then
      redis.call('ZADD', K_LWAKE, 'LT', due, lid)
      local head = redis.call('ZRANGE', K_LWAKE, 0, 0)
      if head[1] == lid then redis.call('PUBLISH', channel, due) end
    end
  end

  -- Take a waiting task out of its limit's waiters (deleted, or woken).
  local function unwait(id, info)
    if is_string(info.wait_member) then redis.call('ZREM', K_LWAIT, info.wait_member) end
    info.waiting_for, info.wait_member = nil, nil
  end

  -- Move up to `n` of `lid`'s first waiters back to their place in pending; returns how many.
  local function wake(lid, n)
    local woken = 0
    if limit_cache and limit_no_waiters[lid] then return woken end
    while woken < n do
      local members = redis.call('ZRANGEBYLEX', K_LWAIT, '[' .. lid .. '\0', '[' .. lid .. '\1',
                                 'LIMIT', 0, n - woken)
      if #members == 0 then
        if woken == 0 and limit_cache then limit_no_waiters[lid] = true end
        break
      end
      for _, member in ipairs(members) do
        redis.call('ZREM', K_LWAIT, member)
        local id = string.sub(member, #lid + 20)
        local score = redis.call('ZSCORE', K_WAITING, id)
        if score then
          redis.call('ZREM', K_WAITING, id)
          local info, problem = get_info(id)
          if not problem then
            info.state = 'pending'
            info.waiting_for, info.wait_member = nil, nil
            info.woken = lid  -- deleted before it is claimed, it passes the wake-up on
            put_info(id, info)
          end
          redis.call('ZADD', K_PENDING, score, id)
          woken = woken + 1
        end
      end
    end
    notify(woken)
    return woken
  end

  -- A run that held slots ends (acknowledged, put back, recovered): its slots are free, and
  -- each limit that counts runs wakes its first waiter.
  local function release_limits(info, now)
    if not info.held then return end
    info.held = nil
    if not is_limits(info.limits) then return end
    for _, spec in ipairs(info.limits) do
      local lid, c, rn, rp = spec[1], spec[2], spec[3], spec[4]
      local st = limit_state(lid)
      if st.run > 0 then st.run = st.run - 1 end
      refill(st, rn, rp, now)
      -- Wake first: a limit whose last waiter was just woken is idle, and forgotten.
      if c > 0 and st.run < c then wake(lid, 1) end
      save_limit(lid, st, rn)
    end
  end

  -- A run that goes on without a claim (regain_lost: its worker was alive after all) takes
  -- its slots back even over the limit: it never stopped running.
  local function hold_limits(info)
    if info.held or not is_limits(info.limits) then return end
    for _, spec in ipairs(info.limits) do
      local st = limit_state(spec[1])
      st.run = st.run + 1
      put_limit(spec[1], st)
    end
    info.held = true
  end

  -- Rate limits whose next token is due: wake as many waiters as there are tokens (they take
  -- them when claimed), and come back at the next token while waiters remain.
  local function wake_due_limits(now, limit)
    local woken = 0
    for _, lid in ipairs(redis.call('ZRANGEBYSCORE', K_LWAKE, '-inf', now, 'LIMIT', 0, limit)) do
      redis.call('ZREM', K_LWAKE, lid)
      local st = limit_state(lid)
      local rn, rp, c = tonumber(st.rn) or 0, tonumber(st.rp) or 0, tonumber(st.c) or 0
      local room = WAKE_BATCH
      if rn > 0 and rp > 0 then
        refill(st, rn, rp, now)
        room = math.min(room, math.floor(st.tok))
      end
      if c > 0 then room = math.min(room, c - st.run) end
      if room > 0 then woken = woken + wake(lid, room) end
      local more = #redis.call('ZRANGEBYLEX', K_LWAIT, '[' .. lid .. '\0', '[' .. lid .. '\1',
                               'LIMIT', 0, 1) > 0
      if more and rn > 0 and rp > 0 and (c <= 0 or st.run < c) then
        -- The woken take their tokens when claimed: the next wake-up is the token after.
        local left = st.tok - math.max(room, 0)
        redis.call('ZADD', K_LWAKE, now + math.max(1, math.ceil((1 - left) * rp / rn)), lid)
      end
      save_limit(lid, st, rn)
    end
    return woken
  end

  -- A task refused by `refused` after a wake-up from another of its limits passes that
  -- wake-up on: each other limit with room wakes its next waiter, which would otherwise wait
  -- for a release that no run of that limit is left to make.
  local function pass_on(specs, refused)
    for _, spec in ipairs(specs) do
      local lid, c = spec[1], spec[2]
      if lid ~= refused and c > 0 and limit_state(lid).run < c then wake(lid, 1) end
    end
  end

  -- Limits that have room and waiters but nothing to wake them (a woken task deleted before
  -- it was claimed): wake their first waiters. The janitor's safety net, bounded per call.
  local function heal_limits(cursor, count, now)
    local scan = redis.call('HSCAN', K_LIMITS, cursor, 'COUNT', count)
    local woken = 0
    for i = 1, #scan[2], 2 do
      local lid = scan[2][i]
      local st = limit_state(lid)
      local c, rn, rp = tonumber(st.c) or 0, tonumber(st.rn) or 0, tonumber(st.rp) or 0
      if not redis.call('ZSCORE', K_LWAKE, lid) then
        local room = c > 0 and c - st.run or WAKE_BATCH
        if rn > 0 and rp > 0 then
          refill(st, rn, rp, now)
          room = math.min(room, math.floor(st.tok))
        end
        if room > 0 then woken = woken + wake(lid, math.min(room, WAKE_BATCH)) end
      end
    end
    return scan[1], woken
  end

  -- Round robin between the fair keys of one priority: a key's next task takes the place
  -- after its previous one, but never one before the head of pending (the place served now),
  -- so a key that comes late is served at once, in turn with the keys already waiting. Tasks
  -- without a key form the key ''. No work at claim: the order is in the scores.
  local function fair_score(key, priority)
    local base = (100 - (tonumber(priority) or 0)) * 2e13 + 1e13
    local field = key .. '\0' .. tostring(priority)
    local seq = redis.call('INCR', K_SEQ)
    local head = redis.call('ZRANGEBYSCORE', K_PENDING, base - 1e13, base + 1e13 - 1,
                            'WITHSCORES', 'LIMIT', 0, 1)
    local score = base + seq
    if head[2] then score = tonumber(head[2]) + 1 end  -- right after the next in line
    local last = tonumber(redis.call('HGET', K_FAIR, field) or '')
    if last and last + 1 > score then score = last + 1 end
    redis.call('HSET', K_FAIR, field, score)
    return score
  end

  -- Forget the fair keys whose last place has been served (bounded per call): a key that
  -- comes back starts from the head again, which is where it would be placed anyway, and a
  -- queue whose fair keys are all gone takes the plain FIFO path again (tail_score).
  local function trim_fair(cursor, count)
    local scan = redis.call('HSCAN', K_FAIR, cursor, 'COUNT', count)
    local removed = 0
    for i = 1, #scan[2], 2 do
      local field, last = scan[2][i], tonumber(scan[2][i + 1])
      local priority = tonumber(string.match(field, '%z(-?%d+)$') or '')
      local base = (100 - (priority or 0)) * 2e13 + 1e13
      local head = redis.call('ZRANGEBYSCORE', K_PENDING, base - 1e13, base + 1e13 - 1,
                              'WITHSCORES', 'LIMIT', 0, 1)
      if not priority or not last or not head[2] or last < tonumber(head[2]) then
        redis.call('HDEL', K_FAIR, field)
        removed = removed + 1
      end
    end
    return scan[1], removed
  end
  FLOW = {limit_state = limit_state, put_limit = put_limit, drop_limit = drop_limit,
    flush_limits = flush_limits, refill = refill, next_token = next_token,
    save_limit = save_limit, admit = admit, park = park, unwait = unwait, wake = wake,
    release_limits = release_limits, hold_limits = hold_limits,
    wake_due_limits = wake_due_limits, pass_on = pass_on, heal_limits = heal_limits,
    fair_score = fair_score, trim_fair = trim_fair}
  return FLOW
end

-- The place of a task joining the tail of pending.
-- Fair keys order only the tasks that have one; a task without keeps its FIFO place.
local function tail_score(fair, priority)
  if is_string(fair) and fair ~= '' then return flow().fair_score(fair, priority) end
  return pending_score(priority, false)
end


-- A task that left a waiting set goes to the tail of pending (forward, "run now"). A
-- damaged record is left as found: the claim sends the task to the dead queue, saying what
-- is wrong (its record is sound from then on, and "run now" runs it).
local function to_pending(id, info, problem)
  if not info then info, problem = get_info(id) end
  if not problem then
    info.state = 'pending'
    put_info(id, info)
  end
  redis.call('ZADD', K_PENDING, tail_score(info.fair, info.priority), id)
end

-- "Run now" (requeue.lua, bulk_step.lua): scheduled, retry or dead tasks to the tail of
-- pending. A dead task keeps its attempt count, so it gets exactly one more try.
-- Returns the ids moved (others were in no movable state); the caller notifies.
local function requeue_ids(ids)
  local moved = {}
  for _, id in ipairs(ids) do
    -- The sets say where a task is: its record may be damaged, or disagree.
    local found = 0
    for _, set in ipairs({K_SCHEDULED, K_RETRY, K_DEAD}) do
      found = found + redis.call('ZREM', set, id)
    end
    if found > 0 then
      to_pending(id)
      table.insert(moved, id)
    end
  end
  return moved
end

-- Delete (delete.lua, bulk_step.lua) tasks in any state but active: a running task
-- cannot be recalled. Returns the ids deleted and the ids refused (active).
local function delete_ids(ids)
  local deleted, refused = {}, {}
  for _, id in ipairs(ids) do
    -- The active set, not the record, says whether it runs: a record may be damaged.
    if redis.call('ZSCORE', K_ACTIVE, id) then
      table.insert(refused, id)
    else
      -- An id may sit in a set with no data at all (outside damage): it goes too.
      local found = redis.call('HEXISTS', K_MSG, id) + redis.call('HEXISTS', K_INFO, id)
      for _, set in ipairs({K_PENDING, K_SCHEDULED, K_RETRY, K_DEAD, K_COMPLETED,
                            K_WAITING, K_CANCELLED, K_EXPIRED, K_BLOCKED}) do
        found = found + redis.call('ZREM', set, id)
      end
      if found > 0 then
        local info = get_info(id)
        if is_string(info.wait_member) then flow().unwait(id, info) end
        if is_string(info.woken) and is_limits(info.limits) then
          flow().pass_on(info.limits, '')
        end
        release_unique(id, info)
        forget(id)
        announce_final(id, 'deleted', info, nil, 'deleted')  -- a waiter learns it at once
        table.insert(deleted, id)
      end
    end
  end
  return deleted, refused
end

-- Drop the tasks of a set of ended tasks (dead, cancelled, expired: scored by when they
-- ended) older than max_age_ms, then the oldest beyond max_tasks, at most `limit` in one
-- call. Returns how many were removed and whether more remain.
local function trim_set(zset, now, max_tasks, max_age_ms, limit)
  local removed = 0
  local old = redis.call('ZRANGEBYSCORE', zset, '-inf', '(' .. (now - max_age_ms),
                         'LIMIT', 0, limit)
  for _, id in ipairs(old) do
    redis.call('ZREM', zset, id)
    forget(id)
    removed = removed + 1
  end
  local excess = redis.call('ZCARD', zset) - max_tasks
  local room = limit - removed
  local more = excess > room
  if excess > room then excess = room end
  if excess > 0 then
    local ids = redis.call('ZRANGE', zset, 0, excess - 1)
    for _, id in ipairs(ids) do
      redis.call('ZREM', zset, id)
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
  trim_set(K_DEAD, now, dead_max_tasks, dead_max_age_ms, 100)
  announce_final(id, 'dead', info)
end

-- A task that will not run (again) ends `state`, 'cancelled' or 'expired', in that state's
-- set (kept and trimmed like the dead ones): its uniqueness lock and any limit slot or
-- place among a limit's waiters are given back. The caller took it out of its set.
local function end_unrun(id, info, state, zset, now)
  if info.held then flow().release_limits(info, now) end
  if is_string(info.wait_member) then flow().unwait(id, info) end
  -- Woken by a limit but never claimed: the wake-up goes to the limit's next waiter.
  if is_string(info.woken) and is_limits(info.limits) then flow().pass_on(info.limits, '') end
  info.woken = nil
  info.state = state
  info.finished_at = now
  put_info(id, info)
  release_unique(id, info)
  redis.call('ZADD', zset, now, id)
  announce_final(id, state, info)
end

-- A task about to start (claim) or to become pending (forward) that is past its expiry:
-- it ends 'expired' (end_unrun) and true is returned. A task without one costs one field
-- test; a damaged value (not a number) never expires it.
local function expire_if_due(id, info, now)
  local at = info.expires_at
  if type(at) ~= 'number' or not (at <= now) then return false end
  end_unrun(id, info, 'expired', K_EXPIRED, now)
  return true
end

-- A cancelled run ends 'cancelled' (never retried): its worker reported it, or it ended
-- in any other way while a cancel was requested (a failure, a shutdown's requeue, a lost
-- lease). `err` ('' = none) joins its history. A run that cancelled itself unasked says so.
local function end_cancelled(id, info, now, err, tb)
  if not is_cancel(info.cancel) then info.cancel = {by = 'the task itself', at = now} end
  info.lost = nil
  if err ~= '' then
    info.last_error = err
    append_error(id, error_entry(info, now, err, tb))
  end
  end_unrun(id, info, 'cancelled', K_CANCELLED, now)
end

-- A worker's report of a run's progress, JSON [current, total|null, message|null], as
-- `info.progress` (with Redis' time); false (nothing changed) when it is not one.
local PROGRESS_MESSAGE_MAX = 1000  -- bytes (the worker sends at most 200 characters)
local function apply_progress(info, raw, now)
  local ok, p = pcall(cjson.decode, raw)
  if not ok or type(p) ~= 'table' or not is_finite(p[1]) then return false end
  local total, message = p[2], p[3]
  if not is_finite(total) then total = cjson.null end
  if is_string(message) then
    message = string.sub(message, 1, PROGRESS_MESSAGE_MAX)
  else
    message = cjson.null
  end
  info.progress = {current = p[1], total = total, message = message, updated_at = now}
  return true
end

-- Cancel (cancel.lua, bulk_step.lua): a queued task (pending, scheduled, retry, waiting,
-- blocked)
-- ends 'cancelled' at once (end_unrun); a running one gets the request in its record
-- (`cancel`, kept from the first ask), which its worker acts on; anything else is left as
-- it is. The sets, not the record, say where a task is: a record may be damaged.
-- Returns the ids cancelled, the ids running (asked to stop), {id, state, ...} of those
-- already ended or left as they were, the ids found nowhere, and how many running ones
-- were asked for the first time.
-- Every script pays for this closure on every call, for each upvalue it captures (Lua
-- looks each one up in a list of the open ones): the keys are read from KEYS, a global,
-- by their K_* positions (the header), and the record checks are written out.
local function cancel_ids(ids, by, now)
  local cancelled, requested, ended, missing, asked = {}, {}, {}, {}, 0
  local active, dest = KEYS[2], KEYS[21]  -- K_ACTIVE, K_CANCELLED
  -- pending, scheduled, retry, waiting, blocked
  local queued = {KEYS[1], KEYS[3], KEYS[4], KEYS[16], KEYS[25]}
  local final = {{'completed', KEYS[6]}, {'dead', KEYS[5]}, {'cancelled', dest},
                 {'expired', KEYS[22]}}
  for _, id in ipairs(ids) do
    if redis.call('ZSCORE', active, id) then
      local info, problem = get_info(id)
      local before = info.cancel
      if problem then
        -- Written back, its sound fields alone would lose the lease token: left as found.
        table.insert(ended, id)
        table.insert(ended, 'active')
      else
        if not (type(before) == 'table' and type(before.by) == 'string'
                and type(before.at) == 'number' and before.at >= 0 and before.at < 1e15) then
          info.cancel = {by = by, at = now}
          put_info(id, info)
          asked = asked + 1
        end
        table.insert(requested, id)
      end
    else
      local found = 0
      for _, set in ipairs(queued) do found = found + redis.call('ZREM', set, id) end
      if found > 0 then
        local info = get_info(id)
        info.cancel = {by = by, at = now}
        end_unrun(id, info, 'cancelled', dest, now)
        table.insert(cancelled, id)
      else
        local state = nil
        for _, pair in ipairs(final) do
          if not state and redis.call('ZSCORE', pair[2], id) then state = pair[1] end
        end
        if state then
          table.insert(ended, id)
          table.insert(ended, state)
        else
          table.insert(missing, id)
        end
      end
    end
  end
  return cancelled, requested, ended, missing, asked
end

-- Tell pollers (every host) when `id` became the earliest entry of `zset`.
local function wake_if_earliest(zset, id, due, channel)
  local head = redis.call('ZRANGE', zset, 0, 0)
  if head[1] == id then redis.call('PUBLISH', channel, due) end
end


-- An active task whose worker is gone (its lease expired, or its process died): back to
-- the head of pending with `err` in its history (its id added to `returned`), or dead
-- when that attempt was its last or its record is too damaged to say (added to `killed`).
-- The caller has removed it from the active set. `lost` marks the attempt, so that its
-- worker, if it was only cut off, can still take it back (regain_lost). One whose cancel
-- was requested ends cancelled (added to `cancelled`): its worker's death never revives it.
local function return_lost(id, info, problem, now, err, dead_max, dead_age, returned, killed,
                           cancelled)
  info.lost = info.attempts
  if info.held then flow().release_limits(info, now) end
  if not problem and is_cancel(info.cancel) then
    end_cancelled(id, info, now, err, '')
    table.insert(cancelled, id)
  elseif problem then
    -- Its attempts and retries are unknown: never run it again on guesses.
    kill(id, info, now, "InvalidTaskRecord: the task's record in Redis " .. problem, '',
         dead_max, dead_age)
    table.insert(killed, id)
  elseif info.attempts > info.max_retries then
    kill(id, info, now, err, '', dead_max, dead_age)
    table.insert(killed, id)
  else
    info.state = 'pending'
    info.last_error = err
    put_info(id, info)
    append_error(id, error_entry(info, now, err, ''))
    redis.call('ZADD', K_PENDING, pending_score(info.priority, true), id)
    tally('f|' .. task_name(id, info) .. '|retried', 1)
    table.insert(returned, id)
  end
end

-- A task recovered from `attempt` (return_lost) that nobody has started since goes back to
-- that attempt, active again: its worker was alive after all (cut off from Redis, or Redis
-- itself stalled), and what it reports (a renewal, an outcome) is still the truth. The
-- recovery's WorkerLost entry is taken out of its history. False when another attempt
-- has started, or the task has gone on (deleted, trimmed, requeued by hand).
local function regain_lost(id, info, attempt)
  if info.lost ~= attempt or info.attempts ~= attempt then return false end
  local from = K_PENDING
  if info.state == 'dead' then from = K_DEAD elseif info.state ~= 'pending' then return false end
  if redis.call('ZREM', from, id) == 0 then return false end
  info.state, info.lost, info.finished_at, info.last_error = 'active', nil, nil, nil
  if info.limits then flow().hold_limits(info) end
  local ok, history = pcall(cjson.decode, redis.call('HGET', K_ERRORS, id) or '[]')
  if ok and type(history) == 'table' and #history > 0 then
    local last = history[#history]
    if type(last) == 'table' and last.attempt == attempt then table.remove(history) end
    if #history == 0 then
      redis.call('HDEL', K_ERRORS, id)
    else
      local fine, text = pcall(cjson.encode, history)
      if fine then redis.call('HSET', K_ERRORS, id, text) end
      if type(history[#history]) == 'table' and is_string(history[#history].error) then
        info.last_error = history[#history].error
      end
    end
  end
  return true
end

-- A message's head: enough of its start for a list to show the task's name and first
-- arguments without reading all of it (peek.lua). A message of at most HEAD_BYTES is its
-- own head; a longer one's is kept in its record at enqueue, from its name on (the id
-- before it may be long, and the reader has it), as the start of a JSON object.
local HEAD_BYTES = 512
local function message_head(msg)
  local at = string.find(msg, ',"name":', 1, true)
  if not at then return string.sub(msg, 1, HEAD_BYTES) end
  return '{' .. string.sub(msg, at + 1, at + HEAD_BYTES - 1)
end

-- Write one new task: its message, its record, and its place in pending (at `due` <= now)
-- or scheduled. Returns status, value, due, added, enqueued_at: 'ok', state, due, true
-- (written now) or false (a resent call: the same id with the same message is reported
-- 'ok' again), the stored enqueue time | 'exists', id, false, false, false |
-- 'locked', holder_id, false, false, false. `lock` '' = no lock.
-- `limits`: the task's limits as JSON ('' = none: see is_limits); `fair`: its fair key;
-- `expires_at`: when it expires unless started (ms, nil = never); `wf`: the barriers it
-- reports its end to (JSON, see is_wf; '' = none); `blocked`: held in the blocked set
-- until its workflow releases it (wf_release.lua), whatever its due time.
local function add_task(id, msg, priority, due, lock, lock_ttl, max_retries, now, limits,
                        fair, expires_at, wf, blocked)
  if lock ~= '' then
    local expiry = redis.call('ZSCORE', K_UNIQUE_EXP, lock)
    local current = redis.call('HGET', K_UNIQUE, lock)
    if expiry and tonumber(expiry) > now and current and current ~= id then
      return 'locked', current, false, false, false
    end
  end
  if redis.call('HSETNX', K_MSG, id, msg) == 0 then
    -- Already there: a resent call (same message) succeeded before; anything else is
    -- another task holding this id.
    if redis.call('HGET', K_MSG, id) == msg then
      local info = get_info(id)
      return 'ok', info.state, info.run_after or false, false, info.enqueued_at or false
    end
    return 'exists', id, false, false, false
  end
  if lock ~= '' then
    redis.call('HSET', K_UNIQUE, lock, id)
    redis.call('ZADD', K_UNIQUE_EXP, now + lock_ttl, lock)
  end
  tally('e|' .. task_name(id, nil, msg), 1)
  local state = 'pending'
  if blocked then state = 'blocked' elseif due > now then state = 'scheduled' end
  -- Built by hand: cjson.encode of a fresh record was a measurable share of the call.
  local info = '{"state":"' .. state .. '","attempts":0,"max_retries":' .. max_retries
    .. ',"priority":' .. priority .. ',"enqueued_at":' .. now .. ',"run_after":' .. due
  if lock ~= '' then info = info .. ',"unique_key":' .. cjson.encode(lock) end
  if #msg > HEAD_BYTES then info = info .. ',"head":' .. cjson.encode(message_head(msg)) end
  if limits and limits ~= '' then info = info .. ',"limits":' .. limits end
  if fair and fair ~= '' then info = info .. ',"fair":' .. cjson.encode(fair) end
  if expires_at then info = info .. ',"expires_at":' .. string.format('%d', expires_at) end
  if wf and wf ~= '' then info = info .. ',"wf":' .. wf end
  redis.call('HSET', K_INFO, id, info .. '}')
  if state == 'blocked' then
    redis.call('ZADD', K_BLOCKED, now, id)
  elseif state == 'scheduled' then
    redis.call('ZADD', K_SCHEDULED, due, id)
  else
    redis.call('ZADD', K_PENDING, tail_score(fair, priority), id)
  end
  return 'ok', state, due, true, now
end

-- Periodic entries (cron_fire.lua, cron_enable.lua) keep a state per entry in the queue's
-- cron hash, and a history list per entry.
local CRON_HISTORY_KEEP = 100

-- The entry's stored state ({last, spec, enabled, task}), or nil when missing or damaged;
-- and whether anything at all is stored under its name.
local function cron_state(hash, name)
  local raw = redis.call('HGET', hash, name)
  if not raw then return nil, false end
  local ok, decoded = pcall(cjson.decode, raw)
  if ok and type(decoded) == 'table' and tonumber(decoded.last) then return decoded, true end
  return nil, true
end

local function cron_note(history, tick, now, outcome, id)
  redis.call('LPUSH', history, cjson.encode({tick = tick, at = now, outcome = outcome,
                                            id = id or ''}))
  redis.call('LTRIM', history, 0, CRON_HISTORY_KEEP - 1)
end

-- Bulk jobs (bulk_*.lua): "run all" / "delete all" / "cancel all" over one state of the
-- queue, one JSON record each in the queue's bulk hash (KEYS[25]). Statuses: queued,
-- running, done, failed.
local BULK_SETS = {pending = K_PENDING, scheduled = K_SCHEDULED, retry = K_RETRY,
                   dead = K_DEAD, completed = K_COMPLETED,
                   waiting = K_WAITING, cancelled = K_CANCELLED,
                   expired = K_EXPIRED, blocked = K_BLOCKED,
                   active = K_ACTIVE}  -- active: only cancel
local BULK_ACTIONS = {requeue = {scheduled = true, retry = true, dead = true},
                      delete = {pending = true, scheduled = true, retry = true, dead = true,
                                completed = true, waiting = true, cancelled = true,
                                expired = true, blocked = true},
                      cancel = {pending = true, scheduled = true, retry = true,
                                waiting = true, blocked = true, active = true}}

-- The job's record, or nil when it is missing or not a job we could run (outside damage
-- is left for the readers to show, never acted on).
local function bulk_job(hash, id)
  local raw = redis.call('HGET', hash, id)
  if not raw then return nil end
  local ok, job = pcall(cjson.decode, raw)
  if not ok or type(job) ~= 'table' or type(job.status) ~= 'string'
      or not BULK_ACTIONS[job.action] or not BULK_ACTIONS[job.action][job.state]
      or not is_whole(job.done) or not is_whole(job.total) then
    return nil
  end
  job.id = id  -- the field is the id, whatever the record says
  return job
end
