package relay

import (
	"context"
	"sync"
	"time"
)

// Per-key caps (Upstream.MaxInFlight): an attempt holds a slot on its key
// from before it is sent until it ends (attempt.end), its response
// relayed, or its session over. The counts are per process, unless a
// KeySlotStore shares them (keyslots.go): then the store decides and the
// counts here mirror this process's share.

// routeSlots guards the in-flight counts of a route's keys (poolKey.inflight)
// and queues the requests waiting for a free key. One lock per route: it is
// taken twice per attempt, only on routes with MaxInFlight.
type routeSlots struct {
	mu       sync.Mutex
	waiters  []chan struct{} // closed, first first, one per freed slot
	capacity int             // the queue's bound: queuePerSlot per slot of the capped keys
}

// keySlot is the slot an attempt holds: a key of a capped pool. The zero
// value holds nothing.
type keySlot struct {
	pool  *backendPool
	key   int
	lease Lease // the slot in a KeySlotStore; nil when counted here only
}

// release gives the slot back and wakes the first waiter, which looks for
// a free key again. It is idempotent (the slot is cleared).
func (ks *keySlot) release() {
	p := ks.pool
	if p == nil {
		return
	}
	ks.pool = nil
	if ks.lease != nil {
		ks.lease.Release() // before the wake: a local waiter finds it free
	}
	s := p.slots
	s.mu.Lock()
	defer s.mu.Unlock()
	p.keys[ks.key].inflight--
	s.wakeOne()
}

// wakeOne wakes the first waiter. s.mu is held.
func (s *routeSlots) wakeOne() {
	if len(s.waiters) == 0 {
		return
	}
	close(s.waiters[0])
	s.waiters[0] = nil
	s.waiters = s.waiters[1:]
}

// dequeue takes ch out of the queue; if it was already woken (a slot was
// freed for it) and it does not use that slot, the wake is passed on.
// s.mu is held.
func (s *routeSlots) dequeue(ch chan struct{}) {
	for i, w := range s.waiters {
		if w == ch {
			s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
			return
		}
	}
	s.wakeOne()
}

// takeKeySlot takes a slot for the attempt at t.Backends[i] before it is
// sent, when its pool caps its keys (MaxInFlight). If the chosen key is
// full it switches to another free key of the same pool (a resting one
// last), else to a later backend of the route with a free key (swapped
// into place i); when every one is full it waits for a slot up to the
// route's QueueTimeout, then refuses: 429, reason "upstream_concurrency".
// The wait ends when the client leaves (499), or base ends: Shutdown cuts
// the exchange (503) or the Total timeout runs out (504).
//
// The attempt loop calls it for every attempt, so a WebSocket session
// dialled through ex.attempts holds its key's slot for its lifetime: the
// slot is released by attempt.end, which serve's deferred ex.up.end runs.
func (ex *exchange) takeKeySlot(base context.Context, i int) (keySlot, error) {
	t := ex.target
	s := t.slots
	if s == nil {
		return keySlot{}, nil
	}
	var timer *time.Timer
	var start time.Time
	front := false // a woken waiter that lost its slot keeps its place
	// With a shared store, a slot freed by another replica wakes no one
	// here: a waiter polls, backing off.
	shared := ex.rl.cfg.keySlots != nil && t.Backends[i].capped()
	var poll <-chan time.Time
	gap := keyPollMin
	for {
		var ks keySlot
		var ok bool
		if shared {
			ks, ok = ex.sharedSlot(base, i)
			s.mu.Lock()
		} else {
			s.mu.Lock()
			ks, ok = t.freeSlot(i)
		}
		if ok {
			s.mu.Unlock()
			if timer != nil {
				timer.Stop()
				ex.waiting.Store(waitNone)
				ex.observeWait("admitted", start)
			}
			return ks, nil
		}
		if t.queueWait <= 0 || (!front && len(s.waiters) >= s.capacity) {
			s.mu.Unlock()
			if timer != nil {
				ex.waiting.Store(waitNone)
				ex.observeWait("refused", start)
			}
			return keySlot{}, ex.refuse(leaseRefusal(ReasonUpstreamConcurrency))
		}
		if timer == nil && !ex.waitable() {
			s.mu.Unlock()
			return keySlot{}, &ex.rl.answers.draining
		}
		ch := make(chan struct{})
		if front {
			s.waiters = append(s.waiters, nil)
			copy(s.waiters[1:], s.waiters)
			s.waiters[0] = ch
		} else {
			s.waiters = append(s.waiters, ch)
		}
		s.mu.Unlock()
		if timer == nil {
			timer, start = time.NewTimer(t.queueWait), time.Now()
		}
		var pt *time.Timer
		if shared {
			pt = time.NewTimer(gap)
			poll, gap = pt.C, min(2*gap, keyPollMax)
		}
		var err error
		select {
		case <-ch:
			stopTimer(pt)
			front = true
			continue
		case <-poll:
			s.mu.Lock()
			s.remove(ch) // woken meanwhile or not, it asks again now
			s.mu.Unlock()
			front = true
			continue
		case <-timer.C:
			err = ex.refuse(leaseRefusal(ReasonUpstreamConcurrency))
			ex.observeWait("refused", start)
		case <-base.Done():
			err = ex.failed(beforeResponse, context.Cause(base), base.Err())
			ex.observeWait("canceled", start)
		case <-ex.r.Context().Done(): // with WithDrainOnClientGone ex.ctx outlives the client
			err = ex.clientGone()
			ex.observeWait("canceled", start)
		}
		timer.Stop()
		stopTimer(pt)
		ex.waiting.Store(waitNone)
		s.mu.Lock()
		s.dequeue(ch)
		s.mu.Unlock()
		return keySlot{}, err
	}
}

