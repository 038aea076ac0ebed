package relayredis

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/relay"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func newTestLimiter(t *testing.T, c redis.UniversalClient, opts ...Option) *Limiter {
	t.Helper()
	// A generous timeout: these tests are about the arithmetic, and a
	// timeout under -race on a busy machine would only make them flaky.
	l, err := NewLimiter(c, append([]Option{WithPrefix(uniquePrefix(t)), WithTimeout(5 * time.Second)}, opts...)...)
	require.NoError(t, err)
	return l
}

func limitReq(tenant string, lim *relay.Limits, tokens int64) relay.LimitRequest {
	return relay.LimitRequest{
		Identity: relay.Identity{Tenant: tenant, Limits: lim},
		Route:    "chat",
		Cost:     relay.Cost{Requests: 1, Tokens: tokens},
		Now:      time.Now(),
	}
}

// step is one call in a scenario: Allow with tokens reserved, or, when
// settle is set, Settle of a request that reserved tokens and used used.
type step struct {
	tokens int64
	settle bool
	used   int64
}

func allow(tokens int64) step          { return step{tokens: tokens} }
func settle(reserved, used int64) step { return step{tokens: reserved, settle: true, used: used} }

// TestLimiterMirrorsMemoryLimiter runs the same calls through
// relay.MemoryLimiter, frozen in time, and through the Redis limiter, and
// compares the decisions. The rates are slow enough that the few
// milliseconds Redis's clock moves during a scenario refill nothing that
// shows; durations, rounded to whole seconds, may differ by one.
func TestLimiterMirrorsMemoryLimiter(t *testing.T) {
	client := newClient(t, sharedRedisAddr(t), true)
	tests := []struct {
		name   string
		limits relay.Limits
		steps  []step
	}{
		{
			name:   "exactly burst requests from full, then refusal",
			limits: relay.Limits{RequestsPerMinute: 6, Burst: 3},
			steps:  []step{allow(0), allow(0), allow(0), allow(0), allow(0)},
		},
		{
			// A bucket of one is full at exactly one: nothing refills
			// between "absent" and the check, so the comparison is exact.
			name:   "a burst of one admits one",
			limits: relay.Limits{RequestsPerMinute: 6, Burst: 1, TokensPerMinute: 60},
			steps:  []step{allow(60), allow(0)},
		},
		{
			name:   "default burst is ten seconds' worth",
			limits: relay.Limits{RequestsPerMinute: 60},
			steps:  []step{allow(0), allow(0), allow(0), allow(0), allow(0), allow(0), allow(0), allow(0), allow(0), allow(0), allow(0)},
		},
		{
			name:   "a refusal for tokens spends no request",
			limits: relay.Limits{RequestsPerMinute: 6, Burst: 2, TokensPerMinute: 60},
			steps:  []step{allow(50), allow(50), allow(10), allow(0)},
		},
		{
			name:   "an oversize request waits for a full bucket, then goes into debt",
			limits: relay.Limits{TokensPerMinute: 60, TokenBurst: 40},
			steps:  []step{allow(100), allow(1), allow(0)},
		},
		{
			name:   "settling refunds, charges into debt, never fills above burst",
			limits: relay.Limits{TokensPerMinute: 60},
			steps: []step{
				allow(50), settle(50, 20), allow(40), settle(40, 100),
				allow(1), settle(40, 0), settle(1000, 0), allow(60), allow(1),
			},
		},
		{
			name:   "no limits admits everything",
			limits: relay.Limits{},
			steps:  []step{allow(1000), allow(0)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lim := newTestLimiter(t, client)
			mem := relay.NewMemoryLimiter(relay.Limits{})
			now := time.Now()
			tenant := "tenant-" + strings.ReplaceAll(tc.name, " ", "-")
			for i, s := range tc.steps {
				req := limitReq(tenant, &tc.limits, s.tokens)
				if s.settle {
					mem.SettleAt(now, req, s.used)
					require.NoError(t, lim.Settle(context.Background(), req, s.used), "step %d", i)
					continue
				}
				want := mem.AllowAt(now, req)
				got, err := lim.Allow(context.Background(), req)
				require.NoError(t, err, "step %d", i)
				msg := "step " + strconv.Itoa(i)
				assert.Equal(t, want.Allowed, got.Allowed, msg)
				assert.Equal(t, want.Reason, got.Reason, msg)
				assert.InDelta(t, want.RetryAfter.Seconds(), got.RetryAfter.Seconds(), 1, msg)
				assert.Equal(t, want.Requests.Limit, got.Requests.Limit, msg)
				assert.Equal(t, want.Requests.Remaining, got.Requests.Remaining, msg)
				assert.InDelta(t, want.Requests.Reset.Seconds(), got.Requests.Reset.Seconds(), 1, msg)
				assert.Equal(t, want.Tokens.Limit, got.Tokens.Limit, msg)
				assert.Equal(t, want.Tokens.Remaining, got.Tokens.Remaining, msg)
				assert.InDelta(t, want.Tokens.Reset.Seconds(), got.Tokens.Reset.Seconds(), 1, msg)
			}
		})
	}
}

