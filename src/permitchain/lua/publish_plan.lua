-- publish_plan.lua: publish a plan exactly once (dedupe key and XADD in one atomic step).
--
-- KEYS[1]  dedupe key     quantum:apply:stream_published:{<plan_id>}   (STRING "1")
-- KEYS[2]  plan stream    quantum:stream:apply.plan                    (STREAM)
-- ARGV[1]  dedupe TTL in seconds
-- ARGV[2]  approximate MAXLEN of the plan stream
-- ARGV[3..] the plan's fields as name, value pairs
--
-- Returns the new entry id, or false when the plan was already published (duplicate).

if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then
  return false
end
local args = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*'}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
return redis.call(unpack(args))
