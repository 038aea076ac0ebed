package main

import (
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamrelay/relay"
)

// generation is one loaded configuration: a relay built from it, with its
// own metrics registry. A reload makes a new generation and makes it
// current; the one it replaces is retired: new requests go to the new
// generation at once, while the requests the old one holds — live streams
// above all — finish on the settings they started with. Only then is the
// old relay shut down, which writes its queued records (to the stores all
// generations share) and stops its queue.
//
// The relay's own Shutdown refuses new requests with 503, so it must not
// begin while a request may still be on its way into the old relay: the
// reference count below, taken before a request enters a generation and
// dropped when it leaves, tells when the old generation is idle.
type generation struct {
	id  int
	cfg *fileConfig
	rl  *relay.Relay
	reg *prometheus.Registry

	// state is the number of requests inside, plus retiredBit once
	// retired.
	state    atomic.Int64
	idle     chan struct{} // closed when retired and empty
	idleOnce sync.Once
}

const retiredBit = 1 << 62

func newGeneration(id int, cfg *fileConfig, rl *relay.Relay, reg *prometheus.Registry) *generation {
	return &generation{id: id, cfg: cfg, rl: rl, reg: reg, idle: make(chan struct{})}
}

// enter takes a reference unless the generation is retired.
func (g *generation) enter() bool {
	if g.state.Add(1)&retiredBit != 0 {
		g.leave()
		return false
	}
	return true
}

// leave drops a reference taken by enter.
func (g *generation) leave() {
	if g.state.Add(-1) == retiredBit {
		g.idleOnce.Do(func() { close(g.idle) })
	}
}

// retire refuses further enters; idle is closed once the last request
// has left.
func (g *generation) retire() {
	if g.state.Add(retiredBit) == retiredBit {
		g.idleOnce.Do(func() { close(g.idle) })
	}
}

// inflight reports how many requests are inside, for the log.
func (g *generation) inflight() int64 { return g.state.Load() &^ retiredBit }

// current is the handler of every request that is not a health check or
// a metrics scrape: it passes the request to the current generation.
type current struct{ p atomic.Pointer[generation] }

func (c *current) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g := c.enter()
	defer g.leave()
	g.rl.ServeHTTP(w, r)
}

// enter returns the current generation with a reference taken. A
// generation is retired only after it was replaced, so a failed enter
// finds a newer one on the next load: the loop ends.
func (c *current) enter() *generation {
	for {
		g := c.p.Load()
		if g.enter() {
			return g
		}
	}
}
