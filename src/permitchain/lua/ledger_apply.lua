-- ledger_apply.lua: write a ledger update decided from a read of the ledger, only if the
-- fields the decision read still hold the values read (compare-and-set), with its audit
-- entry, in one atomic step. On a conflict nothing is written: the caller reads and decides
-- again (as a WATCH/MULTI transaction would, in one round trip instead of four).
--
-- KEYS[1]  ledger        quantum:position:ledger:<SYMBOL>   (HASH)
-- KEYS[2]  audit stream  quantum:stream:decisions           (STREAM)
-- KEYS[3]  (optional) in-flight claim  quantum:position:inflight:<SYMBOL>  (STRING plan_id)
-- ARGV[1]  audit MAXLEN (approximate)
-- ARGV[2]  the marker of an absent field
-- ARGV[3]  E, then E (field, value read) pairs (the marker: the field was absent)
-- then     U, then U (field, value) pairs to write
-- then     A, then A audit field pairs (A = 0: no audit entry)
-- then     (with KEYS[3]) a plan_id: when written, the claim is dropped if (and only if)
--          that plan holds it (as release_claim.lua, in the same step as the ledger write)
--
-- Returns 1 when written, 0 on a conflict (nothing written, the claim left alone).

local absent = ARGV[2]
-- @include arg_blocks.lua
local e1, en, u = block_at(3)
local u1, un, a = block_at(u)
local a1, an, k = block_at(a)
local release = ARGV[k]

for j = e1, en, 2 do
  local now = redis.call('HGET', KEYS[1], ARGV[j])
  if now == false then now = absent end
  if now ~= ARGV[j + 1] then return 0 end
end
if un >= u1 then redis.call('HSET', KEYS[1], unpack(ARGV, u1, un)) end
if an >= a1 then xadd(KEYS[2], ARGV[1], a1, an) end
-- (pcall: a claim key of another type is left alone, never a failed script after the write;
-- P3.3 denies the symbol's plans on it, wrong_key_type)
if KEYS[3] ~= nil and release ~= nil and redis.pcall('GET', KEYS[3]) == release then
  redis.call('DEL', KEYS[3])
end
return 1
