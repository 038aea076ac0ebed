//go:build unix

package relayredis

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// waitReady polls Ready until it succeeds, for up to 10s. Redis is known
// to accept connections again; what is awaited is the clients dropping
// their dead pooled connections.
func waitReady(t *testing.T, reps ...*replica) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for _, r := range reps {
		for {
			err := r.relay.Ready(context.Background())
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("relay not ready 10s after Redis came back: %v", err)
			}
			<-tick.C
		}
	}
}

// TestRedisOutage stops Redis under two relays: the fail-open one keeps
// serving, the fail-closed one answers 503, both count limiter errors and
// report not ready. Redis comes back on the same port and both recover
// without a restart.
func TestRedisOutage(t *testing.T) {
	srv := startRedisServer(t)
	upstream := startUpstream(t)
	limits := &relay.Limits{RequestsPerMinute: 6000}
	prefix := uniquePrefix(t)
	// One client honours context deadlines and one does not, so that both
	// of the limiter's ways of bounding calls face the outage.
	openLim, err := NewLimiter(newClient(t, srv.addr, false), WithPrefix(prefix))
	require.NoError(t, err)
	closedLim, err := NewLimiter(newClient(t, srv.addr, true), WithPrefix(prefix))
	require.NoError(t, err)
	rec, err := NewRecorder(newClient(t, srv.addr, false), WithPrefix(prefix))
	require.NoError(t, err)
	open := newReplica(t, upstream.URL, "acme", limits, relay.WithLimiter(openLim))
	closed := newReplica(t, upstream.URL, "acme", limits, relay.WithLimiter(closedLim), relay.WithLimiterFailOpen(false))
	hc := newHTTPClient(t)
	ctx := context.Background()

	for _, r := range []*replica{open, closed} {
		resp := r.mustPost(t, hc)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "6000", resp.Header.Get("X-Ratelimit-Limit-Requests"))
		require.NoError(t, r.relay.Ready(ctx))
		require.Zero(t, r.limiterErrors(t))
	}
	require.NoError(t, rec.Healthy(ctx))

	srv.kill()

	// More failed calls than go-redis's pool size (10 per CPU), after
	// which its pool stops dialing and probes once a second instead:
	// recovery must survive that too.
	const during = 30
	var wg sync.WaitGroup
	for range during {
		wg.Go(func() {
			resp, err := open.post(hc)
			if assert.NoError(t, err) {
				assert.Equal(t, http.StatusOK, resp.StatusCode, "fail open: served without a limit")
				assert.Empty(t, resp.Header.Get("X-Ratelimit-Limit-Requests"))
			}
		})
		wg.Go(func() {
			resp, err := closed.post(hc)
			if assert.NoError(t, err) {
				assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode, "fail closed: refused")
			}
		})
	}
	testkit.Wait(t, wg.Wait, "the requests during the outage did not finish")
	assert.Equal(t, float64(during), open.limiterErrors(t))
	assert.Equal(t, float64(during), closed.limiterErrors(t))
	for name, r := range map[string]*replica{"open": open, "closed": closed} {
		assert.ErrorContains(t, r.relay.Ready(ctx), "limiter", name)
	}
	assert.Error(t, rec.Healthy(ctx))
	// The relay's record queue gives each batch a deadline; so does this.
	wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	assert.Error(t, rec.RecordBatch(wctx, []relay.Record{{RequestID: "lost"}}))

	srv.start()
	back := time.Now()
	waitReady(t, open, closed)
	t.Logf("ready %v after Redis came back", time.Since(back))
	require.NoError(t, rec.Healthy(ctx))
	for name, r := range map[string]*replica{"open": open, "closed": closed} {
		resp := r.mustPost(t, hc)
		assert.Equal(t, http.StatusOK, resp.StatusCode, name)
		assert.Equal(t, "6000", resp.Header.Get("X-Ratelimit-Limit-Requests"), name+": the limiter decided")
	}
	for name, r := range map[string]*replica{"open": open, "closed": closed} {
		assert.Equal(t, float64(during), r.limiterErrors(t), name+": no error after recovery")
	}
	require.NoError(t, rec.RecordBatch(ctx, []relay.Record{{RequestID: "kept"}}))
}

// TestSlowRedisTimesOut pauses Redis (SIGSTOP): it accepts connections
// but answers nothing, the case that client timeouts of seconds would
// turn into stalled requests. Every call must give up at the limiter's
// timeout, whether or not the client honours context deadlines, and the
// fail-open relay must answer at once.
func TestSlowRedisTimesOut(t *testing.T) {
	for _, contextTimeouts := range []bool{false, true} {
		name := "client ignores context deadlines"
		if contextTimeouts {
			name = "client honours context deadlines"
		}
		t.Run(name, func(t *testing.T) {
			srv := startRedisServer(t)
			upstream := startUpstream(t)
			client := newClient(t, srv.addr, contextTimeouts)
			const timeout = 100 * time.Millisecond
			lim, err := NewLimiter(client, WithPrefix(uniquePrefix(t)), WithTimeout(timeout))
			require.NoError(t, err)
			rec, err := NewRecorder(client, WithTimeout(timeout))
			require.NoError(t, err)
			limits := &relay.Limits{RequestsPerMinute: 6000, TokensPerMinute: 100000}
			// The relay's tenant has no token budget, so that the relay
			// makes exactly one limiter call (no settlement) per request.
			open := newReplica(t, upstream.URL, "acme", &relay.Limits{RequestsPerMinute: 6000}, relay.WithLimiter(lim))
			hc := newHTTPClient(t)
			ctx := context.Background()

			_, err = lim.Allow(ctx, limitReq("acme", limits, 10)) // warm the pool and script
			require.NoError(t, err)

			srv.signal(syscall.SIGSTOP)
			// The client's ReadTimeout is go-redis's default of seconds; a
			// call that waited for it would take far longer than this.
			const bound = time.Second
			checks := map[string]func() error{
				"allow": func() error {
					_, err := lim.Allow(ctx, limitReq("acme", limits, 10))
					return err
				},
				"settle":           func() error { return lim.Settle(ctx, limitReq("acme", limits, 10), 20) },
				"limiter healthy":  func() error { return lim.Healthy(ctx) },
				"recorder healthy": func() error { return rec.Healthy(ctx) },
				"record batch": func() error {
					ctx, cancel := context.WithTimeout(ctx, timeout)
					defer cancel()
					return rec.RecordBatch(ctx, []relay.Record{{RequestID: "r"}})
				},
			}
			for what, check := range checks {
				start := time.Now()
				err := check()
				took := time.Since(start)
				assert.True(t, errors.Is(err, context.DeadlineExceeded), "%s: %v", what, err)
				assert.Less(t, took, bound, what)
			}
			start := time.Now()
			resp := open.mustPost(t, hc)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Less(t, time.Since(start), bound, "the relay failed open at the timeout")
			assert.Equal(t, 1.0, open.limiterErrors(t))

			srv.signal(syscall.SIGCONT)
			waitReady(t, open)
			d, err := lim.Allow(ctx, limitReq("acme", limits, 10))
			require.NoError(t, err)
			assert.True(t, d.Allowed)
		})
	}
}
