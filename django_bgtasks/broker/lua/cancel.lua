-- cancel: queued tasks (pending, scheduled, retry, waiting) end 'cancelled' at once and
-- never run; a running one gets the request in its record (its worker stops it); ended
-- ones are left as they are (see cancel_ids). The caller batches the ids.
-- KEYS: the queue's keys.
-- ARGV: by (who asks, '' when unknown), then ids
-- Returns: {cancelled ids, running ids asked to stop, {id, state, ...} left as they were
--           (ended, or running with a damaged record), ids not found}
local ids = {}
for i = 2, #ARGV do ids[i - 1] = ARGV[i] end
local cancelled, requested, ended, missing = cancel_ids(ids, ARGV[1], now_ms())
return {cancelled, requested, ended, missing}
