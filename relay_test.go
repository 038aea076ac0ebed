package relay

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The default transport's idle connections close asynchronously.
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
	)
}

const testKey = "sk-test-client-key-1"

// sink collects records.
type sink struct {
	mu   sync.Mutex
	recs []Record
}

func (s *sink) Record(_ context.Context, r Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, r)
	return nil
}

func (s *sink) all() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.recs...)
}

// env is a relay in front of an upstream, both on real loopback sockets.
type env struct {
	t        *testing.T
	upstream *httptest.Server
	relay    *Relay
	front    *httptest.Server
	sink     *sink
	reg      *prometheus.Registry
	served   chan struct{} // one value each time the relay's handler returns
}

// newEnv starts upstream and a relay in front of it. Every wait is bounded:
// requests from e.request and e.do carry a deadline, and at cleanup the
// upstream handlers' requests are cancelled before the servers close, so a
// regression that leaves an upstream request open (the relay no longer
// cancelling it, say) fails the test instead of hanging its cleanup.
func newEnv(t *testing.T, upstream http.HandlerFunc, route Route, opts ...Option) *env {
	t.Helper()
	e := &env{t: t, sink: &sink{}, reg: prometheus.NewRegistry(), served: make(chan struct{}, 4096)}
	stop, halt := context.WithCancel(context.Background())
	e.upstream = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		unhook := context.AfterFunc(stop, cancel)
		defer unhook()
		upstream(w, r.WithContext(ctx))
	}))
	t.Cleanup(e.upstream.Close)
	if route.Name == "" {
		route.Name = "test"
	}
	if route.Upstream == "" && len(route.Upstreams) == 0 {
		route.Upstream = e.upstream.URL
	}
	base := []Option{
		WithRoutes(route),
		WithAPIKeys(APIKey{Key: testKey, ID: "k1", Tenant: "acme"}),
		WithRecorder(e.sink),
		WithRegisterer(e.reg),
	}
	rl, err := New(append(base, opts...)...)
	require.NoError(t, err)
	e.relay = rl
	e.front = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			select {
			case e.served <- struct{}{}:
			default:
			}
		}()
		rl.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		halt()
		e.front.CloseClientConnections()
		e.front.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rl.Shutdown(ctx)
	})
	return e
}

// request builds a request to the relay, bounded by testkit.Timeout.
func (e *env) request(method, path, body string) *http.Request {
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	e.t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, method, e.front.URL+path, strings.NewReader(body))
	require.NoError(e.t, err)
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Type", "application/json")
	return req
}

// do sends req, reads the whole response, and waits until the relay's
// handler has returned, so that the request's record is queued: a client
// can read a Content-Length body to the end before the handler is done.
// The exchange is bounded by testkit.Timeout.
func (e *env) do(req *http.Request) (*http.Response, []byte) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(req.Context(), testkit.Timeout)
	defer cancel()
	resp, err := e.front.Client().Do(req.WithContext(ctx))
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err, "reading the response")
	e.handled()
	return resp, b
}

// handled waits until the relay's handler has returned for one more
// request: its record is queued then.
func (e *env) handled() {
	e.t.Helper()
	testkit.Recv(e.t, e.served, "the relay's handler did not return")
}

// records flushes the queue and returns what was recorded.
func (e *env) records() []Record {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(e.t, e.relay.Recorder().Flush(ctx))
	return e.sink.all()
}

func (e *env) lastRecord() Record {
	e.t.Helper()
	recs := e.records()
	require.NotEmpty(e.t, recs)
	return recs[len(recs)-1]
}

// sseUpstream writes the given raw chunks, flushing after each.
func sseUpstream(chunks ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, c := range chunks {
			_, _ = io.WriteString(w, c)
			w.(http.Flusher).Flush()
		}
	}
}

func TestSSEPassesThroughByteForByte(t *testing.T) {
	long := strings.Repeat("x", 1<<20)
	tests := []struct {
		name   string
		chunks []string
		events int64
	}{
		{"lf", []string{"data: {\"a\":1}\n\n", "data: {\"a\":2}\n\n", "data: [DONE]\n\n"}, 3},
		{"crlf", []string{"data: one\r\n\r\n", "data: two\r\n\r\n"}, 2},
		{"cr only", []string{"data: one\r\r", "data: two\r\r"}, 2},
		{"crlf split across reads", []string{"data: one\r", "\n\r", "\ndata: two\r\n\r\n"}, 2},
		{"1 MiB line", []string{"data: " + long + "\n\n", "data: [DONE]\n\n"}, 2},
		{"comments and names", []string{": keep-alive\n\n", "event: ping\ndata: {}\n\n", "id: 7\nretry: 10\ndata: x\n\n"}, 2},
		{"malformed", []string{"this is not sse\n", "data without blank line", "\n\n::\n\ndata"}, 0},
		{"no trailing blank line", []string{"data: a\n\ndata: b\n"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, sseUpstream(tt.chunks...), Route{Prefix: "/v1", Kind: KindSSE})
			resp, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, strings.Join(tt.chunks, ""), string(body))
			assert.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
			assert.Equal(t, "no", resp.Header.Get("X-Accel-Buffering"))
			rec := e.lastRecord()
			assert.Equal(t, tt.events, rec.Events)
			assert.Equal(t, KindSSE, rec.Kind)
			assert.Equal(t, int64(len(body)), rec.BytesOut)
			assert.Equal(t, ErrTypeNone, rec.ErrorType)
		})
	}
}

