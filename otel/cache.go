package relayotel

import (
	"sync"
	"sync/atomic"
)

// Bounds of each cache: the model names in its keys come from clients
// (a request body's model) and from upstreams (the response's), so both
// the number of entries and the size of a key are capped; past either,
// a value is built for its request and not kept.
const (
	cacheEntries = 512
	cacheKeyLen  = 256 // bytes of a key's client- or upstream-given strings
)

// cache is a bounded, concurrency-safe map of what repeats between
// requests, built on a miss: it only grows, to cacheEntries entries (the
// set of routes, backends and models a relay sees is small; when it is
// not, the requests past the bound pay what they would without a cache).
// Its zero value is ready to use.
type cache[K comparable, V any] struct {
	m sync.Map     // K → V
	n atomic.Int32 // entries in m, and puts storing one
}

// get finds k's value.
func (c *cache[K, V]) get(k K) (V, bool) {
	v, ok := c.m.Load(k)
	if !ok {
		var zero V
		return zero, false
	}
	return v.(V), true
}

// put keeps v for k, unless the cache is full or k, whose variable
// strings are keyLen bytes long, is too long to keep.
func (c *cache[K, V]) put(k K, v V, keyLen int) {
	if keyLen > cacheKeyLen || c.n.Load() >= cacheEntries {
		return
	}
	// A slot is taken before the store, so that puts racing for the last
	// one cannot overshoot the bound.
	if c.n.Add(1) > cacheEntries {
		c.n.Add(-1)
		return
	}
	if _, loaded := c.m.LoadOrStore(k, v); loaded {
		c.n.Add(-1)
	}
}
