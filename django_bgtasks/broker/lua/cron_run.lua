-- cron_run: "run now" for a periodic entry: enqueue its task with the entry's arguments,
-- outside its schedule, and note the run in the entry's history, in one call. The
-- schedule's mark is left alone (the next tick still fires); the task becomes the entry's
-- latest, so overlap="skip" waits for it too.
-- KEYS: the queue's keys, then KEYS[28] = the queue's cron state hash, KEYS[29] = the
--       entry's history list, KEYS[30] = this request's marker (kept a day).
-- ARGV: name, task id (one per request: a resent request finds its task), message JSON,
--       priority, max_retries, limits JSON and fair key ('' = none: see add_task)
-- Returns: {status, state}: 'ok' and 'pending', or 'exists' (another message holds the id)
local REQUEST_KEEP_MS = 24 * 3600 * 1000
local name, id, msg = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
-- A request sent again after its task finished and was forgotten must not run it twice.
if redis.call('EXISTS', KEYS[30]) == 1 then return {'exists', ''} end
local status, state, _, created = add_task(id, msg, tonumber(ARGV[4]), now, '', 0,
                                           tonumber(ARGV[5]), now, ARGV[6], ARGV[7])
if created then
  local entry = cron_state(KEYS[28], name)
  if entry then
    entry.task = id
    redis.call('HSET', KEYS[28], name, cjson.encode(entry))
  end
  redis.call('SET', KEYS[30], '1', 'PX', REQUEST_KEEP_MS)
  cron_note(KEYS[29], now, now, 'run now', id)
  notify(1)
end
return {status, state}
