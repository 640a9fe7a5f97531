-- snapshot_touch.lua: a full poll's unchanged snapshots get only their new time, all of a
-- chunk in one call (plain and Sentinel servers; on a Redis Cluster the keys are in many
-- slots and the poller sends one HSET each instead).
--
-- KEYS[1..N]  snapshot hashes   quantum:position:snapshot:<SYMBOL>
-- ARGV[1]     ts_epoch          the poll's time, as every snapshot of the poll
-- ARGV[2]     ts_iso            the same time in ISO 8601
--
-- A snapshot that is gone (expired, deleted), or a key of another Redis type in its place, is
-- not given a time alone: its position in KEYS is returned and the poller writes it whole.
-- Returns the 1-based indexes of those keys ({} when none).

local gone = {}
for i, key in ipairs(KEYS) do
  if redis.call('TYPE', key)['ok'] == 'hash' then
    redis.call('HSET', key, 'ts_epoch', ARGV[1], 'ts_iso', ARGV[2])
  else
    gone[#gone + 1] = i
  end
end
return gone
