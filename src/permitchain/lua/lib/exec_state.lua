-- lib/exec_state.lua (included): the start of a move of the execution record, shared by
-- exec_transition.lua and exec_move.lua.
--
-- exec_may_move(key, from_states, guard): whether the record at key may move (its state is
-- one of from_states, a comma list, and it lacks the guard field; guard '' = none), and its
-- state ('none' when it has none).
local function exec_may_move(key, from_states, guard)
  local state = redis.call('HGET', key, 'state') or 'none'
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

-- exec_start(key, from_states, to, guard): the check of exec_may_move, then the move's time.
-- Returns false, nil, the record's state when it may not move; else the move's HSET command
-- (state to, updated_at the time; for the caller to extend and run), the time, the state.
local function exec_start(key, from_states, to, guard)
  local may, state = exec_may_move(key, from_states, guard)
  if not may then return false, nil, state end
  local now = server_now()
  return {'HSET', key, 'state', to, 'updated_at', now}, now, state
end
