package relay

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Concurrency caps of a tenant (Limits.MaxConcurrent, Limits.MaxSessions):
// a request, or a WebSocket session, holds a lease from admission until
// its record is written, and a tenant holds at most as many leases as its
// caps allow. Unlike the rate budgets, a cap has no refill: a slot comes
// back when a lease is released.

// ConcurrencyRetryAfter is the Retry-After of a refusal for a concurrency
// cap ("concurrency", "sessions", "upstream_concurrency"). A slot comes
// back when some request ends, which no clock predicts; a second is short
// enough not to leave a slot idle for long and long enough not to turn
// clients into a busy loop.
const ConcurrencyRetryAfter = time.Second

// ConcurrencyLimiter is implemented by limiters that cap concurrent work.
// The relay calls Acquire once a request is admitted by Allow (and a
// WebSocket session before its upgrade), and releases the lease when the
// request's record is written, on every exit, a panic included.
//
// Acquire returns a held Lease and an allowed Decision; or a nil Lease
// and a refusal, Decision{Allowed: false, Reason: "concurrency" or
// "sessions", RetryAfter: ConcurrencyRetryAfter}; or an error when it
// could not decide (its store is down, or ctx ended while it waited for a
// slot). A nil Lease with an allowed Decision means nothing is held (the
// tenant has no cap). A request over its cap may wait for a slot, up to
// Limits.QueueTimeout, before it is refused: Acquire returns at once when
// ctx ends, holding nothing. It must be safe for concurrent use.
type ConcurrencyLimiter interface {
	Acquire(ctx context.Context, req LeaseRequest) (Lease, Decision, error)
}

// ConcurrencyLimiterFunc adapts a function to the ConcurrencyLimiter
// interface.
type ConcurrencyLimiterFunc func(ctx context.Context, req LeaseRequest) (Lease, Decision, error)

// Acquire calls f(ctx, req).
func (f ConcurrencyLimiterFunc) Acquire(ctx context.Context, req LeaseRequest) (Lease, Decision, error) {
	return f(ctx, req)
}

// LeaseRequest is the input of a ConcurrencyLimiter. It is a struct so
// that fields can be added without breaking implementations.
type LeaseRequest struct {
	Identity Identity
	// Route is the matched route's name.
	Route string
	// Session: a WebSocket session, which counts against MaxSessions as
	// well as MaxConcurrent.
	Session bool
	// ID is the request's id (Record.RequestID): unique, it names the
	// lease in a shared store.
	ID string
	// Now is the relay's clock reading. Distributed limiters may prefer
	// their store's clock.
	Now time.Time
}

// Lease is a held slot. It is held until Release, which is idempotent
// and safe from any goroutine.
type Lease interface {
	Release()
}

// Reasons of concurrency refusals (Decision.Reason and the reason label
// of relay_rate_limited_total).
const (
	ReasonConcurrency         = "concurrency"          // Limits.MaxConcurrent
	ReasonSessions            = "sessions"             // Limits.MaxSessions
	ReasonUpstreamConcurrency = "upstream_concurrency" // every key of the route is at Upstream.MaxInFlight
)

// queuePerSlot is how many requests may wait per slot of a cap when no
// bound is given: enough to ride out a burst, few enough that a queue
// never holds more than a few rounds of the work it waits for.
const queuePerSlot = 4

// QueueBound is how many requests of one tenant may wait for a slot at
// once (per process): MaxQueued, or, when zero, four per slot of the
// larger cap, 4·max(MaxConcurrent, MaxSessions). A request that finds the
// queue full is refused at once.
func (lim Limits) QueueBound() int {
	if lim.MaxQueued > 0 {
		return lim.MaxQueued
	}
	return queuePerSlot * max(lim.MaxConcurrent, lim.MaxSessions)
}

// capped reports whether lim caps concurrency at all.
func (lim Limits) capped() bool { return lim.MaxConcurrent > 0 || lim.MaxSessions > 0 }

// slotState is one tenant's held leases and the requests waiting for one.
// It exists only while something is held or waits: memory is bounded by
// the tenants with work in flight.
type slotState struct {
	concurrent, sessions int
	waiters              []*slotWaiter // first come, first served
}

// slotWaiter is one request waiting for a slot. It is granted its slot by
// the Release that frees one (the counts are taken for it then), so a
// woken waiter never has to compete again.
type slotWaiter struct {
	ch       chan struct{} // closed when granted
	granted  bool
	session  bool
	maxConc  int
	maxSess  int
	occupied bool // still in the queue
}

