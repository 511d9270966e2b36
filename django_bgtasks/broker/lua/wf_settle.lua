-- wf_settle: take forwarded outcomes out of a queue's outbox, each only while it is still
-- the one forwarded: a newer end of the same task (a dead member requeued, then done) was
-- written meanwhile and waits for its own forwarding. It runs without the queue prelude
-- (once per forwarded batch: the prelude would be most of its cost).
-- KEYS[1]: the queue's outbox (wfout).
-- ARGV: pairs: task id, the outbox entry as it was read.
-- Returns: how many were taken out.
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return removed
