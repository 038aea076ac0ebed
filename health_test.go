package relay

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stepClock is a clock that moves only when a test moves it.
type stepClock struct{ ns atomic.Int64 }

func newStepClock() *stepClock {
	c := &stepClock{}
	c.ns.Store(time.Unix(1e9, 0).UnixNano())
	return c
}
func (c *stepClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *stepClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// countingUpstream answers with what status says (an empty Content-Length
// JSON body), setting header when it fails, and counts its calls.
type countingUpstream struct {
	calls  atomic.Int32
	status atomic.Int32
	header [2]string
	srv    *httptest.Server
}

func newCountingUpstream(t *testing.T, status int, header ...string) *countingUpstream {
	u := &countingUpstream{}
	u.status.Store(int32(status))
	copy(u.header[:], header)
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		u.calls.Add(1)
		st := int(u.status.Load())
		if st != 200 && u.header[0] != "" {
			w.Header().Set(u.header[0], u.header[1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(st)
		_, _ = io.WriteString(w, `{}`)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// TestUpstreamRestsForRetryAfter is the scenario: a route with two
// single-key upstreams, the first answering 503 with Retry-After: 30 (or
// retry-after-ms: 1500). The first request fails over to the second; for
// the rest of the wait the first upstream is not tried again (1 try in 6
// requests, not 3). Once the wait is over, one request probes it first;
// its success makes the rotation whole again. The metrics show the rest.
func TestUpstreamRestsForRetryAfter(t *testing.T) {
	for _, tc := range []struct {
		name, header, value string
		rest                time.Duration
	}{
		{"retry-after", "Retry-After", "30", 30 * time.Second},
		{"retry-after-ms", "retry-after-ms", "1500", 1500 * time.Millisecond},
		{"retry-after-ms wins", "retry-after-ms", "1500.5", 1500*time.Millisecond + 500*time.Microsecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newCountingUpstream(t, 503, tc.header, tc.value)
			b := newCountingUpstream(t, 200)
			if tc.name == "retry-after-ms wins" {
				a.srv.Config.Handler = wrapHeader(a.srv.Config.Handler, "Retry-After", "30")
			}
			clock := newStepClock()
			e := newEnv(t, nil, Route{Prefix: "/v1", Upstreams: []Upstream{
				{Name: "a", URL: a.srv.URL, AuthHeader: "Authorization", AuthValue: "sk-a"},
				{Name: "b", URL: b.srv.URL, AuthHeader: "Authorization", AuthValue: "sk-b"},
			}}, WithClock(clock))
			post := func() int {
				resp, _ := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m"}`))
				return resp.StatusCode
			}
			for i := range 6 {
				assert.Equal(t, 200, post(), "request %d", i)
			}
			assert.Equal(t, int32(1), a.calls.Load(), "the resting upstream is tried once in 6 requests")
			assert.Equal(t, int32(6), b.calls.Load())
			m := e.relay.metrics
			assert.Equal(t, 2.0, testutil.ToFloat64(m.upstreamState.WithLabelValues("test", "a")), "resting")
			assert.Equal(t, 1.0, testutil.ToFloat64(m.upstreamRests.WithLabelValues("test", "a", "retry_after")))
			assert.Equal(t, 1.0, testutil.ToFloat64(m.upstreamRests.WithLabelValues("test", "a", "all_keys")))

			clock.advance(tc.rest - time.Millisecond)
			assert.Equal(t, 200, post())
			assert.Equal(t, int32(1), a.calls.Load(), "still resting a millisecond before the end")

			a.status.Store(200)
			clock.advance(time.Millisecond)
			unauth := e.request("POST", "/v1/chat/completions", `{}`)
			unauth.Header.Set("Authorization", "Bearer wrong")
			resp, _ := e.do(unauth)
			require.Equal(t, 401, resp.StatusCode)
			assert.Equal(t, int32(1), a.calls.Load())
			assert.Equal(t, 2.0, testutil.ToFloat64(m.upstreamState.WithLabelValues("test", "a")),
				"a refused request does not claim the probe")
			assert.Equal(t, 200, post())
			assert.Equal(t, int32(2), a.calls.Load(), "the probe goes to the rested upstream first")
			assert.Equal(t, 0.0, testutil.ToFloat64(m.upstreamState.WithLabelValues("test", "a")), "closed")
			for range 4 {
				post()
			}
			assert.Equal(t, int32(4), a.calls.Load(), "the rotation is whole again")
		})
	}
}

func wrapHeader(h http.Handler, k, v string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(k, v)
		h.ServeHTTP(w, r)
	})
}

// TestRetryAfterParsing: retry-after-ms is read in milliseconds (and
// preferred); both forms are capped alike at maxRetryAfter, so that a huge
// value never overflows (a key's rest then caps it at maxRest, a retry
// compares it with Backoff.Max); nonsense is ignored.
func TestRetryAfterParsing(t *testing.T) {
	clock := newStepClock()
	for _, tc := range []struct {
		h    http.Header
		want time.Duration
	}{
		{http.Header{"Retry-After": {"7"}}, 7 * time.Second},
		{http.Header{"Retry-After-Ms": {"250"}}, 250 * time.Millisecond},
		{http.Header{"Retry-After-Ms": {"250"}, "Retry-After": {"1"}}, 250 * time.Millisecond},
		{http.Header{"Retry-After-Ms": {"1e12"}}, maxRetryAfter},
		{http.Header{"Retry-After": {"9999999999"}}, maxRetryAfter},
		{http.Header{"Retry-After": {"18446744074"}}, maxRetryAfter},
		{http.Header{"Retry-After": {"99999999999999999999999"}}, maxRetryAfter},
		{http.Header{"Retry-After": {clock.Now().Add(1000 * time.Hour).UTC().Format(http.TimeFormat)}}, maxRetryAfter},
		{http.Header{"Retry-After-Ms": {"NaN"}, "Retry-After": {"2"}}, 2 * time.Second},
		{http.Header{"Retry-After-Ms": {"-5"}}, 0},
		{http.Header{"Retry-After": {clock.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat)}}, 90 * time.Second},
		{http.Header{}, 0},
	} {
		assert.Equal(t, tc.want, retryAfter(tc.h, clock), "%v", tc.h)
	}
}

// TestBreakerOpensProbesAndCloses drives the route table's health: an
// upstream of three keys failing (500, no Retry-After) three times in a
// row opens its breaker, before every key rests; while open, every
// request has the other upstream first and the open one last; once the
// cool-down is over, of many concurrent requests exactly one has it
// first (the probe). A failed probe opens it again; a successful one
// closes it.
func TestBreakerOpensProbesAndCloses(t *testing.T) {
	clock := newStepClock()
	rt, err := NewRouteTable([]Route{{Name: "r", Prefix: "/", Upstreams: []Upstream{
		{Name: "a", URL: "http://a", AuthHeader: "x-api-key", Keys: []string{"k1", "k2", "k3"}},
		{Name: "b", URL: "http://b"},
	}}}, clock)
	require.NoError(t, err)
	m, err := newMetrics(prometheus.NewRegistry())
	require.NoError(t, err)
	rt.instrument(m)
	state := func() float64 { return testutil.ToFloat64(m.upstreamState.WithLabelValues("r", "a")) }
	req, _ := http.NewRequest("POST", "http://relay/v1", nil)
	// resolve resolves and claims the probe, as the relay does before
	// the first attempt.
	resolve := func() *Target {
		tg, err := rt.Resolve(req)
		require.NoError(t, err)
		tg.claimProbe()
		return tg
	}
	firstA := func(tg *Target) *Backend {
		for i := range tg.Backends {
			if tg.Backends[i].Name == "a" {
				return &tg.Backends[i]
			}
		}
		t.Fatal("no backend a")
		return nil
	}

	for i := range 3 {
		assert.Equal(t, 0.0, state(), "closed before failure %d", i+1)
		firstA(resolve()).Done(AttemptResult{Status: 500})
	}
	assert.Equal(t, 2.0, state(), "open after 3 failures in a row")
	assert.Equal(t, 1.0, testutil.ToFloat64(m.upstreamRests.WithLabelValues("r", "a", "breaker")))
	for range 4 {
		tg := resolve()
		assert.Equal(t, "b", tg.Backends[0].Name, "an open upstream is never first")
		assert.Equal(t, "a", tg.Backends[len(tg.Backends)-1].Name, "but still a last resort")
	}

	probe := func() *Backend {
		var (
			wg     sync.WaitGroup
			mu     sync.Mutex
			probes []*Backend
		)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				tg := resolve()
				if tg.Backends[0].Name == "a" {
					mu.Lock()
					probes = append(probes, &tg.Backends[0])
					mu.Unlock()
				}
			}()
		}
		testkit.Wait(t, wg.Wait, "the concurrent resolves did not finish")
		require.Len(t, probes, 1, "exactly one probe")
		assert.Equal(t, 1.0, state(), "half open")
		return probes[0]
	}

	clock.advance(breakerCoolDown - time.Millisecond)
	assert.Equal(t, "b", resolve().Backends[0].Name, "still open before the cool-down ends")
	clock.advance(time.Millisecond)
	probe().Done(AttemptResult{Err: io.ErrUnexpectedEOF})
	assert.Equal(t, 2.0, state(), "a failed probe opens it again")
	assert.Equal(t, 1.0, testutil.ToFloat64(m.upstreamRests.WithLabelValues("r", "a", "reopened")))
	assert.Equal(t, "b", resolve().Backends[0].Name)

	clock.advance(breakerCoolDown)
	probe().Done(AttemptResult{Status: 200})
	assert.Equal(t, 0.0, state(), "a successful probe closes it")
	firsts := map[string]int{}
	for range 4 {
		firsts[resolve().Backends[0].Name]++
	}
	assert.Equal(t, map[string]int{"a": 2, "b": 2}, firsts, "round robin again")
}

