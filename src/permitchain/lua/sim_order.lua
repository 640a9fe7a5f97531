-- sim_order.lua: a reduce-only market order on the simulated exchange, or the trigger of our
-- stop, decided and recorded in one step from the server's state. For an order the caller
-- passes the request (side, quantity, client order id) and the fault mode (or 'config': the
-- script reads it from the config hash); the script reads the order record of the client
-- order id, the filters and the position, decides, and writes the order and the position's
-- new amount together, and the fill record when the caller passes the fills stream.
--
-- KEYS[1]  position hash   quantum:sim:{<SYMBOL>}:position
-- KEYS[2]  order hash      quantum:sim:{<SYMBOL>}:order:<client_order_id>
-- KEYS[3]  order sequence  quantum:sim:{<SYMBOL>}:order_seq
-- KEYS[4]  filters hash    quantum:sim:{<SYMBOL>}:filters
-- KEYS[5]  stop hash       quantum:sim:{<SYMBOL>}:stop                    (trigger only)
-- KEYS[6]  the stop's order hash  quantum:sim:{<SYMBOL>}:order:<stop id>  (trigger only)
-- An order's KEYS[5] config hash quantum:sim:config and KEYS[6] fills stream quantum:sim:fills,
-- a trigger's KEYS[7] fills stream: optional, given on a single server (outside the symbol's
-- slot on a Cluster, where the caller reads the config and adds the fill record itself).
-- ARGV[1]  order hash TTL in seconds
-- ARGV[2]  now (epoch seconds, the order's created_at and the fill's ts)
-- ARGV[3]  symbol   ARGV[4] client order id (trigger: <stop id>-fill, KEYS[2]'s)
-- ARGV[5]  side (BUY | SELL); trigger: the stop's client order id
-- ARGV[6]  quantity (a plain decimal string); trigger: ''
-- ARGV[7]  order mode: fill | new | reject | timeout | lose_response ('' = fill) | trigger |
--          config (the config hash's order_mode, '' or missing = fill)
-- ARGV[8]  '1' when the config's latency has been served (mode config), else ''
-- ARGV[9]  the fills stream's MAXLEN (~), when it is given
--
-- Mode config: when the config's latency_ms is above 0 and ARGV[8] is not '1', the reply is
-- {'delay', latency_ms} and nothing is written (the caller sleeps, then runs the script again
-- with ARGV[8] '1', under the config as it is then). Else the reply is {'mode', <the mode it
-- decided under>, <the reply below>} (lose_response: the caller hides the answer).
-- Checks, in order (the first that fails decides):
--   mode timeout                            -> {'timeout'}       (nothing placed)
--   mode reject                             -> {'reject', '-2019'}
--   the client order id is taken            -> {'exists', <order hash>}
--   no filters (symbol not listed)          -> {'reject', '-1121'}
--   quantity <= 0 or not a multiple of step -> {'reject', '-1111'}
--   quantity outside [min_qty, max_qty]     -> {'reject', '-4003', min_qty, max_qty}
--   the order would not reduce the position -> {'reject', '-2022'}
-- else the order is recorded (FILLED at the mark, or NEW for mode new) and, when filled, the
-- position's amount moved: {'ok', <order hash>, <fill record>} (the fill record empty when
-- not filled; added to the fills stream here when it is given, else by the caller).
-- trigger: if the stop is still ARGV[5] and live (NEW) and the mark crossed it (SELL: mark <=
-- stop price, BUY: mark >= it), it fills as the order ARGV[4] (mode fill) for min(its
-- quantity, |position|) rounded down to the step, or expires when that is 0 (it would not
-- reduce); the stop and its order hash get the status, filled_qty, avg_price, fill_order_id
-- and triggered_at: {'stop', <stop hash>, <fill record>}. An order already recorded under
-- ARGV[4] is the stop's fill. {'none'}: not live, no mark, not crossed, or its fill rejected
-- (e.g. below the minimum quantity): nothing written.
-- Hashes are name, value lists. Decimals are compared digit by digit, checked against the
-- step and added as integers at their common scale (exact below 2^53); a value beyond that
-- or not a plain decimal is an error reply, and nothing is written (so is a fills stream of
-- another type, or a latency_ms that is not an integer).

local D_MAX = 9007199254740992 -- 2^53

-- a plain decimal string: sign, integer digits, fraction digits; nil if malformed
local function parts(s)
  local neg, int, frac = string.match(s, '^(%-?)(%d*)%.?(%d*)$')
  if neg == nil or int .. frac == '' then return nil end
  return neg, int, frac
end

local function bad(what, s)
  return redis.error_reply('ERR sim_order: ' .. what .. ' is not a plain decimal: ' .. s)
end

-- the canonical form (permitchain.contract.models.fmt_decimal): no leading or trailing zeros
local function norm(s)
  local neg, int, frac = parts(s)
  int = string.gsub(int, '^0+', '')
  frac = string.gsub(frac, '0+$', '')
  if int == '' then int = '0' end
  if int == '0' and frac == '' then return '0' end
  if frac ~= '' then int = int .. '.' .. frac end
  return neg .. int
end

-- the value of s times 10^scale, an integer; nil when it is not exact as a Lua number
local function scaled(s, scale)
  local neg, int, frac = parts(s)
  local digits = string.gsub(int .. frac .. string.rep('0', scale - #frac), '^0+', '')
  if #digits > 16 then return nil end
  local n = tonumber(digits ~= '' and digits or '0')
  if n >= D_MAX then return nil end
  return neg == '-' and -n or n
end

-- an integer at a scale back to its canonical decimal string
local function unscaled(n, scale)
  local digits = string.format('%.0f', math.abs(n))
  digits = string.rep('0', scale + 1 - #digits) .. digits
  local s = string.sub(digits, 1, #digits - scale) .. '.' .. string.sub(digits, #digits - scale + 1)
  return norm((n < 0 and '-' or '') .. s)
end


-- -1, 0 or 1 as the plain decimal a is below, equal to or above b (any size)
local function cmp(a, b)
  local an, ai, af = parts(norm(a))
  local bn, bi, bf = parts(norm(b))
  if an ~= bn then return an == '-' and -1 or 1 end
  local il, fl = math.max(#ai, #bi), math.max(#af, #bf)
  local x = string.rep('0', il - #ai) .. ai .. af .. string.rep('0', fl - #af)
  local y = string.rep('0', il - #bi) .. bi .. bf .. string.rep('0', fl - #bf)
  local c = (x < y and -1) or (x > y and 1) or 0
  return an == '-' and -c or c
end

-- the number of fraction digits of a plain decimal, trailing zeros not counted
local function decimals(s)
  local _, _, frac = parts(norm(s))
  return #frac
end

local function given(v, default)
  if v == false or v == '' then return default end
  return v
end

-- an error reply naming the first of the named strings that is not a plain decimal, or nil
local function unreadable(named)
  for what, s in pairs(named) do
    if parts(s) == nil then return bad(what, s) end
  end
  return nil
end

-- the named decimal strings as integers at their common scale: (values, scale), or
-- (nil, error reply)
local function numbers(named)
  local err = unreadable(named)
  if err then return nil, err end
  local scale = 0
  for _, s in pairs(named) do
    local _, _, frac = parts(s)
    if #frac > scale then scale = #frac end
  end
  local out = {}
  for what, s in pairs(named) do
    out[what] = scaled(s, scale)
    if out[what] == nil then
      return nil, redis.error_reply('ERR sim_order: ' .. what .. ' beyond 2^53 at scale ' .. scale)
    end
  end
  return out, scale
end

local ttl, now, symbol, coid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]

-- the market order of side and quantity under mode, as described above
local function market(side, qty_s, mode)
  if mode == 'timeout' then return {'timeout'} end
  if mode == 'reject' then return {'reject', '-2019'} end
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'exists', redis.call('HGETALL', KEYS[2])} end
  if redis.call('EXISTS', KEYS[4]) == 0 then return {'reject', '-1121'} end
  local f = redis.call('HMGET', KEYS[4], 'step_size', 'min_qty', 'max_qty')
  local p = redis.call('HMGET', KEYS[1], 'amt', 'mark_price', 'entry_price')
  local min_s, max_s, amt_s = given(f[2], '0'), given(f[3], ''), given(p[1], '0')
  local price_s = given(p[2], given(p[3], '0'))
  local step_s = given(f[1], '0')
  local err = unreadable({qty = qty_s, step_size = step_s, min_qty = min_s, amt = amt_s,
    price = price_s, max_qty = max_s ~= '' and max_s or nil})
  if err then return err end
  -- (a multiple of the step has no more decimals than it: checked first, on the strings)
  if cmp(qty_s, '0') <= 0 or cmp(step_s, '0') <= 0 or decimals(qty_s) > decimals(step_s) then
    return {'reject', '-1111'}
  end
  local n, scale = numbers({qty = qty_s, step = step_s, amt = amt_s})
  if n == nil then return scale end
  local qty, amt = n.qty, n.amt
  if math.fmod(qty, n.step) ~= 0 then return {'reject', '-1111'} end
  if cmp(qty_s, min_s) < 0 or (max_s ~= '' and cmp(qty_s, max_s) > 0) then
    return {'reject', '-4003', norm(min_s), max_s ~= '' and norm(max_s) or ''}
  end
  local reduces = (side == 'SELL' and amt > 0) or (side == 'BUY' and amt < 0)
  if not reduces or qty > math.abs(amt) then return {'reject', '-2022'} end

  local fill = mode ~= 'new'
  local qty_n = unscaled(qty, scale)
  local price = norm(price_s)
  local oid = tostring(redis.call('INCR', KEYS[3]))
  local order = {'symbol', symbol, 'client_order_id', coid, 'side', side, 'type', 'MARKET',
    'status', fill and 'FILLED' or 'NEW', 'requested_qty', qty_n,
    'filled_qty', fill and qty_n or '0', 'avg_price', fill and price or '',
    'reduce_only', 'true', 'created_at', now, 'order_id', oid}
  redis.call('HSET', KEYS[2], unpack(order))
  redis.call('EXPIRE', KEYS[2], tonumber(ttl))
  local record = {}
  if fill then
    local after = unscaled(side == 'SELL' and amt - qty or amt + qty, scale)
    redis.call('HSET', KEYS[1], 'amt', after)
    record = {'order_id', oid, 'symbol', symbol, 'client_order_id', coid, 'side', side,
      'qty', qty_n, 'price', price, 'position_before', norm(amt_s), 'position_after', after,
      'ts', now}
  end
  return {'ok', order, record}
end

-- a HGETALL as a table
local function hash(key)
  local flat, h = redis.call('HGETALL', key), {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end

-- the stop's fill: ({status, filled_qty, avg_price, fill_order_id}, the fill record). The
-- fill order already recorded, else a new one of min(requested, |amt|) rounded down to the
-- step; {'EXPIRED', ...} when that is 0. (nil, the market order's reply) when it is refused.
local function stop_fill(side, requested_s, amt_s, mark_s)
  local record = {}
  if redis.call('EXISTS', KEYS[2]) == 0 then
    local step_s = given(redis.call('HGET', KEYS[4], 'step_size'), '0.001')
    local n, scale = numbers({requested = requested_s, amt = amt_s, step = step_s})
    if n == nil then return nil, scale end
    local reduces = (side == 'SELL' and n.amt > 0) or (side == 'BUY' and n.amt < 0)
    local qty = reduces and math.min(n.requested, math.abs(n.amt)) or 0
    if n.step > 0 then qty = qty - math.fmod(qty, n.step) end
    if qty <= 0 then return {'EXPIRED', '0', '', false}, record end
    local res = market(side, unscaled(qty, scale), 'fill')
    if res[1] ~= 'ok' then return nil, res end
    record = res[3]
  end
  local o = hash(KEYS[2])
  return {'FILLED', o.filled_qty, given(o.avg_price, norm(mark_s)), o.order_id}, record
end

-- the stop's trigger, as described above
local function trigger(stop_id)
  local stop = hash(KEYS[5])
  if stop.status ~= 'NEW' or stop.client_order_id ~= stop_id then return {'none'} end
  local p = redis.call('HMGET', KEYS[1], 'amt', 'mark_price')
  local mark_s = given(p[2], '')
  if mark_s == '' then return {'none'} end
  local side = stop.side == 'SELL' and 'SELL' or 'BUY'
  local stop_s = given(stop.stop_price, '0')
  local err = unreadable({mark = mark_s, stop_price = stop_s})
  if err then return err end
  local c = cmp(mark_s, stop_s)
  if not (side == 'SELL' and c <= 0 or side == 'BUY' and c >= 0) then return {'none'} end
  local fill, record = stop_fill(side, given(stop.requested_qty, '0'), given(p[1], '0'), mark_s)
  if fill == nil then
    if record.err then return record end
    return {'none'}
  end
  local update = {'status', fill[1], 'filled_qty', fill[2], 'avg_price', fill[3],
    'triggered_at', now}
  if fill[4] then
    update[#update + 1] = 'fill_order_id'
    update[#update + 1] = fill[4]
  end
  redis.call('HSET', KEYS[5], unpack(update))
  redis.call('HSET', KEYS[6], unpack(update))
  return {'stop', redis.call('HGETALL', KEYS[5]), record}
end

-- the reply, its fill record (its third item) added to the fills stream KEYS[n] if given
local function recorded(res, n)
  local fills = KEYS[n]
  if fills and (res[1] == 'ok' or res[1] == 'stop') and #res[3] > 0 then
    redis.call('XADD', fills, 'MAXLEN', '~', ARGV[9], '*', unpack(res[3]))
  end
  return res
end

-- a fills stream given must be one (or absent) before anything is written
local function fills_unwritable(n)
  if KEYS[n] == nil then return nil end
  local t = redis.call('TYPE', KEYS[n]).ok
  if t == 'stream' or t == 'none' then return nil end
  return redis.error_reply('WRONGTYPE sim_order: the fills stream ' .. KEYS[n] .. ' is a ' .. t)
end

if ARGV[7] == 'trigger' then
  local err = fills_unwritable(7)
  if err then return err end
  return recorded(trigger(ARGV[5]), 7)
end
local err = fills_unwritable(6)
if err then return err end
local mode = ARGV[7]
local from_config = mode == 'config'
if from_config then
  local c = redis.call('HMGET', KEYS[5], 'order_mode', 'latency_ms')
  local latency = given(c[2], '0')
  if not string.match(latency, '^%-?%d+$') then
    return redis.error_reply('ERR sim_order: latency_ms is not an integer: ' .. latency)
  end
  if tonumber(latency) > 0 and ARGV[8] ~= '1' then return {'delay', latency} end
  mode = given(c[1], 'fill')
end
if mode == '' then mode = 'fill' end
local res = recorded(market(ARGV[5], ARGV[6], mode), 6)
if from_config and not res.err then return {'mode', mode, res} end
return res
