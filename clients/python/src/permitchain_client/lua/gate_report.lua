-- gate_report.lua: write a claimed plan's one result, as the executor writes results
-- (exec_transition.lua's move: the record's state, its result_id guard, the result and its
-- audit entry in one atomic step; P3.3's ledger and the governor read that result).
--
-- KEYS[1]  execution record   quantum:exec:{<plan_id>}       (HASH)
-- KEYS[2]  open executions    quantum:apply:exec_open        (ZSET)
-- KEYS[3]  result stream      quantum:stream:apply.result    (STREAM)
-- KEYS[4]  audit stream       quantum:stream:decisions       (STREAM)
-- ARGV[1]  plan_id   ARGV[2] symbol   ARGV[3] new state (filled | rejected)
-- ARGV[4]  result MAXLEN   ARGV[5] audit MAXLEN   ARGV[6] client order id (of the grant)
-- ARGV[7]  N, then N result field name/value pairs
-- then     A, then A audit field pairs
--
-- Accepted only from 'claimed' or a not yet final 'unknown' (the resolver's), for the plan
-- and symbol given, once (the record has no result_id yet).
-- Returns {1, new_state, result_entry_id} when written, else {0, state, reason} with reason
-- not_claimed | already_reported | mismatch.

local key = KEYS[1]
local h = redis.call('HMGET', key, 'state', 'plan_id', 'symbol', 'executor',
                     'client_order_id', 'result_id')
local state = h[1] or 'none'
if h[1] and (h[2] ~= ARGV[1] or h[3] ~= ARGV[2] or h[4] ~= 'external' or h[5] ~= ARGV[6]) then
  return {0, state, 'mismatch'}
end
if h[6] then return {0, state, 'already_reported'} end
if state ~= 'claimed' and state ~= 'unknown' then return {0, state, 'not_claimed'} end

local r1 = 8
local rn = r1 + tonumber(ARGV[7]) - 1
local a1 = rn + 2
local an = a1 + tonumber(ARGV[rn + 1]) - 1

local fields = {}
for j = r1, rn do fields[#fields + 1] = ARGV[j] end
local rid = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(fields))

local t = redis.call('TIME')
local now = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
local result = {}
for j = r1, rn, 2 do result[ARGV[j]] = ARGV[j + 1] end
redis.call('HSET', key, 'state', ARGV[3], 'updated_at', now, 'reason', result['reason'] or '',
           'filled_qty', result['filled_qty'] or '0', 'order_id', result['order_id'] or '',
           'result_id', rid)
redis.call('ZREM', KEYS[2], ARGV[1])
if an >= a1 then
  local audit = {}
  for j = a1, an do audit[#audit + 1] = ARGV[j] end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', unpack(audit))
end
return {1, ARGV[3], rid}
