-- wf_settle: take forwarded outcomes out of a queue's outbox, each only while it is still
-- the one forwarded: a newer end of the same task (a dead member requeued, then done) was
-- written meanwhile and waits for its own forwarding. It runs without the queue prelude
-- (once per forwarded batch: the prelude would be most of its cost).
-- KEYS[1]: the queue's outbox (wfout).
-- ARGV: pairs: task id, the outbox entry as it was read.
-- Returns: how many were taken out.
local ids = {}
for i = 1, #ARGV, 2 do ids[#ids + 1] = ARGV[i] end
local stored = redis.call('HMGET', KEYS[1], unpack(ids))
local same = {}
for i = 1, #ids do
  if stored[i] == ARGV[2 * i] then same[#same + 1] = ids[i] end
end
if #same == 0 then return 0 end
return redis.call('HDEL', KEYS[1], unpack(same))
