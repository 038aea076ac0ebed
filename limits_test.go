package relay

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
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

// Tests of the bounds on what a client can make the relay hold: body time,
// body memory, observation memory, and Shutdown's deadline.

// watch puts the relay behind a front server that notes each body Read the
// relay starts and each return of its handler.
type watch struct {
	front *httptest.Server
	reads atomic.Int64  // body Reads started
	read  chan struct{} // one value (at most) per request: its first Read
	done  chan struct{} // one value per handler return
}

func newWatch(t *testing.T, h http.Handler, h2 bool) *watch {
	t.Helper()
	wt := &watch{read: make(chan struct{}, 64), done: make(chan struct{}, 256)}
	wt.front = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { wt.done <- struct{}{} }()
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &notedBody{ReadCloser: r.Body, wt: wt}
		}
		h.ServeHTTP(w, r)
	}))
	if h2 {
		wt.front.EnableHTTP2 = true
		wt.front.StartTLS()
	} else {
		wt.front.Start()
	}
	t.Cleanup(func() {
		wt.front.CloseClientConnections()
		wt.front.Close()
	})
	return wt
}

// handlerReturned waits for the relay's handler to return once.
func (wt *watch) handlerReturned(t *testing.T) {
	t.Helper()
	select {
	case <-wt.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay's handler did not return")
	}
}

type notedBody struct {
	io.ReadCloser
	wt    *watch
	first bool
}

func (b *notedBody) Read(p []byte) (int, error) {
	if b.wt.reads.Add(1); !b.first {
		b.first = true
		select {
		case b.wt.read <- struct{}{}:
		default:
		}
	}
	return b.ReadCloser.Read(p)
}

