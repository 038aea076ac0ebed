package relay

import (
	"context"
	"math"
	"sync"
	"time"
)

// Limits are the budgets of one tenant. A zero field means "no limit" for
// that budget.
type Limits struct {
	// RequestsPerMinute is the sustained request rate.
	RequestsPerMinute float64
	// Burst is how many requests may arrive at once. Zero means
	// max(1, RequestsPerMinute/6), ten seconds' worth.
	Burst int
	// TokensPerMinute is the sustained LLM token rate (input plus output).
	TokensPerMinute int64
	// TokenBurst is the token bucket's size. Zero means TokensPerMinute, a
	// minute's worth.
	TokenBurst int64
	// SpendPerMinute, SpendPerDay and SpendPerMonth are spend budgets in
	// micro-units of the prices' currency (1,000,000 micro-units are one
	// unit: 10,000 is $0.01), per calendar window of UTC: the minute, the
	// day from midnight, the month from the 1st. Each is granted afresh at
	// its window's boundary, less any debt; see MemoryLimiter. Zero means no
	// budget for that window. Amounts are exact up to 2^53 micro-units
	// and capped there.
	SpendPerMinute int64
	SpendPerDay    int64
	SpendPerMonth  int64

	// MaxConcurrent caps the tenant's requests in flight at once, WebSocket
	// sessions included, from admission to the end of the response
	// (README "Concurrency"). Over it, a request waits up to QueueTimeout,
	// then is refused with 429, reason "concurrency". Only a limiter that
	// implements ConcurrencyLimiter (MemoryLimiter, the Redis limiter)
	// enforces it.
	MaxConcurrent int
	// MaxSessions caps the tenant's WebSocket sessions open at once
	// (reason "sessions"); each also counts against MaxConcurrent.
	MaxSessions int
	// QueueTimeout is how long a request over MaxConcurrent or MaxSessions
	// waits for a slot before it is refused. Zero: no wait.
	QueueTimeout time.Duration
	// MaxQueued bounds the requests of the tenant waiting for a slot at
	// once (per process; see QueueBound). Zero means four per slot.
	MaxQueued int
}

// Cost is what one admission asks of the limiter.
type Cost struct {
	// Requests is normally 1.
	Requests int64
	// Tokens is the estimate reserved at admission: the request's output
	// budget plus an estimate of its prompt. Zero when unknown.
	Tokens int64
	// Spend is the spend reserved at admission, in micro-units: Tokens
	// priced for the request's model (its prompt estimate as input, the
	// rest as output). Zero when the price is unknown or the request is not
	// billed by tokens; its real cost is then charged at settlement.
	Spend int64
}

// LimitRequest is the input of a Limiter. It is a struct so that fields can
// be added without breaking implementations.
type LimitRequest struct {
	Identity Identity
	// Route is the matched route's name.
	Route string
	Cost  Cost
	// Now is the relay's clock reading for this request. Distributed
	// limiters may prefer their store's clock.
	Now time.Time
	// UsedSpend is set on settlement only (TokenSettler.Settle): what the
	// request cost, in micro-units, to settle against Cost.Spend. The
	// relay sets it to Cost.Spend when the cost is unknown (nothing to
	// settle); zero gives the whole spend reservation back.
	UsedSpend int64
}

// Quota describes one budget after a decision. Limit zero means the budget
// is not limited and the other fields are meaningless.
type Quota struct {
	Limit     int64
	Remaining int64
	// Reset is how long until the budget is full again.
	Reset time.Duration
}

// Decision is a Limiter's answer.
type Decision struct {
	Allowed bool
	// RetryAfter is how long a refused caller should wait. Zero when allowed.
	RetryAfter time.Duration
	// Reason names the exhausted budget of a refusal: "requests",
	// "tokens" or "budget" (spend); for a ConcurrencyLimiter's, the cap:
	// "concurrency" or "sessions".
	Reason   string
	Requests Quota
	Tokens   Quota
	// Spend is the tightest spend window (least remaining), in
	// micro-units; Reset is the time until its spend is back to zero.
	Spend Quota
	// Waited is how long a ConcurrencyLimiter's Acquire waited in its
	// queue for a slot (zero when it did not wait), for the
	// relay_queue_wait_seconds metric.
	Waited time.Duration
}

