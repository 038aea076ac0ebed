package relay

import (
	"fmt"
	"hash/maphash"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamrelay/relay/internal/provider"
)

// Sticky routing: a route with Sticky pins each conversation to the
// upstream key that last served it, so that the provider's prompt cache,
// which lives with the account (key), keeps hitting. README "Sticky
// routing".

// StickySource says what a sticky route recognises a conversation by.
type StickySource string

// Sticky sources.
const (
	// StickyHeader pins by a request header (Sticky.Header), such as a
	// session id the client sends.
	StickyHeader StickySource = "header"
	// StickyPromptCacheKey pins by the body's "prompt_cache_key" (OpenAI).
	StickyPromptCacheKey StickySource = "prompt_cache_key"
	// StickyUser pins by the body's "user" (OpenAI), else its
	// "metadata"."user_id" (Anthropic).
	StickyUser StickySource = "user"
	// StickyPrompt pins by the opening of the conversation: the system
	// prompt ("system", "instructions" or "systemInstruction") followed
	// by the first element of "messages", "input" or "contents", as
	// written, of which only the first Sticky.PromptBytes bytes are
	// hashed. It needs no client change; conversations that open alike
	// (the same system prompt and first message) share a pin.
	StickyPrompt StickySource = "prompt"
)

// Default bounds of a sticky route.
const (
	defaultStickyTTL         = 30 * time.Minute
	defaultStickyMaxPins     = 65536
	defaultStickyPromptBytes = 4096
)

// Sticky pins a route's conversations to upstream keys. The zero value
// (no Source) is off: requests spread over the keys as usual.
//
// A request whose pin key (from Source) has a pin is sent first to the
// pinned upstream key, unless that key or its upstream rests (health):
// then it spreads as any request, and the key that serves it becomes the
// pin. A pinned key that fails fails over as usual, and the key that
// serves the request is pinned instead. A pinned key at its upstream's
// MaxInFlight is not waited for: the request takes another free key, as
// any capped request does, and that key becomes the pin (a wait would
// trade latency, possibly a whole stream's, for a cache hit). Only a
// response below 400 pins or refreshes a pin; a request without a pin
// key spreads as usual and pins nothing.
//
// Pins are kept in memory, per route and per process (replicas pin
// independently), at most MaxPins, the least recently used evicted
// first. The pin key itself is never kept, logged or recorded: only its
// 64-bit hash, seeded at random per RouteTable.
type Sticky struct {
	// Source is what a conversation is recognised by. Empty: off.
	Source StickySource
	// Header names the request header of StickyHeader, which needs it;
	// the other sources must leave it empty.
	Header string
	// TTL is how long a pin outlives its last use. Zero means 30
	// minutes; negative is an error.
	TTL time.Duration
	// MaxPins bounds the pins the route keeps. Zero means 65536;
	// negative is an error.
	MaxPins int
	// PromptBytes bounds what StickyPrompt hashes: the first PromptBytes
	// bytes of the system prompt and first message together. Zero means
	// 4096; negative is an error, as is setting it for another source.
	PromptBytes int
}

// compileSticky checks a route's Sticky, adding its problems to p, and
// returns the route's pin table, nil when stickiness is off.
func compileSticky(p *routeProblems, s Sticky, seed maphash.Seed, clock Clock) *stickyTable {
	before := len(p.list)
	switch s.Source {
	case "":
		if s != (Sticky{}) {
			p.add("Sticky.Source", "", "sticky options are set but no source (want header, prompt_cache_key, user or prompt)", "")
		}
		return nil
	case StickyHeader:
		if s.Header == "" {
			p.add("Sticky.Header", "", "the header source needs a header name (such as X-Session-Id)", "")
		} else if !isToken(s.Header) {
			p.add("Sticky.Header", "", fmt.Sprintf("%q is not a valid header name", s.Header), "")
		}
	case StickyPromptCacheKey, StickyUser, StickyPrompt:
		if s.Header != "" {
			p.add("Sticky.Header", "", fmt.Sprintf("a header is only for the header source, not %q", s.Source), "")
		}
	default:
		p.add("Sticky.Source", "", fmt.Sprintf("unknown sticky source %q (want header, prompt_cache_key, user or prompt)", s.Source), "")
	}
	if s.TTL < 0 {
		p.add("Sticky.TTL", "", "cannot be negative", "Sticky.TTL cannot be negative")
	}
	if s.MaxPins < 0 {
		p.add("Sticky.MaxPins", "", "cannot be negative", "Sticky.MaxPins cannot be negative")
	}
	if s.PromptBytes < 0 {
		p.add("Sticky.PromptBytes", "", "cannot be negative", "Sticky.PromptBytes cannot be negative")
	} else if s.PromptBytes > 0 && s.Source != StickyPrompt {
		p.add("Sticky.PromptBytes", "", "only the prompt source hashes the prompt", "")
	}
	if len(p.list) > before {
		return nil
	}
	st := &stickyTable{source: s.Source, header: http.CanonicalHeaderKey(s.Header), ttl: s.TTL,
		maxPins: s.MaxPins, promptBytes: s.PromptBytes, seed: seed, clock: clock,
		index: map[uint64]int32{}, head: -1, tail: -1, free: -1}
	if st.ttl == 0 {
		st.ttl = defaultStickyTTL
	}
	if st.maxPins == 0 {
		st.maxPins = defaultStickyMaxPins
	}
	if st.promptBytes == 0 {
		st.promptBytes = defaultStickyPromptBytes
	}
	return st
}