func okUpstream(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"ok":true}`)
}

// rawPost opens a connection and sends a request's head with a declared
// body length and the first body bytes; the rest is up to the test.
func rawPost(t *testing.T, front *httptest.Server, key string, length int, first string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.Dial("tcp", front.Listener.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	auth := ""
	if key != "" {
		auth = "Authorization: Bearer " + key + "\r\n"
	}
	_, err = fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: relay\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		auth, length, first)
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	return conn, bufio.NewReader(conn)
}

// trickle writes one byte every gap until stop closes or n bytes are
// written: the stimulus of a slow client, bounded.
func trickle(conn io.Writer, gap time.Duration, n int) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(gap)
		defer tk.Stop()
		for range n {
			select {
			case <-done:
				return
			case <-tk.C:
			}
			if _, err := conn.Write([]byte(" ")); err != nil {
				return
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// closedByServer reads what is left on the connection and reports whether
// the server closed it (rather than the read timing out).
func closedByServer(t *testing.T, conn net.Conn, br *bufio.Reader) bool {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	_, err := io.Copy(io.Discard, br)
	return err == nil || !isTimeout(nil, err) // EOF, or a reset: closed either way
}

func TestBodyDeadline(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	def := bodyLimits{minRate: 240, grace: 5 * time.Second, timeout: 60 * time.Second}
	for _, tt := range []struct {
		name string
		lim  bodyLimits
		n    int64
		want time.Duration // from start; -1: no deadline
	}{
		{"grace first", def, 0, 5 * time.Second},
		{"rate within grace", def, 1200, 5 * time.Second},
		{"rate after grace", def, 2400, 10 * time.Second},
		{"overall bound", def, 1 << 20, 60 * time.Second},
		{"no rate", bodyLimits{timeout: time.Second}, 1 << 20, time.Second},
		{"no overall bound", bodyLimits{minRate: 100, grace: time.Second}, 1 << 20, 10485760 * time.Millisecond},
		{"none", bodyLimits{}, 5, -1},
	} {
		got := tt.lim.deadline(start, tt.n)
		if tt.want < 0 {
			assert.True(t, got.IsZero(), tt.name)
			continue
		}
		assert.Equal(t, tt.want, got.Sub(start), tt.name)
	}
}

// TestSlowBodyGets408: a body that arrives below the minimum rate ends
// with 408 after the grace, and on HTTP/1 its connection is closed.
func TestSlowBodyGets408(t *testing.T) {
	e := newEnv(t, okUpstream, Route{Prefix: "/v1"},
		WithRequestBodyRate(1000, 200*time.Millisecond), WithRequestBodyTimeout(5*time.Second))

	t.Run("http1", func(t *testing.T) {
		wt := newWatch(t, e.relay, false)
		conn, br := rawPost(t, wt.front, testKey, 1000, "{")
		stop := trickle(conn, 50*time.Millisecond, 200)
		defer stop()
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		assert.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
		assert.True(t, resp.Close, "Connection: close")
		assert.Contains(t, string(b), `"code":"request_timeout"`)
		assert.True(t, closedByServer(t, conn, br), "the connection was closed")
		wt.handlerReturned(t)
		rec := e.lastRecord()
		assert.Equal(t, http.StatusRequestTimeout, rec.Status)
		assert.Equal(t, ErrTypeBodyTimeout, rec.ErrorType)
		assert.Positive(t, rec.BytesIn)
	})

	t.Run("http2", func(t *testing.T) {
		wt := newWatch(t, e.relay, true)
		pr, pw := io.Pipe()
		stop := trickle(pw, 50*time.Millisecond, 200)
		defer stop()
		defer pw.Close() // first: it unblocks a write stop waits for
		req, err := http.NewRequest("POST", wt.front.URL+"/v1/messages", pr)
		require.NoError(t, err)
		req.ContentLength = 1000
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := wt.front.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		require.Equal(t, 2, resp.ProtoMajor)
		assert.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
		assert.Contains(t, string(b), `"type":"invalid_request_error"`)
		wt.handlerReturned(t)
		assert.Equal(t, ErrTypeBodyTimeout, e.lastRecord().ErrorType)
	})
	assert.Equal(t, 2.0, testutil.ToFloat64(e.relay.metrics.errors.WithLabelValues("test", string(ErrTypeBodyTimeout))))
	assert.Zero(t, e.relay.bodies.used.Load())
}

// TestRefusedBeforeBody: a request refused before its body is read is
// answered at once, without waiting for the body, and on HTTP/1 its
// connection is closed.
func TestRefusedBeforeBody(t *testing.T) {
	e := newEnv(t, okUpstream, Route{Prefix: "/v1"})

	t.Run("http1 401", func(t *testing.T) {
		wt := newWatch(t, e.relay, false)
		conn, br := rawPost(t, wt.front, "sk-wrong", 100000, "{")
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		assert.True(t, resp.Close, "Connection: close")
		_, _ = io.ReadAll(resp.Body)
		assert.True(t, closedByServer(t, conn, br), "the connection was closed")
		wt.handlerReturned(t)
		assert.Zero(t, wt.reads.Load(), "the body was not read")
		assert.Equal(t, ErrTypeAuth, e.lastRecord().ErrorType)
	})

	t.Run("http1 404 keeps a bodiless connection", func(t *testing.T) {
		wt := newWatch(t, e.relay, false)
		req, err := http.NewRequest("GET", wt.front.URL+"/nowhere", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := wt.front.Client().Do(req)
		require.NoError(t, err)
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusNotFound, resp.StatusCode)
		assert.False(t, resp.Close, "no body pending: the connection stays open")
		wt.handlerReturned(t)
	})

	t.Run("http2 401", func(t *testing.T) {
		wt := newWatch(t, e.relay, true)
		pr, pw := io.Pipe()
		defer pw.Close() // never written
		req, err := http.NewRequest("POST", wt.front.URL+"/v1/chat/completions", pr)
		require.NoError(t, err)
		req.ContentLength = 100000
		resp, err := wt.front.Client().Do(req)
		require.NoError(t, err)
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, 2, resp.ProtoMajor)
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		assert.Empty(t, resp.Header.Get("Connection"), "no Connection header on HTTP/2")
		wt.handlerReturned(t)
		assert.Zero(t, wt.reads.Load())
	})
}

// TestRateLimitedTenantRefusedBeforeBody: once the limiter refused a
// caller for its request budget, its next requests on that route are
// refused, with the same answer, without reading their bodies, until the
// Retry-After it was given has passed.
func TestRateLimitedTenantRefusedBeforeBody(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := ClockFunc(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	e := newEnv(t, okUpstream, Route{Prefix: "/v1"},
		WithRateLimit(Limits{RequestsPerMinute: 60, Burst: 1}), WithClock(clock))
	wt := newWatch(t, e.relay, false)
	post := func(body io.Reader, length int64) *http.Response {
		t.Helper()
		req, err := http.NewRequest("POST", wt.front.URL+"/v1/chat/completions", body)
		require.NoError(t, err)
		req.ContentLength = length
		req.Header.Set("Authorization", "Bearer "+testKey)
		resp, err := wt.front.Client().Do(req)
		require.NoError(t, err)
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		wt.handlerReturned(t)
		return resp
	}
	assert.Equal(t, 200, post(strings.NewReader(`{}`), 2).StatusCode)
	limited := post(strings.NewReader(`{}`), 2)
	assert.Equal(t, 429, limited.StatusCode, "the limiter refuses")
	reads := wt.reads.Load()

	pr, pw := io.Pipe()
	defer pw.Close() // never written: only an answer that does not read the body can come
	resp := post(pr, 1000)
	assert.Equal(t, 429, resp.StatusCode)
	assert.Equal(t, reads, wt.reads.Load(), "the body was not read")
	assert.True(t, resp.Close, "Connection: close")
	for _, h := range []string{"Retry-After", "X-Ratelimit-Limit-Requests", "X-Ratelimit-Remaining-Requests"} {
		assert.Equal(t, limited.Header.Get(h), resp.Header.Get(h), h)
	}
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	rec := e.lastRecord()
	assert.Equal(t, ErrTypeRateLimited, rec.ErrorType)
	assert.Equal(t, 2.0, testutil.ToFloat64(e.relay.metrics.limited.WithLabelValues("test", "requests")))

	mu.Lock()
	now = now.Add(time.Second)
	mu.Unlock()
	assert.Equal(t, 200, post(strings.NewReader(`{}`), 2).StatusCode, "admitted again once Retry-After passed")
}

func TestRefusalsBounded(t *testing.T) {
	var f refusals
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := ClockFunc(func() time.Time { return now })
	d := Decision{Reason: "requests", RetryAfter: time.Second}
	id := func(tenant string) Identity { return Identity{Tenant: tenant, KeyID: "k"} }
	f.note(id("t"), "r", now, Decision{Reason: "tokens", RetryAfter: time.Second})
	_, ok := f.check(id("t"), "r", clock)
	assert.False(t, ok, "a token refusal is not remembered: a smaller request may fit")
	for i := range maxRefusals + 10 {
		f.note(id(fmt.Sprint("tenant", i)), "r", now, d)
	}
	assert.Len(t, f.m, maxRefusals)
	_, ok = f.check(id("tenant0"), "r", clock)
	assert.True(t, ok)
	_, ok = f.check(id("tenant0"), "other route", clock)
	assert.False(t, ok)
	_, ok = f.check(Identity{Tenant: "tenant0", KeyID: "other key"}, "r", clock)
	assert.False(t, ok, "another key of the tenant asks the limiter")
	now = now.Add(time.Second)
	f.note(id("late"), "r", now, d) // full: the expired are swept first
	assert.Len(t, f.m, 1)
	_, ok = f.check(id("late"), "r", clock)
	assert.True(t, ok)
}

// TestBodyBudget: bodies held beyond the budget are refused with 503 and
// Retry-After, at once, and the budget returns to zero on every exit.
func TestBodyBudget(t *testing.T) {
	const size = 256 << 10
	// One tenant may hold the whole budget here: this is about the budget.
	e := newEnv(t, okUpstream, Route{Prefix: "/v1"}, WithMaxBodyBytes(size), WithRequestBodyBudget(2*size),
		WithRequestBodyTenantBudget(2*size))
	wt := newWatch(t, e.relay, false)
	send := func(body io.Reader, length int64) (*http.Response, error) {
		req, err := http.NewRequest("POST", wt.front.URL+"/v1/chat/completions", body)
		require.NoError(t, err)
		req.ContentLength = length
		req.Header.Set("Authorization", "Bearer "+testKey)
		return wt.front.Client().Do(req)
	}

	// Two bodies that stop short hold the whole budget: each buffer has
	// grown to its declared length.
	var holders []*io.PipeWriter
	errs := make(chan error, 2)
	for range 2 {
		pr, pw := io.Pipe()
		holders = append(holders, pw)
		go func() {
			_, err := send(pr, size)
			errs <- err
		}()
		_, err := pw.Write(make([]byte, size*3/4))
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return e.relay.bodies.used.Load() == 2*size }, 10*time.Second, time.Millisecond)

	// A flood of further bodies, declared or chunked, is refused at once.
	for _, length := range []int64{size, 10, -1} {
		pr, pw := io.Pipe()
		resp, err := send(pr, length)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		pw.Close()
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		assert.Equal(t, "1", resp.Header.Get("Retry-After"))
		assert.Contains(t, string(b), "overloaded")
		wt.handlerReturned(t)
		assert.Equal(t, ErrTypeOverloaded, e.lastRecord().ErrorType)
	}
	assert.Equal(t, 3.0, testutil.ToFloat64(e.relay.metrics.errors.WithLabelValues("test", string(ErrTypeOverloaded))))
	assert.LessOrEqual(t, e.relay.bodies.peak.Load(), int64(2*size))

	for _, pw := range holders {
		pw.CloseWithError(io.ErrUnexpectedEOF) // the clients give up
	}
	for range 2 {
		select {
		case <-errs:
		case <-time.After(10 * time.Second):
			t.Fatal("the held requests did not end")
		}
		wt.handlerReturned(t)
	}
	assert.Zero(t, e.relay.bodies.used.Load(), "abandoned bodies are given back")

	// A body is given back (and dropped) once the final attempt's
	// response headers are in, while the response still streams.
	release := make(chan struct{})
	got := make(chan int, 1)
	e2 := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- len(b)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}, Route{Prefix: "/v1"})
	resp, err := e2.front.Client().Do(e2.request("POST", "/v1/x", strings.Repeat("a", 300<<10)))
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, 300<<10, <-got)
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	require.NoError(t, err)
	assert.Equal(t, "data: 1\n", line)
	// The transport's last read of the body may follow the headers by a
	// moment; the stream is still open either way.
	require.Eventually(t, func() bool { return e2.relay.bodies.used.Load() == 0 }, 10*time.Second, time.Millisecond,
		"given back while the stream goes on")
	assert.Positive(t, e2.relay.bodies.peak.Load())
	close(release)
}

// TestBodyBudgetTenantShare is the review's scenario: a tenant limited to
// 1 request a minute opens 4 connections that each declare a 128 KiB body,
// send one byte and stall, against a 256 KiB budget. Each holds a 4 KiB
// buffer, not its declared length; the tenant's share (a quarter of the
// budget, but no less than the 128 KiB body limit) bounds what it can
// hold by sending more; and another tenant's bodies still get through.
// The budget returns to zero at the end.
func TestBodyBudgetTenantShare(t *testing.T) {
	const maxBody, budget = 128 << 10, 256 << 10
	const otherKey = "sk-test-client-key-other"
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := newEnv(t, okUpstream, Route{Prefix: "/v1"},
		WithRateLimit(Limits{RequestsPerMinute: 1, Burst: 1}), WithClock(ClockFunc(func() time.Time { return now })),
		WithMaxBodyBytes(maxBody), WithRequestBodyBudget(budget),
		WithAPIKeys(APIKey{Key: otherKey, ID: "k2", Tenant: "other", Limits: &Limits{RequestsPerMinute: 1e6, Burst: 1000}}))
	require.Equal(t, int64(maxBody), e.relay.perTenant.limit)
	wt := newWatch(t, e.relay, false)
	post := func(key string, body string) *http.Response {
		t.Helper()
		req, err := http.NewRequest("POST", wt.front.URL+"/v1/chat/completions", strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := wt.front.Client().Do(req)
		require.NoError(t, err)
		_, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		wt.handlerReturned(t)
		return resp
	}
	require.Equal(t, 200, post(testKey, "{}").StatusCode, "the limited tenant's one request of the minute")

	// Four slow bodies of the limited tenant: the limiter would refuse
	// them, but only once they are read.
	type held struct {
		conn net.Conn
		br   *bufio.Reader
	}
	var slow []held
	for range 4 {
		conn, br := rawPost(t, wt.front, testKey, maxBody, "{")
		slow = append(slow, held{conn, br})
	}
	require.Eventually(t, func() bool { return e.relay.bodies.used.Load() == 4*bodyFirst }, 10*time.Second, time.Millisecond,
		"each slow body holds its first buffer, not its declared length")
	assert.Equal(t, int64(4*bodyFirst), e.relay.perTenant.held("acme"))

	resp := post(otherKey, `{"model":"m"}`)
	assert.Equal(t, 200, resp.StatusCode, "another tenant's small body gets through")

	// The limited tenant sends more on one connection: its buffer would
	// take the tenant past its share, so that request is refused.
	_, err := slow[0].conn.Write(make([]byte, 64<<10))
	require.NoError(t, err)
	refused, err := http.ReadResponse(slow[0].br, nil)
	require.NoError(t, err)
	b, _ := io.ReadAll(refused.Body)
	assert.Equal(t, http.StatusServiceUnavailable, refused.StatusCode)
	assert.Equal(t, "1", refused.Header.Get("Retry-After"))
	assert.Contains(t, string(b), "overloaded")
	assert.Contains(t, string(b), "tenant")
	wt.handlerReturned(t)
	assert.Equal(t, ErrTypeOverloaded, e.lastRecord().ErrorType)
	assert.LessOrEqual(t, e.relay.perTenant.held("acme"), int64(maxBody))

	// Another tenant's body as large as allowed still fits beside what
	// the limited tenant holds.
	resp = post(otherKey, `{"model":"m","input":"`+strings.Repeat("a", maxBody-30)+`"}`)
	assert.Equal(t, 200, resp.StatusCode, "another tenant's largest body gets through")
	assert.LessOrEqual(t, e.relay.bodies.peak.Load(), int64(budget))

	for _, h := range slow[1:] {
		h.conn.Close()
	}
	for range slow[1:] {
		wt.handlerReturned(t)
	}
	assert.Zero(t, e.relay.bodies.used.Load(), "the budget returns to zero")
	assert.Zero(t, e.relay.perTenant.held("acme"))
	assert.Empty(t, e.relay.perTenant.m, "no tenant left in the share map")
}

// TestBodyBudgetAfterPanic: a handler that panics gives its body back.
func TestBodyBudgetAfterPanic(t *testing.T) {
	e := newEnv(t, okUpstream, Route{Prefix: "/v1"},
		WithTransport(roundTripFunc(func(*http.Request) (*http.Response, error) { panic(http.ErrAbortHandler) })))
	wt := newWatch(t, e.relay, false)
	req, err := http.NewRequest("POST", wt.front.URL+"/v1/x", strings.NewReader(strings.Repeat("a", 100<<10)))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testKey)
	if resp, err := wt.front.Client().Do(req); err == nil {
		resp.Body.Close()
	}
	wt.handlerReturned(t)
	assert.Positive(t, e.relay.bodies.peak.Load())
	assert.Zero(t, e.relay.bodies.used.Load())
	assert.Equal(t, http.StatusInternalServerError, e.lastRecord().Status)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// bigEvent is one SSE chat chunk whose content is n bytes, with usage at
// its end, then the end of the stream.
func bigEvent(n int) []byte {
	b := make([]byte, 0, n+256)
	b = append(b, `data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"`...)
	for len(b) < n {
		b = append(b, "lorem ipsum \\\"usage\\\":{\\\"prompt_tokens\\\":1} "...)
	}
	b = append(b, `"}}],"usage":{"prompt_tokens":7,"completion_tokens":9}}`+"\n\ndata: [DONE]\n\n"...)
	return b
}