// lockstep is an upstream that sends each chunk, flushes, and waits for the
// client's acknowledgement before the next, so that any buffering between
// them deadlocks (and fails at the test's deadline) instead of passing.
func lockstep(contentType string, acks <-chan struct{}, chunks ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", contentType)
		for _, c := range chunks {
			_, _ = io.WriteString(w, c)
			w.(http.Flusher).Flush()
			select {
			case <-acks:
			case <-r.Context().Done():
				return
			}
		}
	}
}

// TestSSEEventsAreNotBuffered proves each event reaches the client before
// the upstream sends the next: the upstream waits for the client's
// acknowledgement, so any buffering would deadlock until the deadline.
func TestSSEEventsAreNotBuffered(t *testing.T) {
	acks := make(chan struct{})
	var events []string
	for i := range 5 {
		events = append(events, fmt.Sprintf("data: {\"i\":%d}\n\n", i))
	}
	e := newEnv(t, lockstep("text/event-stream", acks, events...), Route{Prefix: "/v1"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := e.request("POST", "/v1/chat/completions", `{}`).WithContext(ctx)
	resp, err := e.front.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for i := range 5 {
		line, err := br.ReadString('\n')
		require.NoError(t, err, "event %d", i)
		assert.Equal(t, fmt.Sprintf("data: {\"i\":%d}\n", i), line)
		_, _ = br.ReadString('\n')
		testkit.Send(t, acks, struct{}{}, "the upstream did not wait for the next acknowledgement")
	}
}

func TestUpstreamFailures(t *testing.T) {
	refused := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		l.Close()
		return "http://" + addr
	}
	tests := []struct {
		name     string
		upstream http.HandlerFunc
		route    Route
		status   int
		class    string // relay_requests_total's status label, literally
		errType  ErrorType
		body     string // substring of the client's body
	}{
		{
			name:    "connection refused",
			route:   Route{Prefix: "/v1", Upstream: refused()},
			status:  502,
			class:   "5xx",
			errType: ErrTypeUpstreamConnect,
			body:    `{"error":{"message":"The upstream service could not be reached.","type":"server_error","param":null,"code":"upstream_error"}}`,
		},
		{
			name:    "connection refused, anthropic shape",
			route:   Route{Prefix: "/v1", Upstream: refused(), Provider: ProviderAnthropic},
			status:  502,
			class:   "5xx",
			errType: ErrTypeUpstreamConnect,
			body:    `{"type":"error","error":{"type":"api_error","message":"The upstream service could not be reached."}}`,
		},
		{
			name: "500 before the stream passes through",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(500)
				_, _ = io.WriteString(w, `{"error":{"message":"boom"}}`)
			},
			route:   Route{Prefix: "/v1", Kind: KindSSE},
			status:  500,
			class:   "5xx",
			errType: ErrTypeUpstreamStatus,
			body:    `{"error":{"message":"boom"}}`,
		},
		{
			name: "stall before first byte",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body) // net/http notices a disconnect only after the body
				<-r.Context().Done()
			},
			route:   Route{Prefix: "/v1", Timeouts: Timeouts{FirstByte: 50 * time.Millisecond}},
			status:  504,
			class:   "5xx",
			errType: ErrTypeUpstreamTimeout,
			body:    `"message":"The upstream service did not answer in time."`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := tt.upstream
			if up == nil {
				up = func(http.ResponseWriter, *http.Request) { t.Error("upstream called") }
			}
			e := newEnv(t, up, tt.route)
			resp, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m"}`))
			assert.Equal(t, tt.status, resp.StatusCode)
			assert.Contains(t, string(body), tt.body)
			assert.NotContains(t, string(body), "127.0.0.1", "no internal detail")
			rec := e.lastRecord()
			assert.Equal(t, tt.status, rec.Status)
			assert.Equal(t, tt.errType, rec.ErrorType)
			if tt.status == 500 {
				assert.Equal(t, "7", resp.Header.Get("Retry-After"))
			}
			assert.Equal(t, 1.0, testutil.ToFloat64(e.relay.metrics.requests.WithLabelValues("test", tt.class)))
		})
	}
}

// hijackAfter sends head, then closes the connection without ending the
// response: an upstream reset mid-stream.
func hijackAfter(contentType, head string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(200)
		_, _ = io.WriteString(w, head)
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}
}

