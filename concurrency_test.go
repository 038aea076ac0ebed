package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests of the concurrency caps: the tenant's leases (MaxConcurrent,
// MaxSessions, QueueTimeout) and the keys' MaxInFlight.

func leaseReq(tenant string, lim *Limits, session bool) LeaseRequest {
	return LeaseRequest{Identity: Identity{Tenant: tenant, Limits: lim}, Session: session, ID: "r", Now: time.Now()}
}

// waitUntil polls cond until it holds, for at most testkit.Timeout: for
// state that has no event to wait on (a request joining a queue).
func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(testkit.Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestMemoryLimiterLeases(t *testing.T) {
	ctx := testkit.Context(t)
	m := NewMemoryLimiter(Limits{MaxConcurrent: 2, MaxSessions: 1})

	a, d, err := m.Acquire(ctx, leaseReq("t", nil, false))
	require.NoError(t, err)
	require.True(t, d.Allowed)
	s, d, err := m.Acquire(ctx, leaseReq("t", nil, true))
	require.NoError(t, err)
	require.True(t, d.Allowed)
	require.NotNil(t, a)
	require.NotNil(t, s)

	_, d, err = m.Acquire(ctx, leaseReq("t", nil, false))
	require.NoError(t, err)
	assert.Equal(t, Decision{Reason: ReasonConcurrency, RetryAfter: time.Second}, d)
	// Another tenant has caps of its own.
	o, d, err := m.Acquire(ctx, leaseReq("other", nil, false))
	require.NoError(t, err)
	require.True(t, d.Allowed)
	o.Release()

	// A release is idempotent: released twice, it frees one slot.
	a.Release()
	a.Release()
	c, n, _ := m.Leases("t")
	assert.Equal(t, [2]int{1, 1}, [2]int{c, n})
	b, d, _ := m.Acquire(ctx, leaseReq("t", nil, false))
	require.True(t, d.Allowed)
	_, d, _ = m.Acquire(ctx, leaseReq("t", nil, false))
	assert.False(t, d.Allowed, "a double release must not free a second slot")

	// The session cap: a second session is refused for "sessions" while
	// a concurrent slot is free.
	b.Release()
	_, d, _ = m.Acquire(ctx, leaseReq("t", nil, true))
	assert.Equal(t, ReasonSessions, d.Reason)
	assert.Equal(t, time.Second, d.RetryAfter)

	// An Identity's own Limits replace the defaults; no caps: no lease.
	l, d, err := m.Acquire(ctx, leaseReq("t", &Limits{RequestsPerMinute: 5}, false))
	require.NoError(t, err)
	assert.True(t, d.Allowed)
	assert.Nil(t, l)

	// Nothing held, nothing kept: memory is bounded by the work in flight.
	s.Release()
	c, n, w := m.Leases("t")
	assert.Equal(t, [3]int{0, 0, 0}, [3]int{c, n, w})
	assert.Empty(t, m.conc.slots)
}

func TestMemoryLimiterQueue(t *testing.T) {
	type result struct {
		l   Lease
		d   Decision
		err error
	}
	acquire := func(ctx context.Context, m *MemoryLimiter) <-chan result {
		ch := make(chan result, 1)
		go func() {
			l, d, err := m.Acquire(ctx, leaseReq("t", nil, false))
			ch <- result{l, d, err}
		}()
		return ch
	}
	waiting := func(m *MemoryLimiter, n int) func() bool {
		return func() bool { _, _, w := m.Leases("t"); return w == n }
	}

	t.Run("a release wakes the first waiter", func(t *testing.T) {
		m := NewMemoryLimiter(Limits{MaxConcurrent: 1, QueueTimeout: time.Minute})
		held, _, _ := m.Acquire(testkit.Context(t), leaseReq("t", nil, false))
		first := acquire(testkit.Context(t), m)
		waitUntil(t, waiting(m, 1), "the first request did not queue")
		second := acquire(testkit.Context(t), m)
		waitUntil(t, waiting(m, 2), "the second request did not queue")
		held.Release()
		r := testkit.Recv(t, first, "the first waiter was not woken")
		require.NoError(t, r.err)
		require.True(t, r.d.Allowed)
		assert.Positive(t, r.d.Waited)
		c, _, w := m.Leases("t")
		assert.Equal(t, [2]int{1, 1}, [2]int{c, w}, "the second still waits")
		r.l.Release()
		r = testkit.Recv(t, second, "the second waiter was not woken")
		require.True(t, r.d.Allowed)
		r.l.Release()
		assert.Empty(t, m.conc.slots)
	})

	t.Run("refused after QueueTimeout", func(t *testing.T) {
		m := NewMemoryLimiter(Limits{MaxConcurrent: 1, QueueTimeout: 20 * time.Millisecond})
		held, _, _ := m.Acquire(testkit.Context(t), leaseReq("t", nil, false))
		defer held.Release()
		r := testkit.Recv(t, acquire(testkit.Context(t), m), "the queued request did not time out")
		require.NoError(t, r.err)
		assert.False(t, r.d.Allowed)
		assert.Equal(t, ReasonConcurrency, r.d.Reason)
		assert.GreaterOrEqual(t, r.d.Waited, 20*time.Millisecond)
		_, _, w := m.Leases("t")
		assert.Zero(t, w)
	})

	t.Run("a cancelled wait holds nothing", func(t *testing.T) {
		m := NewMemoryLimiter(Limits{MaxConcurrent: 1, QueueTimeout: time.Minute})
		held, _, _ := m.Acquire(testkit.Context(t), leaseReq("t", nil, false))
		ctx, cancel := context.WithCancel(testkit.Context(t))
		ch := acquire(ctx, m)
		waitUntil(t, waiting(m, 1), "the request did not queue")
		cancel()
		r := testkit.Recv(t, ch, "the cancelled wait did not return")
		assert.ErrorIs(t, r.err, context.Canceled)
		assert.Nil(t, r.l)
		c, _, w := m.Leases("t")
		assert.Equal(t, [2]int{1, 0}, [2]int{c, w})
		held.Release()
		assert.Empty(t, m.conc.slots)
	})

	t.Run("the queue is bounded", func(t *testing.T) {
		m := NewMemoryLimiter(Limits{MaxConcurrent: 1, QueueTimeout: time.Minute, MaxQueued: 1})
		held, _, _ := m.Acquire(testkit.Context(t), leaseReq("t", nil, false))
		ctx, cancel := context.WithCancel(testkit.Context(t))
		ch := acquire(ctx, m)
		waitUntil(t, waiting(m, 1), "the request did not queue")
		_, d, err := m.Acquire(testkit.Context(t), leaseReq("t", nil, false))
		require.NoError(t, err)
		assert.False(t, d.Allowed, "a full queue refuses at once")
		assert.Zero(t, d.Waited)
		cancel()
		testkit.Recv(t, ch, "the cancelled wait did not return")
		held.Release()
	})
}

// TestMemoryLimiterLeasesUnderConcurrency: many goroutines taking and
// releasing leases (some twice) never hold more than the cap, and leave
// nothing behind.
func TestMemoryLimiterLeasesUnderConcurrency(t *testing.T) {
	m := NewMemoryLimiter(Limits{MaxConcurrent: 3, QueueTimeout: time.Minute})
	var held, peak atomic.Int64
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				l, d, err := m.Acquire(context.Background(), leaseReq("t", nil, i%5 == 0))
				if err != nil || !d.Allowed {
					t.Errorf("refused: %v %+v", err, d)
					return
				}
				n := held.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				held.Add(-1)
				l.Release()
				l.Release()
			}
		}()
	}
	testkit.Wait(t, wg.Wait, "the goroutines did not finish")
	assert.LessOrEqual(t, peak.Load(), int64(3))
	assert.Empty(t, m.conc.slots)
}

