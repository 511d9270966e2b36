-- limits: what the admin and the command line show of a queue's limits (writes nothing):
-- each limit's state with its rate tokens as of now, how many tasks wait for it, and since
-- when the first of them (the next to start) has been waiting.
-- KEYS: the queue's keys (see _common.lua).
-- ARGV: max (limits returned at most, in HSCAN order)
-- Returns: {now_ms, limits held, then 4 entries per limit: id, state JSON ({run, tok, ts,
--          c, rn, rp}), waiting count, first waiter's waiting_since (ms) | false}
local max = tonumber(ARGV[1])
local now = now_ms()
local out = {now, redis.call('HLEN', K_LIMITS)}
local cursor, seen = '0', 0
repeat
  local scan = redis.call('HSCAN', K_LIMITS, cursor, 'COUNT', 100)
  cursor = scan[1]
  for i = 1, #scan[2], 2 do
    if seen >= max then break end
    local lid = scan[2][i]
    local st = flow().limit_state(lid)
    local rn, rp = tonumber(st.rn) or 0, tonumber(st.rp) or 0
    if rn > 0 and rp > 0 then flow().refill(st, rn, rp, now) end
    local lo, hi = '[' .. lid .. '\0', '[' .. lid .. '\1'
    local first = redis.call('ZRANGEBYLEX', K_LWAIT, lo, hi, 'LIMIT', 0, 1)
    local since = false
    if first[1] then
      local info = get_info(string.sub(first[1], #lid + 20))
      if is_finite(info.waiting_since) then since = info.waiting_since end
    end
    out[#out + 1] = lid
    out[#out + 1] = cjson.encode(st)
    out[#out + 1] = redis.call('ZLEXCOUNT', K_LWAIT, lo, hi)
    out[#out + 1] = since
    seen = seen + 1
  end
until cursor == '0' or seen >= max
return out