// perStreamCharge is what one stream in the middle of a large event takes
// from the observation budget: its head and tail window beyond its own.
const perStreamCharge = maxObservedHead + 2*observedTail - observeFree

// TestLargeEventUsage: a 16 MiB event passes through whole and its usage
// is recorded, from a window of bounded size.
func TestLargeEventUsage(t *testing.T) {
	ev := bigEvent(16 << 20)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write(ev)
	}, Route{Prefix: "/v1"})
	resp, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, sha256.Sum256(ev), sha256.Sum256(body), "the client got the stream byte for byte")
	rec := e.lastRecord()
	assert.Equal(t, Usage{InputTokens: 7, OutputTokens: 9}, rec.Usage)
	assert.Equal(t, int64(2), rec.Events)
	assert.Positive(t, rec.TTFT)
	assert.Equal(t, int64(perStreamCharge), e.relay.observed.peak.Load(), "bytes held beyond the stream's own")
	assert.Zero(t, e.relay.observed.used.Load())
}

// TestManyLargeEventsBounded: 100 streams in the middle of a 4 MiB event
// at once (the measurement: 733 MB of RSS) hold a bounded window
// each, and all their usage is recorded; with the observation budget
// spent, observation degrades to each response's own allowance (usage is
// still found in its tail window) while the bytes still reach the client
// whole.
func TestManyLargeEventsBounded(t *testing.T) {
	ev := bigEvent(4 << 20)
	half := len(ev) / 2
	for _, tt := range []struct {
		name   string
		n      int
		budget int64
		usage  Usage
	}{
		{"default budget", 100, defaultObserveBudget, Usage{InputTokens: 7, OutputTokens: 9}},
		// The usage object at the event's end is still found, in the tail
		// window each response keeps out of its own allowance.
		{"spent budget", 10, 0, Usage{InputTokens: 7, OutputTokens: 9}},
	} {
		n := tt.n
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = w.Write(ev[:half])
				w.(http.Flusher).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				_, _ = w.Write(ev[half:])
			}, Route{Prefix: "/v1"}, WithObservationBudget(tt.budget))
			var wg sync.WaitGroup
			sums := make(chan [32]byte, n)
			halfway := make(chan struct{}, n)
			for range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := e.front.Client().Do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
					if !assert.NoError(t, err) {
						halfway <- struct{}{}
						return
					}
					defer resp.Body.Close()
					h := sha256.New()
					_, err = io.CopyN(h, resp.Body, int64(half))
					halfway <- struct{}{}
					assert.NoError(t, err)
					_, _ = io.Copy(h, resp.Body)
					sums <- [32]byte(h.Sum(nil))
				}()
			}
			for range n {
				<-halfway
			}
			if tt.budget > 0 {
				// Every stream is inside its event, holding its window.
				require.Eventually(t, func() bool { return e.relay.observed.used.Load() == int64(n*perStreamCharge) },
					10*time.Second, time.Millisecond)
			}
			close(release)
			wg.Wait()
			close(sums)
			want := sha256.Sum256(ev)
			for s := range sums {
				assert.Equal(t, want, s, "the client got the stream byte for byte")
			}
			for range n {
				select {
				case <-e.served:
				case <-time.After(10 * time.Second):
					t.Fatal("the relay's handlers did not return")
				}
			}
			recs := e.records()
			require.Len(t, recs, n)
			for _, r := range recs {
				assert.Equal(t, tt.usage, r.Usage)
			}
			assert.LessOrEqual(t, e.relay.observed.peak.Load(), int64(n*perStreamCharge))
			assert.LessOrEqual(t, e.relay.observed.peak.Load(), tt.budget)
			assert.Zero(t, e.relay.observed.used.Load())
		})
	}
}

