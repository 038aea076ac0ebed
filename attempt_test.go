package relay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/relay/internal/testkit"
)

// TestAttemptTimeouts: each timeout cuts the wait it bounds, and only
// that one, with its own cause (as logged) and the answer classify gives
// it: before the response a 504, mid-stream an error event.
func TestAttemptTimeouts(t *testing.T) {
	const short = 50 * time.Millisecond
	stall := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body) // net/http notices a disconnect only after the body
		<-r.Context().Done()
	}
	hangingDial := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		<-ctx.Done() // the transport cancels the dial when the request gives up
		return nil, ctx.Err()
	}}
	t.Cleanup(hangingDial.CloseIdleConnections)
	tests := []struct {
		name      string
		upstream  http.HandlerFunc
		timeouts  Timeouts
		transport http.RoundTripper
		status    int
		body      string // the whole body the client gets
		errType   ErrorType
		cause     string // logged
	}{
		{
			name:      "connect",
			upstream:  func(http.ResponseWriter, *http.Request) { t.Error("upstream called") },
			timeouts:  Timeouts{Connect: short},
			transport: hangingDial,
			status:    504,
			body:      `{"error":{"message":"The upstream service did not answer in time.","type":"server_error","param":null,"code":"upstream_timeout"}}`,
			errType:   ErrTypeUpstreamTimeout,
			cause:     "upstream connect timeout",
		},
		{
			name:     "first byte, once connected",
			upstream: stall,
			timeouts: Timeouts{Connect: time.Hour, FirstByte: short},
			status:   504,
			body:     `{"error":{"message":"The upstream service did not answer in time.","type":"server_error","param":null,"code":"upstream_timeout"}}`,
			errType:  ErrTypeUpstreamTimeout,
			cause:    "upstream first byte timeout",
		},
		{
			name: "connect bounds only the connection",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				<-time.After(4 * short) // longer than Connect, once connected
				_, _ = io.WriteString(w, `{}`)
			},
			timeouts: Timeouts{Connect: short, FirstByte: time.Hour},
			status:   200,
			body:     `{}`,
		},
		{
			name:     "total, before the response",
			upstream: stall,
			timeouts: Timeouts{Total: short},
			status:   504,
			body:     `{"error":{"message":"The upstream service did not answer in time.","type":"server_error","param":null,"code":"upstream_timeout"}}`,
			errType:  ErrTypeUpstreamTimeout,
			cause:    "upstream total timeout",
		},
		{
			name: "total, mid-stream",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				for range 1000 { // never idle: an event every 5ms, until cut
					_, _ = io.WriteString(w, "data: 1\n\n")
					w.(http.Flusher).Flush()
					select {
					case <-r.Context().Done():
						return
					case <-time.After(5 * time.Millisecond):
					}
				}
			},
			timeouts: Timeouts{Total: 4 * short},
			status:   200,
			body: "event: error\ndata: " +
				`{"error":{"message":"The upstream stream stalled.","type":"server_error","param":null,"code":"upstream_timeout"}}` + "\n\n",
			errType: ErrTypeUpstreamTimeout,
			cause:   "upstream total timeout",
		},
		{
			name: "idle, mid-stream",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, contentChunk) // Idle bounds the reads after content
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			},
			timeouts: Timeouts{Idle: short},
			status:   200,
			body: contentChunk + "event: error\ndata: " +
				`{"error":{"message":"The upstream stream stalled.","type":"server_error","param":null,"code":"upstream_timeout"}}` + "\n\n",
			errType: ErrTypeUpstreamTimeout,
			cause:   "upstream idle timeout",
		},
		{
			// Before its first content an event stream's silence is
			// bounded by FirstToken, not Idle (one upstream: no failover).
			name: "first token, before content",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, roleChunk)
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			},
			timeouts: Timeouts{FirstToken: short, Idle: time.Hour},
			status:   200,
			body: roleChunk + "event: error\ndata: " +
				`{"error":{"message":"The upstream stream stalled.","type":"server_error","param":null,"code":"upstream_timeout"}}` + "\n\n",
			errType: ErrTypeUpstreamTimeout,
			cause:   "upstream first token timeout",
		},
		{
			name: "idle does not bound the wait for first content",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, roleChunk)
				w.(http.Flusher).Flush()
				<-time.After(4 * short) // longer than Idle, before content
				_, _ = io.WriteString(w, contentChunk)
			},
			timeouts: Timeouts{FirstToken: time.Hour, Idle: short},
			status:   200,
			body:     roleChunk + contentChunk,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuffer
			opts := []Option{WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))}
			if tt.transport != nil {
				opts = append(opts, WithTransport(tt.transport))
			}
			e := newEnv(t, tt.upstream, Route{Prefix: "/v1", Timeouts: tt.timeouts}, opts...)
			resp, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m"}`))
			assert.Equal(t, tt.status, resp.StatusCode)
			if strings.HasPrefix(tt.body, "event: error") {
				assert.True(t, strings.HasSuffix(string(body), tt.body), "the stream ends with the error event: %q", body)
			} else {
				assert.Equal(t, tt.body, string(body))
			}
			rec := e.lastRecord()
			assert.Equal(t, tt.errType, rec.ErrorType)
			if tt.cause != "" {
				assert.Contains(t, logs.String(), "error=\""+tt.cause+"\"")
			}
			for _, other := range []string{"upstream connect timeout", "upstream first byte timeout", "upstream idle timeout", "upstream total timeout"} {
				if other != tt.cause {
					assert.NotContains(t, logs.String(), other)
				}
			}
		})
	}
}

