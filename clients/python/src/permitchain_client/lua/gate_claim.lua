-- gate_claim.lua: take a plan's grant for an external executor, exactly once, by value.
--
-- The executor wrote the grant (state 'granted') after it consumed both permits by value in
-- one step (consume_permits.lua) and verified their signatures. This script moves it to
-- 'claimed' once: a second claim finds 'claimed' (or later) and gets already_executed.
--
-- KEYS[1]  execution record   quantum:exec:{<plan_id>}    (HASH)
-- KEYS[2]  trading state      quantum:trading_state       (STRING)
-- KEYS[3]  audit stream       quantum:stream:decisions    (STREAM)
-- ARGV[1]  plan_id   ARGV[2] symbol   ARGV[3] claimant (host:pid of the bot)
-- ARGV[4]  audit MAXLEN
--
-- Returns {verdict, state, side, qty, client_order_id, reason, detail}; verdict is one of
--   ok                granted -> claimed now: side, qty and client_order_id are the grant's
--   not_ready         no exec record yet, or 'permitted' (the executor is deciding)
--   already_executed  claimed before, or the order's outcome is open or known
--   blocked           the plan ended without an order (reason: its code; detail: the
--                     gatekeeper's own reason, e.g. cooldown_in_flight)
--   dry_run           the chain's dry_run mode ended the plan: nothing may be sent
--   grant_expired     past grant_expires_at (server time): the resolver blocks the plan
--   trading_halted    the trading state is HALTED (or unreadable): not claimed
--   not_external      the plan is for permitchain's own executor
--   mismatch          the record's plan_id or symbol differs from ARGV: refused

local plan_id, symbol, claimant = ARGV[1], ARGV[2], ARGV[3]
local key = KEYS[1]
local h = redis.call('HMGET', key, 'state', 'plan_id', 'symbol', 'executor', 'side', 'qty',
                     'client_order_id', 'grant_expires_at', 'reason', 'detail')
local state, rec_plan, rec_symbol, executor = h[1], h[2], h[3], h[4]
local side, qty, coid, expires, reason = h[5] or '', h[6] or '', h[7] or '', h[8], h[9] or ''
local detail = h[10] or ''

local function reply(verdict, st, why, more)
  return {verdict, st or '', '', '', '', why or '', more or ''}
end

if not state or state == 'permitted' then return reply('not_ready', state or 'none') end
if rec_plan ~= plan_id or rec_symbol ~= symbol then
  return reply('mismatch', state, 'exec record is not plan ' .. plan_id .. ' ' .. symbol)
end
if state == 'blocked' then return reply('blocked', state, reason, detail) end
if state == 'dry_run' then return reply('dry_run', state, 'dry_run') end
if executor ~= 'external' then return reply('not_external', state, 'executor') end
if state ~= 'granted' then return reply('already_executed', state, '') end

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local exp = tonumber(expires)
if exp == nil or exp ~= exp or exp <= now then
  return reply('grant_expired', state, 'grant_expires_at')
end

-- The kill switch, read the fail-closed way: only ACTIVE or REDUCING (or absent) pass.
local kind = redis.call('TYPE', KEYS[2])['ok']
if kind ~= 'none' then
  local ts = kind == 'string' and redis.call('GET', KEYS[2]) or ''
  if ts ~= 'ACTIVE' and ts ~= 'REDUCING' then
    return reply('trading_halted', state, 'trading state ' .. tostring(ts))
  end
end

local stamp = string.format('%.6f', now)
redis.call('HSET', key, 'state', 'claimed', 'claimed_at', stamp, 'submitted_at', stamp,
           'sender', claimant, 'updated_at', stamp)
local context = cjson.encode({side = side, qty = qty, client_order_id = coid,
                              claimant = claimant})
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'plan_id', plan_id, 'symbol', symbol,
           'layer', 'gate', 'decision', 'CLAIMED', 'reason', 'gate_claimed', 'context', context,
           'ts', stamp)
return {'ok', 'claimed', side, qty, coid, '', ''}