// TestUsageWithObservationBudgetSpent: with no shared observation memory
// at all, the usage object at the end of a 40 KiB final event or body is
// still found, in the tail window each response keeps out of its own
// allowance, and nothing is taken from the budget.
func TestUsageWithObservationBudgetSpent(t *testing.T) {
	pad := strings.Repeat("lorem ipsum ", (40<<10)/12)
	gemini := `data: {"candidates":[{"content":{"parts":[{"text":"` + pad + `"}]}}],` +
		`"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":7,"totalTokenCount":12},"modelVersion":"m"}` + "\n\n"
	anthropic := "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"container\":\"" + pad + "\"},\"usage\":{\"output_tokens\":11}}\n\n"
	for _, tt := range []struct {
		name, ct, body string
		provider       Provider
		want           Usage
	}{
		{"openai sse", "text/event-stream", string(bigEvent(40 << 10)), ProviderOpenAI, Usage{InputTokens: 7, OutputTokens: 9}},
		{"gemini sse", "text/event-stream", gemini, ProviderOpenAI, Usage{InputTokens: 5, OutputTokens: 7}},
		{"anthropic sse", "text/event-stream", anthropic, ProviderAnthropic, Usage{InputTokens: 3, OutputTokens: 11}},
		{"json", "application/json", `{"model":"m","choices":[{"message":{"content":"` + pad + `"}}],"usage":{"prompt_tokens":5,"completion_tokens":7}}`,
			ProviderOpenAI, Usage{InputTokens: 5, OutputTokens: 7}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			require.Greater(t, len(tt.body), 40<<10)
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.ct)
				_, _ = io.WriteString(w, tt.body)
			}, Route{Prefix: "/v1", Provider: tt.provider}, WithObservationBudget(0))
			resp, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, tt.body, string(body))
			assert.Equal(t, tt.want, e.lastRecord().Usage)
			assert.Zero(t, e.relay.observed.peak.Load(), "nothing taken from a zero budget")
		})
	}
}

