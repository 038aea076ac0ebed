package relay

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"
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
}

// Cost is what one admission asks of the limiter.
type Cost struct {
	// Requests is normally 1.
	Requests int64
	// Tokens is the estimate reserved at admission: the request's output
	// budget plus an estimate of its prompt. Zero when unknown.
	Tokens int64
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
	// Reason names the exhausted budget of a refusal: "requests" or "tokens".
	Reason   string
	Requests Quota
	Tokens   Quota
}

// Limiter decides whether a request may proceed.
//
// Allow must be safe for concurrent use. An error means the limiter could
// not decide (its store is down, say); the relay then fails open or closed
// as configured by WithLimiterFailOpen and counts the error as type
// "limiter". Allow is called on the request path, so it should be fast and
// honour ctx.
type Limiter interface {
	Allow(ctx context.Context, req LimitRequest) (Decision, error)
}

// LimiterFunc adapts a function to the Limiter interface.
type LimiterFunc func(ctx context.Context, req LimitRequest) (Decision, error)

// Allow calls f(ctx, req).
func (f LimiterFunc) Allow(ctx context.Context, req LimitRequest) (Decision, error) {
	return f(ctx, req)
}

// TokenSettler is implemented by limiters that keep token budgets. When a
// request that reserved req.Cost.Tokens at admission finishes, the relay
// calls Settle with the tokens it actually used, so that the difference is
// given back (used < reserved) or charged (used > reserved, which may put the
// tenant in debt). Settle is called after the response is complete, off the
// streaming path; it must be safe for concurrent use.
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
// Request buckets are golang.org/x/time/rate limiters. Token buckets are
// kept by the same rules but by hand, because x/time/rate cannot give tokens
// back and settlement needs to. Buckets are created on first use and evicted
// once full: a full bucket is indistinguishable from a new one, so eviction
// never resets an active tenant. Eviction runs inline at most once per
// sweep interval, so there is no goroutine or timer per key; memory is
// bounded by the tenants active within a refill period.
//
// It is safe for concurrent use.
type MemoryLimiter struct {
	defaults Limits

	mu        sync.Mutex
	buckets   map[string]*tenantBucket
	lastSweep time.Time
	sweepGap  time.Duration
}

type tenantBucket struct {
	limits   Limits
	requests *rate.Limiter // nil when requests are unlimited
	tokens   tokenBucket
	seen     time.Time // latest time used: readings never go back
}

// at clamps a clock reading that is older than one already used:
// concurrent requests reach the limiter slightly out of order, and
// x/time/rate would credit the same interval twice.
func (b *tenantBucket) at(now time.Time) time.Time {
	if now.Before(b.seen) {
		return b.seen
	}
	b.seen = now
	return now
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
	if lim.RequestsPerMinute <= 0 && lim.TokensPerMinute <= 0 {
		return Decision{Allowed: true}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(now)
	b := m.bucket(req.Identity.Tenant, lim, now)
	now = b.at(now)

	var d Decision
	d.Allowed = true
	// Tokens first: a refusal for tokens must not spend a request slot.
	if lim.TokensPerMinute > 0 {
		avail := b.tokens.available(now)
		need := float64(req.Cost.Tokens)
		if need > float64(b.tokens.burst) {
			need = float64(b.tokens.burst) // an oversize request waits for a full bucket
		}
		if avail < need {
			d.Allowed = false
			d.Reason = "tokens"
			d.RetryAfter = b.tokens.timeFor(need - avail)
		}
	}
	if d.Allowed && b.requests != nil {
		n := int(req.Cost.Requests)
		if n <= 0 {
			n = 1
		}
		r := b.requests.ReserveN(now, n)
		if !r.OK() || r.DelayFrom(now) > 0 {
			if r.OK() {
				r.CancelAt(now)
			}
			d.Allowed = false
			d.Reason = "requests"
			d.RetryAfter = ceilSecond(b.requests, n, now)
		}
	}
	if d.Allowed && lim.TokensPerMinute > 0 {
		b.tokens.take(now, float64(req.Cost.Tokens))
	}
	if b.requests != nil {
		tok := b.requests.TokensAt(now)
		d.Requests = Quota{
			Limit:     int64(lim.RequestsPerMinute),
			Remaining: max(0, int64(math.Floor(tok))),
			Reset:     time.Duration((float64(b.requests.Burst()) - tok) / float64(b.requests.Limit()) * float64(time.Second)),
		}
	}
	if lim.TokensPerMinute > 0 {
		avail := b.tokens.available(now)
		d.Tokens = Quota{
			Limit:     lim.TokensPerMinute,
			Remaining: max(0, int64(avail)),
			Reset:     b.tokens.timeFor(float64(b.tokens.burst) - avail),
		}
	}
	return d
}

// Settle implements TokenSettler: it gives back or charges the difference
// between the tokens reserved at admission and those used.
func (m *MemoryLimiter) Settle(_ context.Context, req LimitRequest, used int64) error {
	m.SettleAt(req.Now, req, used)
	return nil
}

// SettleAt is Settle at an explicit time.
func (m *MemoryLimiter) SettleAt(now time.Time, req LimitRequest, used int64) {
	delta := used - req.Cost.Tokens
	if delta == 0 {
		return
	}
	lim := m.defaults
	if req.Identity.Limits != nil {
		lim = *req.Identity.Limits
	}
	if lim.TokensPerMinute <= 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	// A bucket evicted as full is rebuilt full, which is what it was.
	b := m.bucket(req.Identity.Tenant, lim, now)
	now = b.at(now)
	b.tokens.take(now, float64(delta))
}

// Len reports how many tenants have a bucket, for tests and monitoring.
func (m *MemoryLimiter) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.buckets)
}