// TestLimiterBurstBoundary: from a full bucket exactly Burst requests pass
// at once, then the refusal says when to come back.
func TestLimiterBurstBoundary(t *testing.T) {
	client := newClient(t, sharedRedisAddr(t), true)
	lim := newTestLimiter(t, client, WithDefaultLimits(relay.Limits{RequestsPerMinute: 60, Burst: 50}))
	ctx := context.Background()
	for i := range 50 {
		d, err := lim.Allow(ctx, limitReq("t", nil, 0))
		require.NoError(t, err)
		require.True(t, d.Allowed, "request %d of the burst", i+1)
		assert.Equal(t, int64(49-i), d.Requests.Remaining)
	}
	d, err := lim.Allow(ctx, limitReq("t", nil, 0))
	require.NoError(t, err)
	assert.False(t, d.Allowed)
	assert.Equal(t, "requests", d.Reason)
	// One request a second: the next is at most a second away, rounded
	// up to whole seconds for Retry-After.
	assert.Equal(t, time.Second, d.RetryAfter)
	assert.Equal(t, int64(60), d.Requests.Limit)
	assert.Equal(t, int64(0), d.Requests.Remaining)
	assert.InDelta(t, 50, d.Requests.Reset.Seconds(), 1)
}

// TestLimiterUsesRedisClock plants a bucket emptied 30 seconds ago by
// Redis's clock: whatever the relay's clock says, it has refilled 30
// seconds' worth.
func TestLimiterUsesRedisClock(t *testing.T) {
	client := newClient(t, sharedRedisAddr(t), true)
	limits := &relay.Limits{RequestsPerMinute: 100, Burst: 100, TokensPerMinute: 6000}
	for _, skew := range []time.Duration{-30 * time.Second, 0, 30 * time.Second, -24 * 365 * time.Hour} {
		t.Run("relay clock "+skew.String(), func(t *testing.T) {
			lim := newTestLimiter(t, client)
			keys := lim.keys("skewed")
			past := redisNow(t, client).Add(-30 * time.Second).UnixMicro()
			for _, k := range keys {
				require.NoError(t, client.HSet(context.Background(), k, "v", "0", "t", strconv.FormatInt(past, 10)).Err())
				require.NoError(t, client.Expire(context.Background(), k, time.Minute).Err())
			}
			req := limitReq("skewed", limits, 100)
			req.Now = time.Now().Add(skew)
			d, err := lim.Allow(context.Background(), req)
			require.NoError(t, err)
			require.True(t, d.Allowed)
			// 100/min for 30s is 50 requests, less the one just taken;
			// 6000/min for 30s is 3000 tokens, less 100.
			assert.Equal(t, int64(49), d.Requests.Remaining)
			assert.Equal(t, int64(2900), d.Tokens.Remaining)
		})
	}
}

