package relay

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Micro-benchmarks of the hot path. Each handler benchmark runs the relay
// and a bare httputil.ReverseProxy over the same in-memory transport, so
// their results compare directly (see BENCHMARKS.md for benchstat use):
//
//	go test -run '^$' -bench . -benchmem -count 10 | tee new.txt

const benchEvents = 200

// benchStream is an OpenAI-style stream of benchEvents content chunks.
func benchStream() [][]byte {
	evs := make([][]byte, 0, benchEvents+2)
	for i := range benchEvents {
		evs = append(evs, fmt.Appendf(nil, `data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"tok%d"}}]}`+"\n\n", i))
	}
	evs = append(evs, []byte(`data: {"id":"c","model":"m","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":200}}`+"\n\n"), []byte("data: [DONE]\n\n"))
	return evs
}

// eventReader returns one event per Read, as a network read of a paced
// stream would; an event larger than the read buffer takes several.
type eventReader struct {
	evs [][]byte
	i   int
	off int // bytes of evs[i] already read
}

func (r *eventReader) Read(p []byte) (int, error) {
	if r.i >= len(r.evs) {
		return 0, io.EOF
	}
	n := copy(p, r.evs[r.i][r.off:])
	if r.off += n; r.off == len(r.evs[r.i]) {
		r.i, r.off = r.i+1, 0
	}
	return n, nil
}

func (r *eventReader) Close() error { return nil }

// memTransport answers every request from memory.
type memTransport struct {
	sse  [][]byte
	gz   [][]byte // sse gzip-compressed, flushed per event: one piece per event, then the trailer
	json []byte
	pool sync.Pool
}

// gzipEvents compresses evs as a provider compressing SSE does, flushing
// after each event: the bytes of each event, then the trailer's.
func gzipEvents(evs [][]byte) [][]byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	out := make([][]byte, 0, len(evs)+1)
	for _, ev := range evs {
		_, _ = zw.Write(ev)
		_ = zw.Flush()
		out = append(out, bytes.Clone(buf.Bytes()))
		buf.Reset()
	}
	_ = zw.Close()
	return append(out, bytes.Clone(buf.Bytes()))
}

func (m *memTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	if strings.HasSuffix(req.URL.Path, "/json") {
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(bytes.NewReader(m.json)), ContentLength: int64(len(m.json)), Request: req}, nil
	}
	r, _ := m.pool.Get().(*eventReader)
	if r == nil {
		r = &eventReader{}
	}
	r.evs, r.i, r.off = m.sse, 0, 0
	h := http.Header{"Content-Type": {"text/event-stream"}}
	if strings.HasSuffix(req.URL.Path, "/gzip") {
		r.evs = m.gz
		h["Content-Encoding"] = []string{"gzip"}
	}
	return &http.Response{StatusCode: 200, Header: h, Body: r, ContentLength: -1, Request: req}, nil
}

