package relay

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStatusClassLabels pins the documented labels of relay_requests_total
// with literals, never with statusClass itself: 499 (the client went away)
// counts as 4xx and no status at all (no response) as 5xx.
// Mutations it kills: any change to statusClass's mapping.
func TestStatusClassLabels(t *testing.T) {
	tests := []struct {
		code int
		want string
	}{
		{0, "5xx"}, // no response at all: the connection failed
		{101, "5xx"},
		{200, "2xx"},
		{204, "2xx"},
		{304, "3xx"},
		{400, "4xx"},
		{401, "4xx"},
		{429, "4xx"},
		{StatusClientClosedRequest, "4xx"},
		{499, "4xx"},
		{500, "5xx"},
		{502, "5xx"},
		{504, "5xx"},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, statusClass(tt.code), "status %d", tt.code)
	}
}

// TestRequestsTotalByStatusClass: the status label of relay_requests_total
// is what the client got, end to end, checked with literal labels: a
// success, a 401, a relay-made 502, a client that left (499) and a request
// that got no response at all (a resolver that panicked).
// Mutations it kills: statusClass mapping 499 or "no response" elsewhere;
// finish labelling a request with anything but its final status.
func TestRequestsTotalByStatusClass(t *testing.T) {
	refused := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		return "http://" + l.Addr().String()
	}()
	sent := make(chan struct{}, 1)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		if r.URL.Path == "/v1/hold" {
			sent <- struct{}{}
			<-r.Context().Done() // until the client leaves (or the test ends)
		}
	}, Route{Prefix: "/v1"})
	count := func(class string) float64 {
		return testutil.ToFloat64(e.relay.metrics.requests.WithLabelValues("test", class))
	}

	resp, _ := e.do(e.request("POST", "/v1/chat", `{}`))
	require.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, 1.0, count("2xx"))

	req := e.request("POST", "/v1/chat", `{}`)
	req.Header.Del("Authorization")
	resp, _ = e.do(req)
	require.Equal(t, 401, resp.StatusCode)
	assert.Equal(t, 1.0, count("4xx"))

	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	defer cancel()
	resp, err := e.front.Client().Do(e.request("POST", "/v1/hold", `{}`).WithContext(ctx))
	require.NoError(t, err)
	_, err = bufio.NewReader(resp.Body).ReadString('\n')
	require.NoError(t, err, "the first event did not reach the client")
	testkit.Recv(t, sent, "the upstream did not send its first event")
	cancel()
	resp.Body.Close()
	e.handled()
	assert.Equal(t, StatusClientClosedRequest, e.lastRecord().Status)
	assert.Equal(t, 2.0, count("4xx"), "499 counts as 4xx")
	assert.Equal(t, 0.0, count("5xx"))

	unused := func(http.ResponseWriter, *http.Request) { t.Error("upstream called") }
	dead := newEnv(t, unused, Route{Prefix: "/v1", Upstream: refused})
	resp, _ = dead.do(dead.request("POST", "/v1/chat", `{}`))
	require.Equal(t, 502, resp.StatusCode)
	assert.Equal(t, 1.0, testutil.ToFloat64(dead.relay.metrics.requests.WithLabelValues("test", "5xx")))

	// A resolver that panics: the client gets no response at all.
	panicky := newEnv(t, unused, Route{Prefix: "/v1"}, withoutRoutes(), WithResolver(UpstreamResolverFunc(func(*http.Request) (*Target, error) {
		panic(http.ErrAbortHandler)
	})))
	_, err = panicky.front.Client().Do(panicky.request("POST", "/v1/chat", `{}`))
	require.Error(t, err, "no response")
	panicky.handled()
	assert.Equal(t, 500, panicky.lastRecord().Status)
	assert.Equal(t, 1.0, testutil.ToFloat64(panicky.relay.metrics.requests.WithLabelValues("none", "5xx")), "no response counts as 5xx")
}

// TestActiveConnectionsGauge: relay_active_connections counts a request
// while it is in flight and drops back to zero when it ends, however it
// ends: a stream, a client that left, a 401, a request no route serves.
// Mutation it kills: finish no longer decrementing the gauge.
func TestActiveConnectionsGauge(t *testing.T) {
	sent := make(chan struct{}, 1)
	release := make(chan struct{})
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		sent <- struct{}{}
		select {
		case <-release:
			_, _ = io.WriteString(w, "data: last\n\n")
		case <-r.Context().Done():
		}
	}, Route{Prefix: "/v1"})
	active := func(route string) float64 {
		return testutil.ToFloat64(e.relay.metrics.active.WithLabelValues(route))
	}

	// A live stream is counted until it ends.
	resp, err := e.front.Client().Do(e.request("POST", "/v1/chat", `{}`))
	require.NoError(t, err)
	testkit.Recv(t, sent, "the upstream did not send its first event")
	assert.Equal(t, 1.0, active("test"), "a live stream is active")
	testkit.Send(t, release, struct{}{}, "the upstream was not waiting")
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, "data: first\n\ndata: last\n\n", string(b))
	e.handled()
	assert.Equal(t, 0.0, active("test"), "a finished stream is not active")

	// A client that leaves mid-stream.
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	defer cancel()
	resp, err = e.front.Client().Do(e.request("POST", "/v1/chat", `{}`).WithContext(ctx))
	require.NoError(t, err)
	testkit.Recv(t, sent, "the upstream did not send its first event")
	cancel()
	resp.Body.Close()
	e.handled()
	assert.Equal(t, 0.0, active("test"), "a stream the client left is not active")

	// Refused before any upstream: a 401 and a path no route serves.
	req := e.request("POST", "/v1/chat", `{}`)
	req.Header.Del("Authorization")
	resp, _ = e.do(req)
	assert.Equal(t, 401, resp.StatusCode)
	resp, _ = e.do(e.request("POST", "/nowhere", `{}`))
	assert.Equal(t, 404, resp.StatusCode)
	assert.Equal(t, 0.0, active("test"))
	assert.Equal(t, 0.0, active("none"))
	assert.Equal(t, 4.0, testutil.ToFloat64(e.relay.metrics.requests.WithLabelValues("test", "2xx"))+
		testutil.ToFloat64(e.relay.metrics.requests.WithLabelValues("test", "4xx"))+
		testutil.ToFloat64(e.relay.metrics.requests.WithLabelValues("none", "4xx")), "every request was counted")
}

