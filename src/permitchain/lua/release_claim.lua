-- release_claim.lua: drop a symbol's in-flight claim if (and only if) the plan holds it.
--
-- KEYS[1]  in-flight claim   quantum:position:inflight:<SYMBOL>   (STRING plan_id)
-- ARGV[1]  plan_id
--
-- Returns 1 when released, 0 when the claim is absent or another plan's.

if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
