-- requeue: "run now": move scheduled, retry or dead tasks to the tail of pending.
-- A dead task keeps its attempt count, so it gets exactly one more try.
-- KEYS: the queue's keys.
-- ARGV: ids
-- Returns: the ids moved (others were in no movable state).
local moved = {}
local sets = {scheduled = K_SCHEDULED, retry = K_RETRY, dead = K_DEAD}
for _, id in ipairs(ARGV) do
  local info = get_info(id)
  local source = info and sets[info.state]
  if source and redis.call('ZREM', source, id) == 1 then
    info.state = 'pending'
    put_info(id, info)
    redis.call('ZADD', K_PENDING, pending_score(info.priority, false), id)
    table.insert(moved, id)
  end
end
notify(#moved)
return moved
