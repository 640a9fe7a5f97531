-- p33_claim_permit.lua: P3.3's allow with the symbol's in-flight claim, in one atomic step
-- (plain and Sentinel servers; on a Redis Cluster the claim and the permit are in different
-- slots and P3.3 takes the claim first, then writes the permit as write_permit does).
--
-- KEYS[1]  in-flight claim  quantum:position:inflight:<SYMBOL>   (STRING plan_id)
-- KEYS[2]  P3.3 permit      quantum:permit:p33:{<plan_id>}       (STRING permit JSON)
-- KEYS[3]  permit events    quantum:stream:permit.events         (STREAM)
-- KEYS[4]  audit stream     quantum:stream:decisions             (STREAM)
-- ARGV[1]  plan_id
-- ARGV[2]  claim expiry, ms (COOLDOWN_S)
-- ARGV[3]  the allow permit JSON (signed by the caller when it signs)
-- ARGV[4]  permit TTL, s
-- ARGV[5]  permit events MAXLEN (approximate)
-- ARGV[6]  audit MAXLEN (approximate)
-- ARGV[7]  layer (the permit event's field)
-- ARGV[8]  A, then A audit field pairs (the ALLOW entry)
--
-- Returns {verdict, holder}:
--   {'exists', ''}      the plan has a permit already: nothing written (the first decision
--                       stands), the claim left alone
--   {'held', plan_id}   another plan holds the claim: nothing written; the caller writes the
--                       cooldown_in_flight deny naming it (its JSON is signed by the caller)
--   {'allow', ''}       the claim taken (SET NX PX) and the allow, its event and its audit
--                       entry written
--   {'allow', plan_id}  the same, the claim already this plan's (a redelivery): unchanged

-- @include arg_blocks.lua

if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'exists', ''}
end
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
  holder = ''
elseif holder ~= ARGV[1] then
  return {'held', holder}
end
redis.call('SET', KEYS[2], ARGV[3], 'NX', 'EX', ARGV[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'plan_id', ARGV[1], 'layer', ARGV[7])
local a1, an = block_at(8)
xadd(KEYS[4], ARGV[6], a1, an)
return {'allow', holder}
