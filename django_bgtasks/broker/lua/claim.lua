-- claim: acknowledge a worker's finished tasks, then claim up to `limit` pending tasks
-- with a lease, in one call (one round trip per batch, not per task).
-- KEYS: the queue's keys, then KEYS[28] = processed counter, KEYS[29] = failed counter
--       (today's, chosen by the caller), KEYS[30] = the queue's claims hash (worker id ->
--       JSON [claim_seq, id, attempt, id, attempt...] of its last claim).
-- ARGV: worker_id, lease_ms, limit, dead_max_tasks, dead_max_age_ms, wake_channel,
--       claim_seq ('' = this caller keeps no claim sequence), known_seq (the last
--       claim_seq whose reply reached the caller),
--       n_acks, then 7 fields per ack: id, attempt, outcome, a, b, c, task name ('' =
--         unknown: read from its message, for the metrics) where outcome is
--         'done'    a = result JSON ('' = none), b = result_ttl_ms ('' = drop the task),
--                   c = progress JSON ('' = as the renewals left it; also below)
--         'retry'   a = delay_ms, b = error, c = traceback
--         'dead'    a = progress, b = error, c = traceback
--         'cancelled' a = progress, b = error, c = traceback (never retried)
--         'requeue' (graceful shutdown: back to the head of pending, attempt not counted)
-- A run whose cancel was requested (info.cancel) ends cancelled unless it succeeded: a
-- failure is not retried, a requeue does not run it again.
-- Tasks with limits (docs/limits.md) are claimed only within them: one over a limit waits
-- (state 'waiting', no attempt counted) until a run of that limit ends or a token is due.
-- Returns: {ignored_ids, claimed, killed, expired, forward} where claimed is a flat list
--          id, msg, attempt, killed a flat list id, error for the tasks no worker could run
--          (no message, a damaged record, an id that is not text): they went to the dead
--          queue here; expired: the ids of popped tasks past their expiry, ended 'expired'
--          here; forward: a flat list id, outbox entry of the workflow members that ended
--          in this call (the entries wait in the queue's outbox for the worker's forwarder).
-- An ack applies only while the task is still this attempt's (the attempt is its lease
-- token): active, or recovered since and started by nobody (regain_lost). So a resent
-- call changes nothing, and a late ack counts unless another attempt has begun.
-- A claim whose reply never reached its worker (the socket timed out while Redis still
-- ran the call) is undone by the worker's next call: its tasks, which that worker never
-- saw, go back to the head of pending with their attempt not counted.
local K_CLAIMS = KEYS[30]
local worker, lease_ms, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local dead_max, dead_age, channel = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local claim_seq, known_seq = ARGV[7], ARGV[8]
local n_acks = tonumber(ARGV[9])
local now = now_ms()
local ignored, processed, failed, requeued = {}, 0, 0, 0
-- An ack's outcome -> the metric's outcome label.
local RUN_OUTCOMES = {done = 'succeeded', retry = 'retried', dead = 'dead', cancelled = 'cancelled'}
CACHE_LIMITS = true  -- each limit read and written once per call (flush_limits, at the end)
METRICS = {}  -- one write per field and call (flush_metrics, at the end)

-- Histograms (_common.lua, "Metrics"): a call's observations are gathered by kind ('l'
-- latency at start, 'd' duration at the end), task name and outcome ('' for 'l'), and
-- their fields' names built once per call at the end, not once per task.
-- Bucket b counts observations <= METRIC_BUCKETS[b] ms, #METRIC_BUCKETS + 1 the rest;
-- broker/metrics.py has the same bounds.
local METRIC_BUCKETS = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
                        60000, 300000, 1800000}
local HISTS = {l = {}, d = {}}
local function observe(kind, name, outcome, ms)
  if ms < 0 then ms = 0 end
  local by_name = HISTS[kind]
  local by_outcome = by_name[name]
  if not by_outcome then
    by_outcome = {}
    by_name[name] = by_outcome
  end
  local h = by_outcome[outcome]
  if not h then
    h = {t = 0}
    by_outcome[outcome] = h
  end
  local b = 1
  while b <= #METRIC_BUCKETS and ms > METRIC_BUCKETS[b] do b = b + 1 end
  h[b] = (h[b] or 0) + 1
  h.t = h.t + ms