// TestShutdownCutsTricklingBody: Shutdown returns by its deadline while a
// keyed client trickles a body, and that request's record is written.
func TestShutdownCutsTricklingBody(t *testing.T) {
	e := newEnv(t, okUpstream, Route{Prefix: "/v1"}, WithRequestBodyRate(0, 0), WithRequestBodyTimeout(time.Hour))
	wt := newWatch(t, e.relay, false)
	conn, br := rawPost(t, wt.front, testKey, 1000, "{")
	stop := trickle(conn, 100*time.Millisecond, 100)
	defer stop()
	select {
	case <-wt.read:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not start reading the body")
	}
	const grace = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	start := time.Now()
	err := e.relay.Shutdown(ctx)
	took := time.Since(start)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	// Within the first grace: the read was cut at once, not left to the
	// second grace (which would also end it).
	assert.Less(t, took, grace+shutdownGrace, "Shutdown returned by its deadline")
	recs := e.sink.all() // Shutdown flushed the queue
	require.Len(t, recs, 1)
	assert.Equal(t, http.StatusServiceUnavailable, recs[0].Status)
	assert.Equal(t, ErrTypeShuttingDown, recs[0].ErrorType)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.True(t, resp.Close)
}

// stuckWriter is a ResponseWriter whose body write blocks, as one to a
// client that stopped reading does, until a write deadline in the past is
// set.
type stuckWriter struct {
	http.ResponseWriter
	stuck   chan struct{} // closed when the write blocks
	cut     chan struct{} // closed by a past write deadline
	cutOnce sync.Once
}

