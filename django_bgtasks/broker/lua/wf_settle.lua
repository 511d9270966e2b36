-- wf_settle: take forwarded outcomes out of the queue's outbox, each only while it is still
-- the one forwarded: a newer end of the same task (a dead member requeued, then done) was
-- written meanwhile and waits for its own forwarding.
-- KEYS: the queue's keys.
-- ARGV: pairs: task id, the outbox entry as it was read.
-- Returns: how many were taken out.
local removed = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', K_WFOUT, ARGV[i]) == ARGV[i + 1] then
    removed = removed + redis.call('HDEL', K_WFOUT, ARGV[i])
  end
end
return removed
