package relay

import (
	"sync"
	"sync/atomic"
	"time"
)

// maxRefusals bounds the refusals remembered at once (about 100 bytes
// each); beyond it a refusal is not remembered, and that tenant's next
// requests are read before the limiter refuses them, as without the memo.
const maxRefusals = 10000

// refusals remembers, per tenant, key and route, until when the limiter
// refused a caller for its request budget, so that its next requests are
// refused before their bodies are read: a refused caller cannot make the
// relay buffer bodies, and no round trip to a remote limiter is spent on
// it. The limiter would refuse them too, whether it counts per tenant,
// key or route (a request refused for its request budget spends nothing),
// so the answers are the same; a refusal for tokens is not remembered,
// since a smaller request may fit.
type refusals struct {
	n  atomic.Int32 // len(m), so that the common case takes no lock
	mu sync.Mutex
	m  map[refusalKey]refusal
}

type refusalKey struct{ tenant, key, route string }

type refusal struct {
	at, until time.Time
	d         Decision
}

// note remembers a refusal for the request budget.
func (f *refusals) note(id Identity, route string, now time.Time, d Decision) {
	if d.Allowed || d.Reason != "requests" || d.RetryAfter <= 0 {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = make(map[refusalKey]refusal)
	}
	if len(f.m) >= maxRefusals {
		for k, r := range f.m {
			if !now.Before(r.until) {
				delete(f.m, k)
			}
		}
		if len(f.m) >= maxRefusals {
			return
		}
	}
	f.m[refusalKey{id.Tenant, id.KeyID, route}] = refusal{at: now, until: now.Add(d.RetryAfter), d: d}
	f.n.Store(int32(len(f.m)))
}

// check returns the decision to answer with when the caller is still
// refused on this route: the remembered one, its retry and reset times
// counted from now.
func (f *refusals) check(id Identity, route string, clock Clock) (Decision, bool) {
	if f.n.Load() == 0 {
		return Decision{}, false
	}
	now := clock.Now()
	k := refusalKey{id.Tenant, id.KeyID, route}
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.m[k]
	if !ok {
		return Decision{}, false
	}
	if !now.Before(r.until) {
		delete(f.m, k)
		f.n.Store(int32(len(f.m)))
		return Decision{}, false
	}
	d, gone := r.d, now.Sub(r.at)
	d.RetryAfter = r.until.Sub(now)
	d.Requests.Reset = max(0, d.Requests.Reset-gone)
	d.Tokens.Reset = max(0, d.Tokens.Reset-gone)
	return d, true
}
