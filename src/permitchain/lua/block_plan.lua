-- block_plan.lua: decide a plan as blocked, once. A plan that already has an exec record keeps it.
--
-- KEYS[1]  execution record   quantum:exec:{<plan_id>}   (HASH)
-- ARGV[1]  reason code   ARGV[2] detail   ARGV[3] plan_id   ARGV[4] symbol   ARGV[5] TTL seconds
--
-- Returns the existing state when there was one (nothing changed), else 'blocked'.

local state = redis.call('HGET', KEYS[1], 'state')
if state then return state end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'state', 'blocked', 'reason', ARGV[1], 'detail', ARGV[2],
           'plan_id', ARGV[3], 'symbol', ARGV[4],
           'updated_at', string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return 'blocked'
