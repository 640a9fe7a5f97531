-- lib/exec_state.lua (included): the execution record's compare-and-set check and the move's
-- time, shared by exec_transition.lua and exec_move.lua.
--
-- exec_may_move(key, from_states, guard): whether the record at key may move (its state is
-- one of from_states, a comma list, and it lacks the guard field; guard '' = none), and its
-- state ('none' when it has none, 'wrong_key_type' when the key is not a hash: never moved).
local function exec_may_move(key, from_states, guard)
  local state = redis.pcall('HGET', key, 'state')
  if type(state) == 'table' and state['err'] then return false, 'wrong_key_type' end
  state = state or 'none'
  local allowed = false
  for s in string.gmatch(from_states, '[^,]+') do
    if s == state then allowed = true end
  end
  if not allowed or (guard ~= '' and redis.call('HEXISTS', key, guard) == 1) then
    return false, state
  end
  return true, state
end

-- server_now(): the server's time in seconds, six decimals.
local function server_now()
  local t = redis.call('TIME')
  return string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
end

