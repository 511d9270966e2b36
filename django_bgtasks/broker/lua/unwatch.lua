-- unwatch: a get_result(wait=...) caller stops waiting (its time is up, or it failed): its
-- registration is taken back (the last waiter's removes the field), and what it may have
-- missed as it stopped is reported.
-- KEYS: the queue's keys.
-- ARGV: id, the last stream id the caller read
-- Returns: {state, entry id}: the end announced for the task after that stream id and its
--          entry's id | the task's state now and false | false, false when it is gone.
local id, last = ARGV[1], ARGV[2]
-- No field: the task's end removed it (a decrement would leave a count of -1 behind).
if redis.call('HEXISTS', K_RWAIT, id) == 1
    and redis.call('HINCRBY', K_RWAIT, id, -1) <= 0 then
  redis.call('HDEL', K_RWAIT, id)
end
local SCAN_MAX = 1000  -- entries looked through: bounded work (a caller reads as they come)
for _, entry in ipairs(redis.call('XRANGE', K_FINISHED, '(' .. last, '+', 'COUNT', SCAN_MAX)) do
  local fields = entry[2]
  if fields[2] == id then return {fields[4], entry[1]} end
end
if redis.call('HEXISTS', K_INFO, id) == 0 and redis.call('HEXISTS', K_MSG, id) == 0 then
  return {false, false}
end
return {get_info(id).state, false}