// stickyTable is one route's pins: a map from the pin key's hash to a
// slot of ents, the slots linked from the most recently used (head) to
// the least (tail). Every use moves a pin to the head and sets its expiry
// to now+ttl, so the tail is also the first to expire: a store sweeps
// expired pins from the tail, and evicts the tail when the table is full.
// No goroutine, no allocation per pin beyond the map's and the slice's
// growth, up to maxPins.
type stickyTable struct {
	source      StickySource
	header      string // canonical
	ttl         time.Duration
	maxPins     int
	promptBytes int
	seed        maphash.Seed
	clock       Clock
	pools       []*backendPool // the route's, by index
	// outcomes count relay_sticky_total's outcomes; nil unless New
	// instrumented the table.
	outcomes [stickyOutcomes]prometheus.Counter

	mu    sync.Mutex
	index map[uint64]int32
	ents  []pinEntry
	head  int32 // most recently used; -1 when empty
	tail  int32
	free  int32 // a chain of unused slots through next; -1 when none
}

// Outcomes of relay_sticky_total.
const (
	stickyHit   = iota // served by the pinned key
	stickyMoved        // the pin moved: its key rested, failed or was full
	stickyNew          // no pin yet
	stickyOutcomes
)

func stickyOutcomeName(o int) string { return [stickyOutcomes]string{"hit", "moved", "new"}[o] }

// pinRef is a pinned key: a pool of the route and a key of it.
type pinRef struct {
	pool *backendPool
	key  int
}

type pinEntry struct {
	hash       uint64
	expires    int64 // Unix ns
	prev, next int32
	pool, key  int32
}

// stickySweep bounds the expired pins one store removes besides the one
// it may evict: the tail expires first, so a few per store keep up.
const stickySweep = 4

// lookup returns the pin of hash h at now, refreshing it, and false when
// there is none or it expired (it is then dropped).
func (st *stickyTable) lookup(h uint64, now time.Time) (pool, key int, ok bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	i, ok := st.index[h]
	if !ok {
		return 0, 0, false
	}
	e := &st.ents[i]
	if e.expires <= now.UnixNano() {
		st.remove(i)
		return 0, 0, false
	}
	e.expires = now.Add(st.ttl).UnixNano()
	st.toFront(i)
	return int(e.pool), int(e.key), true
}

// store pins hash h to the key of pool at now.
func (st *stickyTable) store(h uint64, pool, key int, now time.Time) {
	exp := now.Add(st.ttl).UnixNano()
	st.mu.Lock()
	defer st.mu.Unlock()
	if i, ok := st.index[h]; ok {
		e := &st.ents[i]
		e.pool, e.key, e.expires = int32(pool), int32(key), exp
		st.toFront(i)
		return
	}
	for n := 0; n < stickySweep && st.tail >= 0 && st.ents[st.tail].expires <= now.UnixNano(); n++ {
		st.remove(st.tail)
	}
	if len(st.index) >= st.maxPins {
		st.remove(st.tail)
	}
	var i int32
	if st.free >= 0 {
		i, st.free = st.free, st.ents[st.free].next
	} else {
		i = int32(len(st.ents))
		st.ents = append(st.ents, pinEntry{})
	}
	st.ents[i] = pinEntry{hash: h, expires: exp, prev: -1, next: -1, pool: int32(pool), key: int32(key)}
	st.index[h] = i
	st.linkFront(i)
}

// len is the number of pins kept, expired ones not yet swept included.
func (st *stickyTable) len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.index)
}

// remove drops slot i. st.mu is held.
func (st *stickyTable) remove(i int32) {
	st.unlink(i)
	delete(st.index, st.ents[i].hash)
	st.ents[i] = pinEntry{next: st.free}
	st.free = i
}

func (st *stickyTable) toFront(i int32) {
	if st.head == i {
		return
	}
	st.unlink(i)
	st.linkFront(i)
}

func (st *stickyTable) unlink(i int32) {
	e := &st.ents[i]
	if e.prev >= 0 {
		st.ents[e.prev].next = e.next
	} else {
		st.head = e.next
	}
	if e.next >= 0 {
		st.ents[e.next].prev = e.prev
	} else {
		st.tail = e.prev
	}
	e.prev, e.next = -1, -1
}

