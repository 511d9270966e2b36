-- watch: a get_result(wait=...) caller begins to wait for a task of this queue. Checking
-- the task and registering as its waiter are one step, so that no end can fall between
-- them: a task that ends after this call finds its waiter (announce_final).
-- KEYS: the queue's keys.
-- ARGV: id
-- Returns: {status, stream id, message, record, errors, result}: status 'absent' (no such
--          task in this queue; nothing written, nothing else returned), 'final' (it has
--          ended already; nothing written) or 'waiting' (registered in K_RWAIT: its end
--          will be an entry of K_FINISHED after the stream id returned).
-- The states a task ends in (keys.FINAL_STATES). Here, not in _common.lua: a table made
-- in the prelude is made on every call of every script.
local FINAL_STATES = {completed = true, dead = true, cancelled = true, expired = true}
local id = ARGV[1]
local msg, raw = redis.call('HGET', K_MSG, id), redis.call('HGET', K_INFO, id)
if not msg and not raw then return {'absent'} end
local status, last = 'final', ''
if not FINAL_STATES[get_info(id).state] then
  redis.call('HINCRBY', K_RWAIT, id, 1)
  -- The newest entry, not the stream's last generated id: what follows it is all new.
  local newest = redis.call('XREVRANGE', K_FINISHED, '+', '-', 'COUNT', 1)
  last = newest[1] and newest[1][1] or '0-0'
  status = 'waiting'
end
return {status, last, msg or false, raw or false, redis.call('HGET', K_ERRORS, id) or false,
        redis.call('HGET', K_RESULT, id) or false}
