package relay

import (
	"sync"
	"sync/atomic"
)

// byteBudget is a relay-wide allowance of bytes that requests share: the
// request bodies buffered in memory, or the buffers that observe responses.
// It is lock-free; take and give are one or two atomic operations.
type byteBudget struct {
	limit int64
	used  atomic.Int64
	peak  atomic.Int64 // highest used so far, for tests and monitoring
}

// take reserves n bytes; it reports false, reserving nothing, when that
// would exceed the limit.
func (b *byteBudget) take(n int64) bool {
	if n <= 0 {
		return true
	}
	for {
		u := b.used.Load()
		if u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			b.notePeak(u + n)
			return true
		}
	}
}

// room reports whether n bytes could be taken now (a hint: another
// request may take them first).
func (b *byteBudget) room(n int64) bool { return b.used.Load()+n <= b.limit }

func (b *byteBudget) give(n int64) {
	if n != 0 {
		b.used.Add(-n)
	}
}

func (b *byteBudget) notePeak(u int64) {
	for {
		p := b.peak.Load()
		if u <= p || b.peak.CompareAndSwap(p, u) {
			return
		}
	}
}

// tenantShares bounds what each tenant holds of a byteBudget, so that one
// tenant (a hostile one, or one whose requests the limiter will refuse
// once their bodies are read) cannot hold all of it. A map under a mutex:
// it is touched a few times per request body, never per event, and holds
// only tenants with bytes held.
type tenantShares struct {
	limit int64
	mu    sync.Mutex
	m     map[string]int64
}

// take reserves n bytes for tenant; it reports false, reserving nothing,
// when that would exceed the tenant's limit.
func (s *tenantShares) take(tenant string, n int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.m[tenant]
	if u+n > s.limit {
		return false
	}
	if s.m == nil {
		s.m = make(map[string]int64)
	}
	s.m[tenant] = u + n
	return true
}

func (s *tenantShares) give(tenant string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u := s.m[tenant] - n; u > 0 {
		s.m[tenant] = u
	} else {
		delete(s.m, tenant)
	}
}

// held returns what tenant holds.
func (s *tenantShares) held(tenant string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[tenant]
}

// observeFree is how many bytes of observation buffers each response holds
// on its own account; only growth beyond it is taken from the relay's
// observation budget. Ordinary events and JSON bodies stay under it, so
// the budget is touched only by large ones. tailReserve of it is kept for
// the window over the end of a large event or body, so that the usage
// object there (small, and last) is found even when the budget is spent;
// heads get the rest, headFree.
const (
	observeFree = 16 << 10
	tailReserve = 4 << 10
	headFree    = observeFree - tailReserve
	// minTail is the window the reserve holds: the last 2-4 KiB.
	minTail = tailReserve / 2
)

// obsAccount accounts for the observation buffers of one response. size
// counts the buffers' capacity, less the tail reserve; what exceeds
// headFree is taken from the budget.
type obsAccount struct {
	budget *byteBudget // nil: unbounded (parsers built by tests)
	size   int64       // capacity of the buffers held, less tailReserve of a tail
	held   int64       // the part of size taken from budget
}

// grow returns b with room for n bytes (n > cap(b)), at most limit,
// charging the growth; it reports false, leaving b as it was, when the
// budget refuses. Capacity at least doubles, from 512 bytes, so that
// events of slowly growing sizes do not reallocate each time; but when n
// fits in the response's own headFree, growth stops there, so that events
// that fit never touch the budget.
func (a *obsAccount) grow(b []byte, n, limit int) ([]byte, bool) {
	c := min(max(n, 2*cap(b), 512), limit)
	if own := cap(b) + int(headFree-a.size); n <= own {
		c = min(c, own)
	}
	if c <= cap(b) || !a.charge(int64(c-cap(b))) {
		return b, false
	}
	return realloc(b, c), true
}

// growSome is grow for a buffer that may grow less than asked: when the
// budget refuses, b still grows as far as the response's own headFree
// allows.
func (a *obsAccount) growSome(b []byte, n, limit int) []byte {
	if nb, ok := a.grow(b, n, limit); ok {
		return nb
	}
	c := min(n, limit, cap(b)+int(max(0, headFree-a.size)))
	if c <= cap(b) {
		return b
	}
	a.charge(int64(c - cap(b))) // within headFree: never refused
	return realloc(b, c)
}

// tailBuf returns an empty buffer for a window over the last bytes of a
// large event or body, and the window's size: t bytes (the buffer holds
// up to 2t) when the budget grants what exceeds the tail reserve, else
// minTail, out of the reserve, which is never refused. b is the tail
// buffer held so far, reused when it is large enough.
func (a *obsAccount) tailBuf(b []byte, t int) ([]byte, int) {
	if cap(b) >= 2*t {
		return b[:0], t
	}
	if 2*t > tailReserve {
		// b is dropped: its own charge, if any, pays for part of the new one.
		if a.charge(int64(2*t - tailReserve - max(0, cap(b)-tailReserve))) {
			return make([]byte, 0, 2*t), t
		}
		if t = minTail; cap(b) >= 2*t {
			return b[:0], t
		}
	}
	return make([]byte, 0, 2*t), t
}

func realloc(b []byte, c int) []byte {
	nb := make([]byte, len(b), c)
	copy(nb, b)
	return nb
}

// charge accounts for d more bytes of buffers.
func (a *obsAccount) charge(d int64) bool {
	over := max(0, a.size+d-headFree) - a.held
	if over > 0 && a.budget != nil && !a.budget.take(over) {
		return false
	}
	a.size += d
	a.held += max(over, 0)
	return true
}

// release gives back what was taken, once the buffers are dropped.
func (a *obsAccount) release() {
	if a.budget != nil {
		a.budget.give(a.held)
	}
	a.size, a.held = 0, 0
}