// bucket returns the tenant's bucket, creating it, or adapting it in place
// when the tenant's limits changed (keys of one tenant may carry different
// limits): what was spent stays spent, clamped to the new burst, and the
// refill goes on at the new rate. Called with m.mu held.
func (m *MemoryLimiter) bucket(tenant string, lim Limits, now time.Time) *tenantBucket {
	old, ok := m.buckets[tenant]
	if ok && old.limits == lim {
		return old
	}
	b := m.newBucket(lim, now)
	if ok {
		now = old.at(now)
		b.seen = old.seen
		if old.requests != nil && b.requests != nil {
			old.requests.SetLimitAt(now, b.requests.Limit())
			old.requests.SetBurstAt(now, b.requests.Burst())
			b.requests = old.requests
		}
		if old.limits.TokensPerMinute > 0 && lim.TokensPerMinute > 0 {
			b.tokens.level = min(old.tokens.available(now), float64(b.tokens.burst))
			b.tokens.at = now
		}
	}
	m.buckets[tenant] = b
	return b
}

func (m *MemoryLimiter) newBucket(lim Limits, now time.Time) *tenantBucket {
	b := &tenantBucket{limits: lim, seen: now}
	if lim.RequestsPerMinute > 0 {
		burst := lim.Burst
		if burst <= 0 {
			burst = max(1, int(lim.RequestsPerMinute/6))
		}
		b.requests = rate.NewLimiter(rate.Limit(lim.RequestsPerMinute/60), burst)
	}
	if lim.TokensPerMinute > 0 {
		burst := lim.TokenBurst
		if burst <= 0 {
			burst = lim.TokensPerMinute
		}
		b.tokens = tokenBucket{perSec: float64(lim.TokensPerMinute) / 60, burst: burst, level: float64(burst), at: now}
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
		if b.full(now) {
			delete(m.buckets, k)
		}
	}
}

func (b *tenantBucket) full(now time.Time) bool {
	if b.requests != nil && b.requests.TokensAt(now) < float64(b.requests.Burst()) {
		return false
	}
	if b.limits.TokensPerMinute > 0 && b.tokens.available(now) < float64(b.tokens.burst) {
		return false
	}
	return true
}

// ceilSecond is how long until n request tokens are available, rounded up
// to whole seconds because Retry-After carries seconds.
func ceilSecond(l *rate.Limiter, n int, now time.Time) time.Duration {
	missing := float64(n) - l.TokensAt(now)
	secs := math.Ceil(missing/float64(l.Limit()) - 1e-9) // 1e-9: float noise must not add a second
	return max(time.Second, time.Duration(secs)*time.Second)
}

// tokenBucket is a leaky token budget that may go negative (debt) when
// settlement charges more than was reserved.
type tokenBucket struct {
	perSec float64
	burst  int64
	level  float64
	at     time.Time
}

func (t *tokenBucket) available(now time.Time) float64 {
	if !now.After(t.at) {
		return t.level
	}
	return math.Min(float64(t.burst), t.level+now.Sub(t.at).Seconds()*t.perSec)
}

func (t *tokenBucket) take(now time.Time, n float64) {
	t.level = t.available(now) - n
	if t.level > float64(t.burst) {
		t.level = float64(t.burst)
	}
	if now.After(t.at) {
		t.at = now
	}
}

// timeFor is how long the bucket needs to gain n tokens, in whole seconds.
func (t *tokenBucket) timeFor(n float64) time.Duration {
	if n <= 0 {
		return 0
	}
	return time.Duration(math.Ceil(n/t.perSec)) * time.Second
}