// gatedSSE is an upstream whose streams each send a first event, then
// wait for a value on gate (or the request's end) before finishing. It
// tells arrived of each request it got and counts those open at once.
type gatedSSE struct {
	gate    chan struct{}
	arrived chan string // the request's key (its Authorization)
	open    atomic.Int64
	peak    atomic.Int64
	mu      sync.Mutex
	perKey  map[string]int
	keyPeak map[string]int
}

func newGatedSSE() *gatedSSE {
	return &gatedSSE{gate: make(chan struct{}), arrived: make(chan string, 64),
		perKey: map[string]int{}, keyPeak: map[string]int{}}
}

func (g *gatedSSE) serve(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	key := r.Header.Get("Authorization")
	n := g.open.Add(1)
	defer g.open.Add(-1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	g.mu.Lock()
	g.perKey[key]++
	g.keyPeak[key] = max(g.keyPeak[key], g.perKey[key])
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.perKey[key]--
		g.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	_, _ = io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n")
	w.(http.Flusher).Flush()
	g.arrived <- key
	select {
	case <-g.gate:
	case <-r.Context().Done():
		return
	}
	_, _ = io.WriteString(w, "data: [DONE]\n\n")
}

// open starts a streaming request and returns its response once its
// headers came.
func (e *env) open(ctx context.Context) (*http.Response, error) {
	req := e.request(http.MethodPost, "/v1/chat/completions",
		`{"model":"m","stream":true,"max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`)
	return e.front.Client().Do(req.WithContext(ctx))
}

// finishStream lets one held stream end and reads it.
func finishStream(t *testing.T, e *env, g *gatedSSE, resp *http.Response) {
	t.Helper()
	testkit.Send(t, g.gate, struct{}{}, "no stream took the gate")
	_, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	e.handled()
}

// TestConcurrencyCap: with MaxConcurrent 2, a third request while two
// streams are open is refused (429, reason concurrency, Retry-After 1),
// and one is admitted again once a stream is over.
func TestConcurrencyCap(t *testing.T) {
	g := newGatedSSE()
	e := newEnv(t, g.serve, Route{Prefix: "/v1", Kind: KindSSE}, WithRateLimit(Limits{MaxConcurrent: 2}))
	ctx := testkit.Context(t)
	var open []*http.Response
	for range 2 {
		resp, err := e.open(ctx)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		testkit.Recv(t, g.arrived, "the stream did not reach the upstream")
		open = append(open, resp)
	}

	resp, body := e.do(e.request(http.MethodPost, "/v1/chat/completions", `{"model":"m","messages":[]}`))
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	assert.Contains(t, string(body), "too many concurrent requests")
	assert.Contains(t, string(body), `"rate_limit_exceeded"`)
	assert.Equal(t, 1.0, testutil.ToFloat64(e.relay.metrics.limited.WithLabelValues("test", ReasonConcurrency)))
	assert.EqualValues(t, 2, g.peak.Load())
	rec := e.lastRecord()
	assert.Equal(t, http.StatusTooManyRequests, rec.Status)
	assert.Equal(t, ErrTypeRateLimited, rec.ErrorType)

	finishStream(t, e, g, open[0])
	resp2, err := e.open(ctx)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp2.StatusCode, "a slot came back when a stream ended")
	testkit.Recv(t, g.arrived, "the admitted stream did not reach the upstream")
	finishStream(t, e, g, open[1])
	finishStream(t, e, g, resp2)
	ml := e.relay.limiter.(*MemoryLimiter)
	c, _, _ := ml.Leases("acme")
	assert.Zero(t, c, "every lease was released")
}