func TestMidStreamFailureIsVisible(t *testing.T) {
	tests := []struct {
		name     string
		upstream http.HandlerFunc
		route    Route
		want     string
		errType  ErrorType
	}{
		{
			name:     "reset after a whole event",
			upstream: hijackAfter("text/event-stream", "data: {\"a\":1}\n\n"),
			route:    Route{Prefix: "/v1"},
			want: "data: {\"a\":1}\n\n" + "event: error\ndata: " +
				`{"error":{"message":"The upstream stream was interrupted.","type":"server_error","param":null,"code":"upstream_error"}}` + "\n\n",
			errType: ErrTypeStreamInterrupted,
		},
		{
			name:     "reset mid-line, anthropic",
			upstream: hijackAfter("text/event-stream", "event: content_block_delta\ndata: {\"a\""),
			route:    Route{Prefix: "/v1", Provider: ProviderAnthropic},
			want: "event: content_block_delta\ndata: {\"a\"" + "\n\n" + "event: error\ndata: " +
				`{"type":"error","error":{"type":"api_error","message":"The upstream stream was interrupted."}}` + "\n\n",
			errType: ErrTypeStreamInterrupted,
		},
		{
			name:     "reset between CR and LF",
			upstream: hijackAfter("text/event-stream", "data: {\"a\":1}\r"),
			route:    Route{Prefix: "/v1"},
			want: "data: {\"a\":1}\r" + "\n\n" + "event: error\ndata: " +
				`{"error":{"message":"The upstream stream was interrupted.","type":"server_error","param":null,"code":"upstream_error"}}` + "\n\n",
			errType: ErrTypeStreamInterrupted,
		},
		{
			name: "stall mid-stream",
			upstream: func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, contentChunk) // Idle bounds the reads after content
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			},
			route: Route{Prefix: "/v1", Timeouts: Timeouts{Idle: 50 * time.Millisecond}},
			want: contentChunk + "event: error\ndata: " +
				`{"error":{"message":"The upstream stream stalled.","type":"server_error","param":null,"code":"upstream_timeout"}}` + "\n\n",
			errType: ErrTypeUpstreamTimeout,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.upstream, tt.route)
			resp, body := e.do(e.request("POST", "/v1/messages", `{}`))
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, tt.want, string(body))
			rec := e.lastRecord()
			assert.Equal(t, tt.errType, rec.ErrorType)
			assert.Equal(t, 1.0, testutil.ToFloat64(e.relay.metrics.errors.WithLabelValues("test", string(tt.errType))))
		})
	}
}

func TestBinaryMidStreamFailureAborts(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "audio/mpeg")
		w.Header().Set("Content-Length", "1000")
		_, _ = w.Write(make([]byte, 100))
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}, Route{Prefix: "/v1", Kind: KindAudio})
	resp, err := e.front.Client().Do(e.request("POST", "/v1/audio/speech", `{}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, "1000", resp.Header.Get("Content-Length"), "Content-Length kept")
	_, err = io.ReadAll(resp.Body)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "the client must see a truncated body")
	e.handled()
	rec := e.lastRecord()
	assert.Equal(t, ErrTypeStreamInterrupted, rec.ErrorType)
	assert.Equal(t, KindAudio, rec.Kind)
}

func TestGzipBodyPassesThrough(t *testing.T) {
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	_, _ = io.WriteString(zw, "data: compressed\n\n")
	require.NoError(t, zw.Close())
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, "gzip", r.Header.Get("Accept-Encoding"))
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Content-Encoding", "gzip")
		_, _ = w.Write(zipped.Bytes())
	}, Route{Prefix: "/v1"})
	req := e.request("POST", "/v1/x", `{}`)
	req.Header.Set("Accept-Encoding", "gzip")
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, zipped.Bytes(), raw, "compressed bytes unchanged")
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	require.NoError(t, err)
	plain, err := io.ReadAll(zr)
	require.NoError(t, err)
	assert.Equal(t, "data: compressed\n\n", string(plain))
}

func TestJSONOnSSERouteKeepsContentLength(t *testing.T) {
	const body = `{"id":"x","choices":[]}`
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		_, _ = io.WriteString(w, body)
	}, Route{Prefix: "/v1", Kind: KindSSE})
	resp, got := e.do(e.request("POST", "/v1/chat/completions", `{}`))
	assert.Equal(t, body, string(got))
	assert.Equal(t, int64(len(body)), resp.ContentLength)
	assert.Equal(t, KindJSON, e.lastRecord().Kind)
}

func TestClientDisconnectCancelsUpstream(t *testing.T) {
	canceled := make(chan struct{})
	sent := make(chan struct{})
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		close(sent)
		<-r.Context().Done()
		close(canceled)
	}, Route{Prefix: "/v1"})
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	defer cancel()
	resp, err := e.front.Client().Do(e.request("POST", "/v1/chat/completions", `{}`).WithContext(ctx))
	require.NoError(t, err)
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	require.NoError(t, err, "the first event did not reach the client")
	assert.Equal(t, "data: first\n", line)
	testkit.Recv(t, sent, "the upstream did not send its first event")
	cancel()
	resp.Body.Close()
	testkit.RecvWithin(t, canceled, 5*time.Second, "the upstream request was not cancelled when the client went away")
	e.handled() // the record is queued when the handler returns
	rec := e.lastRecord()
	assert.Equal(t, StatusClientClosedRequest, rec.Status)
	assert.Equal(t, ErrTypeClientCanceled, rec.ErrorType)
	assert.True(t, rec.ClientGone)
	assert.Equal(t, int64(1), rec.Events, "events sent before the disconnect are counted")
	assert.Equal(t, 1.0, testutil.ToFloat64(e.relay.metrics.requests.WithLabelValues("test", "4xx")), "499 counts as 4xx")
}

// TestSlowClientMemoryBounded streams 64 MiB to a client that reads
// slowly; the relay must hold back the upstream (TCP backpressure), not
// buffer the difference.
func TestSlowClientMemoryBounded(t *testing.T) {
	const total = 64 << 20
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		chunk := []byte("data: " + strings.Repeat("y", 64<<10-8) + "\n\n")
		for sent := 0; sent < total; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}, Route{Prefix: "/v1"})
	resp, err := e.front.Client().Do(e.request("POST", "/v1/x", `{}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	buf := make([]byte, 4<<10)
	var read, peak uint64
	for i := 0; ; i++ {
		n, err := resp.Body.Read(buf)
		read += uint64(n)
		if i%2048 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
		if err != nil {
			break
		}
	}
	assert.GreaterOrEqual(t, read, uint64(total))
	assert.Less(t, peak-min(peak, base), uint64(32<<20), "heap grew with the stream: buffering")
}

func TestRequestBodyLimits(t *testing.T) {
	var got []byte
	var gotLen int64
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		gotLen = r.ContentLength
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	}, Route{Prefix: "/v1"}, WithMaxBodyBytes(1000))

	resp, body := e.do(e.request("POST", "/v1/x", strings.Repeat("a", 1001)))
	assert.Equal(t, 413, resp.StatusCode)
	assert.Contains(t, string(body), `"code":"request_too_large"`)
	assert.Equal(t, ErrTypeBodyTooLarge, e.lastRecord().ErrorType)

	// Chunked (no Content-Length) and too large.
	req := e.request("POST", "/v1/x", "")
	req.Body = io.NopCloser(strings.NewReader(strings.Repeat("b", 5000)))
	req.ContentLength = -1
	resp, _ = e.do(req)
	assert.Equal(t, 413, resp.StatusCode)

	// Chunked and small: forwarded with a Content-Length.
	req = e.request("POST", "/v1/x", "")
	req.Body = io.NopCloser(strings.NewReader(strings.Repeat("c", 999)))
	req.ContentLength = -1
	resp, _ = e.do(req)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, int64(999), gotLen)
	assert.Len(t, got, 999)
	assert.Equal(t, int64(999), e.lastRecord().BytesIn)
}

