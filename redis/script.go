package relayredis

// bucketScript admits a request against, or settles tokens and spend
// with, one tenant's two token buckets and spend windows, atomically.
//
// KEYS[1] is the request bucket, KEYS[2] the token bucket, KEYS[3] the
// spend windows (same hash slot).
// A bucket is a hash {v = level, t = when v was true, in microseconds of
// Redis's clock}; an absent key is a full bucket. The level may be
// negative (debt) but never above the burst.
//
// ARGV: op ("allow" or "settle"), request rate per second, request burst,
// request cost, token rate per second, token burst, token cost (for
// "settle": tokens used minus tokens reserved, refunded when negative),
// spend cost in micro-units (for "settle": used minus reserved), the spend
// budgets per minute, day and month, and, for tests only, a time in
// microseconds to use instead of Redis's clock. A rate or budget of 0
// means that budget is unlimited and its key or field is not touched.
//
// The spend windows are a hash {w1, s1, w2, s2, w3, s3}: for the minute,
// day and month windows (numbered as minutes and days since the Unix
// epoch, months since year 0, in UTC) the window last written and its
// spend, integers in micro-units. They follow relay.MemoryLimiter's
// calendar-window rule (the root module's spendwindow.go): k boundaries
// later the spend is max(0, s - k*budget); a cost c is admitted when
// budget - s >= min(c, budget); settlement never leaves it below zero. The
// key's TTL is never shortened, and covers the time until every window's
// spend is back to zero (months counted as 31 days); at zero the key is
// deleted.
//
// Both buckets follow relay.MemoryLimiter's one rule, operation for
// operation: a cost c is admitted when the level is at least
// min(c, burst), so a cost larger than the bucket waits for a full bucket
// and then goes into debt. The shared vectors of the root module
// (testdata/limiter_vectors.json) hold the two to it.
//
// "allow" returns {refusal, request level, token level, now, w1, s1, w2,
// s2, w3, s3}: refusal is 0 when admitted, 1 when refused for requests, 2
// for tokens, 3 for spend; the levels and spends are after the decision,
// now the clock reading in microseconds, all as strings so that no
// precision is lost. Spend is checked first, then tokens, and nothing is
// taken on a refusal, so a refusal for spend or tokens does not spend a
// request.
//
// The clock is Redis's TIME, never the relay's (only tests pass ARGV[12]),
// so replicas with skewed
// clocks share one budget. Every write sets a TTL of the time the bucket
// needs to refill (plus a second); a full bucket is deleted instead. So
// idle tenants cost nothing and keys never accumulate.
const bucketScript = `
-- Before Redis 5, writes after TIME need effects replication; from 7 on
-- it is always on and this call is a no-op.
if redis.replicate_commands then redis.replicate_commands() end

local now
if ARGV[12] then
  now = tonumber(ARGV[12])
else
  now = redis.call('TIME')
  now = tonumber(now[1]) * 1000000 + tonumber(now[2])
end

local function load(key, rate, burst)
  local s = redis.call('HMGET', key, 'v', 't')
  local v, t = tonumber(s[1]), tonumber(s[2])
  if v == nil or t == nil then
    return burst, now
  end
  -- A clock that went back (failover to a replica) refills nothing.
  if now > t then
    v = v + (now - t) / 1000000 * rate
    t = now
  end
  return math.min(v, burst), t
end

local function save(key, v, t, rate, burst)
  if v >= burst and t <= now then
    redis.call('DEL', key)
    return
  end
  local ms = math.ceil((t - now) / 1000 + (burst - v) / rate * 1000) + 1000
  redis.call('HSET', key, 'v', string.format('%.17g', v), 't', string.format('%.17g', t))
  redis.call('PEXPIRE', key, string.format('%.0f', ms))
end

local rrate, rburst, rcost = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local trate, tburst, tcost = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local scost = tonumber(ARGV[8])
local budgets = {tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])}
local spending = budgets[1] > 0 or budgets[2] > 0 or budgets[3] > 0

-- The numbers of the minute, day and month windows holding now (UTC);
-- the month from the day by Howard Hinnant's civil_from_days.
local function windows()
  local d = math.floor(now / 86400000000)
  local z = d + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return {math.floor(now / 60000000), d, y * 12 + m - 1}
end

-- The spend windows as {w, s} each: the window now falls in (the one
-- last written when the clock reads earlier) and its spend there.
local function loadSpend()
  local f = redis.call('HMGET', KEYS[3], 'w1', 's1', 'w2', 's2', 'w3', 's3')
  local cur = windows()
  local out = {}
  for k = 1, 3 do
    local sw, ss, w, b = tonumber(f[2 * k - 1]), tonumber(f[2 * k]), cur[k], budgets[k]
    if sw == nil or ss == nil or ss <= 0 then
      out[k] = {w, 0}
    elseif sw >= w then
      out[k] = {sw, ss}
    elseif b <= 0 then
      out[k] = {sw, ss} -- no budget to carry it by: kept as it is
    elseif w - sw > math.floor(ss / b) then
      out[k] = {w, 0}
    else
      out[k] = {w, ss - (w - sw) * b}
    end
  end
  return out
end

local windowMS = {60000, 86400000, 31 * 86400000}

local function saveSpend(sp)
  local args, ttl, any = {}, redis.call('PTTL', KEYS[3]), false
  for k = 1, 3 do
    local b = budgets[k]
    if b > 0 then
      table.insert(args, 'w' .. k)
      table.insert(args, string.format('%.0f', sp[k][1]))
      table.insert(args, 's' .. k)
      table.insert(args, string.format('%.0f', sp[k][2]))
      if sp[k][2] > 0 then
        any = true
        ttl = math.max(ttl, (math.ceil(sp[k][2] / b) + 1) * windowMS[k] + 1000)
      end
    end
  end
  redis.call('HSET', KEYS[3], unpack(args))
  local f = redis.call('HMGET', KEYS[3], 's1', 's2', 's3')
  for k = 1, 3 do
    if (tonumber(f[k]) or 0) > 0 then any = true end
  end
  if not any then
    redis.call('DEL', KEYS[3])
  elseif ttl > 0 then
    redis.call('PEXPIRE', KEYS[3], string.format('%.0f', ttl))
  end
end

if ARGV[1] == 'settle' then
  if trate > 0 and tcost ~= 0 then
    local v, t = load(KEYS[2], trate, tburst)
    save(KEYS[2], math.min(v - tcost, tburst), t, trate, tburst)
  end
  if spending and scost ~= 0 then
    local sp = loadSpend()
    for k = 1, 3 do
      if budgets[k] > 0 then sp[k][2] = math.max(0, sp[k][2] + scost) end
    end
    saveSpend(sp)
  end
  return 1
end

local refusal = 0
local sp = {{0, 0}, {0, 0}, {0, 0}}
if spending then
  sp = loadSpend()
  for k = 1, 3 do
    local b = budgets[k]
    -- A cost above the whole budget waits for an untouched window, then
    -- goes into debt.
    if b > 0 and b - sp[k][2] < math.min(scost, b) then
      refusal = 3
    end
  end
end
local rv, rt, tv, tt = 0, now, 0, now
if trate > 0 then
  tv, tt = load(KEYS[2], trate, tburst)
  -- A cost larger than the bucket waits for a full bucket, then takes
  -- the bucket into debt.
  if refusal == 0 and tv < math.min(tcost, tburst) then
    refusal = 2
  end
end
if rrate > 0 then
  rv, rt = load(KEYS[1], rrate, rburst)
  if refusal == 0 and rv < math.min(rcost, rburst) then
    refusal = 1
  end
end
if refusal == 0 then
  if rrate > 0 then
    rv = rv - rcost
    save(KEYS[1], rv, rt, rrate, rburst)
  end
  if trate > 0 and tcost > 0 then
    tv = tv - tcost
    save(KEYS[2], tv, tt, trate, tburst)
  end
  if spending then
    for k = 1, 3 do
      if budgets[k] > 0 then sp[k][2] = sp[k][2] + scost end
    end
    if scost > 0 then saveSpend(sp) end
  end
end
local function f0(x) return string.format('%.0f', x) end
return {refusal, string.format('%.17g', rv), string.format('%.17g', tv), f0(now),
  f0(sp[1][1]), f0(sp[1][2]), f0(sp[2][1]), f0(sp[2][2]), f0(sp[3][1]), f0(sp[3][2])}
`