// TestConcurrencyRefusalGivesBackTokens: a request refused for
// concurrency after Allow reserved its tokens gets them back (finish
// settles at nothing), so a refusal never spends a token budget.
func TestConcurrencyRefusalGivesBackTokens(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := ClockFunc(func() time.Time { return now }) // no refill during the test
	ml := NewMemoryLimiter(Limits{MaxConcurrent: 1, TokensPerMinute: 100_000})
	g := newGatedSSE()
	e := newEnv(t, g.serve, Route{Prefix: "/v1", Kind: KindSSE}, WithLimiter(ml), WithClock(clock))
	tokens := func() int64 {
		return ml.AllowAt(now, LimitRequest{Identity: Identity{Tenant: "acme"}}).Tokens.Remaining
	}
	full := tokens()
	held, err := e.open(testkit.Context(t))
	require.NoError(t, err)
	testkit.Recv(t, g.arrived, "the stream did not reach the upstream")
	afterFirst := tokens()
	require.Less(t, afterFirst, full, "the stream reserved tokens")

	resp, _ := e.do(e.request(http.MethodPost, "/v1/chat/completions",
		`{"model":"m","max_tokens":5000,"messages":[{"role":"user","content":"hi"}]}`))
	require.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.Equal(t, afterFirst, tokens(), "the refused request's reservation was given back")
	finishStream(t, e, g, held)
}

