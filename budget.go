package relay

import "sync/atomic"

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

// force reserves n bytes whatever the limit: for small adjustments to
// memory already held.
func (b *byteBudget) force(n int64) {
	b.notePeak(b.used.Add(n))
}

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

// observeFree is how many bytes of observation buffers each response holds
// on its own account; only growth beyond it is taken from the relay's
// observation budget. Ordinary events and JSON bodies stay under it, so
// the budget is touched only by large ones.
const observeFree = 16 << 10

// obsAccount accounts for the observation buffers of one response.
type obsAccount struct {
	budget *byteBudget // nil: unbounded (parsers built by tests)
	size   int64       // capacity of the buffers held
	held   int64       // the part of size taken from budget
}

// grow returns b with room for n bytes (n > cap(b)), at most limit,
// charging the growth; it reports false, leaving b as it was, when the
// budget refuses. Capacity at least doubles, from 512 bytes, so that
// events of slowly growing sizes do not reallocate each time.
func (a *obsAccount) grow(b []byte, n, limit int) ([]byte, bool) {
	c := min(max(n, 2*cap(b), 512), limit)
	if c <= cap(b) || !a.charge(int64(c-cap(b))) {
		return b, false
	}
	return realloc(b, c), true
}

// growSome is grow for a buffer that may grow less than asked: when the
// budget refuses, b still grows as far as the response's own observeFree
// allows.
func (a *obsAccount) growSome(b []byte, n, limit int) []byte {
	if nb, ok := a.grow(b, n, limit); ok {
		return nb
	}
	c := min(n, limit, cap(b)+int(max(0, observeFree-a.size)))
	if c <= cap(b) {
		return b
	}
	a.charge(int64(c - cap(b))) // within observeFree: never refused
	return realloc(b, c)
}

func realloc(b []byte, c int) []byte {
	nb := make([]byte, len(b), c)
	copy(nb, b)
	return nb
}

// charge accounts for d more bytes of buffers.
func (a *obsAccount) charge(d int64) bool {
	over := max(0, a.size+d-observeFree) - a.held
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
