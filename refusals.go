package relay

import (
	"sync"
	"sync/atomic"
	"time"
)

// maxRefusals bounds the refusals remembered at once (about 200 bytes
// each); beyond it a refusal is not remembered, and that tenant's next
// requests are read before the limiter refuses them, as without the memo.
const maxRefusals = 10000

// defaultRefusalMemo is how long a refusal is remembered at most
// (WithRefusalMemo): a limiter topped up, or an Identity whose Limits
// changed, is asked again within this time, whatever Retry-After it gave.
const defaultRefusalMemo = 5 * time.Second

// Sweeping the memo is bounded: each new refusal looks at a few entries
// (map iteration starts at a random one), and a full memo at a few hundred
// more before it gives up remembering; when every entry has expired, the
// memo is emptied at once.
const (
	refusalSweep     = 8
	refusalSweepFull = 256
)

// refusals remembers, per tenant, key and route, that the limiter refused
// a caller for its request budget, so that its next requests are refused
// before their bodies are read: a refused caller cannot make the relay
// buffer bodies, and no round trip to a remote limiter is spent on it.
//
// It assumes the limiter counts requests per tenant, key and route, or
// more coarsely (per tenant, per key): then requests with the same three
// values share a request budget, the limiter would refuse them too (a
// refusal for the request budget spends nothing), and the answers are the
// same. A limiter that counts more finely (on Labels, or on anything else
// an Authenticator sets without a KeyID of its own) would see a whole
// group refused for one member: WithRefusalMemo(0) switches the memo off.
// A refusal for tokens is not remembered, since a smaller request may fit.
//
// An entry lives until the Retry-After the limiter gave, but at most life,
// so that a limiter that was topped up, or changed limits, is asked again
// soon; a further refusal renews it. Early answers carry the limiter's
// own Retry-After, counted down.
//
// check costs one atomic load before the first refusal, and that and a
// clock reading while none is live (all expired); otherwise a read lock
// and a map lookup.
type refusals struct {
	off    bool          // WithRefusalMemo(0): nothing is remembered
	life   time.Duration // an entry's longest life; zero: defaultRefusalMemo
	latest atomic.Int64  // the latest expiry of any entry, Unix ns; 0: no refusal yet
	mu     sync.RWMutex
	m      map[refusalKey]refusal
}

type refusalKey struct{ tenant, key, route string }

type refusal struct {
	at      time.Time // when the limiter refused
	until   time.Time // at + its Retry-After
	expires time.Time // when the entry stops answering: until, or at + life
	d       Decision
}

// note remembers a refusal for the request budget.
func (f *refusals) note(id Identity, route string, now time.Time, d Decision) {
	if f.off || d.Allowed || d.Reason != "requests" || d.RetryAfter <= 0 {
		return
	}
	life := f.life
	if life <= 0 {
		life = defaultRefusalMemo
	}
	exp := now.Add(min(d.RetryAfter, life))
	f.mu.Lock()
	defer f.mu.Unlock()
	k := refusalKey{id.Tenant, id.KeyID, route}
	if f.m == nil || now.UnixNano() >= f.latest.Load() {
		// Nothing live: start afresh (a large map is not kept).
		f.m = make(map[refusalKey]refusal)
	} else if _, renew := f.m[k]; !renew {
		f.sweep(now, refusalSweep)
		if len(f.m) >= maxRefusals {
			if f.sweep(now, refusalSweepFull); len(f.m) >= maxRefusals {
				return
			}
		}
	}
	f.m[k] = refusal{at: now, until: now.Add(d.RetryAfter), expires: exp, d: d}
	if e := exp.UnixNano(); e > f.latest.Load() {
		f.latest.Store(e)
	}
}

// sweep deletes the expired among at most n entries; called with mu held.
func (f *refusals) sweep(now time.Time, n int) {
	for k, r := range f.m {
		if n--; n < 0 {
			return
		}
		if !now.Before(r.expires) {
			delete(f.m, k)
		}
	}
}

// check returns the decision to answer with when the caller is still
// refused on this route: the remembered one, its retry and reset times
// counted from now.
func (f *refusals) check(id Identity, route string, clock Clock) (Decision, bool) {
	latest := f.latest.Load()
	if latest == 0 {
		return Decision{}, false // no refusal yet: not even a clock reading
	}
	now := clock.Now()
	if now.UnixNano() >= latest {
		return Decision{}, false // every entry has expired
	}
	f.mu.RLock()
	r, ok := f.m[refusalKey{id.Tenant, id.KeyID, route}]
	f.mu.RUnlock()
	if !ok || !now.Before(r.expires) {
		return Decision{}, false
	}
	d, gone := r.d, now.Sub(r.at)
	d.RetryAfter = r.until.Sub(now)
	d.Requests.Reset = max(0, d.Requests.Reset-gone)
	d.Tokens.Reset = max(0, d.Tokens.Reset-gone)
	return d, true
}