func TestAuthentication(t *testing.T) {
	var upstreamAuth []string
	var calls int
	var mu sync.Mutex
	up := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		upstreamAuth = append(upstreamAuth, r.Header.Get("Authorization")+"|"+r.Header.Get("X-Api-Key")+"|"+r.Header.Get("Api-Key")+"|"+r.Header.Get("Cookie"))
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	}
	tests := []struct {
		name    string
		headers map[string]string
		status  int
		tenant  string
	}{
		{"missing key", nil, 401, ""},
		{"wrong key", map[string]string{"Authorization": "Bearer sk-wrong"}, 401, ""},
		{"bearer", map[string]string{"Authorization": "Bearer " + testKey}, 200, "acme"},
		{"x-api-key", map[string]string{"X-Api-Key": testKey}, 200, "acme"},
		{"api-key", map[string]string{"Api-Key": testKey}, 200, "acme"},
		{"spoofed tenant header", map[string]string{"X-Api-Key": testKey, "X-Tenant": "evil", "X-Tenant-Id": "evil"}, 200, "acme"},
	}
	e := newEnv(t, up, Route{Prefix: "/v1", AuthHeader: "Authorization", AuthValue: "sk-upstream-secret"})
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", e.front.URL+"/v1/chat/completions", strings.NewReader(`{}`))
			req.Header.Set("Cookie", "session=client")
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			resp, body := e.do(req)
			assert.Equal(t, tt.status, resp.StatusCode)
			// Mutation it kills: no record for a rejected (401) request.
			require.Len(t, e.records(), i+1, "every request is recorded, rejected ones too")
			rec := e.lastRecord()
			assert.Equal(t, tt.tenant, rec.Tenant)
			if tt.status == 401 {
				assert.Contains(t, string(body), `"code":"invalid_api_key"`)
				assert.Equal(t, ErrTypeAuth, rec.ErrorType)
			}
			assert.NotContains(t, string(body), "sk-")
			assert.NotContains(t, fmt.Sprint(rec), "sk-")
		})
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, 4, calls, "rejected requests never reach the upstream")
	for _, h := range upstreamAuth {
		assert.Equal(t, "Bearer sk-upstream-secret|||", h, "client credentials stripped, upstream credential injected")
	}
}

// TestClientCredentialsNeverReachUpstream: every header that may carry a
// client's credential for the relay (OpenAI's, Anthropic's, Azure's,
// Azure Speech's and Gemini's, and cookies) is dropped before the request
// goes upstream, whichever one the client authenticated with: a route
// without a credential of its own sends none, and one with a credential
// sends only its own.
// Mutations it kills: isClientCredential forgetting any of these headers
// (Ocp-Apim-Subscription-Key and X-Goog-Api-Key survived before).
func TestClientCredentialsNeverReachUpstream(t *testing.T) {
	credentials := []string{"Authorization", "X-Api-Key", "Api-Key", "Ocp-Apim-Subscription-Key", "X-Goog-Api-Key", "Cookie"}
	routes := map[string]Route{
		"no upstream credential":    {Prefix: "/v1"},
		"Ocp-Apim-Subscription-Key": {Prefix: "/v1", AuthHeader: "Ocp-Apim-Subscription-Key", AuthValue: "upstream-secret"},
	}
	for name, route := range routes {
		for _, auth := range []string{"Authorization", "X-Api-Key", "Api-Key"} {
			t.Run(name+", client authenticated by "+auth, func(t *testing.T) {
				var got http.Header
				e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
					got = r.Header.Clone()
					w.Header().Set("Content-Type", "application/json")
					_, _ = io.WriteString(w, `{}`)
				}, route)
				req := e.request("POST", "/v1/x", `{}`)
				req.Header.Del("Authorization")
				for _, h := range []string{"Ocp-Apim-Subscription-Key", "X-Goog-Api-Key", "Cookie"} {
					req.Header.Set(h, "sk-client-"+h)
				}
				v := testKey // starts with sk- too
				if auth == "Authorization" {
					v = "Bearer " + testKey
				}
				req.Header.Set(auth, v)
				resp, _ := e.do(req)
				require.Equal(t, 200, resp.StatusCode)
				for _, h := range credentials {
					if h == route.AuthHeader {
						assert.Equal(t, []string{route.AuthValue}, got.Values(h), "only the route's credential")
						continue
					}
					assert.Empty(t, got.Values(h), "%s reached the upstream", h)
				}
			})
		}
	}
}

