package relay

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hidingWriter is a host's ResponseWriter wrapper that hides the deadline
// methods: it has neither them nor Unwrap.
type hidingWriter struct{ w http.ResponseWriter }

func (h hidingWriter) Header() http.Header         { return h.w.Header() }
func (h hidingWriter) Write(b []byte) (int, error) { return h.w.Write(b) }
func (h hidingWriter) WriteHeader(code int)        { h.w.WriteHeader(code) }
func (h hidingWriter) Flush()                      { h.w.(http.Flusher).Flush() }

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newFront serves the relay, through hidingWriter when hide is set, on a
// front server watched like newWatch's and configured before it starts.
func newFront(t *testing.T, rl *Relay, hide bool, configure func(*http.Server)) *watch {
	t.Helper()
	wt := &watch{read: make(chan struct{}, 64), done: make(chan struct{}, 256)}
	wt.front = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { wt.done <- struct{}{} }()
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &notedBody{ReadCloser: r.Body, wt: wt}
		}
		if hide {
			w = hidingWriter{w}
		}
		rl.ServeHTTP(w, r)
	}))
	if configure != nil {
		configure(wt.front.Config)
	}
	wt.front.Start()
	t.Cleanup(func() {
		wt.front.CloseClientConnections()
		wt.front.Close()
	})
	return wt
}

// TestBodyBoundsWithoutDeadlines: behind a ResponseWriter wrapper that
// cannot set read deadlines, bodies are still read whole, a trickled body
// still times out, the fallback is logged once and counted per request.
func TestBodyBoundsWithoutDeadlines(t *testing.T) {
	var logs syncBuffer
	var got []byte
	var mu sync.Mutex
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = b
		mu.Unlock()
		_, _ = io.WriteString(w, `{}`)
	}, Route{Prefix: "/v1"}, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
		WithRequestBodyRate(0, 0), WithRequestBodyTimeout(300*time.Millisecond))
	wt := newFront(t, e.relay, true, nil)

	// A large body arrives whole, through many reads of the fallback.
	big := `{"input":"` + strings.Repeat("abcdefgh", 64<<10) + `"}`
	req, err := http.NewRequest("POST", wt.front.URL+"/v1/embeddings", strings.NewReader(big))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := wt.front.Client().Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	wt.handlerReturned(t)
	assert.Equal(t, 200, resp.StatusCode)
	mu.Lock()
	assert.Equal(t, big, string(got))
	mu.Unlock()

	// A trickled body gets 408 at the body deadline, enforced by a timer.
	conn, br := rawPost(t, wt.front, testKey, 1000, "{")
	stop := trickle(conn, 50*time.Millisecond, 1000)
	defer stop()
	tr, err := http.ReadResponse(br, nil) // rawPost bounds the read at 10s
	require.NoError(t, err)
	assert.Equal(t, http.StatusRequestTimeout, tr.StatusCode)
	assert.True(t, tr.Close)
	wt.handlerReturned(t)
	assert.Equal(t, ErrTypeBodyTimeout, e.lastRecord().ErrorType)

	assert.Equal(t, 2.0, testutil.ToFloat64(e.relay.metrics.errors.WithLabelValues("test", string(ErrTypeNoReadDeadline))))
	assert.Equal(t, 1, strings.Count(logs.String(), "cannot set read deadlines"), "warned once per relay")
}

// TestShutdownCutsBodyWithoutDeadlines: Shutdown's cut ends a body read
// behind a wrapper that cannot set deadlines, before the record queue is
// closed, so the request is recorded.
func TestShutdownCutsBodyWithoutDeadlines(t *testing.T) {
	// No body bounds at all: only Shutdown's cut can end the read.
	e := newEnv(t, okUpstream, Route{Prefix: "/v1"}, WithRequestBodyRate(0, 0), WithRequestBodyTimeout(0))
	wt := newFront(t, e.relay, true, nil)
	conn, br := rawPost(t, wt.front, testKey, 1000, "{")
	stop := trickle(conn, 50*time.Millisecond, 1000)
	defer stop()
	select {
	case <-wt.read:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not start reading the body")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	assert.ErrorIs(t, e.relay.Shutdown(ctx), context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 500*time.Millisecond+250*time.Millisecond, "by the deadline")
	recs := e.sink.all()
	require.Len(t, recs, 1, "recorded before the queue closed")
	assert.Equal(t, ErrTypeShuttingDown, recs[0].ErrorType)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

// TestHostReadTimeoutBoundsBody: a host server's ReadTimeout shorter than
// the relay's body bounds still applies: the relay never moves the read
// deadline past it, even while the body keeps up the minimum rate.
func TestHostReadTimeoutBoundsBody(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []Option
	}{
		{"overall timeout", []Option{WithRequestBodyRate(0, 0)}},                  // 60s by default
		{"rate kept up", []Option{WithRequestBodyRate(10, 100*time.Millisecond)}}, // the trickle's 20 B/s moves the relay's deadline on
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, okUpstream, Route{Prefix: "/v1"}, tt.opts...)
			const readTimeout = 400 * time.Millisecond
			wt := newFront(t, e.relay, false, func(s *http.Server) { s.ReadTimeout = readTimeout })
			conn, br := rawPost(t, wt.front, testKey, 1000, "{")
			stop := trickle(conn, 50*time.Millisecond, 1000)
			defer stop()
			start := time.Now()
			resp, err := http.ReadResponse(br, nil) // rawPost bounds the read at 10s
			require.NoError(t, err)
			assert.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
			assert.Less(t, time.Since(start), 10*readTimeout, "cut by the host's ReadTimeout, not the relay's 60s")
			wt.handlerReturned(t)
			assert.Equal(t, ErrTypeBodyTimeout, e.lastRecord().ErrorType)
		})
	}
}