// TestConcurrencyQueue: a request over the cap waits for a slot up to
// QueueTimeout: it runs when a stream ends, or gets 429 after the wait.
func TestConcurrencyQueue(t *testing.T) {
	t.Run("runs when a slot frees", func(t *testing.T) {
		ml := NewMemoryLimiter(Limits{MaxConcurrent: 1, QueueTimeout: time.Minute})
		g := newGatedSSE()
		e := newEnv(t, g.serve, Route{Prefix: "/v1", Kind: KindSSE}, WithLimiter(ml))
		held, err := e.open(testkit.Context(t))
		require.NoError(t, err)
		testkit.Recv(t, g.arrived, "the stream did not reach the upstream")
		queued := make(chan *http.Response, 1)
		go func() {
			resp, err := e.open(testkit.Context(t))
			if err == nil {
				queued <- resp
			}
		}()
		waitUntil(t, func() bool { _, _, w := ml.Leases("acme"); return w == 1 }, "the request did not queue")
		assert.EqualValues(t, 1, g.open.Load(), "the queued request is not sent upstream")
		finishStream(t, e, g, held)
		resp := testkit.Recv(t, queued, "the queued request did not run")
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		testkit.Recv(t, g.arrived, "the queued stream did not reach the upstream")
		finishStream(t, e, g, resp)
		assert.Equal(t, uint64(1), queueWaits(t, e, "tenant", "admitted"))
	})

	t.Run("refused after QueueTimeout", func(t *testing.T) {
		ml := NewMemoryLimiter(Limits{MaxConcurrent: 1, QueueTimeout: 50 * time.Millisecond})
		g := newGatedSSE()
		e := newEnv(t, g.serve, Route{Prefix: "/v1", Kind: KindSSE}, WithLimiter(ml))
		held, err := e.open(testkit.Context(t))
		require.NoError(t, err)
		testkit.Recv(t, g.arrived, "the stream did not reach the upstream")
		resp, _ := e.do(e.request(http.MethodPost, "/v1/chat/completions", `{"model":"m","messages":[]}`))
		assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
		assert.Equal(t, "1", resp.Header.Get("Retry-After"))
		assert.EqualValues(t, 1, g.peak.Load())
		finishStream(t, e, g, held)
	})
}

// TestQueuedClientLeaves: a client that leaves while its request waits
// for a slot is recorded as 499 and frees nothing it did not hold: the
// open stream keeps its slot, and the queue is empty.
func TestQueuedClientLeaves(t *testing.T) {
	for _, drain := range []bool{false, true} {
		t.Run(fmt.Sprintf("drain=%v", drain), func(t *testing.T) {
			ml := NewMemoryLimiter(Limits{MaxConcurrent: 1, QueueTimeout: time.Minute})
			g := newGatedSSE()
			opts := []Option{WithLimiter(ml)}
			if drain {
				opts = append(opts, WithDrainOnClientGone(time.Minute))
			}
			e := newEnv(t, g.serve, Route{Prefix: "/v1", Kind: KindSSE}, opts...)
			held, err := e.open(testkit.Context(t))
			require.NoError(t, err)
			testkit.Recv(t, g.arrived, "the stream did not reach the upstream")

			ctx, cancel := context.WithCancel(testkit.Context(t))
			done := make(chan error, 1)
			go func() {
				resp, err := e.open(ctx)
				if err == nil {
					resp.Body.Close()
				}
				done <- err
			}()
			waitUntil(t, func() bool { _, _, w := ml.Leases("acme"); return w == 1 }, "the request did not queue")
			cancel()
			assert.Error(t, testkit.Recv(t, done, "the client's request did not end"))
			e.handled()
			c, _, w := ml.Leases("acme")
			assert.Equal(t, [2]int{1, 0}, [2]int{c, w}, "the held slot stays held, the queue is empty")
			rec := e.lastRecord()
			assert.Equal(t, StatusClientClosedRequest, rec.Status)
			finishStream(t, e, g, held)
			c, _, _ = ml.Leases("acme")
			assert.Zero(t, c)
		})
	}
}