func TestHeaders(t *testing.T) {
	var got http.Header
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Connection", "X-Hop")
		w.Header().Set("X-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Request-Id", "req_upstream")
		w.Header().Set("X-Ratelimit-Remaining-Requests", "99")
		_, _ = io.WriteString(w, `{}`)
	}, Route{Prefix: "/v1", Headers: map[string]string{"Anthropic-Version": "2023-06-01"}})
	req := e.request("POST", "/v1/x", `{}`)
	req.Header.Set("Connection", "X-Client-Hop")
	req.Header.Set("X-Client-Hop", "1")
	req.Header.Set("Te", "trailers")
	req.Header.Set("X-Forwarded-For", "10.1.1.1")
	req.Header.Set("X-Request-Id", "client-id-123")
	req.Header.Set("X-Custom", "kept")
	req.Header.Set("Expect", "100-continue")
	resp, _ := e.do(req)
	assert.Empty(t, got.Get("Expect"), "the body is already read: no 100-continue upstream")

	assert.Empty(t, got.Get("X-Client-Hop"), "headers named in Connection are hop-by-hop")
	assert.Empty(t, got.Get("Te"))
	assert.Equal(t, "kept", got.Get("X-Custom"))
	assert.Equal(t, "10.1.1.1, 127.0.0.1", got.Get("X-Forwarded-For"))
	assert.Equal(t, "http", got.Get("X-Forwarded-Proto"))
	assert.Equal(t, "client-id-123", got.Get("X-Request-Id"))
	assert.Equal(t, "2023-06-01", got.Get("Anthropic-Version"))

	assert.Empty(t, resp.Header.Get("X-Hop"))
	assert.Empty(t, resp.Header.Get("Keep-Alive"))
	// The response and the record carry the relay's own id; the client's
	// went upstream and is kept beside it (Record.ClientRequestID).
	assert.Len(t, resp.Header.Get("X-Request-Id"), 32)
	assert.Equal(t, "req_upstream", resp.Header.Get("X-Upstream-Request-Id"))
	assert.Equal(t, "99", resp.Header.Get("X-Ratelimit-Remaining-Requests"), "upstream rate-limit headers kept")
	assert.Equal(t, resp.Header.Get("X-Request-Id"), e.lastRecord().RequestID)
	assert.Equal(t, "client-id-123", e.lastRecord().ClientRequestID)

	// A malformed request id is replaced.
	req = e.request("POST", "/v1/x", `{}`)
	req.Header.Set("X-Request-Id", "bad id\twith spaces")
	resp, _ = e.do(req)
	id := resp.Header.Get("X-Request-Id")
	assert.Len(t, id, 32)
	assert.Equal(t, id, got.Get("X-Request-Id"))
	assert.Empty(t, e.lastRecord().ClientRequestID)
}

func TestNoRouteAndRouting(t *testing.T) {
	var paths []string
	var mu sync.Mutex
	up := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.RequestURI())
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	}
	e := newEnv(t, up, Route{Name: "v1", Prefix: "/v1"})
	// newEnv points only its route at the upstream: one env per route.
	e2 := newEnv(t, up, Route{Name: "rewrite", Prefix: "/llm/openai/", RewritePrefix: "/v1"})
	e3 := newEnv(t, up, Route{Name: "strip", Prefix: "/azure", StripPrefix: true})
	tests := []struct {
		env    *env
		path   string
		status int
		fwd    string
	}{
		{e, "/v1/chat/completions?api-version=2024", 200, "/v1/chat/completions?api-version=2024"},
		{e, "/v1", 200, "/v1"},
		{e, "/v1x/chat", 404, ""},
		{e, "/v1/../admin", 404, ""},
		{e2, "/llm/openai/chat/completions", 200, "/v1/chat/completions"},
		{e3, "/azure/openai/deployments/d/chat/completions?api-version=2024", 200, "/openai/deployments/d/chat/completions?api-version=2024"},
		{e3, "/azurex/chat", 404, ""},
	}
	for _, tt := range tests {
		resp, body := tt.env.do(tt.env.request("POST", tt.path, `{}`))
		assert.Equal(t, tt.status, resp.StatusCode, tt.path)
		if tt.status == 404 {
			assert.Contains(t, string(body), `"code":"not_found"`)
			assert.Equal(t, ErrTypeNoRoute, tt.env.lastRecord().ErrorType)
			continue
		}
		mu.Lock()
		assert.Equal(t, tt.fwd, paths[len(paths)-1], tt.path)
		mu.Unlock()
	}
}

