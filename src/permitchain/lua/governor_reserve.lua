-- governor_reserve.lua: reserve one execution slot for a plan, atomically, per symbol.
-- The governor runs it when its policy grants a plan in production: the counts the policy
-- saw may be stale (another governor, another plan), so the limits are checked again here,
-- and the reservation is taken in the same step. Both keys carry the symbol as a hash tag,
-- so the script touches one slot.
--
-- KEYS[1]  confirmed executions  quantum:gov:{<SYMBOL>}:executions   (ZSET plan_id → result ts)
-- KEYS[2]  live reservations     quantum:gov:{<SYMBOL>}:reservations (ZSET plan_id → expires at)
-- ARGV[1]  plan_id
-- ARGV[2]  now, epoch seconds (the governor's clock)
-- ARGV[3]  reservation TTL, seconds (PERMIT_TTL_SECONDS + APPLY_PERMIT_WAIT_MS)
-- ARGV[4]  MAX_EXEC_PER_5MIN     ARGV[5]  MAX_EXEC_PER_HOUR
-- ARGV[6]  5-minute window, seconds (300)     ARGV[7]  hour window, seconds (3600)
--
-- Windows: an execution at t counts while now - window < t (exactly 300 s old: no longer).
-- A reservation counts while its expiry is after now; expired ones are removed here.
-- Returns {verdict, count_5min, count_hour}: counts include live reservations, before this
-- one. verdict: 'reserved', 'already' (this plan holds a slot or was confirmed: idempotent
-- on redelivery), 'rate_limit_5min', 'rate_limit_hour'.

local plan_id = ARGV[1]
local now = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local max5, maxh = tonumber(ARGV[4]), tonumber(ARGV[5])
local w5, wh = tonumber(ARGV[6]), tonumber(ARGV[7])

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now - wh))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.6f', now))

local live = redis.call('ZCARD', KEYS[2])
local c5 = redis.call('ZCOUNT', KEYS[1], string.format('(%.6f', now - w5), '+inf') + live
local ch = redis.call('ZCOUNT', KEYS[1], string.format('(%.6f', now - wh), '+inf') + live

if redis.call('ZSCORE', KEYS[2], plan_id) or redis.call('ZSCORE', KEYS[1], plan_id) then
  return {'already', c5, ch}
end
if c5 >= max5 then return {'rate_limit_5min', c5, ch} end
if ch >= maxh then return {'rate_limit_hour', c5, ch} end

redis.call('ZADD', KEYS[2], string.format('%.6f', now + ttl), plan_id)
redis.call('EXPIRE', KEYS[2], math.ceil(ttl) + 1)
return {'reserved', c5, ch}
