-- sim_order.lua: record a simulated order and apply its fill, compare-and-set on the position.
-- The caller computed the new position with Decimal arithmetic from the amount it read;
-- this script applies it only if the position is still what the caller saw.
--
-- KEYS[1]  position hash   quantum:sim:{<SYMBOL>}:position
-- KEYS[2]  order hash      quantum:sim:{<SYMBOL>}:order:<client_order_id>
-- KEYS[3]  order sequence  quantum:sim:{<SYMBOL>}:order_seq
-- ARGV[1]  expected position amount as read ('' if none)
-- ARGV[2]  new position amount ('' = unchanged, e.g. an order accepted but not filled)
-- ARGV[3]  order hash TTL in seconds
-- ARGV[4..] order fields as name, value pairs (order_id is assigned here)
--
-- Returns {'exists'} if the client order id is taken (the caller reads that order),
-- {'retry'} if the position moved since it was read, or {'ok', order_id}.

if redis.call('EXISTS', KEYS[2]) == 1 then return {'exists'} end
local cur = redis.call('HGET', KEYS[1], 'amt') or ''
if cur ~= ARGV[1] then return {'retry'} end
local oid = redis.call('INCR', KEYS[3])
local fields = {'order_id', tostring(oid)}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'amt', ARGV[2]) end
return {'ok', tostring(oid)}
