-- requeue: "run now": move scheduled, retry or dead tasks to the tail of pending.
-- A dead task keeps its attempt count, so it gets exactly one more try.
-- KEYS: the queue's keys.
-- ARGV: ids
-- Returns: the ids moved (others were in no movable state).
local moved = {}
for _, id in ipairs(ARGV) do
  -- The sets say where a task is: its record may be damaged, or disagree.
  local found = 0
  for _, set in ipairs({K_SCHEDULED, K_RETRY, K_DEAD}) do
    found = found + redis.call('ZREM', set, id)
  end
  if found > 0 then
    local info, problem = get_info(id)
    -- A damaged record is left as found: the claim sends the task to the dead queue,
    -- saying what is wrong (its record is sound from then on, and "run now" runs it).
    if not problem then
      info.state = 'pending'
      put_info(id, info)
    end
    redis.call('ZADD', K_PENDING, pending_score(info.priority, false), id)
    table.insert(moved, id)
  end
end
notify(#moved)
return moved
