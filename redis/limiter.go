package relayredis

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/relay"
)

// Limiter keeps per-tenant request and token budgets in Redis, so that all
// relay replicas sharing the Redis (and the prefix) share the budgets. It
// implements relay.Limiter, relay.TokenSettler and relay.HealthChecker,
// and relay.ConcurrencyLimiter for the concurrency caps (Acquire, in
// concurrency.go: leases with expiry, renewed while held).
//
// Each tenant has a request bucket and a token bucket with the semantics
// of relay.MemoryLimiter: RequestsPerMinute refills the request bucket,
// which holds Burst requests (zero: max(1, RequestsPerMinute/6)); the
// token bucket holds TokenBurst tokens (zero: TokensPerMinute) and may go
// into debt when a request uses more than it reserved. Both buckets follow
// MemoryLimiter's one rule, with the same arithmetic and roundings; the
// spend budgets (SpendPerMinute, SpendPerDay, SpendPerMonth) its calendar
// windows of UTC, in integer micro-units. The root module's
// testdata/limiter_vectors.json, run against both, holds them to it.
// Allow and Settle are one round trip each (one Lua script
// over the tenant's keys), timed by Redis's clock; the relay's clock
// (LimitRequest.Now) is ignored, so the calendar windows turn by Redis's
// clock too.
//
// Every call is bounded by the timeout (WithTimeout). When Redis does not
// answer in time, Allow returns an error and the relay fails open or
// closed as configured by relay.WithLimiterFailOpen. A call that timed out
// may still have been applied by Redis, so budgets can be slightly over
// charged around an outage. Recovery needs nothing: the next call that
// gets through uses Redis again (go-redis reconnects, probing once a second
// after many failed dials, and the script is reloaded if Redis lost it).
//
// State lives only in Redis. A restart without persistence, or a failover
// that loses writes not yet replicated, refills the affected buckets: a
// tenant may briefly get up to a burst more than its limit.
//
// It needs Redis 4.0 or later; it is tested on 7.0.
//
// It is safe for concurrent use. The client is not closed by the Limiter.
type Limiter struct {
	client   redis.UniversalClient
	script   *redis.Script
	prefix   string
	defaults relay.Limits
	timeout  time.Duration
	calls    *caller
	leases   leaseState    // concurrency leases (concurrency.go)
	keySlots *redis.Script // upstream keys' slots (keyslots.go)
	// testNow, set only by this package's tests, replaces Redis's clock
	// so that the shared vectors run at exact times.
	testNow func() time.Time
}

// NewLimiter returns a Limiter using client, configured by WithPrefix,
// WithDefaultLimits, WithTimeout, WithLeaseTTL and WithLogger. It does not contact
// Redis: the relay's readiness check (Healthy) does.
func NewLimiter(client redis.UniversalClient, opts ...Option) (*Limiter, error) {
	if client == nil {
		return nil, errors.New("relayredis: nil client")
	}
	s, err := newSettings(opts)
	if err != nil {
		return nil, err
	}
	l := &Limiter{
		client:   client,
		script:   redis.NewScript(bucketScript),
		prefix:   s.prefix,
		defaults: s.defaults,
		timeout:  s.timeout,
		calls:    newCaller(client, "limiter", s.logger),
	}
	l.leases.ttl, l.leases.script = s.leaseTTL, redis.NewScript(leaseScript)
	l.leases.wake = make(chan struct{}, 1)
	l.keySlots = redis.NewScript(keySlotScript)
	return l, nil
}

// bucket is one budget: rate per second and size. A zero rate means the
// budget is unlimited.
type bucket struct {
	rate  float64
	burst float64
}

// buckets turns Limits into buckets, with relay.MemoryLimiter's defaults.
func buckets(lim relay.Limits) (req, tok bucket) {
	if lim.RequestsPerMinute > 0 {
		burst := lim.Burst
		if burst <= 0 {
			burst = max(1, int(lim.RequestsPerMinute/6))
		}
		req = bucket{rate: lim.RequestsPerMinute / 60, burst: float64(burst)}
	}
	if lim.TokensPerMinute > 0 {
		burst := lim.TokenBurst
		if burst <= 0 {
			burst = lim.TokensPerMinute
		}
		tok = bucket{rate: float64(lim.TokensPerMinute) / 60, burst: float64(burst)}
	}
	return req, tok
}

