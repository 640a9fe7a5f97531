-- exec_move.lua: exec_transition.lua for a Redis Cluster, on the plan's exec record only (one
-- slot). The move's result and audit entry cannot be added to their streams (other slots) in
-- the same step, so they are kept in the record as an outbox; the caller adds them right
-- after and then runs exec_outbox_done.lua. A crash in between leaves the outbox, which the
-- resolver publishes (the caller put the plan in the open index before this move).
--
-- KEYS[1]  execution record    quantum:exec:{<plan_id>}      (HASH)
-- ARGV[1]  states the record must be in for the move, comma list
-- ARGV[2]  new state
-- ARGV[3]  guard field ('' = none): the move is refused when the record already has it; when
--          the outbox holds a result the field is set to 'pending' (the result's entry id
--          replaces it once the result is on its stream)
-- ARGV[4]  exec record TTL (s)
-- ARGV[5]  outbox JSON ('' = nothing to publish); ARGV[6] 1 when the outbox holds a result
-- ARGV[7]  N, then N exec record field name/value pairs
--
-- Returns {1, new_state, ''} when moved, else {0, current_state or 'none', ''}.

-- @include exec_state.lua
-- @include arg_blocks.lua

local guard = ARGV[3]
local may, state = exec_may_move(KEYS[1], ARGV[1], guard)
if not may then return {0, state, ''} end
local hset = {'HSET', KEYS[1], 'state', ARGV[2], 'updated_at', server_now()}
local f1, fn = block_at(7)
for j = f1, fn do hset[#hset + 1] = ARGV[j] end
if ARGV[5] ~= '' then
  hset[#hset + 1] = 'outbox'
  hset[#hset + 1] = ARGV[5]
  if ARGV[6] == '1' and guard ~= '' then
    hset[#hset + 1] = guard
    hset[#hset + 1] = 'pending'
  end
end
redis.call(unpack(hset))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return {1, ARGV[2], ''}