// gatedWriter is a client whose write of the event holding block waits
// until release is closed: a client that stops reading.
type gatedWriter struct {
	h       http.Header
	block   string
	blocked chan struct{}
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (g *gatedWriter) Header() http.Header { return g.h }
func (g *gatedWriter) WriteHeader(int)     {}
func (g *gatedWriter) Flush()              {}
func (g *gatedWriter) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte(g.block)) {
		close(g.blocked)
		<-g.release
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.Write(b)
}

// TestIdleNotWhileWritingToClient: the idle timeout bounds the upstream's
// silence only. A client that takes longer than Idle to accept an event
// holds the relay in its write, and the stream goes on when it reads.
func TestIdleNotWhileWritingToClient(t *testing.T) {
	const idle = 50 * time.Millisecond
	release := make(chan struct{})
	up := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range []string{"data: 1\n\n", "data: 2\n\n"} {
			_, _ = io.WriteString(w, ev)
			w.(http.Flusher).Flush()
		}
		// The last event comes once the client reads again: the relay's
		// Read waits for it only briefly.
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: 3\n\n")
	}
	// The events carry no content, so FirstToken bounds their reads: it
	// is as short as Idle here, so that either bound would cut the stream.
	e := newEnv(t, up, Route{Prefix: "/v1", Timeouts: Timeouts{Idle: idle, FirstToken: idle}})
	w := &gatedWriter{h: http.Header{}, block: "data: 2", blocked: make(chan struct{}), release: release}
	req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.relay.ServeHTTP(w, req)
	}()
	testkit.Recv(t, w.blocked, "the relay did not write the second event")
	<-time.After(4 * idle) // the client does not read for four idle timeouts
	close(release)
	testkit.Recv(t, done, "the relay's handler did not return")
	assert.Equal(t, "data: 1\n\ndata: 2\n\ndata: 3\n\n", w.buf.String())
	assert.Equal(t, ErrTypeNone, e.lastRecord().ErrorType)
}