// keys are the tenant's request and token bucket keys and its spend
// windows' key. The hash tag (the
// part in braces) puts both in one Cluster slot, as a script's keys must
// be. A tenant containing '}' shortens the tag but both keys keep the same
// one, and the keys still differ from every other tenant's.
func (l *Limiter) keys(tenant string) []string {
	tag := "{" + l.prefix + ":" + tenant + "}"
	return []string{tag + ":req", tag + ":tok", tag + ":spend"}
}

func (l *Limiter) limits(id relay.Identity) relay.Limits {
	if id.Limits != nil {
		return *id.Limits
	}
	return l.defaults
}

// args are the script's arguments, with the test clock's reading when a
// test set one.
func (l *Limiter) args(a ...any) []any {
	if l.testNow != nil {
		a = append(a, l.testNow().UnixMicro())
	}
	return a
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// Allow implements relay.Limiter. A tenant without limits is admitted
// without a call to Redis. The error, when Redis fails or is too slow,
// wraps the cause (context.DeadlineExceeded for a timeout, ErrBusy).
func (l *Limiter) Allow(ctx context.Context, req relay.LimitRequest) (relay.Decision, error) {
	lim := l.limits(req.Identity)
	rb, tb := buckets(lim)
	bs := budgets(lim)
	if rb.rate == 0 && tb.rate == 0 && bs == ([spendWindows]int64{}) {
		return relay.Decision{Allowed: true}, nil
	}
	n := max(1, req.Cost.Requests)
	tokens := max(0, req.Cost.Tokens)
	spend := clampSpend(max(0, req.Cost.Spend))
	keys := l.keys(req.Identity.Tenant)
	args := l.args("allow", formatFloat(rb.rate), formatFloat(rb.burst), n,
		formatFloat(tb.rate), formatFloat(tb.burst), tokens, spend, bs[0], bs[1], bs[2], -1)
	res, err := call(l.calls, ctx, l.timeout, func(ctx context.Context) ([]any, error) {
		return l.script.Run(ctx, l.client, keys, args...).Slice()
	})
	if err != nil {
		return relay.Decision{}, fmt.Errorf("relayredis: allow: %w", err)
	}
	r, err := parseReply(res)
	if err != nil {
		return relay.Decision{}, fmt.Errorf("relayredis: allow: %w", err)
	}
	return decide(lim, rb, tb, bs, n, tokens, spend, r), nil
}

// reply is the script's answer to "allow".
type reply struct {
	refusal int64
	rv, tv  float64 // bucket levels after the decision
	now     time.Time
	windows [spendWindows]spendWindow // after the decision
}

// parseReply reads the script's {refusal, request level, token level,
// now, then window and spend of each spend window}.
func parseReply(res []any) (r reply, err error) {
	if len(res) != 4+2*spendWindows {
		return r, fmt.Errorf("unexpected script reply of %d elements", len(res))
	}
	var ok bool
	if r.refusal, ok = res[0].(int64); !ok {
		return r, fmt.Errorf("unexpected script reply %T", res[0])
	}
	var strs [3 + 2*spendWindows]string
	for i, v := range res[1:] {
		if strs[i], ok = v.(string); !ok {
			return r, fmt.Errorf("unexpected script reply %T", v)
		}
	}
	if r.rv, err = strconv.ParseFloat(strs[0], 64); err != nil {
		return r, err
	}
	if r.tv, err = strconv.ParseFloat(strs[1], 64); err != nil {
		return r, err
	}
	var ints [1 + 2*spendWindows]int64
	for i, s := range strs[2:] {
		if ints[i], err = strconv.ParseInt(s, 10, 64); err != nil {
			return r, err
		}
	}
	r.now = time.UnixMicro(ints[0])
	for k := range r.windows {
		r.windows[k] = spendWindow{w: ints[1+2*k], spent: ints[2+2*k]}
	}
	return r, nil
}

// decide builds the Decision from the script's answer by
// relay.MemoryLimiter's rules, so that the relay sends the same headers
// whichever limiter is used (the shared vectors check it).
func decide(lim relay.Limits, rb, tb bucket, bs [spendWindows]int64, n, tokens, spend int64, r reply) relay.Decision {
	d := relay.Decision{Allowed: r.refusal == 0}
	switch r.refusal {
	case 1:
		d.Reason, d.RetryAfter = "requests", rb.retryAfter(r.rv, float64(n))
	case 2:
		d.Reason, d.RetryAfter = "tokens", tb.retryAfter(r.tv, float64(tokens))
	case 3:
		d.Reason, d.RetryAfter = "budget", spendRetryAfter(r.now, bs, r.windows, spend)
	}
	if rb.rate > 0 {
		d.Requests = rb.quota(r.rv, int64(lim.RequestsPerMinute))
	}
	if tb.rate > 0 {
		d.Tokens = tb.quota(r.tv, lim.TokensPerMinute)
	}
	d.Spend = spendQuota(r.now, bs, r.windows)
	return d
}

// retryAfter is how long a bucket at level v needs to admit cost, in whole
// seconds rounded up, at least one: Retry-After carries seconds.
func (b bucket) retryAfter(v, cost float64) time.Duration {
	missing := min(cost, b.burst) - v
	secs := math.Ceil(missing/b.rate - 1e-9) // 1e-9: float noise must not add a second
	return max(time.Second, time.Duration(secs)*time.Second)
}

// quota reports a bucket at level v under limit: Remaining rounded down,
// Reset the exact time until the bucket is full.
func (b bucket) quota(v float64, limit int64) relay.Quota {
	return relay.Quota{
		Limit:     limit,
		Remaining: max(0, int64(math.Floor(v))),
		Reset:     time.Duration((b.burst - v) / b.rate * float64(time.Second)),
	}
}

// Settle implements relay.TokenSettler: it gives back (used < reserved) or
// charges (used > reserved, possibly into debt) the difference between the
// tokens req reserved and those used, and between the spend reserved
// (req.Cost.Spend) and used (req.UsedSpend), in one round trip. A refund
// never fills the bucket above its burst, nor leaves a window's spend
// below zero, nor goes to a spend window begun after req.Reserved's. It does nothing when neither differs or the tenant has no
// budget for it.
func (l *Limiter) Settle(ctx context.Context, req relay.LimitRequest, used int64) error {
	lim := l.limits(req.Identity)
	_, tb := buckets(lim)
	bs := budgets(lim)
	delta := max(0, used) - max(0, req.Cost.Tokens)
	spent := clampSpend(max(0, req.UsedSpend)) - clampSpend(max(0, req.Cost.Spend))
	if tb.rate == 0 {
		delta = 0
	}
	if bs == ([spendWindows]int64{}) {
		spent = 0
	}
	if delta == 0 && spent == 0 {
		return nil
	}
	keys := l.keys(req.Identity.Tenant)
	age := int64(-1) // the reservation's age, for its refund (script.go)
	if !req.Reserved.IsZero() {
		age = max(0, req.Now.Sub(req.Reserved).Microseconds())
	}
	args := l.args("settle", 0, 0, 0, formatFloat(tb.rate), formatFloat(tb.burst), delta, spent, bs[0], bs[1], bs[2], age)
	_, err := call(l.calls, ctx, l.timeout, func(ctx context.Context) (any, error) {
		return l.script.Run(ctx, l.client, keys, args...).Result()
	})
	if err != nil {
		return fmt.Errorf("relayredis: settle: %w", err)
	}
	return nil
}

// Healthy implements relay.HealthChecker: it fails while Redis does not
// answer a PING within the timeout.
func (l *Limiter) Healthy(ctx context.Context) error {
	if err := l.calls.ping(ctx, l.timeout); err != nil {
		return fmt.Errorf("relayredis: %w", err)
	}
	return nil
}
