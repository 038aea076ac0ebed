package relay

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHeldFailureRetryIsBackedOff: a single-backend route with
// MaxAttempts 2 holds its first attempt; when that held stream fails before
// its first content (an error event), the retry of the same backend must be
// spaced by the route's Backoff like any other retry (README "Retries").
func TestHeldFailureRetryIsBackedOff(t *testing.T) {
	up, n := inTurn(t,
		sseUpstream(roleChunk, `data: {"error":{"message":"Upstream failed","type":"server_error","code":502}}`+"\n\n"),
		sseUpstream(contentChunk, doneChunk))
	e := newEnv(t, up, Route{Prefix: "/v1", MaxAttempts: 2, Backoff: Backoff{Base: 100 * time.Millisecond, Max: time.Second}})
	rec := recordBackoff(e.relay, true, false)
	resp, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, contentChunk+doneChunk, string(body))
	assert.Equal(t, int32(2), n.Load())
	waits := rec.all()
	if assert.Len(t, waits, 1) {
		assert.GreaterOrEqual(t, waits[0], 50*time.Millisecond, "the retry after a held failure is backed off")
	}
}

// TestRetryAfterOverflow: a huge Retry-After in seconds saturates rather
// than overflow (9999999999 s would turn negative, 18446744074 s wrap to
// ~290ms); maxRest and Backoff.Max then bound it.
func TestRetryAfterOverflow(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, v := range []string{"9999999999", "18446744074"} {
		h := http.Header{"Retry-After": {v}}
		d := retryAfter(h, ClockFunc(func() time.Time { return now }))
		assert.GreaterOrEqual(t, d, maxRest, "Retry-After: %s gives %v", v, d)
	}
}

// TestProbeKeyFailureLeavesHalfOpen: README "Half open": "A
// success closes it; a failure rests it again (for its Retry-After, else
// 10s)". A probe answered 429 (or 401) without Retry-After is such a
// failure: the upstream rests again rather than stay claimed half open
// until the probe window ends.
func TestProbeKeyFailureLeavesHalfOpen(t *testing.T) {
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
	resolve := func() *Target {
		tg, err := rt.Resolve(req)
		require.NoError(t, err)
		tg.claimProbe()
		return tg
	}
	a := func(tg *Target) *Backend {
		for i := range tg.Backends {
			if tg.Backends[i].Name == "a" {
				return &tg.Backends[i]
			}
		}
		t.Fatal("no backend a")
		return nil
	}
	for range 3 {
		a(resolve()).Done(AttemptResult{Status: 500})
	}
	require.Equal(t, 2.0, state())
	clock.advance(breakerCoolDown)
	tg := resolve()
	require.Equal(t, "a", tg.Backends[0].Name, "the probe")
	tg.Backends[0].Done(AttemptResult{Status: 429})
	assert.Equal(t, 2.0, state(), "a failed probe rests the upstream again")
}

// TestHeldBytesIntact: a held stream's bytes reach the client
// unchanged and in order when released, whatever the reads: CRLF, a
// comment before content, a first content event larger than maxHold, all
// replayed in odd-sized writes.
func TestHeldBytesIntact(t *testing.T) {
	big := `data: {"id":"c","choices":[{"index":0,"delta":{"content":"` + strings.Repeat("y", 100<<10) + `"}}]}` + "\n\n"
	crlf := strings.ReplaceAll(roleChunk+": c\n\n"+contentChunk+doneChunk, "\n", "\r\n")
	for name, stream := range map[string]string{
		"crlf":          crlf,
		"big first":     roleChunk + ": c\n\n" + big + contentChunk + doneChunk,
		"comment first": ": hi\n\n" + roleChunk + contentChunk + doneChunk,
	} {
		t.Run(name, func(t *testing.T) {
			e, n := newHoldEnv(t, Route{}, replay([]byte(stream), "text/event-stream"))
			resp, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, stream, string(body))
			assert.Equal(t, int32(1), n.Load())
		})
	}
}

// TestHeldCompleteStreamLeftOpen: a stream that ends complete with
// no content ([DONE]) is "an answer, not a failure" (README): it is relayed
// at once even when its upstream keeps the body open, never failed over
// (which would send, and bill, the request again), and the stall after
// its final event appends no error.
func TestHeldCompleteStreamLeftOpen(t *testing.T) {
	open := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, roleChunk+doneChunk)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}
	e, n := newHoldEnv(t, Route{Timeouts: Timeouts{FirstToken: 300 * time.Millisecond, Idle: 300 * time.Millisecond}},
		open, sseUpstream(contentChunk, doneChunk))
	_, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
	assert.Equal(t, roleChunk+doneChunk, string(body), "the first, complete answer")
	assert.Equal(t, int32(1), n.Load(), "not sent again")
}
