-- pending_age: how long the oldest pending task of a queue has been due (read only).
-- KEYS[1] = the queue's pending ZSET, KEYS[2] = its record hash.
-- ARGV: none.
-- Returns: {age_ms | false (nothing pending), now_ms, heads looked at}.
-- Pending is ordered by priority, then FIFO: the oldest task of each priority is at the
-- head of that priority's band of scores (_common.lua's pending_score: band =
-- floor(score / 2e13), one per priority), so the oldest task overall is one of the bands'
-- heads. One ZRANGEBYSCORE per priority in use (at most 201), however many tasks wait.
-- Its age counts from when it was due (run_after; enqueued_at for an old record). A task
-- put back at the head keeps its due time, so it may be older than a band's head: close
-- enough for a gauge, and never younger than the truth by more than that one task.
local BAND = 2e13
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local oldest, heads = false, 0
local from = '-inf'
while heads < 201 do
  local head = redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #head == 0 then break end
  heads = heads + 1
  local raw = redis.call('HGET', KEYS[2], head[1])
  if raw then
    local ok, info = pcall(cjson.decode, raw)
    if ok and type(info) == 'table' then
      local due = info.run_after
      if type(due) ~= 'number' then due = info.enqueued_at end
      if type(due) == 'number' and (not oldest or now - due > oldest) then
        oldest = now - due
      end
    end
  end
  from = string.format('%.0f', (math.floor(tonumber(head[2]) / BAND) + 1) * BAND)
end
if oldest and oldest < 0 then oldest = 0 end
return {oldest, now, heads}
