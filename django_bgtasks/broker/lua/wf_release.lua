-- wf_release: a workflow's barrier released these members (its next step, or the
-- on_complete callback). Each leaves 'blocked' for pending (scheduled while its run_after
-- is ahead), with the step's input spliced in as its first argument. A member that is not
-- blocked (released already, ended, deleted) is left alone, so a release applied twice
-- (its forwarder died and another one replayed it) changes nothing: a callback is enqueued
-- exactly once. A member the workflow itself cancelled (an earlier step failed) is brought
-- back the same way: a dead member requeued by hand, which then succeeds, resumes it.
-- KEYS: the queue's keys.
-- ARGV: wake_channel, the "by" of the workflow's own cancels ('workflow <id>'), the input
--       (JSON; '' = none added), then the member ids.
-- Returns: {released ids, ended} (ended: a flat list id, outbox entry of the members past
--          their `expires`, ended 'expired' here, as every workflow member's end is noted).
local channel, workflow_by, input = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local released = {}
local pushed = 0

-- The message with `input` as its first positional argument. Messages are written by
-- TaskMessage.encode, whose field order is id, name, queue, args: the first '"args":[' is
-- the top-level one (a JSON string cannot hold a bare quote). Text is spliced, never
-- decoded and encoded again: cjson would round floats to 14 digits.
local function with_input(msg)
  if input == '' then return msg end
  local at = string.find(msg, '"args":[', 1, true)
  if not at then return nil end
  local pos = at + 8
  local sep = ','
  if string.sub(msg, pos, pos) == ']' then sep = '' end
  return string.sub(msg, 1, pos - 1) .. input .. sep .. string.sub(msg, pos)
end

local function cancelled_by_workflow(info)
  return is_cancel(info.cancel)
    and string.sub(info.cancel.by, 1, #workflow_by) == workflow_by
end

for i = 4, #ARGV do
  local id = ARGV[i]
  local info, problem = get_info(id)
  local free = redis.call('ZREM', K_BLOCKED, id) == 1
  if not free and not problem and info.state == 'cancelled' and cancelled_by_workflow(info)
      and redis.call('ZREM', K_CANCELLED, id) == 1 then
    info.cancel, info.finished_at = nil, nil
    free = true
  end
  if free then
    local msg = redis.call('HGET', K_MSG, id)
    local spliced = msg and with_input(msg)
    if spliced then redis.call('HSET', K_MSG, id, spliced) end
    -- A damaged message or record goes on as it is: the claim sends it to the dead queue
    -- with the reason (to_pending), which the workflow hears of.
    if not problem and expire_if_due(id, info, now) then
      -- announce_final noted it in FORWARD
    elseif not problem and type(info.run_after) == 'number' and info.run_after > now then
      info.state = 'scheduled'
      put_info(id, info)
      redis.call('ZADD', K_SCHEDULED, info.run_after, id)
      wake_if_earliest(K_SCHEDULED, id, info.run_after, channel)
      table.insert(released, id)
    else
      to_pending(id, info, problem)
      pushed = pushed + 1
      table.insert(released, id)
    end
  end
end
notify(pushed)
return {released, FORWARD}
