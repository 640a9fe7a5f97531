-- exec_outbox_done.lua: after the outbox of exec_move.lua is on its streams (Redis Cluster),
-- clear it and set the guard field to the result's entry id, if the outbox is still the one
-- that was published (a second publisher of the same outbox changes nothing more).
--
-- KEYS[1]  execution record    quantum:exec:{<plan_id>}      (HASH)
-- ARGV[1]  the outbox JSON as published   ARGV[2] guard field ('' = none)
-- ARGV[3]  result entry id ('' = no result)
--
-- Returns 1 when cleared, 0 when the outbox was gone or another one.

if redis.call('HGET', KEYS[1], 'outbox') ~= ARGV[1] then return 0 end
redis.call('HDEL', KEYS[1], 'outbox')
if ARGV[2] ~= '' and ARGV[3] ~= '' then redis.call('HSET', KEYS[1], ARGV[2], ARGV[3]) end
return 1
