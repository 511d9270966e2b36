-- delete: remove tasks in any state but active (a running task cannot be recalled).
-- KEYS: the queue's keys.
-- ARGV: ids
-- Returns: {deleted_ids, refused_active_ids}
local deleted, refused = {}, {}
for _, id in ipairs(ARGV) do
  local info = get_info(id)
  if info and info.state == 'active' and redis.call('ZSCORE', K_ACTIVE, id) then
    table.insert(refused, id)
  elseif info or redis.call('HEXISTS', K_MSG, id) == 1 then
    for _, set in ipairs({K_PENDING, K_SCHEDULED, K_RETRY, K_DEAD, K_COMPLETED}) do
      redis.call('ZREM', set, id)
    end
    if info then release_unique(id, info) end
    forget(id)
    table.insert(deleted, id)
  end
end
return {deleted, refused}
