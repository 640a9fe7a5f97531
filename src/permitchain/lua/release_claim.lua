-- release_claim.lua: drop a symbol's in-flight claim if (and only if) the plan holds it.
--
-- KEYS[1]  in-flight claim   quantum:position:inflight:<SYMBOL>   (STRING plan_id)
-- ARGV[1]  plan_id
--
-- Returns 1 when released, 0 when the claim is absent, another plan's, or a key of another
-- Redis type (left alone: P3.3 denies the symbol's plans on it, wrong_key_type).

if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
