package relay

import (
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Upstream health: how RouteTable rests keys and whole upstreams.
//
// A key rests after failures (see report). An upstream rests when every
// one of its keys rests (until the first of them is free again), or when
// its breaker opens: breakerFailures failures in a row (connection
// errors and 5xx; 429 and 401 are about a key, not the upstream) open it
// for breakerCoolDown. A resting upstream is ordered after the others, so
// it is tried only as a last resort. Once its rest is over it is half
// open: exactly one request (the probe) has it first; the others keep
// it last until the probe reports. A success closes it, a failure rests
// it again.
const (
	// maxRest caps any rest, a Retry-After included: a provider's
	// misconfigured hour-long Retry-After must not take an upstream out
	// for an hour.
	maxRest = 5 * time.Minute
	// maxFailureRest caps the doubling rest of a key failing without a
	// Retry-After.
	maxFailureRest = time.Minute
	// breakerFailures failures in a row open an upstream's breaker.
	breakerFailures = 3
	// breakerCoolDown is how long an opened breaker, or a failure while
	// resting or probing, rests the upstream.
	breakerCoolDown = 10 * time.Second
	// probeWindow is how long a claimed probe holds the half-open state
	// before another request may probe: a probe whose request was
	// abandoned (its client left) never reports.
	probeWindow = time.Minute
)

// States of relay_upstream_state.
const (
	stateClosed   = 0
	stateHalfOpen = 1
	stateOpen     = 2
)

// Reasons of relay_upstream_rests_total: a key's rest, then the
// upstream's own.
const (
	restRetryAfter = iota // a key rests for the upstream's Retry-After
	restFailures          // a key rests after failures in a row
	restAllKeys           // the upstream rests: every key rests
	restBreaker           // the upstream rests: its breaker opened
	restReopened          // the upstream rests again: a failure while resting or probing
	restReasons
)

// restReasonName is a reason's label value.
func restReasonName(r int) string {
	return [restReasons]string{"retry_after", "failures", "all_keys", "breaker", "reopened"}[r]
}

// poolMetrics are one upstream's health metrics: children resolved once,
// when New instruments the table; nil for a table New did not build.
type poolMetrics struct {
	state prometheus.Gauge
	rests [restReasons]prometheus.Counter
}

// instrument resolves every upstream's health metrics. New calls it on the
// table it builds, before serving.
func (t *RouteTable) instrument(m *metrics) {
	for _, r := range t.routes {
		for _, b := range r.backends {
			pm := &poolMetrics{state: m.upstreamState.WithLabelValues(r.Name, b.name)}
			for i := range pm.rests {
				pm.rests[i] = m.upstreamRests.WithLabelValues(r.Name, b.name, restReasonName(i))
			}
			pm.state.Set(stateClosed)
			b.metrics = pm
		}
		if st := r.sticky; st != nil {
			for i := range st.outcomes {
				st.outcomes[i] = m.sticky.WithLabelValues(r.Name, stickyOutcomeName(i))
			}
		}
	}
}

func (b *backendPool) setState(s float64) {
	if b.metrics != nil {
		b.metrics.state.Set(s)
	}
}

func (b *backendPool) rested(reason int) {
	if b.metrics != nil {
		b.metrics.rests[reason].Inc()
	}
}

// order writes the order in which a request tries the route's upstreams
// to ord: a half-open upstream whose probe is due, for this request to
// probe (tg.probe; claimed by claimProbe before the first attempt); then
// the available upstreams in round-robin order from first; then the
// resting ones, the one whose rest ends first first. Available upstreams
// cost an atomic load each, no clock reading and no lock.
func (cr *compiledRoute) order(now *lazyNow, tg *Target, first int, ord []int) []int {
	n := len(cr.backends)
	ord = ord[:0]
	probe, resting := -1, 0
	for k := range n {
		i := (first + k) % n
		b := cr.backends[i]
		u := b.until.Load()
		switch {
		case u == 0:
			ord = append(ord, i)
		case probe < 0 && probeDue(now, u):
			probe, tg.probe, tg.probeSeen = i, b, u
		default:
			resting++
		}
	}
	if probe >= 0 {
		ord = append(ord, 0)
		copy(ord[1:], ord[:len(ord)-1])
		ord[0] = probe
	}
	if resting == 0 {
		return ord
	}
	start := len(ord)
	for k := range n {
		i := (first + k) % n
		if u := cr.backends[i].until.Load(); u != 0 && i != probe {
			ord = append(ord, i)
		}
	}
	// Insertion sort by the end of the rest (n is small); stable, so equal
	// rests keep the round robin's order.
	rest := ord[start:]
	for j := 1; j < len(rest); j++ {
		for k := j; k > 0 && restEnd(cr.backends[rest[k]]) < restEnd(cr.backends[rest[k-1]]); k-- {
			rest[k], rest[k-1] = rest[k-1], rest[k]
		}
	}
	// An upstream that recovered between the two loads is in neither
	// group; one that started resting is in both: keep exactly n.
	return dedupOrder(ord, n)
}

// dedupOrder drops repeated upstreams from ord and appends the missing
// ones, so that it lists each of n upstreams once. Quadratic: routes have
// a handful of upstreams, and it runs only while one rests.
func dedupOrder(ord []int, n int) []int {
	out := ord[:0]
	for _, i := range ord {
		if !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	for i := range n {
		if !slices.Contains(out, i) {
			out = append(out, i)
		}
	}
	return out
}

// restEnd is when an upstream's rest (or its probe's window) ends, in
// Unix nanoseconds; 0 when it is available.
func restEnd(b *backendPool) int64 {
	u := b.until.Load()
	if u < 0 {
		return -u
	}
	return u
}

// probeDue reports whether a resting upstream's rest, or the window of
// an earlier probe that never reported, is over at now.
func probeDue(now *lazyNow, u int64) bool {
	t := now.now().UnixNano()
	return (u > 0 && t >= u) || (u < 0 && t >= -u)
}

// claimProbe is called once before a request's first attempt. When
// Resolve put a half-open upstream first for this request to probe, it
// claims the probe: only one request wins the swap from the state Resolve
// saw. A request that lost it (another is probing) moves that upstream
// last, where resting upstreams go.
func (t *Target) claimProbe() {
	b := t.probe
	if b == nil {
		return
	}
	t.probe = nil
	now := b.clock.Now()
	if probeDue(&lazyNow{t: now, read: true}, t.probeSeen) &&
		b.until.CompareAndSwap(t.probeSeen, -(now.UnixNano()+int64(probeWindow))) {
		b.setState(stateHalfOpen)
		return
	}
	if bs := t.Backends; len(bs) > 1 {
		first := bs[0]
		copy(bs, bs[1:])
		bs[len(bs)-1] = first
	}
}

// report rests a key, and maybe its upstream, after a failure, and
// clears the upstream's failures after a success. A key that answers 401,
// 429 or 5xx, or fails to connect, rests: for its Retry-After (or
// retry-after-ms) when the upstream sent one, at most maxRest; otherwise
// from the second failure in a row for 1s, doubling up to a minute. Then
// the upstream rests when every key does, or when its breaker opens.
// Only a failure reads the clock.
func (b *backendPool) report(idx int, a AttemptResult) {
	status := a.Status
	upFailed := a.Err != nil || status >= 500
	failed := upFailed || status == http.StatusTooManyRequests || status == http.StatusUnauthorized
	b.mu.Lock()
	defer b.mu.Unlock()
	k := &b.keys[idx]
	if !failed {
		// A success closes a half-open upstream (its probe, or a request
		// that had it as a last resort). A resting one rests on until its
		// probe: the success may be of a request sent before the rest.
		k.failures, b.failures = 0, 0
		if u := b.until.Load(); u < 0 && b.until.CompareAndSwap(u, 0) {
			b.setState(stateClosed)
		}
		return
	}
	now := b.clock.Now()
	k.failures++
	switch {
	case a.RetryAfter > 0:
		k.restUntil = now.Add(min(a.RetryAfter, maxRest))
		b.rested(restRetryAfter)
	case k.failures >= 2:
		rest := time.Second << min(k.failures-2, 6)
		k.restUntil = now.Add(min(rest, maxFailureRest))
		b.rested(restFailures)
	}
	var until time.Time
	reason := -1
	if allRest, first := b.keysRest(now); allRest {
		until, reason = first, restAllKeys
	}
	// A probe that fails, for a key's reason too (a 429 or 401 without
	// Retry-After), rests its upstream again rather than leave it half open.
	if upFailed || b.until.Load() < 0 {
		if upFailed {
			b.failures++
		}
		switch {
		case b.until.Load() != 0:
			until, reason = later(until, now.Add(breakerCoolDown)), restReopened
		case b.failures >= breakerFailures:
			until, reason = later(until, now.Add(breakerCoolDown)), restBreaker
		}
	}
	if reason >= 0 {
		b.until.Store(until.UnixNano())
		b.setState(stateOpen)
		b.rested(reason)
	}
}

// keysRest reports whether every key of the pool rests at now, and when
// the first of them is free again. b.mu is held.
func (b *backendPool) keysRest(now time.Time) (bool, time.Time) {
	var first time.Time
	for i := range b.keys {
		r := b.keys[i].restUntil
		if !r.After(now) {
			return false, time.Time{}
		}
		if first.IsZero() || r.Before(first) {
			first = r
		}
	}
	return true, first
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
