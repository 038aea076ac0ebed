package relayredis

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clientKey is the key test clients present to the relays.
const clientKey = "sk-relayredis-test-client-key"

// startUpstream serves a small chat completion.
func startUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"c1","object":"chat.completion","model":"m","choices":[],`+
			`"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}`)
	}))
	t.Cleanup(up.Close)
	return up
}

// replica is one relay, with its own registry, behind a loopback server.
type replica struct {
	relay *relay.Relay
	front *httptest.Server
	reg   *prometheus.Registry
}

// newReplica builds a relay in front of upstream that accepts clientKey
// for tenant with limits.
func newReplica(t *testing.T, upstream, tenant string, limits *relay.Limits, opts ...relay.Option) *replica {
	t.Helper()
	reg := prometheus.NewRegistry()
	base := []relay.Option{
		relay.WithRoutes(relay.Route{Name: "chat", Prefix: "/v1", Upstream: upstream, Kind: relay.KindJSON}),
		relay.WithAPIKeys(relay.APIKey{Key: clientKey, ID: "key-1", Tenant: tenant, Limits: limits}),
		relay.WithRegisterer(reg),
	}
	rl, err := relay.New(append(base, opts...)...)
	require.NoError(t, err)
	front := httptest.NewServer(rl)
	t.Cleanup(func() {
		front.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(t, rl.Shutdown(ctx))
	})
	return &replica{relay: rl, front: front, reg: reg}
}

