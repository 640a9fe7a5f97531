-- consume_permits.lua: verify both permits of one plan BY VALUE and consume them atomically.
--
-- KEYS[1]  governor permit      quantum:permit:{<plan_id>}        (STRING, JSON)
-- KEYS[2]  P3.3 permit          quantum:permit:p33:{<plan_id>}    (STRING, JSON)
-- KEYS[3]  execution record     quantum:exec:{<plan_id>}          (HASH)
-- ARGV[1]  plan_id   ARGV[2] symbol   ARGV[3] schema (expected)
-- ARGV[4]  mode: "try" (missing permits -> wait) or "final" (missing -> blocked permit_timeout)
-- ARGV[5]  exec record TTL in seconds
--
-- Returns a JSON verdict: {"verdict": V, ...} where V is one of
--   ok                  both permits allow and are valid: both deleted, exec state=permitted;
--                       "gov" and "p33" carry the permits' raw JSON (signatures are checked
--                       by the caller right after, Lua has no HMAC)
--   already_executed    an exec record exists (any state); nothing changed ("state" given)
--   missing_governor | missing_p33 | missing_both   (mode try): nothing changed, wait
--   governor_denied | p33_denied | permit_invalid | permit_timeout   terminal: exec state=blocked
--   wrong_key_type      KEYS[3] held another Redis type (never written by us): it is replaced
--                       by a blocked record whose detail names the key and its type, so the
--                       plan never executes and still gets its one result
-- Every terminal verdict writes the exec record, so a plan decides once and never again.
-- Every verdict but already_executed also carries "gov_ttl" and "p33_ttl": the permit keys'
-- TTLs in seconds as they were before this call (-2 when absent), for the executor's log line.

local plan_id, symbol = ARGV[1], ARGV[2]
local schema = tonumber(ARGV[3])
local mode = ARGV[4]
local exec_ttl = tonumber(ARGV[5])

local state = redis.pcall('HGET', KEYS[3], 'state')
local record_type = nil
if type(state) == 'table' and state['err'] then  -- WRONGTYPE: not a hash
  record_type = redis.call('TYPE', KEYS[3])['ok']
  state = false
end
if state then
  return cjson.encode({verdict = 'already_executed', state = state})
end

local gov_ttl, p33_ttl = redis.call('TTL', KEYS[1]), redis.call('TTL', KEYS[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

-- Read a permit without trusting its type: a HASH where a STRING belongs is invalid, not fatal.
local function read(key)
  local ok_type = redis.call('TYPE', key)['ok']
  if ok_type == 'none' then return nil, nil end
  if ok_type ~= 'string' then return false, 'wrong key type ' .. ok_type end
  return redis.call('GET', key), nil
end

-- Common checks; returns 'allow', 'deny' or 'invalid', plus a detail.
local function common(raw)
  local ok, obj = pcall(cjson.decode, raw)
  if not ok or type(obj) ~= 'table' then return nil, 'bad JSON' end
  if obj['schema'] ~= schema then return nil, 'schema' end
  if obj['plan_id'] ~= plan_id then return nil, 'plan_id' end
  if obj['symbol'] ~= symbol then return nil, 'symbol' end
  local exp = tonumber(obj['expires_at'])
  if exp == nil or exp ~= exp then return nil, 'expires_at' end
  if exp <= now then return nil, 'expired' end
  return obj, nil
end

local function judge_governor(raw)
  local obj, why = common(raw)
  if not obj then return 'invalid', 'governor ' .. why end
  if obj['decision'] == 'GRANT' and obj['granted'] == true then return 'allow', nil end
  if obj['decision'] == 'DENY' and obj['granted'] == false then
    return 'deny', tostring(obj['reason'])
  end
  return 'invalid', 'governor decision/granted inconsistent'
end

local function judge_p33(raw)
  local obj, why = common(raw)
  if not obj then return 'invalid', 'p33 ' .. why end
  if obj['allow'] == true then
    local q = obj['safe_close_qty']
    if type(q) ~= 'string' then return 'invalid', 'p33 safe_close_qty' end
    local n = tonumber(q)
    if n == nil or n ~= n or n <= 0 or n == math.huge then
      return 'invalid', 'p33 safe_close_qty'
    end
    return 'allow', nil
  end
  if obj['allow'] == false then return 'deny', tostring(obj['reason']) end
  return 'invalid', 'p33 allow'
end

local function block(reason, detail)
  redis.call('HSET', KEYS[3], 'state', 'blocked', 'reason', reason, 'detail', detail or '',
             'plan_id', plan_id, 'symbol', symbol, 'updated_at', string.format('%.6f', now))
  redis.call('EXPIRE', KEYS[3], exec_ttl)
  return cjson.encode({verdict = reason, detail = detail or '', gov_ttl = gov_ttl,
                       p33_ttl = p33_ttl})
end

if record_type then
  redis.call('DEL', KEYS[3])
  return block('wrong_key_type', 'key ' .. KEYS[3] .. ' is a ' .. record_type .. ', expected a hash')
end

local graw, gerr = read(KEYS[1])
local praw, perr = read(KEYS[2])
if graw == false then return block('permit_invalid', 'governor ' .. gerr) end
if praw == false then return block('permit_invalid', 'p33 ' .. perr) end

local gv, gd, pv, pd = nil, nil, nil, nil
if graw then gv, gd = judge_governor(graw) end
if praw then pv, pd = judge_p33(praw) end

if gv == 'invalid' then return block('permit_invalid', gd) end
if pv == 'invalid' then return block('permit_invalid', pd) end
if gv == 'deny' then return block('governor_denied', gd) end
if pv == 'deny' then return block('p33_denied', pd) end

if gv == 'allow' and pv == 'allow' then
  redis.call('DEL', KEYS[1], KEYS[2])
  local ts = string.format('%.6f', now)
  redis.call('HSET', KEYS[3], 'state', 'permitted', 'plan_id', plan_id, 'symbol', symbol,
             'gov_permit', graw, 'p33_permit', praw, 'permitted_at', ts, 'updated_at', ts)
  redis.call('EXPIRE', KEYS[3], exec_ttl)
  return cjson.encode({verdict = 'ok', gov = graw, p33 = praw, gov_ttl = gov_ttl,
                       p33_ttl = p33_ttl})
end

local missing
if not gv and not pv then missing = 'missing_both'
elseif not gv then missing = 'missing_governor'
else missing = 'missing_p33' end

if mode == 'final' then return block('permit_timeout', missing) end
return cjson.encode({verdict = missing, gov_ttl = gov_ttl, p33_ttl = p33_ttl})
