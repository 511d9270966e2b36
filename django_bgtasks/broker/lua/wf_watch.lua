-- wf_watch: make tasks of this queue report their end to a barrier (depends_on): each
-- one's record gets {workflow id, index} in `wf`, so the transition that ends it writes its
-- outcome to the outbox (announce_final). A task already ended cannot report any more: its
-- state, result and error are returned instead, and the caller reports them itself.
-- KEYS: the queue's keys.
-- ARGV: workflow id, then pairs: task id, member index.
-- Returns: a flat list, 4 entries per task: state ('watched' = will report; a final state;
--          'missing'; 'refused': it has as many dependents as a task may have), result JSON (completed and kept, else ''), error ('' = none), ''.
local wf_id = ARGV[1]
local WATCHERS_MOST = 1000  -- barriers one task reports to (is_wf refuses more)
local out = {}
local FINAL = {{'completed', K_COMPLETED}, {'dead', K_DEAD}, {'cancelled', K_CANCELLED},
               {'expired', K_EXPIRED}}

local function reply(a, b, c)
  out[#out + 1] = a
  out[#out + 1] = b
  out[#out + 1] = c
  out[#out + 1] = ''
end

for i = 2, #ARGV, 2 do
  local id, index = ARGV[i], tonumber(ARGV[i + 1])
  local info, problem = get_info(id)
  local ended = nil
  for _, pair in ipairs(FINAL) do
    if not ended and redis.call('ZSCORE', pair[2], id) then ended = pair[1] end
  end
  if ended then
    local why = info.last_error or ''
    if ended == 'cancelled' and is_cancel(info.cancel) then why = 'cancelled by ' .. info.cancel.by end
    if ended == 'expired' then why = 'expired before it started' end
    reply(ended, redis.call('HGET', K_RESULT, id) or '', why)
  elseif problem then
    reply('missing', '', '')
  else
    local targets = {}
    if is_wf(info.wf) then targets = info.wf end
    local known = false
    for _, t in ipairs(targets) do
      if t[1] == wf_id and t[2] == index then known = true end
    end
    if known then
      reply('watched', '', '')
    elseif #targets >= WATCHERS_MOST then
      reply('refused', '', 'it has ' .. WATCHERS_MOST .. ' dependents already')
    else
      table.insert(targets, {wf_id, index})
      info.wf = targets
      put_info(id, info)
      reply('watched', '', '')
    end
  end
end
return out