// post sends one chat request and returns the response, its body read
// and closed. It may be called from any goroutine.
func (r *replica) post(c *http.Client) (*http.Response, error) {
	return r.postBody(c, `{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
}

// postBody is post with a request body of the caller's.
func (r *replica) postBody(c *http.Client, body string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodPost, r.front.URL+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+clientKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp, err
}

// mustPost is post on the test goroutine.
func (r *replica) mustPost(t *testing.T, c *http.Client) *http.Response {
	t.Helper()
	resp, err := r.post(c)
	require.NoError(t, err)
	return resp
}

// limiterErrors is the replica's relay_errors_total{type="limiter"}.
func (r *replica) limiterErrors(t *testing.T) float64 {
	t.Helper()
	mfs, err := r.reg.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != "relay_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "type" && lp.GetValue() == string(relay.ErrTypeLimiter) {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

func newHTTPClient(t *testing.T) *http.Client {
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 300}, Timeout: 30 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// skewedClock is the system clock off by skew, as a replica on a badly
// synchronised host would have.
func skewedClock(skew time.Duration) relay.Clock {
	return relay.ClockFunc(func() time.Time { return time.Now().Add(skew) })
}

// TestReplicasShareRequestBudget: three relays, each with its own client,
// share one tenant's 100 requests a minute (burst 100) under 300
// concurrent requests; and clocks skewed by ±30s change nothing, since
// only Redis's clock counts.
//
// The bucket refills one request every 600ms of Redis time, so the test
// measures the time it took by Redis's clock and allows exactly that many
// more (normally none: the requests take well under 600ms).
func TestReplicasShareRequestBudget(t *testing.T) {
	addr := sharedRedisAddr(t)
	upstream := startUpstream(t)
	tests := []struct {
		name  string
		skews [3]time.Duration
	}{
		{"clocks agree", [3]time.Duration{0, 0, 0}},
		{"clocks skewed by 30s", [3]time.Duration{-30 * time.Second, 0, 30 * time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			prefix := uniquePrefix(t)
			limits := &relay.Limits{RequestsPerMinute: 100, Burst: 100}
			var reps [3]*replica
			for i := range reps {
				// A generous timeout: a timed-out call would fail open and
				// blur the count (the test also checks none happened).
				lim, err := NewLimiter(newClient(t, addr, true), WithPrefix(prefix), WithTimeout(10*time.Second))
				require.NoError(t, err)
				reps[i] = newReplica(t, upstream.URL, "acme", limits,
					relay.WithLimiter(lim), relay.WithClock(skewedClock(tc.skews[i])))
			}
			hc := newHTTPClient(t)
			probe := newClient(t, addr, true)

			const total = 300
			statuses := make(chan *http.Response, total)
			begin := make(chan struct{})
			var wg sync.WaitGroup
			for i := range total {
				wg.Go(func() {
					<-begin
					resp, err := reps[i%3].post(hc)
					if assert.NoError(t, err) {
						statuses <- resp
					}
				})
			}
			start := redisNow(t, probe)
			close(begin)
			// Each request is bounded by the client's 30s timeout.
			testkit.WaitWithin(t, wg.Wait, 30*time.Second, "the concurrent requests did not finish")
			elapsed := redisNow(t, probe).Sub(start)
			close(statuses)

			admitted, refused := 0, 0
			for resp := range statuses {
				switch resp.StatusCode {
				case http.StatusOK:
					admitted++
					assert.Equal(t, "100", resp.Header.Get("X-Ratelimit-Limit-Requests"))
				case http.StatusTooManyRequests:
					refused++
					assert.NotEmpty(t, resp.Header.Get("Retry-After"))
					assert.Equal(t, "0", resp.Header.Get("X-Ratelimit-Remaining-Requests"))
				default:
					t.Errorf("unexpected status %d", resp.StatusCode)
				}
			}
			refill := int(elapsed / (600 * time.Millisecond))
			t.Logf("%d admitted, %d refused in %v of Redis time (refill allowance %d)", admitted, refused, elapsed, refill)
			assert.Equal(t, total, admitted+refused)
			assert.GreaterOrEqual(t, admitted, 100)
			assert.LessOrEqual(t, admitted, 100+refill)
			for i, r := range reps {
				assert.Zero(t, r.limiterErrors(t), "replica %d failed open", i)
			}
		})
	}
}

// TestReplicasShareTokenBudget: three limiters, each with its own client,
// share 1000 tokens a minute. Requests reserving 300 each: exactly 3 fit.
// Settling gives back what was not used, and charges overuse into debt,
// across replicas.
func TestReplicasShareTokenBudget(t *testing.T) {
	addr := sharedRedisAddr(t)
	prefix := uniquePrefix(t)
	limits := &relay.Limits{TokensPerMinute: 1000}
	var lims [3]*Limiter
	for i := range lims {
		l, err := NewLimiter(newClient(t, addr, true), WithPrefix(prefix), WithTimeout(10*time.Second))
		require.NoError(t, err)
		lims[i] = l
	}
	ctx := context.Background()
	// burst sends n concurrent admissions of reserve tokens over the
	// three limiters and returns the admitted requests.
	burst := func(n int, reserve int64) []relay.LimitRequest {
		var mu sync.Mutex
		var admitted []relay.LimitRequest
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				req := limitReq("acme", limits, reserve)
				req.Now = time.Now().Add(time.Duration(i%3-1) * 30 * time.Second) // ignored
				d, err := lims[i%3].Allow(ctx, req)
				if !assert.NoError(t, err) {
					return
				}
				if d.Allowed {
					mu.Lock()
					admitted = append(admitted, req)
					mu.Unlock()
				} else {
					assert.Equal(t, "tokens", d.Reason)
				}
			})
		}
		testkit.Wait(t, wg.Wait, "the concurrent admissions did not finish")
		return admitted
	}

	// 16.7 tokens a second refill: the next 300 are 12s away.
	first := burst(30, 300)
	require.Len(t, first, 3, "1000 tokens hold three reservations of 300")

	// Each used 100 of its 300: 600 come back, on other replicas.
	var wg sync.WaitGroup
	for i, req := range first {
		wg.Go(func() { assert.NoError(t, lims[(i+1)%3].Settle(ctx, req, 100)) })
	}
	testkit.Wait(t, wg.Wait, "the settlements did not finish")
	second := burst(30, 300)
	require.Len(t, second, 2, "100 left plus 600 refunded hold two more")

	// One request used 1300 of its 300: the tenant is 900 in debt.
	require.NoError(t, lims[0].Settle(ctx, second[0], 1300))
	d, err := lims[2].Allow(ctx, limitReq("acme", limits, 0))
	require.NoError(t, err)
	assert.False(t, d.Allowed)
	assert.Equal(t, "tokens", d.Reason)
	assert.InDelta(t, 54, d.RetryAfter.Seconds(), 1, "900 tokens at 1000/min")
	assert.Equal(t, int64(0), d.Tokens.Remaining)
	assert.Equal(t, int64(1000), d.Tokens.Limit)
}

// TestRelaySettlesTokensAcrossReplicas: relays reserve a request's
// max_tokens (plus its prompt) at admission and settle with the usage the
// upstream reported (8 tokens) when the response is done. 1000 tokens
// hold three reservations of 300 at once, but since each gives back what
// it did not use, nine requests in a row pass; one that would need more
// than the bucket holds waits for a full bucket and is refused.
func TestRelaySettlesTokensAcrossReplicas(t *testing.T) {
	addr := sharedRedisAddr(t)
	upstream := startUpstream(t)
	prefix := uniquePrefix(t)
	limits := &relay.Limits{TokensPerMinute: 1000}
	// A record seen means the handler returned, and with it the request's
	// settlement started; it runs in the background, so the test waits for
	// it with Flush before the next request reads the budget.
	records := make(chan relay.Record, 16)
	sink := relay.RecorderFunc(func(_ context.Context, rec relay.Record) error {
		records <- rec
		return nil
	})
	var reps [3]*replica
	for i := range reps {
		lim, err := NewLimiter(newClient(t, addr, true), WithPrefix(prefix), WithTimeout(5*time.Second))
		require.NoError(t, err)
		reps[i] = newReplica(t, upstream.URL, "acme", limits, relay.WithLimiter(lim),
			relay.WithRecorder(sink), relay.WithRecordQueue(relay.AsyncOptions{BatchSize: 1}))
	}
	hc := newHTTPClient(t)
	const body = `{"model":"m","max_tokens":300,"messages":[{"role":"user","content":"hi"}]}`
	var last *http.Response
	for i := range 9 {
		rep := reps[i%3]
		resp, err := rep.postBody(hc, body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, "request %d", i)
		rec := testkit.Recv(t, records, fmt.Sprintf("request %d was not recorded", i))
		require.Equal(t, int64(8), rec.Usage.Total())
		require.NoError(t, rep.relay.Flush(testkit.Context(t)), "request %d: settlement not done", i)
		last = resp
	}
	remaining, err := strconv.Atoi(last.Header.Get("X-Ratelimit-Remaining-Tokens"))
	require.NoError(t, err)
	assert.Greater(t, remaining, 600, "only the usage is kept, not the reservations")

	resp, err := reps[0].postBody(hc, `{"model":"m","max_tokens":2000,"messages":[]}`)
	require.NoError(t, err)
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	assert.NotEmpty(t, resp.Header.Get("Retry-After"))
}

// TestLimiterReloadsTheScript: the script cache is per Redis process and
// SCRIPT FLUSH (or a restart) empties it; EVALSHA then fails with NOSCRIPT
// and the limiter falls back to EVAL, which caches it again, without an
// error.
func TestLimiterReloadsTheScript(t *testing.T) {
	// A server of our own: flushing the shared one's scripts would be rude.
	srv := startRedisServer(t)
	client := newClient(t, srv.addr, true)
	lim := newTestLimiter(t, client)
	ctx := context.Background()
	limits := &relay.Limits{RequestsPerMinute: 60}
	cached := func() bool {
		exists, err := lim.script.Exists(ctx, client).Result()
		require.NoError(t, err)
		return exists[0]
	}
	require.False(t, cached())
	for range 2 {
		d, err := lim.Allow(ctx, limitReq("acme", limits, 0))
		require.NoError(t, err)
		require.True(t, d.Allowed)
		require.True(t, cached())
		require.NoError(t, client.ScriptFlush(ctx).Err())
		require.False(t, cached())
	}
}
