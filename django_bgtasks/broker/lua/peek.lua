-- peek: what the admin and the command line show of tasks, in a bounded number of bytes
-- whatever a task holds (writes nothing). A list reads each task's head (message_head:
-- its name and first arguments), its message's size and its record; a task's page also
-- reads its message, error history and result whole when they are at most `whole` bytes,
-- else their first `cut` bytes.
-- KEYS: the queue's keys (see _common.lua).
-- ARGV: whole (0: heads only), cut, then task ids
-- Returns: a flat list, per id: head (false: no message), message size, record (false:
--          none; cut to its known fields, each string at most RECORD_TEXT bytes, when over
--          RECORD_BYTES); with whole > 0, then: message, error history, its size, result,
--          its size (each false when absent)
local whole, cut = tonumber(ARGV[1]), tonumber(ARGV[2])
-- A record holds a few numbers and one error line (the worker keeps it under 2,000
-- characters): only outside damage makes one bigger.
local RECORD_BYTES, RECORD_TEXT = 16384, 2000
local out = {}

local function push(...)
  for _, value in ipairs({...}) do out[#out + 1] = value end
end

local function record_of(raw, stored)
  if not raw or #raw <= RECORD_BYTES then return raw end
  if not stored then return string.sub(raw, 1, RECORD_BYTES) end  -- unreadable anyway
  local info = sanitize(stored)
  for name, value in pairs(info) do
    if type(value) == 'string' then info[name] = string.sub(value, 1, RECORD_TEXT) end
  end
  return cjson.encode(info)
end

-- A value up to `whole` bytes, else its first `cut` bytes (inside Redis, it is copied
-- whole once: one task's page). Returns it (false when absent) and its size.
local function bounded(hash, id)
  local size = redis.call('HSTRLEN', hash, id)
  local value = redis.call('HGET', hash, id)
  if value and size > whole then value = string.sub(value, 1, cut) end
  return value, size
end

for i = 3, #ARGV do
  local id = ARGV[i]
  local size = redis.call('HSTRLEN', K_MSG, id)
  local raw = redis.call('HGET', K_INFO, id)
  local stored = nil
  if raw and (size > HEAD_BYTES or #raw > RECORD_BYTES) then
    local ok, decoded = pcall(cjson.decode, raw)
    if ok and type(decoded) == 'table' then stored = decoded end
  end
  local head
  if size <= HEAD_BYTES then
    head = redis.call('HGET', K_MSG, id)
  elseif stored and type(stored.head) == 'string' then
    head = stored.head
  else  -- written before records kept a head, or the record is damaged
    head = message_head(redis.call('HGET', K_MSG, id))
  end
  push(head, size, record_of(raw, stored))
  if whole > 0 then
    local msg = bounded(K_MSG, id)
    local errors, errors_size = bounded(K_ERRORS, id)
    local result, result_size = bounded(K_RESULT, id)
    push(msg, errors, errors_size, result, result_size)
  end
end
return out
