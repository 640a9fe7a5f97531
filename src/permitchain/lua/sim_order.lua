-- sim_order.lua: a reduce-only market order on the simulated exchange, decided and recorded
-- in one step from the server's state. The caller passes the request (side, quantity,
-- client order id) and the fault mode it read from the config; the script reads the order
-- record of the client order id, the filters and the position, decides, and writes the
-- order and the position's new amount together.
--
-- KEYS[1]  position hash   quantum:sim:{<SYMBOL>}:position
-- KEYS[2]  order hash      quantum:sim:{<SYMBOL>}:order:<client_order_id>
-- KEYS[3]  order sequence  quantum:sim:{<SYMBOL>}:order_seq
-- KEYS[4]  filters hash    quantum:sim:{<SYMBOL>}:filters
-- ARGV[1]  order hash TTL in seconds
-- ARGV[2]  now (epoch seconds, the order's created_at and the fill's ts)
-- ARGV[3]  symbol   ARGV[4] client order id   ARGV[5] side (BUY | SELL)
-- ARGV[6]  quantity (a plain decimal string)
-- ARGV[7]  order mode: fill | new | reject | timeout | lose_response ('' = fill)
--
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
-- not filled; the caller adds it to quantum:sim:fills, a key outside the symbol's slot).
-- Hashes are name, value lists. Decimals are compared and added as integers at their
-- common scale (exact below 2^53); a value outside that range or not a plain decimal is an
-- error reply, and nothing is written.

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

local ttl, now, symbol, coid, side, qty_s, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
  ARGV[6], ARGV[7]
if mode == '' then mode = 'fill' end

if mode == 'timeout' then return {'timeout'} end
if mode == 'reject' then return {'reject', '-2019'} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'exists', redis.call('HGETALL', KEYS[2])} end

if redis.call('EXISTS', KEYS[4]) == 0 then return {'reject', '-1121'} end
local f = redis.call('HMGET', KEYS[4], 'step_size', 'min_qty', 'max_qty')
local p = redis.call('HMGET', KEYS[1], 'amt', 'mark_price', 'entry_price')
local function given(v, default)
  if v == false or v == '' then return default end
  return v
end
local step_s, min_s, max_s = given(f[1], '0'), given(f[2], '0'), given(f[3], '')
local amt_s = given(p[1], '0')
local price_s = given(p[2], given(p[3], '0'))
if parts(price_s) == nil then return bad('price', price_s) end

local named = {quantity = qty_s, step_size = step_s, min_qty = min_s, amt = amt_s}
if max_s ~= '' then named.max_qty = max_s end
local scale = 0
for what, s in pairs(named) do
  local _, _, frac = parts(s)
  if frac == nil then return bad(what, s) end
  if #frac > scale then scale = #frac end
end
local qty, step, min_qty, amt = scaled(qty_s, scale), scaled(step_s, scale),
  scaled(min_s, scale), scaled(amt_s, scale)
local max_qty = false
if max_s ~= '' then max_qty = scaled(max_s, scale) end
if not (qty and step and min_qty and amt and max_qty ~= nil) then
  return redis.error_reply('ERR sim_order: a quantity beyond 2^53 at scale ' .. scale)
end

if qty <= 0 or step <= 0 or math.fmod(qty, step) ~= 0 then return {'reject', '-1111'} end
if qty < min_qty or (max_qty and qty > max_qty) then
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