func TestRateLimit(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := ClockFunc(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	}, Route{Prefix: "/v1"}, WithRateLimit(Limits{RequestsPerMinute: 60, Burst: 2}), WithClock(clock))
	for i := range 2 {
		resp, _ := e.do(e.request("POST", "/v1/x", `{}`))
		assert.Equal(t, 200, resp.StatusCode, "request %d", i)
	}
	resp, body := e.do(e.request("POST", "/v1/x", `{}`))
	assert.Equal(t, 429, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	assert.Equal(t, "60", resp.Header.Get("X-Ratelimit-Limit-Requests"))
	assert.Equal(t, "0", resp.Header.Get("X-Ratelimit-Remaining-Requests"))
	assert.Contains(t, string(body), `"code":"rate_limit_exceeded"`)
	assert.Equal(t, ErrTypeRateLimited, e.lastRecord().ErrorType)
	assert.Equal(t, 1.0, testutil.ToFloat64(e.relay.metrics.limited.WithLabelValues("test", "requests")))

	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	resp, _ = e.do(e.request("POST", "/v1/x", `{}`))
	assert.Equal(t, 200, resp.StatusCode, "a token refills after a second")
}

func TestLimiterErrors(t *testing.T) {
	broken := LimiterFunc(func(context.Context, LimitRequest) (Decision, error) {
		return Decision{}, errors.New("store down")
	})
	for _, open := range []bool{true, false} {
		t.Run(fmt.Sprint("fail open ", open), func(t *testing.T) {
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, `{}`)
			}, Route{Prefix: "/v1"}, WithLimiter(broken), WithLimiterFailOpen(open))
			resp, _ := e.do(e.request("POST", "/v1/x", `{}`))
			want := 200
			if !open {
				want = 503
			}
			assert.Equal(t, want, resp.StatusCode)
			assert.Equal(t, 1.0, testutil.ToFloat64(e.relay.metrics.errors.WithLabelValues("test", "limiter")))
		})
	}
}

// blockingRecorder blocks every write until its context ends.
type blockingRecorder struct{ entered chan struct{} }

func (b *blockingRecorder) Record(ctx context.Context, _ Record) error {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-ctx.Done()
	return ctx.Err()
}

func TestBlockedRecorderDoesNotSlowStreams(t *testing.T) {
	br := &blockingRecorder{entered: make(chan struct{}, 1)}
	e := newEnv(t, sseUpstream("data: a\n\n", "data: b\n\n"), Route{Prefix: "/v1"},
		WithRecorder(br), WithRecordQueue(AsyncOptions{QueueSize: 2, BatchSize: 1, WriteTimeout: time.Hour}))
	for range 10 {
		resp, body := e.do(e.request("POST", "/v1/x", `{}`))
		assert.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, "data: a\n\ndata: b\n\n", string(body))
	}
	testkit.Recv(t, br.entered, "the recorder was never called")
	// The worker holds one record, the queue two: the rest were dropped.
	assert.GreaterOrEqual(t, e.relay.Recorder().Dropped(), uint64(7))
	mfs, err := e.reg.Gather()
	require.NoError(t, err)
	found := false
	for _, mf := range mfs {
		if mf.GetName() == "relay_records_dropped_total" {
			found = true
			assert.GreaterOrEqual(t, mf.GetMetric()[0].GetCounter().GetValue(), 7.0)
		}
	}
	assert.True(t, found, "drops are exported")
}

func TestShutdownDuringLiveStreams(t *testing.T) {
	const n = 50
	release := make(chan struct{})
	started := make(chan struct{}, n)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: start\n\n")
		w.(http.Flusher).Flush()
		started <- struct{}{}
		select {
		case <-release:
			_, _ = io.WriteString(w, "data: end\n\n")
		case <-r.Context().Done():
		}
	}, Route{Prefix: "/v1"})
	bodies := make(chan string, n)
	reading := make(chan struct{}, n) // a client got the first event
	for i := range n {
		go func() {
			resp, err := e.front.Client().Do(e.request("POST", "/v1/x", `{}`))
			if err != nil {
				reading <- struct{}{}
				bodies <- "error: " + err.Error()
				return
			}
			defer resp.Body.Close()
			first := make([]byte, len("data: start\n\n"))
			k, _ := io.ReadFull(resp.Body, first)
			reading <- struct{}{}
			rest, _ := io.ReadAll(resp.Body)
			bodies <- string(first[:k]) + string(rest)
			_ = i
		}()
	}
	// Every stream is under way at the client, not only at the upstream:
	// a relay still waiting for a response's headers would be cut before
	// the response, which is another test's case.
	for i := range n {
		testkit.Recv(t, started, fmt.Sprintf("stream %d did not start", i))
		testkit.Recv(t, reading, fmt.Sprintf("stream %d did not reach its client", i))
	}
	// Half finish within the deadline, the rest are cut by it.
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- e.relay.Shutdown(ctx) }()
	// New requests are refused while draining.
	require.Eventually(t, func() bool { return e.relay.Ready(context.Background()) != nil }, 5*time.Second, time.Millisecond)
	resp, body := e.do(e.request("POST", "/v1/x", `{}`))
	assert.Equal(t, 503, resp.StatusCode)
	assert.Contains(t, string(body), "shutting down")
	for range n / 2 {
		testkit.Send(t, release, struct{}{}, "a live stream was not waiting to be released")
	}
	var clean, cut int
	for range n / 2 {
		assert.Equal(t, "data: start\n\ndata: end\n\n", testkit.Recv(t, bodies, "a released stream did not end"))
		clean++
	}
	cancel()
	require.ErrorIs(t, testkit.Recv(t, done, "Shutdown did not return once its context ended"), context.Canceled)
	for range n / 2 {
		b := testkit.Recv(t, bodies, "a stream was not cut by Shutdown")
		switch b {
		case "data: start\n\ndata: end\n\n":
			clean++
		default:
			assert.True(t, strings.HasPrefix(b, "data: start\n\nevent: error\n"), b)
			cut++
		}
	}
	assert.Equal(t, n/2, clean)
	assert.Equal(t, n/2, cut)
	// Every request was recorded: 50 streams and the refused one.
	assert.Len(t, e.sink.all(), n+1)
}