// fits reports whether a lease of the given kind fits under the caps.
func (s *slotState) fits(session bool, maxConc, maxSess int) (bool, string) {
	if maxConc > 0 && s.concurrent >= maxConc {
		return false, ReasonConcurrency
	}
	if session && maxSess > 0 && s.sessions >= maxSess {
		return false, ReasonSessions
	}
	return true, ""
}

func (s *slotState) take(session bool) {
	s.concurrent++
	if session {
		s.sessions++
	}
}

// memLease is a MemoryLimiter lease.
type memLease struct {
	m        *MemoryLimiter
	tenant   string
	session  bool
	released atomic.Bool
}

// Release implements Lease.
func (l *memLease) Release() {
	if l.released.Swap(true) {
		return
	}
	l.m.release(l.tenant, l.session)
}

// concurrency is MemoryLimiter's lease state, under a lock of its own so
// that leases never wait on the buckets.
type concurrency struct {
	mu    sync.Mutex
	slots map[string]*slotState
}

// Acquire implements ConcurrencyLimiter: per tenant counters in this
// process, with a first-come first-served queue of at most
// Limits.QueueBound() waiters, each woken by the Release that grants it
// its slot (no polling, no goroutine). It never returns an error but
// ctx's, when ctx ends while the request waits.
func (m *MemoryLimiter) Acquire(ctx context.Context, req LeaseRequest) (Lease, Decision, error) {
	lim := m.defaults
	if req.Identity.Limits != nil {
		lim = *req.Identity.Limits
	}
	if !lim.capped() {
		return nil, Decision{Allowed: true}, nil
	}
	c := &m.conc
	tenant := req.Identity.Tenant
	c.mu.Lock()
	if c.slots == nil {
		c.slots = make(map[string]*slotState)
	}
	s := c.slots[tenant]
	if s == nil {
		s = &slotState{}
		c.slots[tenant] = s
	}
	// A newcomer that fits overtakes no one: release grants every waiter
	// that fits, so the waiters left are those that do not.
	ok, reason := s.fits(req.Session, lim.MaxConcurrent, lim.MaxSessions)
	if ok {
		s.take(req.Session)
		c.mu.Unlock()
		return &memLease{m: m, tenant: tenant, session: req.Session}, Decision{Allowed: true}, nil
	}
	if lim.QueueTimeout <= 0 || len(s.waiters) >= lim.QueueBound() {
		c.forget(tenant, s)
		c.mu.Unlock()
		return nil, leaseRefusal(reason), nil
	}
	w := &slotWaiter{ch: make(chan struct{}), session: req.Session,
		maxConc: lim.MaxConcurrent, maxSess: lim.MaxSessions, occupied: true}
	s.waiters = append(s.waiters, w)
	c.mu.Unlock()

	start := time.Now()
	t := time.NewTimer(lim.QueueTimeout)
	defer t.Stop()
	var err error
	select {
	case <-w.ch:
	case <-t.C:
	case <-ctx.Done():
		err = ctx.Err()
	}
	c.mu.Lock()
	granted := w.granted
	if !granted {
		s.remove(w)
		c.forget(tenant, s)
	}
	c.mu.Unlock()
	l := &memLease{m: m, tenant: tenant, session: req.Session}
	switch {
	case granted && err != nil:
		l.Release() // granted as ctx ended: give it to the next
		return nil, Decision{}, err
	case granted:
		return l, Decision{Allowed: true, Waited: max(time.Since(start), 1)}, nil
	case err != nil:
		return nil, Decision{}, err
	}
	d := leaseRefusal(reason)
	d.Waited = max(time.Since(start), 1)
	return nil, d, nil
}

// leaseRefusal is the Decision refusing a lease for reason.
func leaseRefusal(reason string) Decision {
	return Decision{Reason: reason, RetryAfter: ConcurrencyRetryAfter}
}

// release gives back one lease and grants the freed slot to the waiters
// it fits, in order.
func (m *MemoryLimiter) release(tenant string, session bool) {
	c := &m.conc
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.slots[tenant]
	if s == nil {
		return // not reached: a held lease keeps its state
	}
	s.concurrent--
	if session {
		s.sessions--
	}
	kept := s.waiters[:0]
	for _, w := range s.waiters {
		if ok, _ := s.fits(w.session, w.maxConc, w.maxSess); ok {
			s.take(w.session)
			w.granted, w.occupied = true, false
			close(w.ch)
			continue
		}
		kept = append(kept, w)
	}
	clear(s.waiters[len(kept):])
	s.waiters = kept
	c.forget(tenant, s)
}

