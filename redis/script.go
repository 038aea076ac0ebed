package relayredis

// bucketScript admits a request against, or settles tokens with, one
// tenant's two token buckets, atomically.
//
// KEYS[1] is the request bucket, KEYS[2] the token bucket (same hash slot).
// A bucket is a hash {v = level, t = when v was true, in microseconds of
// Redis's clock}; an absent key is a full bucket. The level may be
// negative (debt) but never above the burst.
//
// ARGV: op ("allow" or "settle"), request rate per second, request burst,
// request cost, token rate per second, token burst, token cost (for
// "settle": tokens used minus tokens reserved, refunded when negative),
// and, for tests only, a time in microseconds to use instead of Redis's
// clock. A rate of 0 means that budget is unlimited and its key is not
// touched.
//
// Both buckets follow relay.MemoryLimiter's one rule, operation for
// operation: a cost c is admitted when the level is at least
// min(c, burst), so a cost larger than the bucket waits for a full bucket
// and then goes into debt. The shared vectors of the root module
// (testdata/limiter_vectors.json) hold the two to it.
//
// "allow" returns {refusal, request level, token level}: refusal is 0 when
// admitted, 1 when refused for requests, 2 for tokens; the levels are after
// the decision, as strings so that no precision is lost. Tokens are checked
// first and nothing is taken on a refusal, so a refusal for tokens does not
// spend a request.
//
// The clock is Redis's TIME, never the relay's (only tests pass ARGV[8]),
// so replicas with skewed
// clocks share one budget. Every write sets a TTL of the time the bucket
// needs to refill (plus a second); a full bucket is deleted instead. So
// idle tenants cost nothing and keys never accumulate.
const bucketScript = `
-- Before Redis 5, writes after TIME need effects replication; from 7 on
-- it is always on and this call is a no-op.
if redis.replicate_commands then redis.replicate_commands() end

local now
if ARGV[8] then
  now = tonumber(ARGV[8])
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

if ARGV[1] == 'settle' then
  if trate > 0 and tcost ~= 0 then
    local v, t = load(KEYS[2], trate, tburst)
    save(KEYS[2], math.min(v - tcost, tburst), t, trate, tburst)
  end
  return 1
end

local refusal = 0
local rv, rt, tv, tt = 0, now, 0, now
if trate > 0 then
  tv, tt = load(KEYS[2], trate, tburst)
  -- A cost larger than the bucket waits for a full bucket, then takes
  -- the bucket into debt.
  if tv < math.min(tcost, tburst) then
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
end
return {refusal, string.format('%.17g', rv), string.format('%.17g', tv)}
`
