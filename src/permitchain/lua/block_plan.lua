-- block_plan.lua: decide a plan as blocked, once. A plan that already has an exec record keeps it.
--
-- KEYS[1]  execution record   quantum:exec:{<plan_id>}   (HASH)
-- ARGV[1]  reason code   ARGV[2] detail   ARGV[3] plan_id   ARGV[4] symbol   ARGV[5] TTL seconds
--
-- Returns the existing state when there was one (nothing changed), else 'blocked'. A key
-- of another Redis type than a hash (never written by us) is replaced by the blocked record,
-- its detail naming the key and the type it held.

local reason, detail = ARGV[1], ARGV[2]
local state = redis.pcall('HGET', KEYS[1], 'state')
if type(state) == 'table' and state['err'] then  -- WRONGTYPE: not a hash
  local held = redis.call('TYPE', KEYS[1])['ok']
  redis.call('DEL', KEYS[1])
  reason, detail = 'wrong_key_type', 'key ' .. KEYS[1] .. ' is a ' .. held .. ', expected a hash'
  state = false
end
if state then return state end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'state', 'blocked', 'reason', reason, 'detail', detail,
           'plan_id', ARGV[3], 'symbol', ARGV[4],
           'updated_at', string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return 'blocked'
