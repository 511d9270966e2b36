-- delete: remove tasks in any state but active (a running task cannot be recalled).
-- KEYS: the queue's keys.
-- ARGV: ids
-- Returns: {deleted_ids, refused_active_ids}
local deleted, refused = delete_ids(ARGV)
return {deleted, refused}