// TestMaxInFlightPerKey: with MaxInFlight 2 on a one-key upstream, the
// upstream never sees a third concurrent stream: queued requests run as
// slots free, or get 429 after the route's QueueTimeout.
func TestMaxInFlightPerKey(t *testing.T) {
	t.Run("queued requests run", func(t *testing.T) {
		g := newGatedSSE()
		e2, table, name := newKeyEnv(t, g, []Upstream{{AuthHeader: "Authorization",
			Keys: []string{"up-key"}, MaxInFlight: 2}}, time.Minute)
		const n = 5
		results := make(chan int, n)
		for range n {
			go func() {
				resp, err := e2.open(testkit.Context(t))
				if err != nil {
					results <- 0
					return
				}
				_, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
				results <- resp.StatusCode
			}()
		}
		testkit.Recv(t, g.arrived, "a stream did not reach the upstream")
		testkit.Recv(t, g.arrived, "a stream did not reach the upstream")
		slots := table.routes[0].slots
		waitUntil(t, func() bool {
			slots.mu.Lock()
			defer slots.mu.Unlock()
			return len(slots.waiters) == n-2
		}, "three requests did not queue")
		for i := range n {
			testkit.Send(t, g.gate, struct{}{}, "no stream took the gate")
			if i < n-2 {
				testkit.Recv(t, g.arrived, "a queued stream did not reach the upstream")
			}
		}
		for range n {
			assert.Equal(t, http.StatusOK, testkit.Recv(t, results, "a request did not end"))
		}
		assert.LessOrEqual(t, g.peak.Load(), int64(2), "the upstream saw more than MaxInFlight streams")
		assert.EqualValues(t, 2, g.peak.Load())
		for range n {
			e2.handled()
		}
		assert.Equal(t, []int{0}, table.InFlight("test", name))
		assert.Equal(t, uint64(n-2), queueWaits(t, e2, "upstream", "admitted"), "three requests waited")
	})

	t.Run("429 after QueueTimeout", func(t *testing.T) {
		g := newGatedSSE()
		e2, _, _ := newKeyEnv(t, g, []Upstream{{MaxInFlight: 2}}, 50*time.Millisecond)
		var open []*http.Response
		for range 2 {
			resp, err := e2.open(testkit.Context(t))
			require.NoError(t, err)
			testkit.Recv(t, g.arrived, "the stream did not reach the upstream")
			open = append(open, resp)
		}
		resp, body := e2.do(e2.request(http.MethodPost, "/v1/chat/completions", `{"model":"m","messages":[]}`))
		assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
		assert.Equal(t, "1", resp.Header.Get("Retry-After"))
		assert.Contains(t, string(body), "concurrency limit")
		assert.Equal(t, 1.0, testutil.ToFloat64(e2.relay.metrics.limited.WithLabelValues("test", ReasonUpstreamConcurrency)))
		assert.EqualValues(t, 2, g.peak.Load())
		for _, r := range open {
			finishStream(t, e2, g, r)
		}
	})

	t.Run("keys spread, each capped", func(t *testing.T) {
		g := newGatedSSE()
		e2, _, _ := newKeyEnv(t, g, []Upstream{{AuthHeader: "Authorization",
			Keys: []string{"k1", "k2"}, MaxInFlight: 1}}, 0)
		var open []*http.Response
		seen := map[string]bool{}
		for range 2 {
			resp, err := e2.open(testkit.Context(t))
			require.NoError(t, err)
			seen[testkit.Recv(t, g.arrived, "the stream did not reach the upstream")] = true
			open = append(open, resp)
		}
		assert.Len(t, seen, 2, "each key took one stream")
		resp, _ := e2.do(e2.request(http.MethodPost, "/v1/chat/completions", `{"model":"m","messages":[]}`))
		assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "both keys full, no queue")
		for _, r := range open {
			finishStream(t, e2, g, r)
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		for k, p := range g.keyPeak {
			assert.Equal(t, 1, p, "key %s", k)
		}
	})
}

