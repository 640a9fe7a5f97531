-- exec_transition.lua: move a plan's execution record to its next state, at most once, and
-- publish what belongs to the move (its result, its audit entry) in the same atomic step.
--
-- KEYS[1]  execution record    quantum:exec:{<plan_id>}      (HASH)
-- KEYS[2]  open executions     quantum:apply:exec_open       (ZSET plan_id -> submitted_at)
-- KEYS[3]  result stream       quantum:stream:apply.result   (STREAM)
-- KEYS[4]  audit stream        quantum:stream:decisions      (STREAM)
-- ARGV[1]  states the record must be in for the move, comma list
-- ARGV[2]  new state
-- ARGV[3]  guard field ('' = none): the move is refused when the record already has it; when
--          a result is published the field is set to the result's entry id
-- ARGV[4]  open index: 'add' (ZADD plan_id now), 'rem' (ZREM plan_id) or 'keep'
-- ARGV[5]  plan_id   ARGV[6] exec record TTL (s)   ARGV[7] result MAXLEN   ARGV[8] audit MAXLEN
-- ARGV[9]  N, then N exec record field name/value pairs
-- then     M, then M result field pairs (M = 0: no result)
-- then     A, then A audit field pairs (A = 0: no audit entry)
--
-- Returns {1, new_state, result_entry_id or ''} when moved, else {0, current_state or 'none', ''}.
-- An open index of another Redis type (never written by us): a move that adds to it is
-- refused, {0, 'wrong_key_type', ''}, and removing from it is skipped (a blocked result still
-- gets out).

-- @include exec_state.lua
-- @include arg_blocks.lua

local guard = ARGV[3]
local may, state = exec_may_move(KEYS[1], ARGV[1], guard)
if not may then return {0, state, ''} end
local index_ok = true
if ARGV[4] ~= 'keep' then
  local held = redis.call('TYPE', KEYS[2])['ok']
  index_ok = held == 'zset' or held == 'none'
  if not index_ok and ARGV[4] == 'add' then return {0, 'wrong_key_type', ''} end
end
local now = server_now()
local f1, fn, r = block_at(9)
local r1, rn, a = block_at(r)
local a1, an = block_at(a)

local rid = ''
if rn >= r1 then
  rid = xadd(KEYS[3], ARGV[7], r1, rn)
end
if rn >= r1 and guard ~= '' then  -- the guard set to the result's id, after the fields
  local hset = {'HSET', KEYS[1], 'state', ARGV[2], 'updated_at', now}
  for j = f1, fn do hset[j - f1 + 7] = ARGV[j] end
  hset[#hset + 1] = guard
  hset[#hset + 1] = rid
  redis.call(unpack(hset))
else
  redis.call('HSET', KEYS[1], 'state', ARGV[2], 'updated_at', now, unpack(ARGV, f1, fn))
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
if ARGV[4] == 'add' then
  redis.call('ZADD', KEYS[2], now, ARGV[5])
elseif ARGV[4] == 'rem' and index_ok then
  redis.call('ZREM', KEYS[2], ARGV[5])
end
if an >= a1 then xadd(KEYS[4], ARGV[8], a1, an) end
return {1, ARGV[2], rid}
