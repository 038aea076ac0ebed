package relayredis

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// crash makes the limiter behave as a replica that died: it stops
// renewing its leases without releasing them.
func (l *Limiter) crash() {
	s := &l.leases
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.held)
	if s.running {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// renewerStopped reports whether the limiter's renewer goroutine ended.
func (l *Limiter) renewerStopped() bool {
	l.leases.mu.Lock()
	defer l.leases.mu.Unlock()
	return !l.leases.running
}

func leaseReq(tenant, id string, lim *relay.Limits, session bool) relay.LeaseRequest {
	return relay.LeaseRequest{Identity: relay.Identity{Tenant: tenant, Limits: lim}, Route: "chat",
		Session: session, ID: id, Now: time.Now()}
}

// within polls cond until it holds, for at most d: for Redis state that
// sends no event (an expiry).
func within(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLeases(t *testing.T) {
	c := newClient(t, sharedRedisAddr(t), true)
	prefix := uniquePrefix(t)
	lim := &relay.Limits{MaxConcurrent: 2, MaxSessions: 1}
	ctx := testkit.Context(t)
	// Two limiters on one prefix: two replicas.
	a, err := NewLimiter(c, WithPrefix(prefix), WithTimeout(5*time.Second))
	require.NoError(t, err)
	b, err := NewLimiter(c, WithPrefix(prefix), WithTimeout(5*time.Second))
	require.NoError(t, err)

	s, d, err := a.Acquire(ctx, leaseReq("t", "r1", lim, true))
	require.NoError(t, err)
	require.True(t, d.Allowed)
	_, d, err = b.Acquire(ctx, leaseReq("t", "r2", lim, true))
	require.NoError(t, err)
	assert.Equal(t, relay.Decision{Reason: relay.ReasonSessions, RetryAfter: time.Second}, d)
	r, d, err := b.Acquire(ctx, leaseReq("t", "r3", lim, false))
	require.NoError(t, err)
	require.True(t, d.Allowed)
	_, d, err = a.Acquire(ctx, leaseReq("t", "r4", lim, false))
	require.NoError(t, err)
	assert.Equal(t, relay.Decision{Reason: relay.ReasonConcurrency, RetryAfter: time.Second}, d)

	// The sets expire on their own, and hold the leases.
	tag := "{" + prefix + ":t}"
	assert.Equal(t, []string{"r1", "r3"}, c.ZRange(ctx, tag+":conc", 0, -1).Val())
	assert.Equal(t, []string{"r1"}, c.ZRange(ctx, tag+":sess", 0, -1).Val())
	assert.Positive(t, c.PTTL(ctx, tag+":conc").Val())

	// Release is idempotent, and frees the slot for every replica.
	s.Release()
	s.Release()
	assert.Equal(t, []string{"r3"}, c.ZRange(ctx, tag+":conc", 0, -1).Val())
	s2, d, err := b.Acquire(ctx, leaseReq("t", "r5", lim, true))
	require.NoError(t, err)
	require.True(t, d.Allowed)
	s2.Release()
	r.Release()
	assert.Zero(t, c.Exists(ctx, tag+":conc", tag+":sess").Val())

	// No caps: no lease, no call.
	l, d, err := a.Acquire(ctx, leaseReq("t", "r6", &relay.Limits{RequestsPerMinute: 1}, false))
	require.NoError(t, err)
	assert.True(t, d.Allowed)
	assert.Nil(t, l)
	within(t, testkit.Timeout, func() bool { return a.renewerStopped() && b.renewerStopped() },
		"the renewers did not stop once no lease was held")
}

// TestLeaseRenewedWhileHeldAndExpiresAfterCrash: a held lease outlives
// its TTL many times over, renewed by its limiter; once that limiter
// stops renewing (a crashed replica) the slot comes back after the TTL.
func TestLeaseRenewedWhileHeldAndExpiresAfterCrash(t *testing.T) {
	c := newClient(t, sharedRedisAddr(t), true)
	prefix := uniquePrefix(t)
	const ttl = 300 * time.Millisecond
	lim := &relay.Limits{MaxConcurrent: 1}
	ctx := testkit.Context(t)
	a, err := NewLimiter(c, WithPrefix(prefix), WithTimeout(5*time.Second), WithLeaseTTL(ttl))
	require.NoError(t, err)
	b, err := NewLimiter(c, WithPrefix(prefix), WithTimeout(5*time.Second), WithLeaseTTL(ttl))
	require.NoError(t, err)
	renewals := make(chan error, 64)
	a.leases.renewed = func(n int, err error) {
		select {
		case renewals <- err:
		default:
		}
	}

	_, d, err := a.Acquire(ctx, leaseReq("t", "held", lim, false))
	require.NoError(t, err)
	require.True(t, d.Allowed)
	start := time.Now()
	// Renewed at least four times: held for more than its TTL.
	for range 4 {
		assert.NoError(t, testkit.Recv(t, renewals, "the lease was not renewed"))
	}
	require.Greater(t, time.Since(start), ttl)
	_, d, err = b.Acquire(ctx, leaseReq("t", "other", lim, false))
	require.NoError(t, err)
	assert.False(t, d.Allowed, "a renewed lease holds its slot past its TTL")

	a.crash()
	crashed := time.Now()
	var l relay.Lease
	within(t, 5*time.Second, func() bool {
		var err error
		l, d, err = b.Acquire(ctx, leaseReq("t", "other", lim, false))
		require.NoError(t, err)
		return d.Allowed
	}, "the crashed replica's lease did not expire")
	t.Logf("slot back %v after the crash (TTL %v)", time.Since(crashed), ttl)
	l.Release()
	within(t, testkit.Timeout, func() bool { return a.renewerStopped() && b.renewerStopped() },
		"the renewers did not stop")
}

func TestLeaseQueue(t *testing.T) {
	c := newClient(t, sharedRedisAddr(t), true)
	ctx := testkit.Context(t)

	t.Run("a queued request runs when a slot frees", func(t *testing.T) {
		l, err := NewLimiter(c, WithPrefix(uniquePrefix(t)), WithTimeout(5*time.Second))
		require.NoError(t, err)
		lim := &relay.Limits{MaxConcurrent: 1, QueueTimeout: time.Minute}
		held, _, err := l.Acquire(ctx, leaseReq("t", "a", lim, false))
		require.NoError(t, err)
		type res struct {
			l   relay.Lease
			d   relay.Decision
			err error
		}
		got := make(chan res, 1)
		go func() {
			l, d, err := l.Acquire(ctx, leaseReq("t", "b", lim, false))
			got <- res{l, d, err}
		}()
		within(t, testkit.Timeout, func() bool {
			l.leases.mu.Lock()
			defer l.leases.mu.Unlock()
			return l.leases.waiting["t"] == 1
		}, "the request did not queue")
		held.Release()
		r := testkit.Recv(t, got, "the queued request did not get the slot")
		require.NoError(t, r.err)
		assert.True(t, r.d.Allowed)
		assert.Positive(t, r.d.Waited)
		r.l.Release()
	})

	t.Run("refused after QueueTimeout, or when ctx ends", func(t *testing.T) {
		l, err := NewLimiter(c, WithPrefix(uniquePrefix(t)), WithTimeout(5*time.Second))
		require.NoError(t, err)
		lim := &relay.Limits{MaxConcurrent: 1, QueueTimeout: 50 * time.Millisecond}
		held, _, err := l.Acquire(ctx, leaseReq("t", "a", lim, false))
		require.NoError(t, err)
		defer held.Release()
		_, d, err := l.Acquire(ctx, leaseReq("t", "b", lim, false))
		require.NoError(t, err)
		assert.False(t, d.Allowed)
		assert.Equal(t, relay.ReasonConcurrency, d.Reason)
		assert.GreaterOrEqual(t, d.Waited, 50*time.Millisecond)

		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, _, err = l.Acquire(cctx, leaseReq("t", "c", &relay.Limits{MaxConcurrent: 1, QueueTimeout: time.Minute}, false))
		assert.ErrorIs(t, err, context.Canceled)
		assert.Equal(t, 1, l.Leases(), "only the held lease")
	})
}

// gated is an upstream whose responses wait for a value on gate, telling
// arrived of each request first.
type gated struct {
	gate    chan struct{}
	arrived chan struct{}
}

func startGatedUpstream(t *testing.T) (*gated, *httptest.Server) {
	g := &gated{gate: make(chan struct{}), arrived: make(chan struct{}, 16)}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		g.arrived <- struct{}{}
		select {
		case <-g.gate:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"c1","object":"chat.completion","model":"m","choices":[],`+
			`"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}`)
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() { close(g.gate) })
	return g, up
}

// TestReplicasShareConcurrencyCap: three relays sharing one Redis share a
// tenant's MaxConcurrent 2: with two requests open on two replicas, the
// third replica refuses (429, reason concurrency), and admits once one
// of them is over.
func TestReplicasShareConcurrencyCap(t *testing.T) {
	addr := sharedRedisAddr(t)
	g, up := startGatedUpstream(t)
	prefix := uniquePrefix(t)
	limits := &relay.Limits{MaxConcurrent: 2}
	var reps [3]*replica
	for i := range reps {
		lim, err := NewLimiter(newClient(t, addr, true), WithPrefix(prefix), WithTimeout(5*time.Second))
		require.NoError(t, err)
		reps[i] = newReplica(t, up.URL, "acme", limits, relay.WithLimiter(lim))
	}
	hc := newHTTPClient(t)
	probe := newClient(t, addr, true)
	leases := func() int64 {
		return probe.ZCard(context.Background(), "{"+prefix+":acme}:conc").Val()
	}

	var wg sync.WaitGroup
	statuses := make(chan int, 2)
	for i := range 2 {
		wg.Go(func() {
			resp, err := reps[i].post(hc)
			if assert.NoError(t, err) {
				statuses <- resp.StatusCode
			}
		})
		testkit.Recv(t, g.arrived, "the request did not reach the upstream")
	}
	assert.EqualValues(t, 2, leases())
	resp := reps[2].mustPost(t, hc)
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))

	testkit.Send(t, g.gate, struct{}{}, "no request took the gate")
	assert.Equal(t, http.StatusOK, testkit.Recv(t, statuses, "the released request did not end"))
	// The relay releases the lease as its handler ends, just after the
	// client has the response: wait for it.
	within(t, testkit.Timeout, func() bool { return leases() == 1 }, "the lease was not released")

	done := make(chan int, 1)
	go func() {
		resp, err := reps[2].post(hc)
		if assert.NoError(t, err) {
			done <- resp.StatusCode
		}
	}()
	testkit.Recv(t, g.arrived, "the admitted request did not reach the upstream")
	testkit.Send(t, g.gate, struct{}{}, "no request took the gate")
	testkit.Send(t, g.gate, struct{}{}, "no request took the gate")
	assert.Equal(t, http.StatusOK, testkit.Recv(t, done, "the admitted request did not end"))
	testkit.Wait(t, wg.Wait, "the requests did not end")
	within(t, testkit.Timeout, func() bool { return leases() == 0 }, "the leases were not released")
}