// Limiter decides whether a request may proceed.
//
// Allow must be safe for concurrent use. An error means the limiter could
// not decide (its store is down, say); the relay then fails open or closed
// as configured by WithLimiterFailOpen and counts the error as type
// "limiter". Allow is called on the request path, so it should be fast and
// honour ctx.
//
// A refusal for the request budget (Reason "requests", RetryAfter > 0) is
// remembered for the same tenant, key and route for up to 5s
// (WithRefusalMemo), and their requests are refused without calling
// Allow: this assumes the limiter counts requests per tenant, key and
// route or more coarsely. A limiter that counts more finely, on Labels
// say, needs WithRefusalMemo(0).
type Limiter interface {
	Allow(ctx context.Context, req LimitRequest) (Decision, error)
}

// LimiterFunc adapts a function to the Limiter interface.
type LimiterFunc func(ctx context.Context, req LimitRequest) (Decision, error)

// Allow calls f(ctx, req).
func (f LimiterFunc) Allow(ctx context.Context, req LimitRequest) (Decision, error) {
	return f(ctx, req)
}

// TokenSettler is implemented by limiters that keep token or spend
// budgets. When a request that reserved req.Cost.Tokens at admission
// finishes, the relay calls Settle with the tokens it actually used, so
// that the difference is given back (used < reserved) or charged (used >
// reserved, which may put the tenant in debt). Spend settles in the same
// call: req.UsedSpend against req.Cost.Spend, by the same rules; the relay
// settles every admitted request that reserved tokens or spend, or whose
// spend it prices. Settle is called after the response is complete, off
// the streaming path; it must be safe for concurrent use.
type TokenSettler interface {
	Settle(ctx context.Context, req LimitRequest, used int64) error
}

// HealthChecker is implemented by limiters and recorders whose health
// matters for readiness. Healthy returns nil when the component works.
type HealthChecker interface {
	Healthy(ctx context.Context) error
}

// noLimit admits everything.
type noLimit struct{}

func (noLimit) Allow(context.Context, LimitRequest) (Decision, error) {
	return Decision{Allowed: true}, nil
}

// MemoryLimiter keeps per-tenant request and token buckets in this process.
//
// Both budgets follow one token-bucket rule, the same arithmetic as the
// Redis limiter's script (module github.com/streamrelay/relay/redis), and
// shared test vectors (testdata/limiter_vectors.json) hold the two to it:
//
//   - A bucket of rate r per second and size burst starts full. At time
//     now its level is min(burst, level + elapsed*r), elapsed being the
//     seconds since it was last written; a clock reading older than that
//     refills nothing, so readings out of order never mint tokens.
//   - A cost c is admitted when the level is at least min(c, burst): a
//     cost larger than the bucket waits for a full bucket, then takes it
//     into debt. Admission subtracts c; settlement subtracts used minus
//     reserved (a refund when negative), never above burst. The level may
//     be negative (debt) and is repaid by the refill.
//   - Spend is checked first, then tokens, then requests, and nothing is
//     taken on a refusal, so a refusal for spend or tokens does not spend
//     a request.
//   - Retry-After is the time to refill the missing amount, rounded up to
//     whole seconds (as the header carries), at least one second. A
//     Quota's Remaining is the level rounded down (never below zero), its
//     Reset the exact time until the bucket is full.
//
// Spend budgets are not buckets but calendar windows of UTC (minute, day,
// month) with integer counters, so that money stays exact: a window's
// budget is granted afresh at its boundary, less any debt carried; a cost
// c is admitted when the budget less the window's spend is at least
// min(c, budget), as for the buckets; settlement adds used minus reserved,
// never leaving the spend below zero. The Redis limiter's script follows
// the same rule (spendwindow.go tells it in full).
//
// Buckets are created on first use and evicted once full: a full bucket is
// indistinguishable from a new one, so eviction never resets an active
// tenant. Eviction runs inline at most once per sweep interval, so there
// is no goroutine or timer per key; memory is bounded by the tenants active
// within a refill period.
//
// It is safe for concurrent use.
type MemoryLimiter struct {
	defaults Limits

	mu        sync.Mutex
	buckets   map[string]*tenantBucket
	lastSweep time.Time
	sweepGap  time.Duration

	conc concurrency // leases (concurrency.go), under a lock of their own
}

// tenantBucket is one tenant's pair of buckets. A tenant whose keys carry
// different limits keeps one pair: each call applies its own rates and
// sizes to the stored levels, as the Redis limiter does.
type tenantBucket struct {
	requests, tokens tokenBucket
	spend            spendState
}

