-- publish_plan.lua: publish a plan exactly once (dedupe key and XADD in one atomic step), and
-- its audit entry in the same step.
--
-- KEYS[1]  dedupe key     quantum:apply:stream_published:{<plan_id>}   (STRING "1")
-- KEYS[2]  plan stream    quantum:stream:apply.plan                    (STREAM)
-- KEYS[3]  audit stream   quantum:stream:decisions (absent: no audit entry)
-- ARGV[1]  dedupe TTL in seconds
-- ARGV[2]  approximate MAXLEN of the plan stream
-- ARGV[3]  2N: how many plan field arguments follow
-- ARGV[4 .. 3+2N]  the plan's fields as name, value pairs
-- then (only with KEYS[3]):
--   approximate MAXLEN of the audit stream
--   the decision and the reason of a duplicate's entry ('' = no entry for a duplicate)
--   the audit entry's fields as name, value pairs: 'decision' and 'reason' are the new
--   plan's; 'context' is a JSON object without its closing brace, completed here with
--   "entry_id":"<the new entry id, or '' for a duplicate>"}
--
-- Returns the new entry id, or false when the plan was already published (duplicate). A
-- dedupe key of another Redis type (never written by us) is an error reply naming it
-- ("WRONGTYPE key K is a T, expected a string": wrong_key_type); nothing is written.

local n = tonumber(ARGV[3])
local new_id = false
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then
  new_id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 4, 3 + n))
else
  local held = redis.call('TYPE', KEYS[1])['ok']
  if held ~= 'string' then
    return redis.error_reply('WRONGTYPE key ' .. KEYS[1] .. ' is a ' .. held ..
                             ', expected a string')
  end
end
if KEYS[3] == nil then return new_id end
local a = 4 + n
local dup_decision, dup_reason = ARGV[a + 1], ARGV[a + 2]
if not new_id and dup_decision == '' then return new_id end
local xa = {'XADD', KEYS[3], 'MAXLEN', '~', ARGV[a], '*'}
for i = a + 3, #ARGV, 2 do
  local name, value = ARGV[i], ARGV[i + 1]
  if name == 'context' then
    value = value .. '"entry_id":"' .. (new_id or '') .. '"}'
  elseif not new_id and name == 'decision' then
    value = dup_decision
  elseif not new_id and name == 'reason' then
    value = dup_reason
  end
  xa[#xa + 1] = name
  xa[#xa + 1] = value
end
redis.call(unpack(xa))
return new_id