// newKeyEnv starts a relay serving route "test" over ups, each pointing
// at g's upstream (a server of its own), with the given QueueTimeout.
func newKeyEnv(t *testing.T, g *gatedSSE, ups []Upstream, queue time.Duration) (*env, *RouteTable, string) {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(up.Close)
	name := up.Listener.Addr().String()
	for i := range ups {
		ups[i].URL, ups[i].Name = up.URL, name
	}
	e := newEnv(t, func(http.ResponseWriter, *http.Request) {},
		Route{Prefix: "/v1", Kind: KindSSE, Upstreams: ups, QueueTimeout: queue})
	t.Cleanup(func() { close(g.gate) }) // held streams end before up closes
	return e, e.relay.resolver.(*RouteTable), name
}

// queueWaits counts the observations of relay_queue_wait_seconds.
func queueWaits(t *testing.T, e *env, queue, outcome string) uint64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "relay_queue_wait_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			lv := map[string]string{}
			for _, l := range m.GetLabel() {
				lv[l.GetName()] = l.GetValue()
			}
			if lv["queue"] == queue && lv["outcome"] == outcome {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

// TestShutdownEndsQueueWaits: Shutdown answers requests waiting for a
// slot (tenant or key) with 503 at once, while the streams holding the
// slots run on to their end.
func TestShutdownEndsQueueWaits(t *testing.T) {
	for _, queue := range []string{"tenant", "upstream"} {
		t.Run(queue, func(t *testing.T) {
			g := newGatedSSE()
			var e *env
			if queue == "tenant" {
				e = newEnv(t, g.serve, Route{Prefix: "/v1", Kind: KindSSE},
					WithRateLimit(Limits{MaxConcurrent: 1, QueueTimeout: time.Minute}))
			} else {
				e, _, _ = newKeyEnv(t, g, []Upstream{{MaxInFlight: 1}}, time.Minute)
			}
			held, err := e.open(testkit.Context(t))
			require.NoError(t, err)
			testkit.Recv(t, g.arrived, "the stream did not reach the upstream")
			queued := make(chan *http.Response, 1)
			go func() {
				resp, err := e.open(testkit.Context(t))
				if err == nil {
					_, _ = io.ReadAll(resp.Body)
					resp.Body.Close()
					queued <- resp
				}
			}()
			waitUntil(t, func() bool {
				e.relay.mu.Lock()
				defer e.relay.mu.Unlock()
				for ex := e.relay.live; ex != nil; ex = ex.next {
					if ex.waiting.Load() == waitSlot {
						return true
					}
				}
				return false
			}, "the request did not queue")
			stopped := make(chan error, 1)
			go func() { stopped <- e.relay.Shutdown(testkit.Context(t)) }()
			resp := testkit.Recv(t, queued, "Shutdown did not end the queued request's wait")
			assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
			e.handled()
			assert.Equal(t, ErrTypeShuttingDown, e.lastRecord().ErrorType)
			finishStream(t, e, g, held)
			assert.NoError(t, testkit.Recv(t, stopped, "Shutdown did not return"))
		})
	}
}

// TestKeyQueueClientLeaves: a client that leaves while waiting for a key
// slot is recorded as 499 and takes no slot: the held one stays held and
// the queue is empty.
func TestKeyQueueClientLeaves(t *testing.T) {
	g := newGatedSSE()
	e, table, name := newKeyEnv(t, g, []Upstream{{MaxInFlight: 1}}, time.Minute)
	held, err := e.open(testkit.Context(t))
	require.NoError(t, err)
	testkit.Recv(t, g.arrived, "the stream did not reach the upstream")
	slots := table.routes[0].slots
	ctx, cancel := context.WithCancel(testkit.Context(t))
	done := make(chan error, 1)
	go func() {
		resp, err := e.open(ctx)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	waitUntil(t, func() bool {
		slots.mu.Lock()
		defer slots.mu.Unlock()
		return len(slots.waiters) == 1
	}, "the request did not queue")
	cancel()
	assert.Error(t, testkit.Recv(t, done, "the client's request did not end"))
	e.handled()
	assert.Equal(t, StatusClientClosedRequest, e.lastRecord().Status)
	assert.Equal(t, []int{1}, table.InFlight("test", name))
	slots.mu.Lock()
	assert.Empty(t, slots.waiters)
	slots.mu.Unlock()
	assert.Equal(t, uint64(1), queueWaits(t, e, "upstream", "canceled"))
	finishStream(t, e, g, held)
	assert.Equal(t, []int{0}, table.InFlight("test", name))
}

// failingLeases is a limiter whose Allow admits and whose Acquire fails.
type failingLeases struct{}

func (failingLeases) Allow(context.Context, LimitRequest) (Decision, error) {
	return Decision{Allowed: true}, nil
}

func (failingLeases) Acquire(context.Context, LeaseRequest) (Lease, Decision, error) {
	return nil, Decision{}, errors.New("store down")
}

// TestConcurrencyLimiterFailure: a ConcurrencyLimiter that cannot decide
// fails open or closed as Allow does, counted as a limiter error.
func TestConcurrencyLimiterFailure(t *testing.T) {
	for _, open := range []bool{true, false} {
		t.Run(fmt.Sprintf("fail open %v", open), func(t *testing.T) {
			e := newEnv(t, okUpstream, Route{Prefix: "/v1"}, WithLimiter(failingLeases{}), WithLimiterFailOpen(open))
			resp, _ := e.do(e.request(http.MethodPost, "/v1/chat/completions", `{"model":"m","messages":[]}`))
			if open {
				assert.Equal(t, http.StatusOK, resp.StatusCode)
			} else {
				assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
			}
			assert.Equal(t, 1.0, testutil.ToFloat64(e.relay.metrics.errors.WithLabelValues("test", string(ErrTypeLimiter))))
		})
	}
}

// TestSlotsReleasedAfterPanic: a panic on the request path (here, in the
// transport) still gives back the tenant's lease and the key's slot.
func TestSlotsReleasedAfterPanic(t *testing.T) {
	ml := NewMemoryLimiter(Limits{MaxConcurrent: 1})
	e := newEnv(t, okUpstream, Route{Prefix: "/v1", Upstreams: []Upstream{{URL: "http://127.0.0.1:1", Name: "up", MaxInFlight: 1}}},
		WithLimiter(ml),
		WithTransport(roundTripFunc(func(*http.Request) (*http.Response, error) { panic(http.ErrAbortHandler) })))
	wt := newWatch(t, e.relay, false)
	for range 2 { // the second finds both slots free again
		req, err := http.NewRequest(http.MethodPost, wt.front.URL+"/v1/x", strings.NewReader(`{}`))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+testKey)
		if resp, err := wt.front.Client().Do(req); err == nil {
			resp.Body.Close()
		}
		wt.handlerReturned(t)
		assert.Equal(t, http.StatusInternalServerError, e.lastRecord().Status)
		c, _, _ := ml.Leases("acme")
		assert.Zero(t, c, "the lease was released")
		assert.Equal(t, []int{0}, e.relay.resolver.(*RouteTable).InFlight("test", "up"))
	}
}

// BenchmarkMemoryLimiterAcquire: the cost a capped tenant's lease adds to
// admission (take and release, uncontended and across goroutines).
func BenchmarkMemoryLimiterAcquire(b *testing.B) {
	m := NewMemoryLimiter(Limits{MaxConcurrent: 1 << 20})
	req := leaseReq("t", nil, false)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l, _, _ := m.Acquire(ctx, req)
			l.Release()
		}
	})
}