// TestAttemptTimer: the attempt's one timer, checked step by step. A wait
// is bounded only while it lasts; a timer that fired leaves the attempt
// cancelled, and the headers that come after it are refused; the trace's
// hooks only move the header wait forward, and not at all once the
// headers are in.
func TestAttemptTimer(t *testing.T) {
	hooks := func(a *attempt) *httptrace.ClientTrace { return a.trace() }

	t.Run("headers before the timer", func(t *testing.T) {
		a := newAttempt(context.Background(), nil, Timeouts{Connect: time.Hour, FirstByte: time.Hour, Idle: time.Hour})
		defer a.end()
		require.True(t, a.armed, "the header wait is bounded")
		assert.Equal(t, errFirstByteTimeout, a.cause)
		require.True(t, a.headersIn())
		assert.False(t, a.armed, "nothing is bounded between the headers and the first Read")
		hooks(a).GotConn(httptrace.GotConnInfo{}) // a hook called late
		assert.False(t, a.armed, "a late hook re-armed the header timer")
		a.reading()
		assert.True(t, a.armed, "a Read is bounded by Idle")
		assert.Equal(t, errIdleTimeout, a.cause)
		a.read()
		assert.False(t, a.armed, "writing to the client is not bounded by Idle")
		a.end()
		assert.ErrorIs(t, context.Cause(a.ctx), context.Canceled)
	})

	t.Run("timer before the headers", func(t *testing.T) {
		a := newAttempt(context.Background(), nil, Timeouts{Connect: time.Nanosecond, FirstByte: time.Nanosecond})
		defer a.end()
		testkit.Recv(t, a.ctx.Done(), "the header timer did not fire")
		assert.False(t, a.headersIn(), "headers after the timer fired must be refused")
		assert.Equal(t, errFirstByteTimeout, context.Cause(a.ctx))
		assert.False(t, a.bound(time.Hour, errIdleTimeout), "a fired timer stays fired")
	})

	t.Run("the trace moves forward only", func(t *testing.T) {
		a := newAttempt(context.Background(), nil, Timeouts{Connect: time.Hour, FirstByte: 2 * time.Hour})
		defer a.end()
		tr := hooks(a)
		tr.GetConn("u.test:443")
		assert.Equal(t, errConnectTimeout, a.cause)
		tr.GotConn(httptrace.GotConnInfo{})
		assert.Equal(t, errFirstByteTimeout, a.cause)
		tr.GetConn("u.test:443") // a connection retried: FirstByte still runs
		assert.Equal(t, errFirstByteTimeout, a.cause)
		assert.True(t, a.headersIn())
	})

	t.Run("no limits, no timer", func(t *testing.T) {
		a := newAttempt(context.Background(), nil, Timeouts{})
		defer a.end()
		assert.True(t, a.headersIn())
		a.reading()
		a.read()
		assert.Nil(t, a.timer)
	})

	t.Run("the last attempt runs in its base context", func(t *testing.T) {
		base, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		a := newAttempt(base, cancel, Timeouts{})
		assert.Equal(t, base, a.ctx)
		a.end()
		assert.True(t, errors.Is(base.Err(), context.Canceled))
	})
}

// TestShutdownBeforeResponse: an attempt that Shutdown cuts while it waits
// for the upstream's headers is answered as the relay shutting down (503,
// shutting_down), not as an upstream that could not be reached.
func TestShutdownBeforeResponse(t *testing.T) {
	arrived := make(chan struct{}, 1)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		arrived <- struct{}{}
		<-r.Context().Done() // no headers until the attempt is cut
	}, Route{Prefix: "/v1"})
	type result struct {
		status int
		body   string
		err    error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := e.front.Client().Do(e.request("POST", "/v1/chat/completions", `{"model":"m"}`))
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{resp.StatusCode, string(b), err}
	}()
	testkit.Recv(t, arrived, "the request did not reach the upstream")
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // cut at once
	assert.ErrorIs(t, e.relay.Shutdown(ctx), context.Canceled)
	res := testkit.Recv(t, got, "the client got no answer")
	require.NoError(t, res.err)
	assert.Equal(t, http.StatusServiceUnavailable, res.status)
	assert.Equal(t, `{"error":{"message":"The gateway is shutting down; retry on another instance.","type":"server_error","param":null,"code":"service_unavailable"}}`, res.body)
	e.handled()
	rec := e.lastRecord()
	assert.Equal(t, http.StatusServiceUnavailable, rec.Status)
	assert.Equal(t, ErrTypeShuttingDown, rec.ErrorType)
}