func (s *stuckWriter) Write([]byte) (int, error) {
	close(s.stuck)
	select {
	case <-s.cut:
	case <-time.After(10 * time.Second):
	}
	return 0, fmt.Errorf("write: %w", errStuck)
}

const errStuck = Error("i/o timeout")

func (s *stuckWriter) Flush() { s.ResponseWriter.(http.Flusher).Flush() }

func (s *stuckWriter) SetReadDeadline(time.Time) error { return nil }

func (s *stuckWriter) SetWriteDeadline(d time.Time) error {
	if !d.IsZero() && d.Before(time.Now()) {
		s.cutOnce.Do(func() { close(s.cut) })
	}
	return nil
}

// TestShutdownCutsStuckWrites: a handler blocked writing to a client that
// does not read is cut shortly after Shutdown's deadline, and recorded.
func TestShutdownCutsStuckWrites(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}, Route{Prefix: "/v1"})
	sw := &stuckWriter{stuck: make(chan struct{}), cut: make(chan struct{})}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw.ResponseWriter = w
		e.relay.ServeHTTP(sw, r)
	}))
	defer front.Close()
	req := e.request("POST", "/v1/x", `{}`)
	req.URL.Host = front.Listener.Addr().String()
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		if resp, err := front.Client().Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	testkit.Recv(t, sw.stuck, "the relay never blocked writing to the client")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	assert.ErrorIs(t, e.relay.Shutdown(ctx), context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 100*time.Millisecond+2*shutdownGrace, "the documented bound")
	recs := e.sink.all()
	require.Len(t, recs, 1)
	assert.True(t, recs[0].ClientGone, "the write failed")
	<-answered
}

// TestLargeJSONObservationBounded: a large non-streamed body is observed
// through its head and tail, charged to the observation budget and given
// back.
func TestLargeJSONObservationBounded(t *testing.T) {
	body := `{"object":"list","data":[{"embedding":"` + strings.Repeat("A", 4<<20) + `"}],"model":"m","usage":{"prompt_tokens":5,"total_tokens":5}}`
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}, Route{Prefix: "/v1"})
	resp, got := e.do(e.request("POST", "/v1/embeddings", `{"model":"m","input":"x"}`))
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, len(body), len(got))
	assert.Equal(t, Usage{InputTokens: 5}, e.lastRecord().Usage)
	assert.Equal(t, int64(maxCapturedHead+2*capturedTail-observeFree), e.relay.observed.peak.Load())
	assert.Zero(t, e.relay.observed.used.Load())
}

func TestBodyOptions(t *testing.T) {
	base := []Option{WithRoutes(Route{Name: "r", Prefix: "/", Upstream: "http://upstream.test"}),
		WithAPIKeys(APIKey{Key: testKey})}
	for _, tt := range []struct {
		name   string
		opts   []Option
		budget int64 // 0: New fails
		tenant int64 // a tenant's share; 0: budget/4
	}{
		{"defaults", nil, defaultBodyBudget, 0},
		{"budget follows a larger body limit", []Option{WithMaxBodyBytes(512 << 20)}, 512 << 20, 512 << 20},
		{"explicit budget", []Option{WithRequestBodyBudget(64 << 20)}, 64 << 20, 16 << 20},
		{"share never below the body limit", []Option{WithMaxBodyBytes(50 << 20)}, defaultBodyBudget, 50 << 20},
		{"explicit share", []Option{WithRequestBodyTenantBudget(100 << 20)}, defaultBodyBudget, 100 << 20},
		{"share above the budget is the budget", []Option{WithRequestBodyTenantBudget(1 << 30)}, defaultBodyBudget, defaultBodyBudget},
		{"share below the body limit", []Option{WithRequestBodyTenantBudget(1 << 20)}, 0, 0},
		{"zero share", []Option{WithRequestBodyTenantBudget(0)}, 0, 0},
		{"budget below the body limit", []Option{WithRequestBodyBudget(1 << 20)}, 0, 0},
		{"zero budget", []Option{WithRequestBodyBudget(0)}, 0, 0},
		{"negative rate", []Option{WithRequestBodyRate(-1, time.Second)}, 0, 0},
		{"negative observation budget", []Option{WithObservationBudget(-1)}, 0, 0},
	} {
		opts := append([]Option{WithRegisterer(prometheus.NewRegistry())}, base...)
		rl, err := New(append(opts, tt.opts...)...)
		if tt.budget == 0 {
			assert.Error(t, err, tt.name)
			continue
		}
		require.NoError(t, err, tt.name)
		assert.Equal(t, tt.budget, rl.bodies.limit, tt.name)
		if tt.tenant == 0 {
			tt.tenant = tt.budget / 4
		}
		assert.Equal(t, tt.tenant, rl.perTenant.limit, tt.name)
		assert.Equal(t, int64(defaultObserveBudget), rl.observed.limit, tt.name)
	}
}

