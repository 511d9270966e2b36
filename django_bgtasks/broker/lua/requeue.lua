-- requeue: "run now": move scheduled, retry or dead tasks to the tail of pending.
-- A dead task keeps its attempt count, so it gets exactly one more try.
-- KEYS: the queue's keys.
-- ARGV: ids
-- Returns: the ids moved (others were in no movable state).
local moved = requeue_ids(ARGV)
notify(#moved)
return moved