// TestMetricChildrenCache: a cached child is the vector's own (what is
// counted through the cache is what the registry exports), for every
// label combination, past the cache's bound too, and from many goroutines
// at once; a wrong number of label values panics as the vector does.
// Mutations it kills: a cache keyed on fewer values than the labels (two
// combinations sharing a child), a cache that stops serving at its bound.
func TestMetricChildrenCache(t *testing.T) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c"}, []string{"a", "b", "c"})
	c := newChildren(vec.WithLabelValues)
	n := maxCachedChildren + 100
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				c.WithLabelValues("r", strconv.Itoa(i), strconv.Itoa(g%2)).Inc()
			}
		}()
	}
	wg.Wait()
	for _, i := range []int{0, 1, maxCachedChildren - 1, maxCachedChildren, n - 1} {
		for g := range 2 {
			assert.Equal(t, 2.0, testutil.ToFloat64(vec.WithLabelValues("r", strconv.Itoa(i), strconv.Itoa(g))), "child %d/%d", i, g)
		}
	}
	assert.Equal(t, 2*n, testutil.CollectAndCount(vec), "one child per combination")
	assert.Len(t, *c.cached.Load(), maxCachedChildren, "bounded")
	assert.Panics(t, func() { c.WithLabelValues("r", "1") }, "too few values")
	assert.Panics(t, func() { c.WithLabelValues("r", "1", "2", "3") }, "too many values")
}

// TestUpstreamStatusLabels pins the status label of
// relay_upstream_requests_total, constants and the rest alike.
func TestUpstreamStatusLabels(t *testing.T) {
	for code, want := range map[int]string{0: "error", 200: "200", 201: "201", 400: "400", 401: "401",
		403: "403", 404: "404", 418: "418", 429: "429", 500: "500", 502: "502", 503: "503", 504: "504", 529: "529"} {
		assert.Equal(t, want, upstreamStatus(code, nil), "%d", code)
	}
	assert.Equal(t, "error", upstreamStatus(200, io.EOF))
}

// BenchmarkMetricChildren resolves a two-label child as the request path
// does, through the cache and from the vector itself.
func BenchmarkMetricChildren(b *testing.B) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c"}, []string{"route", "status"})
	c := newChildren(vec.WithLabelValues)
	b.Run("cached", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c.WithLabelValues("route", "2xx").Inc()
		}
	})
	b.Run("vector", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			vec.WithLabelValues("route", "2xx").Inc()
		}
	})
}

// One registration policy: a metric already on the registry is an error
// (New) or a panic (NewAsyncRecorder, as prometheus.MustRegister), never
// silently shared, and a refused New leaves the registry as it found it.
func TestRegistrationRefusesDuplicates(t *testing.T) {
	rec := RecorderFunc(func(context.Context, Record) error { return nil })
	opts := func(reg prometheus.Registerer) []Option {
		return []Option{WithRoutes(Route{Name: "r", Prefix: "/", Upstream: "http://127.0.0.1:1"}),
			WithAPIKeys(APIKey{Key: "k"}), WithRecorder(rec), WithRegisterer(reg)}
	}
	count := func(g prometheus.Gatherer) int {
		mfs, err := g.Gather()
		require.NoError(t, err)
		return len(mfs)
	}

	reg := prometheus.NewRegistry()
	first, err := New(opts(reg)...)
	require.NoError(t, err)
	defer first.Shutdown(context.Background())
	_, err = New(opts(reg)...)
	require.Error(t, err, "a second relay on the same registry")
	assert.Contains(t, err.Error(), "WrapRegistererWith")

	// Only the record queue's metrics are taken: New fails on them and
	// takes back the relay metrics it had registered.
	reg2 := prometheus.NewRegistry()
	a := prometheus.WrapRegistererWith(prometheus.Labels{"relay": "a"}, reg2)
	q := NewAsyncRecorder(rec, AsyncOptions{Registerer: a})
	defer q.Close(context.Background())
	before := count(reg2)
	_, err = New(opts(a)...)
	require.Error(t, err, "a relay whose record queue's metrics are taken")
	assert.Contains(t, err.Error(), "relay_records_")
	assert.Equal(t, before, count(reg2), "a refused New left metrics registered")
	b, err := New(opts(prometheus.WrapRegistererWith(prometheus.Labels{"relay": "b"}, reg2))...)
	require.NoError(t, err, "a wrapped registerer")
	require.NoError(t, b.Shutdown(context.Background()))

	assert.Panics(t, func() { NewAsyncRecorder(rec, AsyncOptions{Registerer: a}) },
		"a second record queue on one registry")
}