// TestLimiterClockGoingBack plants buckets last written "in the future",
// as after a failover to a replica whose clock is behind: they refill
// nothing until Redis's clock catches up, and the boundary is exact.
func TestLimiterClockGoingBack(t *testing.T) {
	client := newClient(t, sharedRedisAddr(t), true)
	lim := newTestLimiter(t, client)
	ctx := context.Background()
	limits := &relay.Limits{RequestsPerMinute: 60000, Burst: 100, TokensPerMinute: 600000, TokenBurst: 1000}
	future := strconv.FormatInt(redisNow(t, client).Add(time.Minute).UnixMicro(), 10)
	keys := lim.keys("acme")
	plant := func(reqLevel, tokLevel string) {
		require.NoError(t, client.HSet(ctx, keys[0], "v", reqLevel, "t", future).Err())
		require.NoError(t, client.HSet(ctx, keys[1], "v", tokLevel, "t", future).Err())
		require.NoError(t, client.Expire(ctx, keys[0], time.Minute).Err())
		require.NoError(t, client.Expire(ctx, keys[1], time.Minute).Err())
	}
	tests := []struct {
		name             string
		reqLevel, tokLvl string
		tokens           int64
		reason           string // "" when admitted
		reqLeft, tokLeft int64  // after the decision
	}{
		{"one request left", "1", "1000", 0, "", 0, 1000},
		{"no request left", "0.999999", "1000", 0, "requests", 0, 1000},
		{"exactly the tokens needed", "5", "300", 300, "", 4, 0},
		{"a token short", "5", "299.999", 300, "tokens", 5, 299},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plant(tc.reqLevel, tc.tokLvl)
			d, err := lim.Allow(ctx, limitReq("acme", limits, tc.tokens))
			require.NoError(t, err)
			assert.Equal(t, tc.reason == "", d.Allowed)
			assert.Equal(t, tc.reason, d.Reason)
			// Exact: nothing refills while Redis's clock is behind.
			assert.Equal(t, tc.reqLeft, d.Requests.Remaining)
			assert.Equal(t, tc.tokLeft, d.Tokens.Remaining)
		})
	}
}

// TestLimiterKeys checks the key layout, that every write sets a TTL of
// about the refill time, and that a bucket refunded to full is deleted.
func TestLimiterKeys(t *testing.T) {
	client := newClient(t, sharedRedisAddr(t), true)
	ctx := context.Background()
	for _, tenant := range []string{"acme", "we}ird{tenant", ""} {
		t.Run("tenant "+strconv.Quote(tenant), func(t *testing.T) {
			prefix := uniquePrefix(t)
			lim := newTestLimiter(t, client, WithPrefix(prefix))
			reqKey := "{" + prefix + ":" + tenant + "}:req"
			tokKey := "{" + prefix + ":" + tenant + "}:tok"
			spendKey := "{" + prefix + ":" + tenant + "}:spend"
			require.Equal(t, []string{reqKey, tokKey, spendKey}, lim.keys(tenant))

			// One request a second, ten tokens a second.
			limits := &relay.Limits{RequestsPerMinute: 60, Burst: 10, TokensPerMinute: 600}
			d, err := lim.Allow(ctx, limitReq(tenant, limits, 100))
			require.NoError(t, err)
			require.True(t, d.Allowed)

			ttl, err := client.PTTL(ctx, reqKey).Result()
			require.NoError(t, err)
			assert.Greater(t, ttl, time.Second, "one request refills in 1s, plus a second")
			assert.LessOrEqual(t, ttl, 2*time.Second)
			ttl, err = client.PTTL(ctx, tokKey).Result()
			require.NoError(t, err)
			assert.Greater(t, ttl, 10*time.Second, "100 tokens refill in 10s, plus a second")
			assert.LessOrEqual(t, ttl, 11*time.Second)

			// Used nothing: the refund fills the bucket and the key goes.
			require.NoError(t, lim.Settle(ctx, limitReq(tenant, limits, 100), 0))
			n, err := client.Exists(ctx, tokKey).Result()
			require.NoError(t, err)
			assert.Zero(t, n, "a full token bucket is deleted")

			// A debt keeps the key until it is repaid and refilled.
			require.NoError(t, lim.Settle(ctx, limitReq(tenant, limits, 0), 1200))
			ttl, err = client.PTTL(ctx, tokKey).Result()
			require.NoError(t, err)
			assert.Greater(t, ttl, 120*time.Second, "1200 tokens of debt take 2 minutes")
			assert.LessOrEqual(t, ttl, 121*time.Second)
			n, err = client.Exists(ctx, spendKey).Result()
			require.NoError(t, err)
			assert.Zero(t, n, "no spend budget, no spend key")
		})
	}
}