// discardWriter is a flushable ResponseWriter that keeps nothing.
type discardWriter struct {
	h http.Header
	n int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { d.n += len(b); return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Flush()                      {}

// Deadlines are accepted, as a real connection's are (an unsupported
// call would cost an error allocation that real servers do not).
func (d *discardWriter) SetReadDeadline(time.Time) error  { return nil }
func (d *discardWriter) SetWriteDeadline(time.Time) error { return nil }

func benchHandlers(b *testing.B) (map[string]http.Handler, *memTransport) {
	b.Helper()
	tr := &memTransport{sse: benchStream(), gz: gzipEvents(benchStream()), json: []byte(`{"id":"c","model":"m","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":1}}`)}
	rl, err := New(
		WithRoutes(Route{Name: "r", Prefix: "/", Upstream: "http://upstream.test", AuthHeader: "Authorization", AuthValue: "sk-up"}),
		WithAPIKeys(APIKey{Key: testKey, Tenant: "t"}),
		WithRateLimit(Limits{RequestsPerMinute: 1e12, Burst: 1 << 30}),
		WithRegisterer(prometheus.NewRegistry()),
		WithRecorder(NopRecorder{}),
		WithTransport(tr),
	)
	if err != nil {
		b.Fatal(err)
	}
	target, _ := url.Parse("http://upstream.test")
	bare := &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
		Transport:  tr,
		BufferPool: newBufferPool(),
		// FlushInterval 0 flushes SSE and unknown-length bodies on every
		// write, as the relay does; -1 would also flush known-length JSON
		// from a timer goroutine, work the relay does not do.
	}
	return map[string]http.Handler{"bare": bare, "relay": rl}, tr
}

// bufferPool is the bare proxy's httputil.BufferPool, as the fairest
// plain proxy would have.
type bufferPool struct{ p *sync.Pool }

func newBufferPool() bufferPool {
	return bufferPool{&sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b bufferPool) Put(x []byte) { b.p.Put(&x) }

func benchRequest(path string) *http.Request {
	req := httptest.NewRequest("POST", path, strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hello"}]}`))
	req.Header.Set("Authorization", "Bearer "+testKey)
	req.Header.Set("Content-Type", "application/json")
	return req
}

// BenchmarkHandler relays one stream of 200 events (sse; sse-gzip, the
// same stream gzip-compressed and flushed per event, which the relay
// decodes on a copy to observe it) or one small non-streamed response
// (json) per op, through the relay and the bare proxy. For sse,
// allocs/op divided by 200 bounds the allocations per event.
func BenchmarkHandler(b *testing.B) {
	hs, _ := benchHandlers(b)
	for _, kind := range []struct{ name, path string }{{"sse", "/v1/chat/completions"}, {"sse-gzip", "/v1/chat/gzip"}, {"json", "/v1/json"}} {
		for _, name := range []string{"bare", "relay"} {
			b.Run(kind.name+"/"+name, func(b *testing.B) {
				h := hs[name]
				w := &discardWriter{h: http.Header{}}
				b.ReportAllocs()
				for b.Loop() {
					clear(w.h)
					h.ServeHTTP(w, benchRequest(kind.path))
				}
				if kind.name != "json" {
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchEvents, "ns/event")
				}
			})
		}
	}
}

// BenchmarkSSEParser parses one typical event per op.
func BenchmarkSSEParser(b *testing.B) {
	ev := benchStream()[0]
	p := &sseParser{maxData: maxObservedHead, tailCap: observedTail, onEvent: func(_ time.Time, name, data, tail []byte, truncated bool) {}}
	b.SetBytes(int64(len(ev)))
	b.ReportAllocs()
	for b.Loop() {
		p.feed(ev, time.Time{})
	}
}

// TestNoAllocationPerEvent checks the steady state the benchmarks report:
// a stream of 200 events costs no more allocations than one of 2 events.
func TestNoAllocationPerEvent(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without -race (.ci/run runs one)")
	}
	tr := &memTransport{}
	rl, err := New(WithRoutes(Route{Name: "r", Prefix: "/", Upstream: "http://upstream.test"}),
		WithAPIKeys(APIKey{Key: testKey}), WithTransport(tr), WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	evs := benchStream()
	measure := func(n int) float64 {
		tr.sse = append(append([][]byte{}, evs[:n]...), evs[len(evs)-2:]...)
		w := &discardWriter{h: http.Header{}}
		return testing.AllocsPerRun(200, func() {
			clear(w.h)
			rl.ServeHTTP(w, benchRequest("/v1/chat/completions"))
		})
	}
	short, long := measure(2), measure(benchEvents)
	if long > short {
		t.Fatalf("allocations grow with events: %v for 2 events, %v for %d", short, long, benchEvents)
	}
}

// TestNoAllocationPerLargeEvent: a stream of large events (base64 audio
// deltas, partial images) reuses its observation buffers from one event
// to the next, budget charge included: 2n events cost no more allocations
// than n, whether the events are observed whole (20 KiB) or through a
// head and a tail window (100 KiB), and the budget is back to zero after
// each stream.
func TestNoAllocationPerLargeEvent(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without -race (.ci/run runs one)")
	}
	tr := &memTransport{}
	rl, err := New(WithRoutes(Route{Name: "r", Prefix: "/", Upstream: "http://upstream.test"}),
		WithAPIKeys(APIKey{Key: testKey}), WithTransport(tr), WithRegisterer(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	tail := benchStream()
	tail = tail[len(tail)-2:] // usage, [DONE]
	for _, size := range []int{20 << 10, 100 << 10} {
		ev := []byte(`data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"` +
			strings.Repeat("QUJD", size/4) + `"}}]}` + "\n\n")
		measure := func(n int) float64 {
			tr.sse = tr.sse[:0]
			for range n {
				tr.sse = append(tr.sse, ev)
			}
			tr.sse = append(tr.sse, tail...)
			w := &discardWriter{h: http.Header{}}
			return testing.AllocsPerRun(20, func() {
				clear(w.h)
				rl.ServeHTTP(w, benchRequest("/v1/chat/completions"))
			})
		}
		// Thirty more events must not add allocations: even one per sixth
		// event adds five. A difference of one or two is the runtime's (a
		// sync.Pool emptied by a GC that a loaded machine brings into the
		// longer run), not the relay's.
		short, long := measure(10), measure(40)
		if long-short >= 5 {
			t.Errorf("%d KiB events: allocations grow with events: %v for 10 events, %v for 40", size>>10, short, long)
		}
		if u := rl.observed.used.Load(); u != 0 {
			t.Errorf("%d KiB events: %d bytes of the observation budget still held", size>>10, u)
		}
		if p := rl.observed.peak.Load(); p == 0 {
			t.Errorf("%d KiB events: the budget was never charged: not a large event", size>>10)
		}
	}
}

// BenchmarkHold relays a short stream (a role chunk, one content chunk,
// [DONE]) per op through a route of two upstreams, held until its first
// content (held) and not (unheld), and through the bare proxy: held minus
// unheld is what the hold adds to time to first content (the three events
// arrive in three reads; the hold reads the first two before it sends the
// headers).
func BenchmarkHold(b *testing.B) {
	tr := &memTransport{sse: [][]byte{
		[]byte(`data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}` + "\n\n"),
		[]byte(`data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"content":"Hi"}}]}` + "\n\n"),
		[]byte("data: [DONE]\n\n"),
	}}
	handlers := map[string]http.Handler{}
	for _, name := range []string{"held", "unheld"} {
		rl, err := New(
			WithRoutes(Route{Name: "r", Prefix: "/", NoFirstContentHold: name == "unheld", Upstreams: []Upstream{
				{Name: "a", URL: "http://a.test", AuthHeader: "Authorization", AuthValue: "sk-up"},
				{Name: "b", URL: "http://b.test", AuthHeader: "Authorization", AuthValue: "sk-up"},
			}}),
			WithAPIKeys(APIKey{Key: testKey, Tenant: "t"}),
			WithRegisterer(prometheus.NewRegistry()),
			WithRecorder(NopRecorder{}),
			WithTransport(tr),
		)
		if err != nil {
			b.Fatal(err)
		}
		handlers[name] = rl
	}
	target, _ := url.Parse("http://a.test")
	handlers["bare"] = &httputil.ReverseProxy{
		Rewrite:    func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport:  tr,
		BufferPool: newBufferPool(),
	}
	for _, name := range []string{"bare", "unheld", "held"} {
		b.Run(name, func(b *testing.B) {
			h := handlers[name]
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				h.ServeHTTP(w, benchRequest("/v1/chat/completions"))
			}
		})
	}
}