// remove takes w out of the queue.
func (s *slotState) remove(w *slotWaiter) {
	if !w.occupied {
		return
	}
	w.occupied = false
	for i, x := range s.waiters {
		if x == w {
			copy(s.waiters[i:], s.waiters[i+1:])
			s.waiters[len(s.waiters)-1] = nil
			s.waiters = s.waiters[:len(s.waiters)-1]
			return
		}
	}
}

// forget drops a tenant's state once nothing is held or waits. c.mu is
// held.
func (c *concurrency) forget(tenant string, s *slotState) {
	if s.concurrent == 0 && s.sessions == 0 && len(s.waiters) == 0 {
		delete(c.slots, tenant)
	}
}

// Leases reports how many leases a tenant holds (concurrent requests,
// sessions among them) and how many of its requests wait, for tests and
// monitoring.
func (m *MemoryLimiter) Leases(tenant string) (concurrent, sessions, waiting int) {
	m.conc.mu.Lock()
	defer m.conc.mu.Unlock()
	if s := m.conc.slots[tenant]; s != nil {
		return s.concurrent, s.sessions, len(s.waiters)
	}
	return 0, 0, 0
}

// acquireLease takes the tenant's concurrency lease for the exchange (a
// WebSocket session when session is set), held in ex.lease until finish
// releases it. admit calls it once Allow admitted the request; the
// session path calls it with session true. A refusal is answered 429 with
// Retry-After; what Allow reserved is given back as for any refusal:
// finish settles the token reservation at nothing (usedTokens), while the
// request Allow counted stays counted (the request was made and answered,
// and a client retrying in a loop is paced by its request rate too).
//
// A wait for a slot ends when the client leaves (499, nothing held) or
// Shutdown cuts the exchange (503).
func (ex *exchange) acquireLease(session bool) error {
	rl := ex.rl
	if rl.conc == nil {
		return nil
	}
	start := rl.clock.Now()
	ctx := ex.ctx
	if rl.cfg.drain > 0 {
		// ex.ctx outlives the client (drain.go): a queued request must not.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(ex.r.Context(), cancel)()
	}
	req := LeaseRequest{Identity: ex.ident, Route: ex.route, Session: session,
		ID: ex.rec.RequestID, Now: start}
	if !ex.waitable() {
		return &rl.answers.draining
	}
	lease, d, err := rl.conc.Acquire(ctx, req)
	ex.waiting.Store(waitNone)
	if d.Waited > 0 {
		outcome := "admitted"
		if !d.Allowed {
			outcome = "refused"
		}
		rl.metrics.queueWait.WithLabelValues(ex.route, "tenant", outcome).Observe(d.Waited.Seconds())
	}
	if err != nil && ctx.Err() != nil {
		// The wait was cut: by the client or Shutdown, not the limiter.
		rl.metrics.queueWait.WithLabelValues(ex.route, "tenant", "canceled").
			Observe(rl.clock.Now().Sub(start).Seconds())
	}
	switch {
	case err == nil:
	case ex.r.Context().Err() != nil:
		return ex.clientGone()
	case context.Cause(ex.ctx) == errShutdown:
		return &rl.answers.draining
	default:
		rl.log.Warn("relay: concurrency limiter failed", "request_id", ex.rec.RequestID, "fail_open", rl.cfg.failOpen, "error", err)
		if rl.cfg.failOpen {
			rl.metrics.errors.WithLabelValues(ex.route, string(ErrTypeLimiter)).Inc()
			return nil
		}
		return &rl.answers.limiterDown
	}
	if !d.Allowed {
		if d.Reason == "" {
			d.Reason = ReasonConcurrency
		}
		return ex.refuse(d)
	}
	ex.lease = lease
	return nil
}

// waitable marks the exchange as about to wait for a concurrency slot,
// unless Shutdown has begun: a request that has not started by then is
// answered 503 rather than kept waiting. Shutdown sets rl.stopping before
// it looks for queued exchanges (endWaits), and an exchange sets queued
// before it looks at rl.stopping, so that one of the two always sees the
// other. The caller stores waitNone once the wait is over.
func (ex *exchange) waitable() bool {
	ex.waiting.Store(waitSlot)
	if ex.rl.stopping.Load() {
		ex.waiting.Store(waitNone)
		return false
	}
	return true
}

// What an exchange waits for (exchange.waiting).
const (
	waitNone uint32 = iota
	waitBody        // the request body
	waitSlot        // a concurrency slot
)

// endWaits ends the waits of exchanges queued for a concurrency slot: they
// are answered 503 (shutting down). rl.mu is held.
func (rl *Relay) endWaits() {
	for ex := rl.live; ex != nil; ex = ex.next {
		if ex.waiting.Load() == waitSlot {
			ex.cancel(errShutdown)
		}
	}
}