// TestLimiterSpendKey: the spend windows' key lives while a window holds
// spend (its TTL bounds the time until the spend is back to zero) and is
// deleted when a refund takes every window back to zero.
func TestLimiterSpendKey(t *testing.T) {
	client := newClient(t, sharedRedisAddr(t), true)
	ctx := context.Background()
	prefix := uniquePrefix(t)
	lim := newTestLimiter(t, client, WithPrefix(prefix))
	spendKey := "{" + prefix + ":acme}:spend"
	limits := &relay.Limits{SpendPerMinute: 1000, SpendPerDay: 5000}
	req := limitReq("acme", limits, 0)
	req.Cost.Spend = 800
	d, err := lim.Allow(ctx, req)
	require.NoError(t, err)
	require.True(t, d.Allowed)
	assert.Equal(t, relay.Quota{Limit: 1000, Remaining: 200, Reset: d.Spend.Reset}, d.Spend)
	ttl, err := client.PTTL(ctx, spendKey).Result()
	require.NoError(t, err)
	assert.Greater(t, ttl, 24*time.Hour, "the day's spend lasts until the day ends")
	assert.LessOrEqual(t, ttl, 48*time.Hour+time.Second)

	req.UsedSpend = 0 // used nothing: all of it comes back
	require.NoError(t, lim.Settle(ctx, req, 0))
	n, err := client.Exists(ctx, spendKey).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "no spend left in any window: the key is deleted")
}

// TestLimiterWithoutLimitsSkipsRedis: an unlimited tenant is admitted
// without a round trip, so not even a dead Redis matters to it.
func TestLimiterWithoutLimitsSkipsRedis(t *testing.T) {
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer dead.Close()
	lim, err := NewLimiter(dead)
	require.NoError(t, err)
	d, err := lim.Allow(context.Background(), limitReq("free", nil, 1000))
	require.NoError(t, err)
	assert.Equal(t, relay.Decision{Allowed: true}, d)
	assert.NoError(t, lim.Settle(context.Background(), limitReq("free", nil, 1000), 5))
	_, err = lim.Allow(context.Background(), limitReq("paying", &relay.Limits{RequestsPerMinute: 1}, 0))
	assert.Error(t, err, "a limited tenant needs Redis")
}

func TestOptionsValidate(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer client.Close()
	tests := []struct {
		name string
		opt  Option
	}{
		{"empty prefix", WithPrefix("")},
		{"prefix with a brace", WithPrefix("a{b")},
		{"zero timeout", WithTimeout(0)},
		{"negative limits", WithDefaultLimits(relay.Limits{RequestsPerMinute: -1})},
		{"negative max length", WithMaxLen(-1)},
		{"empty stream", WithStream("")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewLimiter(client, tc.opt)
			assert.Error(t, err)
			_, err = NewRecorder(client, tc.opt)
			assert.Error(t, err)
		})
	}
	_, err := NewLimiter(nil)
	assert.Error(t, err)
	_, err = NewRecorder(nil)
	assert.Error(t, err)
}
