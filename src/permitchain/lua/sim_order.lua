-- sim_order.lua: record a simulated order and apply its fill, compare-and-set on the position.
-- The caller computed the new position with Decimal arithmetic from the amount it read;
-- this script applies it only if the position is still what the caller saw.
--
-- KEYS[1]  position hash   quantum:sim:{<SYMBOL>}:position
-- KEYS[2]  order hash      quantum:sim:{<SYMBOL>}:order:<client_order_id>
-- KEYS[3]  order sequence  quantum:sim:{<SYMBOL>}:order_seq
-- KEYS[4]  fills stream    quantum:sim:fills   (absent on a Redis Cluster: another slot; the
--          caller then adds the fill record itself right after an 'ok')
-- ARGV[1]  expected position amount as read ('' if none)
-- ARGV[2]  new position amount ('' = unchanged, e.g. an order accepted but not filled)
-- ARGV[3]  order hash TTL in seconds
-- ARGV[4]  2N: how many order field arguments follow
-- ARGV[5 .. 4+2N]  order fields as name, value pairs (order_id is assigned here)
-- ARGV[5+2N ..]    fill record fields as name, value pairs (none = no fill record)
--
-- Returns {'exists'} if the client order id is taken (the caller reads that order),
-- {'retry'} if the position moved since it was read, or {'ok', order_id}.
-- (The simulated exchange only: KEYS[4] is outside the symbol's hash slot, so a cluster
-- client passes KEYS[1..3] only.)

if redis.call('EXISTS', KEYS[2]) == 1 then return {'exists'} end
local cur = redis.call('HGET', KEYS[1], 'amt') or ''
if cur ~= ARGV[1] then return {'retry'} end
local oid = tostring(redis.call('INCR', KEYS[3]))
local n = tonumber(ARGV[4])
redis.call('HSET', KEYS[2], 'order_id', oid, unpack(ARGV, 5, 4 + n))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'amt', ARGV[2]) end
if #ARGV > 4 + n and #KEYS >= 4 then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', '100000', '*', 'order_id', oid,
             unpack(ARGV, 5 + n, #ARGV))
end
return {'ok', oid}