end
local function flush_histograms()
  for kind, by_name in pairs(HISTS) do
    for name, by_outcome in pairs(by_name) do
      for outcome, h in pairs(by_outcome) do
        local tail = name
        if outcome ~= '' then tail = name .. '|' .. outcome end
        for b = 1, #METRIC_BUCKETS + 1 do
          if h[b] then redis.call('HINCRBY', K_METRICS, kind .. '|' .. tail .. '|' .. b, h[b]) end
        end
        redis.call('HINCRBY', K_METRICS, kind .. 's|' .. tail, h.t)
      end
    end
  end
end

-- Back to the head of pending, this attempt not counted (a shutdown's or a lost claim's).
local function put_back(id, info)
  if info.held then flow().release_limits(info, now) end
  if is_cancel(info.cancel) then return end_cancelled(id, info, now, '', '') end
  info.state = 'pending'
  info.attempts = info.attempts - 1
  info.started_at = nil
  info.worker = nil
  put_info(id, info)
  redis.call('ZADD', K_PENDING, pending_score(info.priority, true), id)
  requeued = requeued + 1
end

local last_claim = claim_seq ~= '' and redis.call('HGET', K_CLAIMS, worker)
if last_claim then
  local ok, record = pcall(cjson.decode, last_claim)
  if ok and type(record) == 'table' and tostring(record[1]) ~= known_seq then
    for i = #record - 1, 2, -2 do  -- backwards: they keep their order at the head
      local id, attempt = record[i], record[i + 1]
      local info, problem = get_info(id)
      if not problem and info.state == 'active' and info.attempts == attempt
          and info.worker == worker and redis.call('ZREM', K_ACTIVE, id) == 1 then
        put_back(id, info)
      end
    end
  end
end

-- Why a popped task cannot be handed to a worker, or nil. A worker reports on a task by
-- its id as text, and runs it from its message and record: without those it would run on
-- guesses, or its outcome could never reach it (the task would loop through lease expiry).
local function unusable(id, msg, problem)
  if not is_utf8(id) then
    return 'InvalidTaskId: the task id is not UTF-8 text, so no worker could report on it: '
      .. excerpt(id)
  end
  if not msg then return "InvalidTaskMessage: the task's message is missing from Redis" end
  if problem then return "InvalidTaskRecord: the task's record in Redis " .. problem end
  return nil
end

for i = 0, n_acks - 1 do
  local base = 10 + i * 7
  local id, attempt, outcome = ARGV[base], tonumber(ARGV[base + 1]), ARGV[base + 2]
  local a, b, c, name = ARGV[base + 3], ARGV[base + 4], ARGV[base + 5], ARGV[base + 6]
  local info, problem = get_info(id)
  if problem or info.attempts ~= attempt or not (
      (info.state == 'active' and redis.call('ZSCORE', K_ACTIVE, id))
      or regain_lost(id, info, attempt)) then
    table.insert(ignored, id)
  else
    redis.call('ZREM', K_ACTIVE, id)
    if outcome ~= 'requeue' then
      -- This run's end is counted here, with its duration (Redis' clock), not by
      -- announce_final. Read before a 'done' without a result forgets the message.
      local ran = type(info.started_at) == 'number' and now - info.started_at or 0
      local kind = RUN_OUTCOMES[(outcome == 'retry' or outcome == 'dead')
                                and is_cancel(info.cancel) and 'cancelled' or outcome]
      observe('d', name ~= '' and name or task_name(id, info), kind, ran)
      COUNTED = id
    end
    -- put_back releases its own
    if outcome ~= 'requeue' and info.held then flow().release_limits(info, now) end
    if (outcome == 'retry' or outcome == 'dead') and is_cancel(info.cancel) then
      if outcome == 'retry' then a = '' end
      outcome = 'cancelled'
    end
    if outcome == 'done' then
      processed = processed + 1
      release_unique(id, info)
      if b ~= '' then
        if c ~= '' then apply_progress(info, c, now) end
        info.state = 'completed'
        info.finished_at = now
        put_info(id, info)
        if a ~= '' then redis.call('HSET', K_RESULT, id, a) end
        redis.call('ZADD', K_COMPLETED, now + tonumber(b), id)
      else
        forget(id)
      end
      announce_final(id, 'completed', info, a ~= '' and a or 'null')
    elseif outcome == 'retry' then
      processed, failed = processed + 1, failed + 1
      local due = now + tonumber(a)
      info.state = 'retry'
      info.run_after = due
      info.last_error = b
      put_info(id, info)
      append_error(id, error_entry(info, now, b, c))
      redis.call('ZADD', K_RETRY, due, id)
      wake_if_earliest(K_RETRY, id, due, channel)
    elseif outcome == 'dead' then
      processed, failed = processed + 1, failed + 1
      if a ~= '' then apply_progress(info, a, now) end
      kill(id, info, now, b, c, dead_max, dead_age)
    elseif outcome == 'cancelled' then
      processed = processed + 1
      if a ~= '' then apply_progress(info, a, now) end
      end_cancelled(id, info, now, b, c)
    else -- requeue
      put_back(id, info)
    end
  end