func (st *stickyTable) linkFront(i int32) {
	e := &st.ents[i]
	e.prev, e.next = -1, st.head
	if st.head >= 0 {
		st.ents[st.head].prev = i
	}
	st.head = i
	if st.tail < 0 {
		st.tail = i
	}
}

// pinHash hashes the request's pin key, and reports false when it has
// none. pin is what the body told (nil without a body). The key is read
// in place: nothing is copied or kept.
func (st *stickyTable) pinHash(h http.Header, pin *provider.Pin) (uint64, bool) {
	switch st.source {
	case StickyHeader:
		if v := h[st.header]; len(v) > 0 && v[0] != "" {
			return maphash.String(st.seed, v[0]), true
		}
		return 0, false
	}
	if pin == nil {
		return 0, false
	}
	switch st.source {
	case StickyPromptCacheKey:
		return st.hashValue(pin.PromptCacheKey)
	case StickyUser:
		return st.hashValue(pin.User)
	}
	// StickyPrompt: the system prompt, then the first message, within
	// promptBytes together.
	sys, first := pin.System, pin.FirstMessage
	if !present(sys) && !present(first) {
		return 0, false
	}
	var mh maphash.Hash
	mh.SetSeed(st.seed)
	n := st.promptBytes
	sys = sys[:min(len(sys), n)]
	_, _ = mh.Write(sys)
	_ = mh.WriteByte(0) // the boundary, so that the two cannot trade bytes
	_, _ = mh.Write(first[:min(len(first), n-len(sys))])
	return mh.Sum64(), true
}

// hashValue hashes a raw JSON value, unless it is absent, null or "".
func (st *stickyTable) hashValue(v []byte) (uint64, bool) {
	if !present(v) {
		return 0, false
	}
	return maphash.Bytes(st.seed, v), true
}

// present reports whether a raw JSON value says something.
func present(v []byte) bool {
	return len(v) > 0 && string(v) != "null" && string(v) != `""`
}

// setPin notes the request's pin key hash on the target, when the route
// is sticky; inspectRequest calls it once the body is read.
func (t *Target) setPin(h http.Header, pin *provider.Pin) {
	if t.sticky == nil {
		return
	}
	t.pin, t.hasPin = t.sticky.pinHash(h, pin)
}

// applyPin puts the request's pinned key first, when it has one that
// neither rests nor belongs to a resting upstream. It runs once, before
// the first attempt (and before claimProbe: a request sent to its pin
// does not probe another upstream). The backend of the same pool the
// pinned key replaces keeps no other place, so no key is tried twice.
func (t *Target) applyPin() {
	st := t.sticky
	if st == nil || !t.hasPin {
		return
	}
	now := st.clock.Now()
	pi, key, ok := st.lookup(t.pin, now)
	if !ok || pi >= len(st.pools) {
		return
	}
	p := st.pools[pi]
	t.pinned = pinRef{p, key}
	if key >= len(p.keys) || (p.until.Load() != 0 && p != t.probe) {
		return // the upstream rests, or another request probes it
	}
	p.mu.Lock()
	rests := p.keys[key].restUntil.After(now)
	p.mu.Unlock()
	if rests {
		return
	}
	j := -1
	for i := range t.Backends {
		if b := &t.Backends[i]; b.pool == p && (j < 0 || b.key == key) {
			if j = i; b.key == key {
				break
			}
		}
	}
	if j < 0 {
		return // a resolver dropped the pool
	}
	be := t.Backends[j]
	be.key, be.Header, be.Done = key, p.keys[key].header, p.keys[key].done
	copy(t.Backends[1:j+1], t.Backends[:j])
	t.Backends[0] = be
	if t.probe != nil && t.probe != p {
		t.probe = nil // not first any more: another request will probe
	}
}

// keepPin pins the request's conversation to key of pool, which served
// it with a status below 400.
func (t *Target) keepPin(pool *backendPool, key int) {
	st := t.sticky
	if st == nil || !t.hasPin || pool == nil {
		return
	}
	for i, p := range st.pools {
		if p == pool {
			st.store(t.pin, i, key, st.clock.Now())
			o := stickyNew
			switch {
			case t.pinned == pinRef{pool, key}:
				o = stickyHit
			case t.pinned.pool != nil:
				o = stickyMoved
			}
			if c := st.outcomes[o]; c != nil {
				c.Inc()
			}
			return
		}
	}
}

// Pins reports how many pins the named sticky route keeps (expired ones
// not yet swept included), for tests and monitoring; -1 when the table
// has no such route or it is not sticky.
func (t *RouteTable) Pins(route string) int {
	for _, r := range t.routes {
		if r.Name == route && r.sticky != nil {
			return r.sticky.len()
		}
	}
	return -1
}