// TestProbeWindow: the probe is claimed before the first attempt, by one
// request only; a probe whose request never reports (its client left)
// holds the half-open state for probeWindow only; then another request
// probes.
func TestProbeWindow(t *testing.T) {
	clock := newStepClock()
	rt, err := NewRouteTable([]Route{{Name: "r", Prefix: "/", Upstreams: []Upstream{
		{Name: "a", URL: "http://a"}, {Name: "b", URL: "http://b"},
	}}}, clock)
	require.NoError(t, err)
	req, _ := http.NewRequest("POST", "http://relay/v1", nil)
	resolve := func() *Target {
		tg, err := rt.Resolve(req)
		require.NoError(t, err)
		tg.claimProbe()
		return tg
	}
	tg := resolve()
	require.Equal(t, "a", tg.Backends[0].Name)
	tg.Backends[0].Done(AttemptResult{Status: 503, RetryAfter: time.Second})
	clock.advance(time.Second)

	// Two requests resolved before either claims: one probes, the other
	// has the upstream last.
	t1, _ := rt.Resolve(req)
	t2, _ := rt.Resolve(req)
	assert.Equal(t, "a", t1.Backends[0].Name, "put first to probe")
	assert.Equal(t, "a", t2.Backends[0].Name, "put first to probe")
	t1.claimProbe()
	t2.claimProbe()
	assert.Equal(t, "a", t1.Backends[0].Name, "the probe")
	assert.Equal(t, []string{"b", "a"}, []string{t2.Backends[0].Name, t2.Backends[1].Name}, "the probe was taken: a goes last")
	for range 3 {
		assert.Equal(t, "b", resolve().Backends[0].Name, "the probe is under way")
	}
	clock.advance(probeWindow)
	assert.Equal(t, "a", resolve().Backends[0].Name, "a probe that never reported is replaced")
}

// TestAllUpstreamsResting: when every upstream rests, the request still
// goes out (the relay never refuses for health alone), to the upstream
// whose rest ends first.
func TestAllUpstreamsResting(t *testing.T) {
	clock := newStepClock()
	rt, err := NewRouteTable([]Route{{Name: "r", Prefix: "/", Upstreams: []Upstream{
		{Name: "a", URL: "http://a"}, {Name: "b", URL: "http://b"}, {Name: "c", URL: "http://c"},
	}}}, clock)
	require.NoError(t, err)
	req, _ := http.NewRequest("POST", "http://relay/v1", nil)
	tg, _ := rt.Resolve(req)
	tg.claimProbe()
	rests := map[string]time.Duration{"a": 30 * time.Second, "b": 10 * time.Second, "c": 20 * time.Second}
	for _, b := range tg.Backends {
		b.Done(AttemptResult{Status: 429, RetryAfter: rests[b.Name]})
	}
	for range 3 {
		tg, _ = rt.Resolve(req)
		tg.claimProbe()
		var names []string
		for _, b := range tg.Backends {
			names = append(names, b.Name)
		}
		assert.Equal(t, []string{"b", "c", "a"}, names, "every upstream, the soonest free first")
	}
}