end

COUNTED = nil
notify(requeued)

-- A task over one of its limits is not claimed: it waits (park), charged no attempt, and
-- the claim takes the next one instead, up to PARK_MAX of them per call (bounded work);
-- so does one that expired.
local PARK_MAX = 1000
local claimed, killed, expired = {}, {}, {}
if limit > 0 and redis.call('EXISTS', K_PAUSED) == 0 then
  local wanted, parked, popped_any = limit, 0, false
  while wanted > 0 do
    local popped = redis.call('ZPOPMIN', K_PENDING, wanted)
    if #popped == 0 then break end
    popped_any = true
    local parked_now = 0
    for i = 1, #popped, 2 do
      local id = popped[i]
      local msg = redis.call('HGET', K_MSG, id)
      local info, problem = get_info(id)
      local why = unusable(id, msg, problem)
      local admitted, lid, reason, due = true, nil, nil, nil
      -- Past its expiry (Redis' clock), it ends 'expired' here: never run, no attempt
      -- counted, no limit slot taken. Without an expiry: one field test.
      local gone = not why and info.expires_at ~= nil and expire_if_due(id, info, now)
      if not why and not gone and info.limits ~= nil and not is_limits(info.limits) then
        why = "InvalidTaskRecord: the task's record in Redis has damaged limits: "
          .. excerpt(cjson.encode(info.limits))
      end
      if not why and not gone and info.limits then
        admitted, lid, reason, due = flow().admit(info.limits, now)
        info.woken = nil
      end
      if why then
        processed, failed = processed + 1, failed + 1
        kill(id, info, now, why, '', dead_max, dead_age)
        table.insert(killed, id)
        table.insert(killed, why)
      elseif gone then
        table.insert(expired, id)
        parked_now = parked_now + 1  -- a thread left without work, as by a parked task
      elseif not admitted then
        flow().park(id, info, tonumber(popped[i + 1]), lid, reason, due, now, channel)
        flow().pass_on(info.limits, lid)
        parked_now = parked_now + 1
      else
        local due = info.run_after or info.enqueued_at
        observe('l', task_name(id, nil, msg), '', type(due) == 'number' and now - due or 0)
        info.state = 'active'
        info.attempts = info.attempts + 1
        info.started_at = now
        info.worker = worker
        info.lost = nil
        if info.limits then info.held, info.waiting_since = true, nil end
        put_info(id, info)
        redis.call('ZADD', K_ACTIVE, now + lease_ms, id)
        table.insert(claimed, id)
        table.insert(claimed, msg)
        table.insert(claimed, info.attempts)
      end
    end
    parked = parked + parked_now
    -- Only a parked task leaves a thread without work: take another in its place.
    if parked_now == 0 or parked >= PARK_MAX then break end
    wanted = limit - #claimed / 3
  end
  -- Another idle worker may take what this claim left behind.
  if popped_any and redis.call('ZCARD', K_PENDING) > 0 then notify(1) end
end

-- What this call claimed, until the worker's next call says it got the reply.
if claim_seq ~= '' then
  if #claimed > 0 then
    local record = {tonumber(claim_seq)}
    for i = 1, #claimed, 3 do
      record[#record + 1] = claimed[i]
      record[#record + 1] = claimed[i + 2]
    end
    redis.call('HSET', K_CLAIMS, worker, cjson.encode(record))
  elseif last_claim then
    redis.call('HDEL', K_CLAIMS, worker)
  end
end

local ttl = 90 * 24 * 3600
if processed > 0 then
  redis.call('INCRBY', KEYS[28], processed)
  redis.call('EXPIRE', KEYS[28], ttl)
end
if failed > 0 then
  redis.call('INCRBY', KEYS[29], failed)
  redis.call('EXPIRE', KEYS[29], ttl)
end
if FLOW then FLOW.flush_limits() end
flush_metrics()
flush_histograms()
return {ignored, claimed, killed, expired, FORWARD}