// NewMemoryLimiter returns a MemoryLimiter with the given default limits,
// which an Identity's own Limits replace.
func NewMemoryLimiter(defaults Limits) *MemoryLimiter {
	return &MemoryLimiter{
		defaults: defaults,
		buckets:  make(map[string]*tenantBucket),
		sweepGap: time.Minute,
	}
}

// Allow implements Limiter. It never returns an error.
func (m *MemoryLimiter) Allow(_ context.Context, req LimitRequest) (Decision, error) {
	return m.AllowAt(req.Now, req), nil
}

// AllowAt is Allow at an explicit time, for tests and simulations.
func (m *MemoryLimiter) AllowAt(now time.Time, req LimitRequest) Decision {
	lim := m.defaults
	if req.Identity.Limits != nil {
		lim = *req.Identity.Limits
	}
	rs, ts, spend := lim.requestShape(), lim.tokenShape(), lim.hasSpend()
	if rs.rate <= 0 && ts.rate <= 0 && !spend {
		return Decision{Allowed: true}
	}
	n := float64(max(1, req.Cost.Requests))
	tokens := float64(max(0, req.Cost.Tokens))
	cost := clampSpend(max(0, req.Cost.Spend))
	var bs, cur [spendWindows]int64
	if spend {
		bs, cur = lim.budgets(), windowsAt(now)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(now)
	b := m.bucket(req.Identity.Tenant)
	b.requests.bucketShape, b.tokens.bucketShape = rs, ts

	d := Decision{Allowed: true}
	// Spend first, then tokens: a refusal for either must not spend a
	// request, and a budget refusal tells the longest wait.
	if spend {
		if ok, retry := b.spend.check(now, cur, bs, cost); !ok {
			d.Allowed, d.Reason, d.RetryAfter = false, "budget", retry
		}
	}
	if d.Allowed && ts.rate > 0 && !b.tokens.admits(now, tokens) {
		d.Allowed, d.Reason, d.RetryAfter = false, "tokens", b.tokens.retryAfter(now, tokens)
	}
	if d.Allowed && rs.rate > 0 && !b.requests.admits(now, n) {
		d.Allowed, d.Reason, d.RetryAfter = false, "requests", b.requests.retryAfter(now, n)
	}
	if d.Allowed {
		if rs.rate > 0 {
			b.requests.take(now, n)
		}
		if ts.rate > 0 && tokens > 0 {
			b.tokens.take(now, tokens)
		}
		if spend {
			b.spend.add(cur, bs, cost)
		}
	}
	if rs.rate > 0 {
		d.Requests = b.requests.quota(now, int64(lim.RequestsPerMinute))
	}
	if ts.rate > 0 {
		d.Tokens = b.tokens.quota(now, lim.TokensPerMinute)
	}
	if spend {
		d.Spend = b.spend.quota(now, cur, bs)
	}
	return d
}

// Settle implements TokenSettler: it gives back or charges the
// differences between the tokens and spend reserved at admission and
// those used (used, req.UsedSpend).
func (m *MemoryLimiter) Settle(_ context.Context, req LimitRequest, used int64) error {
	m.SettleAt(req.Now, req, used)
	return nil
}

// SettleAt is Settle at an explicit time.
func (m *MemoryLimiter) SettleAt(now time.Time, req LimitRequest, used int64) {
	lim := m.defaults
	if req.Identity.Limits != nil {
		lim = *req.Identity.Limits
	}
	ts := lim.tokenShape()
	delta := max(0, used) - max(0, req.Cost.Tokens)
	spent := clampSpend(max(0, req.UsedSpend)) - clampSpend(max(0, req.Cost.Spend))
	tok, spend := delta != 0 && ts.rate > 0, spent != 0 && lim.hasSpend()
	if !tok && !spend {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// A bucket evicted as full is rebuilt full, which is what it was.
	b := m.bucket(req.Identity.Tenant)
	if tok {
		b.tokens.bucketShape = ts
		b.tokens.take(now, float64(delta))
	}
	if spend {
		b.spend.add(windowsAt(now), lim.budgets(), spent)
	}
}

// Len reports how many tenants have a bucket, for tests and monitoring.
func (m *MemoryLimiter) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.buckets)
}