// TestRefusalMemoIsCapped: a limiter that refuses with a 6h Retry-After
// and is then topped up is asked again once the memo's cap (5s) has
// passed, not 6h later; a further refusal renews the memo; with
// WithRefusalMemo(0) the limiter is asked every time. Time is the
// injected clock's: nothing sleeps.
func TestRefusalMemoIsCapped(t *testing.T) {
	steps := []struct {
		advance    time.Duration // of the clock, before the request
		admit      bool          // the limiter admits
		status     int
		retryAfter string // the default memo's answer (off: 21600 on every refusal)
		calls      int32  // limiter calls so far, default memo (off: one per request)
	}{
		{0, false, 429, "21600", 1},                      // the limiter refuses for 6h
		{time.Second, false, 429, "21599", 1},            // remembered: its own Retry-After, counted down
		{4 * time.Second, true, 200, "", 2},              // 5s: the cap has passed, the topped-up limiter is asked
		{0, false, 429, "21600", 3},                      // refused again
		{4 * time.Second, true, 429, "21596", 3},         // remembered, although the limiter would admit
		{time.Second, false, 429, "21600", 4},            // 5s later: asked again, refuses: renewed
		{4999 * time.Millisecond, true, 429, "21596", 4}, // the renewed memo still holds
		{time.Millisecond, true, 200, "", 5},             // and ends after 5s
	}
	for _, memo := range []struct {
		name string
		opts []Option
		off  bool
	}{{"default", nil, false}, {"off", []Option{WithRefusalMemo(0)}, true}} {
		t.Run(memo.name, func(t *testing.T) {
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			var mu sync.Mutex
			clock := ClockFunc(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
			var calls atomic.Int32
			var admit atomic.Bool
			lim := LimiterFunc(func(_ context.Context, req LimitRequest) (Decision, error) {
				calls.Add(1)
				if admit.Load() {
					return Decision{Allowed: true}, nil
				}
				return Decision{Reason: "requests", RetryAfter: 6 * time.Hour,
					Requests: Quota{Limit: 10, Remaining: 0, Reset: 6 * time.Hour}}, nil
			})
			e := newEnv(t, okUpstream, Route{Prefix: "/v1"}, append([]Option{WithLimiter(lim), WithClock(clock)}, memo.opts...)...)
			for i, st := range steps {
				mu.Lock()
				now = now.Add(st.advance)
				mu.Unlock()
				admit.Store(st.admit)
				status, retryAfter, wantCalls := st.status, st.retryAfter, st.calls
				if memo.off {
					if status, retryAfter = 429, "21600"; st.admit {
						status, retryAfter = 200, ""
					}
					wantCalls = int32(i + 1)
				}
				resp, _ := e.do(e.request("POST", "/v1/chat/completions", `{}`))
				assert.Equal(t, status, resp.StatusCode, "step %d", i)
				assert.Equal(t, retryAfter, resp.Header.Get("Retry-After"), "step %d", i)
				assert.Equal(t, wantCalls, calls.Load(), "step %d: limiter calls", i)
			}
		})
	}
	_, err := New(WithRefusalMemo(-time.Second), WithAPIKeys(APIKey{Key: "k"}), WithRoutes(Route{Name: "r", Upstream: "http://x"}))
	assert.Error(t, err)
}

// TestRefusalMemoFastPath: once every remembered refusal has expired, a
// check reads no map (the memo is seen empty from one atomic load), and
// the next refusal starts a fresh map.
func TestRefusalMemoFastPath(t *testing.T) {
	var f refusals
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := ClockFunc(func() time.Time { return now })
	_, ok := f.check(Identity{Tenant: "t"}, "r", clock)
	assert.False(t, ok)
	assert.Zero(t, f.latest.Load(), "no refusal yet")
	d := Decision{Reason: "requests", RetryAfter: time.Hour}
	for i := range 100 {
		f.note(Identity{Tenant: fmt.Sprint("t", i)}, "r", now, d)
	}
	assert.Equal(t, now.Add(defaultRefusalMemo).UnixNano(), f.latest.Load(), "entries live 5s, not an hour")
	now = now.Add(defaultRefusalMemo)
	f.mu.Lock() // a check that took the lock would block until the test fails
	done := make(chan bool, 1)
	go func() { _, ok := f.check(Identity{Tenant: "t1"}, "r", clock); done <- ok }()
	select {
	case ok = <-done:
		assert.False(t, ok)
	case <-time.After(10 * time.Second):
		t.Error("check took the lock with every entry expired")
	}
	f.mu.Unlock()
	f.note(Identity{Tenant: "late"}, "r", now, d)
	assert.Len(t, f.m, 1, "all expired: a fresh map")
}

// stallingSettler admits everything and settles only when its context is
// cancelled: a remote limiter that has stopped answering.
type stallingSettler struct{ cancelled chan struct{} }

func (stallingSettler) Allow(context.Context, LimitRequest) (Decision, error) {
	return Decision{Allowed: true}, nil
}

func (s stallingSettler) Settle(ctx context.Context, _ LimitRequest, _ int64) error {
	select {
	case <-ctx.Done():
		close(s.cancelled)
		return ctx.Err()
	case <-time.After(time.Minute):
		return nil
	}
}

// TestShutdownReturnsByItsDeadline: with a 1s deadline, while one client
// trickles a body and another has stopped reading a stream (so the
// relay's writes to it block), and a remote limiter's settlement stalls,
// Shutdown returns by the deadline, plus scheduling slack, and both
// requests are recorded.
func TestShutdownReturnsByItsDeadline(t *testing.T) {
	chunk := "data: " + strings.Repeat("x", 32<<10) + "\n\n"
	streaming := make(chan struct{})
	var once sync.Once
	settler := stallingSettler{cancelled: make(chan struct{})}
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 10000 && r.Context().Err() == nil; i++ { // up to 320 MiB, far beyond socket buffers
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			once.Do(func() { close(streaming) })
		}
	}, Route{Prefix: "/v1"}, WithLimiter(settler), WithRequestBodyRate(0, 0), WithRequestBodyTimeout(time.Hour))
	wt := newWatch(t, e.relay, false)

	// The slow reader: reads the response head, then nothing.
	body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	reader, rbr := rawPost(t, wt.front, testKey, len(body), body)
	_ = reader.(*net.TCPConn).SetReadBuffer(4 << 10) // its writes block sooner
	resp, err := http.ReadResponse(rbr, nil)
	require.NoError(t, err)
	assert.Equal(t, 200, resp.StatusCode)
	select {
	case <-streaming:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not start")
	}

	// The trickler.
	conn, br := rawPost(t, wt.front, testKey, 1000, "{")
	stop := trickle(conn, 50*time.Millisecond, 1000)
	defer stop()
	select {
	case <-wt.read:
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not start reading the body")
	}

	const deadline = time.Second
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	err = e.relay.Shutdown(ctx)
	took := time.Since(start)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, took, deadline+250*time.Millisecond, "Shutdown returned by its deadline")
	select {
	case <-settler.cancelled:
	default:
		t.Error("the stalled settlement was not cancelled")
	}

	recs := e.sink.all() // written by Shutdown
	require.Len(t, recs, 2)
	byBytesIn := map[int64]Record{recs[0].BytesIn: recs[0], recs[1].BytesIn: recs[1]}
	stream, ok := byBytesIn[int64(len(body))]
	require.True(t, ok, "the stream's record")
	assert.True(t, stream.ClientGone, "its blocked write was cut")
	assert.Positive(t, stream.BytesOut)
	for _, r := range recs {
		if r.RequestID != stream.RequestID {
			assert.Equal(t, http.StatusServiceUnavailable, r.Status, "the trickled body was cut")
			assert.Equal(t, ErrTypeShuttingDown, r.ErrorType)
		}
	}
	tr, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	assert.Equal(t, http.StatusServiceUnavailable, tr.StatusCode)
	reader.Close()
}