func TestWriteTimeoutDoesNotCutStream(t *testing.T) {
	const wt = 100 * time.Millisecond
	up := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		// Outlive the host server's WriteTimeout before the next event.
		<-time.After(3 * wt)
		_, _ = io.WriteString(w, "data: 2\n\n")
	}
	e := newEnv(t, up, Route{Prefix: "/v1"})
	srv := httptest.NewUnstartedServer(e.relay)
	srv.Config.WriteTimeout = wt
	srv.Config.ReadTimeout = wt
	srv.Start()
	defer srv.Close()
	req := e.request("POST", "/v1/x", `{}`)
	req.URL.Host = strings.TrimPrefix(srv.URL, "http://")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "data: 1\n\ndata: 2\n\n", string(b))
}

// unwrapWriter is a middleware's writer that hides Flush but implements
// Unwrap, as chi's, echo's and gin's do.
type unwrapWriter struct{ w http.ResponseWriter }

func (u unwrapWriter) Header() http.Header         { return u.w.Header() }
func (u unwrapWriter) Write(b []byte) (int, error) { return u.w.Write(b) }
func (u unwrapWriter) WriteHeader(c int)           { u.w.WriteHeader(c) }
func (u unwrapWriter) Unwrap() http.ResponseWriter { return u.w }

func TestFlushesThroughUnwrap(t *testing.T) {
	acks := make(chan struct{})
	e := newEnv(t, lockstep("text/event-stream", acks, "data: x\n\n", "data: x\n\n", "data: x\n\n"), Route{Prefix: "/v1"})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.relay.ServeHTTP(unwrapWriter{w}, r)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := e.request("POST", "/v1/x", `{}`).WithContext(ctx)
	req.URL.Host = strings.TrimPrefix(srv.URL, "http://")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for range 3 {
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "data: x\n", line)
		_, _ = br.ReadString('\n')
		testkit.Send(t, acks, struct{}{}, "the upstream did not wait for the next acknowledgement")
	}
}

func TestHealthAndMetricsHandlers(t *testing.T) {
	rl, err := New(WithRoutes(Route{Name: "r", Prefix: "/", Upstream: "http://127.0.0.1:1"}), WithAuthenticator(AllowAll("t")))
	require.NoError(t, err)
	tests := []struct {
		h      http.Handler
		status int
		body   string
	}{
		{rl.HealthzHandler(), 200, "ok"},
		{rl.ReadyzHandler(), 200, "ready"},
		{rl.MetricsHandler(), 200, "relay_active_connections"},
	}
	rl.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil))
	for _, tt := range tests {
		w := httptest.NewRecorder()
		tt.h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
		assert.Equal(t, tt.status, w.Code)
		assert.Contains(t, w.Body.String(), tt.body)
	}
	require.NoError(t, rl.Shutdown(testkit.Context(t)))
	w := httptest.NewRecorder()
	rl.ReadyzHandler().ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	assert.Equal(t, 503, w.Code)
	assert.Equal(t, "not ready: draining\n", w.Body.String())

	// A failing limiter is named, its error (an internal address) is not.
	sick := struct {
		Limiter
		HealthChecker
	}{noLimit{}, healthFunc(func(context.Context) error { return errors.New("dial tcp 10.0.0.7:6379: refused") })}
	rl2, err := New(WithRoutes(Route{Name: "r", Prefix: "/", Upstream: "http://127.0.0.1:1"}),
		WithAuthenticator(AllowAll("t")), WithLimiter(sick))
	require.NoError(t, err)
	defer rl2.Shutdown(testkit.Context(t))
	w = httptest.NewRecorder()
	rl2.ReadyzHandler().ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	assert.Equal(t, 503, w.Code)
	assert.Equal(t, "not ready: limiter\n", w.Body.String())
	var nr *NotReadyError
	assert.ErrorAs(t, rl2.Ready(context.Background()), &nr)
}

type healthFunc func(context.Context) error

func (f healthFunc) Healthy(ctx context.Context) error { return f(ctx) }

func TestNewValidates(t *testing.T) {
	t.Setenv("RELAY_TEST_EMPTY", "")
	tests := []struct {
		name string
		opts []Option
		want string
	}{
		{"no auth", []Option{WithRoutes(Route{Name: "a", Prefix: "/", Upstream: "http://x"})}, "no authenticator"},
		{"no routes", []Option{WithAPIKeys(APIKey{Key: "k"})}, "no routes"},
		{"empty env", []Option{WithAPIKeys(APIKey{Key: "k"}), WithRoutes(Route{Name: "a", Prefix: "/", Upstream: "http://x", AuthHeader: "Authorization", AuthEnv: "RELAY_TEST_EMPTY"})}, "RELAY_TEST_EMPTY"},
		{"bad kind", []Option{WithAPIKeys(APIKey{Key: "k"}), WithRoutes(Route{Name: "a", Prefix: "/", Upstream: "http://x", Kind: "video"})}, "unknown kind"},
		{"duplicate key", []Option{WithAPIKeys(APIKey{Key: "k"}, APIKey{Key: "k"}), WithRoutes(Route{Name: "a", Prefix: "/", Upstream: "http://x"})}, "duplicate"},
		{"secret URL not echoed", []Option{WithAPIKeys(APIKey{Key: "k"}), WithRoutes(Route{Name: "a", Prefix: "/", Upstream: "ftp://host/?key=SECRET"})}, "scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), "SECRET")
		})
	}
}