// bucket returns the tenant's buckets, creating them (full) on first use.
// Called with m.mu held.
func (m *MemoryLimiter) bucket(tenant string) *tenantBucket {
	b, ok := m.buckets[tenant]
	if !ok {
		b = &tenantBucket{}
		m.buckets[tenant] = b
	}
	return b
}

// sweep evicts full buckets. It walks the whole map, but at most once per
// sweepGap, so its cost is amortised over all requests. Called with m.mu
// held.
func (m *MemoryLimiter) sweep(now time.Time) {
	if now.Sub(m.lastSweep) < m.sweepGap {
		return
	}
	m.lastSweep = now
	for k, b := range m.buckets {
		if b.requests.full(now) && b.tokens.full(now) && b.spend.full(now) {
			delete(m.buckets, k)
		}
	}
}

// requestShape is the request bucket of lim; a zero rate means unlimited.
func (lim Limits) requestShape() bucketShape {
	if lim.RequestsPerMinute <= 0 {
		return bucketShape{}
	}
	burst := lim.Burst
	if burst <= 0 {
		burst = max(1, int(lim.RequestsPerMinute/6))
	}
	return bucketShape{rate: lim.RequestsPerMinute / 60, burst: float64(burst)}
}

// tokenShape is the token bucket of lim; a zero rate means unlimited.
func (lim Limits) tokenShape() bucketShape {
	if lim.TokensPerMinute <= 0 {
		return bucketShape{}
	}
	burst := lim.TokenBurst
	if burst <= 0 {
		burst = lim.TokensPerMinute
	}
	return bucketShape{rate: float64(lim.TokensPerMinute) / 60, burst: float64(burst)}
}

// bucketShape is a bucket's refill rate per second and size.
type bucketShape struct {
	rate, burst float64
}

// tokenBucket is the one bucket algorithm of both budgets (see
// MemoryLimiter). Its zero value is an untouched, full bucket. Every
// operation mirrors a line of the Redis limiter's script, down to the
// order of the float operations, so that the two agree to the bit on
// times in whole microseconds.
type tokenBucket struct {
	bucketShape
	level float64   // may be negative: debt
	at    time.Time // when level was true; zero: never written (full)
}

// levelAt is the level at now, refilled since at, never above burst.
func (t *tokenBucket) levelAt(now time.Time) float64 {
	if t.at.IsZero() {
		return t.burst
	}
	v := t.level
	if now.After(t.at) {
		// One division of the exact elapsed time, as the script divides
		// microseconds: the same float on whole microseconds.
		v += float64(now.Sub(t.at)) / float64(time.Second) * t.rate
	}
	return math.Min(v, t.burst)
}

// admits reports whether the bucket can pay cost now. A cost above the
// burst needs a full bucket.
func (t *tokenBucket) admits(now time.Time, cost float64) bool {
	return t.levelAt(now) >= math.Min(cost, t.burst)
}

// take subtracts n (a refund when negative), never leaving more than burst.
// A clock reading older than the last write refills nothing and leaves
// the write time where it was.
func (t *tokenBucket) take(now time.Time, n float64) {
	v := t.levelAt(now)
	if t.at.IsZero() || now.After(t.at) {
		t.at = now
	}
	t.level = math.Min(v-n, t.burst)
}

// retryAfter is how long until cost is admitted, in whole seconds rounded
// up, at least one: Retry-After carries seconds.
func (t *tokenBucket) retryAfter(now time.Time, cost float64) time.Duration {
	missing := math.Min(cost, t.burst) - t.levelAt(now)
	secs := math.Ceil(missing/t.rate - 1e-9) // 1e-9: float noise must not add a second
	return max(time.Second, time.Duration(secs)*time.Second)
}

// quota reports the bucket at now under limit.
func (t *tokenBucket) quota(now time.Time, limit int64) Quota {
	v := t.levelAt(now)
	return Quota{
		Limit:     limit,
		Remaining: max(0, int64(math.Floor(v))),
		Reset:     time.Duration((t.burst - v) / t.rate * float64(time.Second)),
	}
}

// full reports whether the bucket holds its burst and was not written "in
// the future" (a clock that went back), so that forgetting it changes
// nothing. An unlimited budget is always full.
func (t *tokenBucket) full(now time.Time) bool {
	return t.rate <= 0 || t.at.IsZero() || (!t.at.After(now) && t.levelAt(now) >= t.burst)
}