// formatReset writes what time.Duration.String writes for whole seconds,
// and milliseconds below a second, as OpenAI's headers do.
func TestFormatReset(t *testing.T) {
	for _, d := range []time.Duration{0, 20 * time.Millisecond, 999 * time.Millisecond, time.Second,
		1500 * time.Millisecond, 59 * time.Second, time.Minute, 6 * time.Minute, 61*time.Minute + 5*time.Second,
		25 * time.Hour, 100*time.Hour + 59*time.Minute + 59*time.Second} {
		want := strconv.FormatInt(d.Milliseconds(), 10) + "ms"
		if d >= time.Second {
			want = d.Round(time.Second).String()
		}
		if got := formatReset(d); got != want {
			t.Errorf("formatReset(%v) = %q, want %q", d, got, want)
		}
	}
}

// The six quota headers cost two allocations, and each holds its own value.
func TestQuotaHeadersCost(t *testing.T) {
	d := Decision{Requests: Quota{Limit: 600, Remaining: 599, Reset: 100 * time.Millisecond},
		Tokens: Quota{Limit: 150000, Remaining: 149000, Reset: 6 * time.Minute}}
	h := http.Header{}
	setQuotaHeaders(h, d)
	want := map[string]string{"X-Ratelimit-Limit-Requests": "600", "X-Ratelimit-Remaining-Requests": "599",
		"X-Ratelimit-Reset-Requests": "100ms", "X-Ratelimit-Limit-Tokens": "150000",
		"X-Ratelimit-Remaining-Tokens": "149000", "X-Ratelimit-Reset-Tokens": "6m0s"}
	for k, v := range want {
		if got := h[k]; len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want [%q]", k, got, v)
		}
	}
	h.Add("X-Ratelimit-Limit-Requests", "appended") // must not write into a neighbour's slot
	if got := h["X-Ratelimit-Remaining-Requests"]; len(got) != 1 || got[0] != "599" {
		t.Errorf("appending to one header changed another: %q", got)
	}
	tokensOnly := http.Header{}
	setQuotaHeaders(tokensOnly, Decision{Tokens: d.Tokens})
	if len(tokensOnly) != 3 || tokensOnly.Get("X-Ratelimit-Reset-Tokens") != "6m0s" {
		t.Errorf("tokens only: %v", tokensOnly)
	}
	if raceEnabled {
		return
	}
	if n := testing.AllocsPerRun(100, func() { setQuotaHeaders(h, d) }); n > 2 {
		t.Errorf("setQuotaHeaders: %v allocations, want at most 2", n)
	}
}
