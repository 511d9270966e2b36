-- extend: a worker's control call for its running tasks (its heartbeat, a few times a
-- second while it runs any): renew their leases, write the progress they reported, and
-- tell it which of them someone asked to cancel (cancel.lua records the request).
-- KEYS: the queue's keys.
-- ARGV: lease_ms (0: no renewal in this call, only progress and cancel requests), then
--       triples id, attempt, progress (JSON [current, total, message]; '' = unchanged)
-- Returns: {lost_ids, cancel_ids}: (renewing) the ids that are no longer this worker's
-- (recovered, and started again since); the ids whose record holds a cancel request
-- while still this attempt's.
-- A lease that expired and was recovered while nobody started the task again is taken
-- back (regain_lost): the renewal shows its worker is alive and still running it.
local lease_ms = tonumber(ARGV[1])
local now = now_ms()
local lost, cancel = {}, {}
for i = 2, #ARGV, 3 do
  local id, attempt, progress = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  local info, problem = get_info(id)
  local mine = not problem and info.attempts == attempt
  local changed = false
  if lease_ms > 0 then
    if not mine then
      table.insert(lost, id)
    elseif info.state == 'active' and redis.call('ZSCORE', K_ACTIVE, id) then
      redis.call('ZADD', K_ACTIVE, 'XX', now + lease_ms, id)
    elseif regain_lost(id, info, attempt) then
      changed = true
      redis.call('ZADD', K_ACTIVE, now + lease_ms, id)
    else
      table.insert(lost, id)
    end
  end
  if mine and info.state == 'active' and progress ~= ''
      and apply_progress(info, progress, now) then
    changed = true
  end
  if changed then put_info(id, info) end
  if mine and is_cancel(info.cancel) then table.insert(cancel, id) end
end
return {lost, cancel}
