package relay

import (
	"context"
	"time"
)

// KeySlotStore holds the in-flight slots of upstream keys
// (Upstream.MaxInFlight) in a store shared by replicas, so that they
// share one cap per key rather than one each. Without one (WithKeySlots
// not given) the counts are per process.
//
// AcquireKey takes a slot on the first candidate with room, in the order
// given (the relay's preference: the chosen key, its pool's other keys,
// resting ones last, then the route's later upstreams), and returns its
// index with a held Lease; -1 and a nil Lease when every candidate is
// full; or an error when it could not decide. It never waits: the relay
// queues the request (Route.QueueTimeout) and asks again, every 10ms
// backing off to 250ms, and at once when an attempt of this relay ends.
// A Lease should expire in the store when it is not renewed, so that a
// crashed replica's slots come back. It must be safe for concurrent use.
//
// When the store fails, the relay logs it and falls back to its own
// per-process counts for that attempt.
type KeySlotStore interface {
	AcquireKey(ctx context.Context, req KeySlotRequest) (int, Lease, error)
}

// KeySlotStoreFunc adapts a function to the KeySlotStore interface.
type KeySlotStoreFunc func(ctx context.Context, req KeySlotRequest) (int, Lease, error)

// AcquireKey calls f(ctx, req).
func (f KeySlotStoreFunc) AcquireKey(ctx context.Context, req KeySlotRequest) (int, Lease, error) {
	return f(ctx, req)
}

// KeySlotRequest is the input of a KeySlotStore. It is a struct so that
// fields can be added without breaking implementations.
type KeySlotRequest struct {
	// Keys are the candidates, in the relay's order of preference.
	Keys []KeyCandidate
	// ID is the request's id (Record.RequestID): it names the lease.
	ID string
}

// KeyCandidate is an upstream key a request may use.
type KeyCandidate struct {
	// ID names the key across replicas without its secret:
	// "<route>/<upstream>/<index>", the route's Name, the upstream's Name
	// (its host when unnamed) and the key's index in Upstream.Keys.
	// Replicas sharing a store must share the same routes, or the same
	// id names different keys.
	ID string
	// Max is the key's Upstream.MaxInFlight.
	Max int
}

// Polling of a shared store while a request waits for a key slot:
// releases on other replicas send no notification.
const (
	keyPollMin = 10 * time.Millisecond
	keyPollMax = 250 * time.Millisecond
)

// WithKeySlots shares the upstream keys' in-flight caps
// (Upstream.MaxInFlight) through store, so that replicas sharing it
// share one cap per key (relayredis.Limiter implements it). Nil, the
// default, counts per process.
func WithKeySlots(store KeySlotStore) Option {
	return func(c *config) error {
		c.keySlots = store
		return nil
	}
}

// slotAt is where a KeyCandidate is: t.Backends[backend], key of its pool.
type slotAt struct{ backend, key int }

// sharedSlot takes a slot for attempt i from the KeySlotStore, with the
// preference of freeSlot; false when every candidate is full. On a store
// error it falls back to the per-process counts. The route's slots.mu is
// not held; sharedSlot takes it.
func (ex *exchange) sharedSlot(ctx context.Context, i int) (keySlot, bool) {
	t := ex.target
	cands, at, free := t.candidates(i)
	idx, lease, err := ex.rl.cfg.keySlots.AcquireKey(ctx, KeySlotRequest{Keys: cands, ID: ex.rec.RequestID})
	s := t.slots
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil:
		ex.rl.log.Warn("relay: key slot store failed; counting in this process", "request_id", ex.rec.RequestID, "route", ex.route, "error", err)
		return t.freeSlot(i)
	case idx >= 0 && idx < len(at):
		j, k := at[idx].backend, at[idx].key
		p := t.Backends[j].pool
		p.use(&t.Backends[j], k)
		t.Backends[i], t.Backends[j] = t.Backends[j], t.Backends[i]
		return keySlot{pool: p, key: k, lease: lease}, true
	case lease != nil:
		lease.Release() // an index out of range: nothing is taken
	}
	if free >= 0 {
		t.Backends[i], t.Backends[free] = t.Backends[free], t.Backends[i]
		return keySlot{}, true
	}
	return keySlot{}, false
}

// candidates lists the keys attempt i may take, in freeSlot's order: the
// chosen key, the other keys of its pool (resting ones last), then each
// later capped pool's keys likewise, up to the first uncapped backend,
// whose index is free (else -1).
func (t *Target) candidates(i int) (cands []KeyCandidate, at []slotAt, free int) {
	seen := make([]*backendPool, 0, 2)
	for j := i; j < len(t.Backends); j++ {
		c := &t.Backends[j]
		if !c.capped() {
			return cands, at, j
		}
		dup := false
		for _, p := range seen {
			dup = dup || p == c.pool
		}
		if dup {
			continue
		}
		seen = append(seen, c.pool)
		p, n := c.pool, len(c.pool.keys)
		var resting []int
		now := p.clock.Now()
		p.mu.Lock()
		for d := 0; d < n; d++ {
			k := (c.key + d) % n
			if d > 0 && p.keys[k].restUntil.After(now) {
				resting = append(resting, k)
				continue
			}
			cands = append(cands, KeyCandidate{ID: p.keys[k].slotID, Max: p.maxInFlight})
			at = append(at, slotAt{j, k})
		}
		p.mu.Unlock()
		for _, k := range resting {
			cands = append(cands, KeyCandidate{ID: p.keys[k].slotID, Max: p.maxInFlight})
			at = append(at, slotAt{j, k})
		}
	}
	return cands, at, -1
}