// stopTimer stops t, if any.
func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// remove takes ch out of the queue, if it is there (not woken yet).
// s.mu is held.
func (s *routeSlots) remove(ch chan struct{}) {
	for i, w := range s.waiters {
		if w == ch {
			s.waiters = append(s.waiters[:i], s.waiters[i+1:]...)
			return
		}
	}
}

// observeWait observes a wait for a key slot.
func (ex *exchange) observeWait(outcome string, start time.Time) {
	ex.rl.metrics.queueWait.WithLabelValues(ex.route, "upstream", outcome).Observe(time.Since(start).Seconds())
}

// freeSlot takes a free slot for attempt i (see takeKeySlot), adjusting
// t.Backends; it reports false when every candidate key is full. The
// route's slots.mu is held.
func (t *Target) freeSlot(i int) (keySlot, bool) {
	b := &t.Backends[i]
	if !b.capped() {
		return keySlot{}, true
	}
	if k, ok := b.pool.freeKey(b.key); ok {
		b.pool.use(b, k)
		return keySlot{pool: b.pool, key: k}, true
	}
	for j := i + 1; j < len(t.Backends); j++ {
		c := &t.Backends[j]
		if c.pool == b.pool {
			continue // full, as just seen
		}
		if !c.capped() {
			t.Backends[i], t.Backends[j] = t.Backends[j], t.Backends[i]
			return keySlot{}, true
		}
		if k, ok := c.pool.freeKey(c.key); ok {
			p := c.pool
			p.use(c, k)
			t.Backends[i], t.Backends[j] = t.Backends[j], t.Backends[i]
			return keySlot{pool: p, key: k}, true
		}
	}
	return keySlot{}, false
}

// freeKey returns a key of the pool with a free slot: want if it is free,
// else the first free one after it that does not rest, else the first
// free resting one. The route's slots.mu is held.
func (p *backendPool) freeKey(want int) (int, bool) {
	if p.keys[want].inflight < p.maxInFlight {
		return want, true
	}
	n := len(p.keys)
	resting := -1
	now := p.clock.Now()
	p.mu.Lock() // the keys' rests; slots.mu is never taken under p.mu
	defer p.mu.Unlock()
	for k := 1; k < n; k++ {
		i := (want + k) % n
		if p.keys[i].inflight >= p.maxInFlight {
			continue
		}
		if !p.keys[i].restUntil.After(now) {
			return i, true
		}
		if resting < 0 {
			resting = i
		}
	}
	return resting, resting >= 0
}

// capped reports whether b's pool caps its keys (MaxInFlight).
func (b *Backend) capped() bool { return b.pool != nil && b.pool.maxInFlight > 0 }

// use counts a request in flight on key k and points b at it. The route's
// slots.mu is held.
func (p *backendPool) use(b *Backend, k int) {
	p.keys[k].inflight++
	b.key, b.Header, b.Done = k, p.keys[k].header, p.keys[k].done
}

// InFlight reports the requests in flight on each key of the named
// route's upstream (by its Name), for tests and monitoring; nil when the
// table has no such upstream or it has no MaxInFlight.
func (t *RouteTable) InFlight(route, upstream string) []int {
	for _, r := range t.routes {
		if r.Name != route || r.slots == nil {
			continue
		}
		for _, b := range r.backends {
			if b.name == upstream && b.maxInFlight > 0 {
				r.slots.mu.Lock()
				defer r.slots.mu.Unlock()
				out := make([]int, len(b.keys))
				for i, k := range b.keys {
					out[i] = k.inflight
				}
				return out
			}
		}
	}
	return nil
}
