-- forward: move scheduled and retry tasks that are due to pending, and wake the waiters
-- of rate limits whose next token is due (docs/limits.md). A due task past its expiry
-- ends 'expired' instead (Redis' clock).
-- KEYS: the queue's keys.
-- ARGV: limit (per source set)
-- Returns: {moved, more (0/1), next_due_ms|false, now_ms, expired ids}
local limit = tonumber(ARGV[1])
local now = now_ms()
local moved, more, expired = 0, 0, {}
for _, source in ipairs({K_SCHEDULED, K_RETRY}) do
  local ids = redis.call('ZRANGEBYSCORE', source, '-inf', now, 'LIMIT', 0, limit)
  if #ids == limit then more = 1 end
  for _, id in ipairs(ids) do
    redis.call('ZREM', source, id)
    local info, problem = get_info(id)
    if not problem and expire_if_due(id, info, now) then
      expired[#expired + 1] = id
    else
      to_pending(id, info, problem)
      moved = moved + 1
    end
  end
end
notify(moved)
if #redis.call('ZRANGEBYSCORE', K_LWAKE, '-inf', now, 'LIMIT', 0, 1) > 0 then
  moved = moved + flow().wake_due_limits(now, limit)
end
local next_due = false
for _, source in ipairs({K_SCHEDULED, K_RETRY, K_LWAKE}) do
  local head = redis.call('ZRANGE', source, 0, 0, 'WITHSCORES')
  if head[2] and (not next_due or tonumber(head[2]) < next_due) then
    next_due = tonumber(head[2])
  end
end
return {moved, more, next_due, now, expired}
