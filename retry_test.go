package relay

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// backoffRecorder replaces the relay's backoff timer and jitter: each wait
// is recorded and fires at once (or never, for fire false), and the
// jitter is the largest (or smallest) it may be.
type backoffRecorder struct {
	waits chan time.Duration
	fire  bool
}

func recordBackoff(rl *Relay, fire, maxJitter bool) *backoffRecorder {
	b := &backoffRecorder{waits: make(chan time.Duration, 16), fire: fire}
	rl.backoffTimer = func(d time.Duration) *time.Timer {
		b.waits <- d
		if b.fire {
			return time.NewTimer(0)
		}
		return time.NewTimer(time.Hour) // stopped by backoff when the wait is cut
	}
	rl.jitter = func(n int64) int64 {
		if maxJitter {
			return n - 1
		}
		return 0
	}
	return b
}

func (b *backoffRecorder) all() []time.Duration {
	var out []time.Duration
	for {
		select {
		case d := <-b.waits:
			out = append(out, d)
		default:
			return out
		}
	}
}

// TestRetriesWithBackoff: on a route with one upstream and MaxAttempts 3,
// a retryable failure before the first byte is sent again after a
// jittered exponential backoff (or the upstream's Retry-After, when
// within Backoff.Max), with the same body; a status that is not
// retryable, or a Retry-After beyond Max, is relayed as it came.
func TestRetriesWithBackoff(t *testing.T) {
	bo := Backoff{Base: 100 * time.Millisecond, Max: time.Second}
	type answer struct {
		status int
		header []string
	}
	tests := []struct {
		name      string
		answers   []answer // then 200
		maxJitter bool
		status    int // the client's
		calls     int32
		waits     []time.Duration
	}{
		{"503 then success", []answer{{503, nil}}, true, 200, 2, []time.Duration{100 * time.Millisecond}},
		{"529 twice, jitter low", []answer{{529, nil}, {529, nil}}, false, 200, 3,
			[]time.Duration{50 * time.Millisecond, 100 * time.Millisecond}},
		{"429 with Retry-After within Max", []answer{{429, []string{"Retry-After", "1"}}}, true, 200, 2, []time.Duration{time.Second}},
		{"503 with retry-after-ms", []answer{{503, []string{"retry-after-ms", "250"}}}, true, 200, 2, []time.Duration{250 * time.Millisecond}},
		{"Retry-After beyond Max is relayed", []answer{{503, []string{"Retry-After", "5"}}}, true, 503, 1, nil},
		{"501 is not retried", []answer{{501, nil}}, true, 501, 1, nil},
		{"every attempt fails: the last answer is relayed", []answer{{500, nil}, {502, nil}, {504, nil}}, true, 504, 3,
			[]time.Duration{100 * time.Millisecond, 200 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			bodies := make(chan string, 8)
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				bodies <- string(b)
				n := int(calls.Add(1))
				if n <= len(tt.answers) {
					a := tt.answers[n-1]
					if a.header != nil {
						w.Header().Set(a.header[0], a.header[1])
					}
					w.WriteHeader(a.status)
					_, _ = io.WriteString(w, `{"error":{"message":"try later"}}`)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"ok":true}`)
			}, Route{Prefix: "/v1", MaxAttempts: 3, Backoff: bo})
			rec := recordBackoff(e.relay, true, tt.maxJitter)
			const body = `{"model":"m","messages":[]}`
			resp, _ := e.do(e.request("POST", "/v1/chat/completions", body))
			assert.Equal(t, tt.status, resp.StatusCode)
			assert.Equal(t, tt.calls, calls.Load())
			assert.Equal(t, tt.waits, rec.all())
			for range tt.calls {
				assert.Equal(t, body, testkit.Recv(t, bodies, "a body"), "every attempt gets the whole body")
			}
			r := e.lastRecord()
			assert.Equal(t, int(tt.calls), r.Attempts)
			assert.Equal(t, float64(len(tt.waits)), testutil.ToFloat64(e.relay.metrics.retries.WithLabelValues("test", r.Upstream)))
		})
	}
}

// TestRetryConnectErrors: an upstream that refuses connections is tried
// MaxAttempts times, with backoffs between, then answered 502.
func TestRetryConnectErrors(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := "http://" + l.Addr().String()
	l.Close()
	e := newEnv(t, nil, Route{Prefix: "/v1", Upstream: addr, MaxAttempts: 3,
		Backoff: Backoff{Base: 100 * time.Millisecond, Max: 150 * time.Millisecond}})
	rec := recordBackoff(e.relay, true, true)
	resp, _ := e.do(e.request("POST", "/v1/chat/completions", `{}`))
	assert.Equal(t, 502, resp.StatusCode)
	assert.Equal(t, []time.Duration{100 * time.Millisecond, 150 * time.Millisecond}, rec.all(), "capped at Max")
	assert.Equal(t, 3, e.lastRecord().Attempts)
}

// TestRetryBackoffEndsWhenClientLeaves: a client that leaves during the
// backoff ends it at once: no further attempt, a 499 record.
func TestRetryBackoffEndsWhenClientLeaves(t *testing.T) {
	var calls atomic.Int32
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(503)
	}, Route{Prefix: "/v1", MaxAttempts: 3})
	rec := recordBackoff(e.relay, false, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := e.request("POST", "/v1/chat/completions", `{}`).WithContext(ctx)
	errc := make(chan error, 1)
	go func() {
		resp, err := e.front.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	assert.Equal(t, 500*time.Millisecond, testkit.Recv(t, rec.waits, "no backoff began"), "the default base")
	cancel()
	assert.Error(t, testkit.Recv(t, errc, "the client did not return"))
	e.handled()
	r := e.lastRecord()
	assert.Equal(t, StatusClientClosedRequest, r.Status)
	assert.True(t, r.ClientGone)
	assert.Equal(t, int32(1), calls.Load(), "no attempt after the client left")
}

// TestRetryBackoffEndsOnShutdown: Shutdown ends a backoff at once, with
// the shutdown answer.
func TestRetryBackoffEndsOnShutdown(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(503) },
		Route{Prefix: "/v1", MaxAttempts: 2})
	rec := recordBackoff(e.relay, false, true)
	got := make(chan int, 1)
	go func() {
		resp, err := e.front.Client().Do(e.request("POST", "/v1/chat/completions", `{}`))
		if err != nil {
			got <- 0
			return
		}
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	testkit.Recv(t, rec.waits, "no backoff began")
	ctx, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	_ = e.relay.Shutdown(ctx)
	assert.Equal(t, 503, testkit.Recv(t, got, "the client got no answer"))
	assert.Equal(t, ErrTypeShuttingDown, e.lastRecord().ErrorType)
}

// TestNoRetryAfterFirstByte: a stream that fails after its first byte
// reached the client is never retried.
func TestNoRetryAfterFirstByte(t *testing.T) {
	var calls atomic.Int32
	cut := hijackAfter("text/event-stream", "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n")
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		cut(w, r)
	}, Route{Prefix: "/v1", MaxAttempts: 3})
	rec := recordBackoff(e.relay, true, true)
	_, body := e.do(e.request("POST", "/v1/chat/completions", `{"stream":true}`))
	assert.True(t, strings.HasPrefix(string(body), "data: {"), "the first event reached the client")
	assert.Equal(t, int32(1), calls.Load())
	assert.Empty(t, rec.all())
}

// TestRetryBackoffCountsAgainstTotal: the route's Total timeout bounds the
// backoff too: a wait that outlasts it ends with the timeout's answer.
func TestRetryBackoffCountsAgainstTotal(t *testing.T) {
	var calls atomic.Int32
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.WriteHeader(503)
	}, Route{Prefix: "/v1", MaxAttempts: 2, Timeouts: Timeouts{Total: 500 * time.Millisecond}})
	rec := recordBackoff(e.relay, false, true) // the wait itself never ends
	resp, _ := e.do(e.request("POST", "/v1/chat/completions", `{}`))
	assert.Equal(t, 504, resp.StatusCode)
	assert.Len(t, rec.all(), 1)
	assert.Equal(t, int32(1), calls.Load())
	assert.Equal(t, ErrTypeUpstreamTimeout, e.lastRecord().ErrorType)
}
