-- sim_order.lua: record a simulated order and apply its fill, once every assumption the caller
-- made holds. The caller computed the order (its price, the new position amount) with Decimal
-- arithmetic from a state it assumed: read just before, or remembered from its last order on
-- the symbol. This script compares strings only: it records the order only if the config, the
-- position and the filters are still what the caller assumed, else returns what they are now.
--
-- KEYS[1]  position hash   quantum:sim:{<SYMBOL>}:position
-- KEYS[2]  order hash      quantum:sim:{<SYMBOL>}:order:<client_order_id>
-- KEYS[3]  order sequence  quantum:sim:{<SYMBOL>}:order_seq
-- KEYS[4]  filters hash    quantum:sim:{<SYMBOL>}:filters
-- KEYS[5]  config hash     quantum:sim:config  (fault injection)
-- KEYS[6]  fills stream    quantum:sim:fills
--          (KEYS[5], KEYS[6] absent on a Redis Cluster: other slots; the caller then reads
--          the config itself before, and adds the fill record itself right after an 'ok')
-- ARGV[1]  order hash TTL in seconds
-- ARGV[2]  new position amount ('' = unchanged, e.g. an order accepted but not filled)
-- ARGV[3 ..] five blocks (N, then N name/value pairs, as scripts.flat_pairs builds them):
--   the position fields assumed (a value '' = the field is absent)
--   the config fields assumed ('' = absent; N = 0: not checked, e.g. a fill inside the
--     exchange, or KEYS[5] absent)
--   the filters fields assumed ('' = absent)
--   the order fields (order_id is assigned here)
--   the fill record fields (N = 0: no fill record)
--
-- Returns {'ok', order_id};
-- {'exists', <order hash>} if the client order id is taken (checked after the config);
-- {'stale', <position hash>, <filters hash>, <order hash>, <config hash>} if an assumption
-- is wrong: each hash as it is now, as a name, value list (empty: no such hash; the config's
-- is empty too without KEYS[5]), so the caller decides again without reading.
-- (The simulated exchange only: KEYS[5], KEYS[6] are outside the symbol's hash slot.)

-- @include arg_blocks.lua

local pos_first, pos_last, at = block_at(3)
local cfg_first, cfg_last
cfg_first, cfg_last, at = block_at(at)
local filt_first, filt_last
filt_first, filt_last, at = block_at(at)
local order_first, order_last
order_first, order_last, at = block_at(at)
local fill_first, fill_last = block_at(at)

-- each name of ARGV[first..last] has its value in the hash ('' = absent)
local function holds(key, first, last)
  for i = first, last, 2 do
    if (redis.call('HGET', key, ARGV[i]) or '') ~= ARGV[i + 1] then return false end
  end
  return true
end

local function stale()
  local cfg = {}
  if #KEYS >= 5 then cfg = redis.call('HGETALL', KEYS[5]) end
  return {'stale', redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[4]),
          redis.call('HGETALL', KEYS[2]), cfg}
end

if cfg_last >= cfg_first and not holds(KEYS[5], cfg_first, cfg_last) then return stale() end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'exists', redis.call('HGETALL', KEYS[2])} end
if not (holds(KEYS[1], pos_first, pos_last) and holds(KEYS[4], filt_first, filt_last)) then
  return stale()
end
local oid = tostring(redis.call('INCR', KEYS[3]))
redis.call('HSET', KEYS[2], 'order_id', oid, unpack(ARGV, order_first, order_last))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[1]))
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'amt', ARGV[2]) end
if fill_last >= fill_first and #KEYS >= 6 then
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', '100000', '*', 'order_id', oid,
             unpack(ARGV, fill_first, fill_last))
end
return {'ok', oid}
