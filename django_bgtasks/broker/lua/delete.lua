-- delete: remove tasks in any state but active (a running task cannot be recalled).
-- KEYS: the queue's keys.
-- ARGV: ids
-- Returns: {deleted_ids, refused_active_ids}
local deleted, refused = {}, {}
for _, id in ipairs(ARGV) do
  -- The active set, not the record, says whether it runs: a record may be damaged.
  if redis.call('ZSCORE', K_ACTIVE, id) then
    table.insert(refused, id)
  else
    -- An id may sit in a set with no data at all (outside damage): it goes too.
    local found = redis.call('HEXISTS', K_MSG, id) + redis.call('HEXISTS', K_INFO, id)
    for _, set in ipairs({K_PENDING, K_SCHEDULED, K_RETRY, K_DEAD, K_COMPLETED}) do
      found = found + redis.call('ZREM', set, id)
    end
    if found > 0 then
      local info = get_info(id)
      release_unique(id, info)
      forget(id)
      table.insert(deleted, id)
    end
  end
end
return {deleted, refused}