func TestRecordJSONHasNoSecrets(t *testing.T) {
	var buf bytes.Buffer
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "{}") },
		Route{Prefix: "/v1", AuthHeader: "Authorization", AuthValue: "sk-upstream-secret"},
		WithRecorder(NewJSONLinesRecorder(&buf)))
	e.do(e.request("POST", "/v1/x?key=sk-query-secret", `{}`))
	require.NoError(t, e.relay.Recorder().Flush(testkit.Context(t)))
	var rec map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &rec))
	assert.Equal(t, "/v1/x", rec["path"])
	assert.NotContains(t, buf.String(), "sk-")
}

// TestHTTP2QuietStreamSurvivesWriteDeadline: on HTTP/2 an expired write
// deadline resets the stream even between writes, so a quiet upstream
// must not get a stream killed by the relay's own client write timeout.
func TestHTTP2QuietStreamSurvivesWriteDeadline(t *testing.T) {
	const wt = 100 * time.Millisecond
	up := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		<-time.After(4 * wt) // quiet for longer than the write timeout
		_, _ = io.WriteString(w, "data: 2\n\n")
	}
	e := newEnv(t, up, Route{Prefix: "/v1"}, WithClientWriteTimeout(wt))
	srv := httptest.NewUnstartedServer(e.relay)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	req := e.request("POST", "/v1/x", `{}`)
	req.URL.Scheme, req.URL.Host = "https", strings.TrimPrefix(srv.URL, "https://")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 2, resp.ProtoMajor)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "data: 1\n\ndata: 2\n\n", string(b))
}

// TestUnknownLengthJSONIsStreamed: NDJSON and chunked JSON (Gemini's array
// stream) are relayed as they come, not buffered.
func TestUnknownLengthJSONIsStreamed(t *testing.T) {
	for _, ct := range []string{"application/x-ndjson", "application/json"} {
		t.Run(ct, func(t *testing.T) {
			acks := make(chan struct{})
			e := newEnv(t, lockstep(ct, acks, "{\"i\":0}\n", "{\"i\":1}\n", "{\"i\":2}\n"), Route{Prefix: "/v1"})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := e.front.Client().Do(e.request("POST", "/v1/x", `{}`).WithContext(ctx))
			require.NoError(t, err)
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			for i := range 3 {
				line, err := br.ReadString('\n')
				require.NoError(t, err)
				assert.Equal(t, fmt.Sprintf("{\"i\":%d}\n", i), line)
				testkit.Send(t, acks, struct{}{}, "the upstream did not wait for the next acknowledgement")
			}
		})
	}
}

// TestCompressedStreamFailureAborts: plain text appended to a compressed
// body would corrupt it, so a compressed SSE stream that breaks is
// aborted, whether the relay decodes its coding (gzip: events are counted
// from the decoded copy, and none was complete) or not (br: its reads are
// counted as chunks).
func TestCompressedStreamFailureAborts(t *testing.T) {
	for _, tt := range []struct {
		coding string
		events int64
		why    string
	}{{"gzip", 0, "parsed events: none was complete"}, {"br", 1, "chunks, not parsed events"}} {
		t.Run(tt.coding, func(t *testing.T) {
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				w.Header().Set("Content-Encoding", tt.coding)
				w.WriteHeader(200)
				_, _ = w.Write([]byte{0x1f, 0x8b, 0x08, 0x00})
				w.(http.Flusher).Flush()
				if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
					conn.Close()
				}
			}, Route{Prefix: "/v1"})
			tr := &http.Transport{DisableCompression: true}
			defer tr.CloseIdleConnections()
			req := e.request("POST", "/v1/x", `{}`)
			req.Header.Set("Accept-Encoding", "gzip")
			resp, err := (&http.Client{Transport: tr}).Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "the client must see a truncated body")
			assert.NotContains(t, string(body), "event: error")
			e.handled()
			rec := e.lastRecord()
			assert.Equal(t, ErrTypeStreamInterrupted, rec.ErrorType)
			assert.Equal(t, tt.events, rec.Events, tt.why)
		})
	}
}

// TestHTTP2QuietBeforeFirstEvent: the response headers are a write too. A
// stream whose headers were flushed keeps no write deadline while the
// upstream is quiet before its first event (a model thinking longer than
// the client write timeout), which on HTTP/2 would reset the stream.
func TestHTTP2QuietBeforeFirstEvent(t *testing.T) {
	const wt = 100 * time.Millisecond
	up := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-time.After(4 * wt) // quiet for longer than the write timeout
		_, _ = io.WriteString(w, "data: 1\n\n")
	}
	e := newEnv(t, up, Route{Prefix: "/v1"}, WithClientWriteTimeout(wt))
	srv := httptest.NewUnstartedServer(e.relay)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	req := e.request("POST", "/v1/x", `{}`)
	req.URL.Scheme, req.URL.Host = "https", strings.TrimPrefix(srv.URL, "https://")
	resp, err := srv.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 2, resp.ProtoMajor)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "data: 1\n\n", string(b))
}
