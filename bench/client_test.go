package bench

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/streamrelay/relay/internal/testkit"
)

// tamperWriter rewrites each write of the mock upstream (one SSE event,
// one audio chunk or a whole JSON body) the way a faulty proxy might.
type tamperWriter struct {
	http.ResponseWriter
	n      int                          // writes so far
	tamper func(i int, b []byte) []byte // nil result: drop the write
	abort  int                          // when > 0, abort before write abort
}

func (tw *tamperWriter) Write(b []byte) (int, error) {
	i := tw.n
	tw.n++
	if tw.abort > 0 && i == tw.abort {
		panic(http.ErrAbortHandler)
	}
	if tw.tamper != nil {
		if out := tw.tamper(i, bytes.Clone(b)); out != nil {
			if _, err := tw.ResponseWriter.Write(out); err != nil {
				return 0, err
			}
		}
	}
	if tw.tamper == nil {
		return tw.ResponseWriter.Write(b)
	}
	return len(b), nil
}

func (tw *tamperWriter) Flush() { http.NewResponseController(tw.ResponseWriter).Flush() }

// tamperServer serves the mock upstream through a tampering writer.
func tamperServer(t *testing.T, tamper func(int, []byte) []byte, abort int) *arm {
	t.Helper()
	u := newUpstream()
	t.Cleanup(u.close)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.ServeHTTP(&tamperWriter{ResponseWriter: w, tamper: tamper, abort: abort}, r)
	}))
	t.Cleanup(srv.Close)
	return &arm{name: armDirect, base: srv.URL, key: upstreamKey}
}

func flipLast(b []byte) []byte {
	// The byte before the closing `"}` of a chunk is part of its token.
	i := bytes.LastIndex(b, []byte(`"}`))
	if i > 0 {
		b[i-1] ^= 1
	}
	return b
}

// TestDriverDetects checks that the driver accepts intact responses and
// classifies every kind of damage.
func TestDriverDetects(t *testing.T) {
	sse := spec{mode: modeSSE, seed: 7, n: 10}
	gz := spec{mode: modeSSE, seed: 16, n: 10, gzip: true}
	tests := []struct {
		name   string
		s      spec
		tamper func(int, []byte) []byte
		abort  int
		key    string
		want   string // "" for an intact response, else a failure kind
	}{
		{name: "sse intact", s: sse},
		{name: "sse with interval intact", s: spec{mode: modeSSE, seed: 8, n: 5, interval: time.Microsecond}},
		{name: "json intact", s: spec{mode: modeJSON, seed: 9, n: 40}},
		{name: "audio intact", s: spec{mode: modeAudio, seed: 10, n: 4, size: 1000}},
		{name: "sse token altered", s: sse, want: failAltered,
			tamper: func(i int, b []byte) []byte {
				if i == 3 {
					return flipLast(b)
				}
				return b
			}},
		{name: "sse event dropped", s: sse, want: failAltered,
			tamper: func(i int, b []byte) []byte {
				if i == 5 {
					return nil
				}
				return b
			}},
		{name: "sse event duplicated", s: sse, want: failAltered,
			tamper: func(i int, b []byte) []byte {
				if i == 2 {
					return append(b, b...)
				}
				return b
			}},
		{name: "sse usage and done dropped", s: sse, want: failTruncated,
			tamper: func(i int, b []byte) []byte {
				if i == sse.n {
					return nil
				}
				return b
			}},
		{name: "sse cut mid-stream", s: sse, abort: 4, want: failTruncated},
		{name: "sse ended by an error event", s: sse, want: failTruncated,
			tamper: func(i int, b []byte) []byte {
				if i == 6 {
					return []byte("event: error\ndata: {\"error\":{\"message\":\"cut\"}}\n\n")
				}
				if i > 6 {
					return nil
				}
				return b
			}},
		{name: "sse line ending altered", s: sse, want: failAltered,
			tamper: func(i int, b []byte) []byte {
				if i == 1 {
					return bytes.Replace(b, []byte("\n\n"), []byte("\nx\n"), 1)
				}
				return b
			}},
		{name: "json altered", s: spec{mode: modeJSON, seed: 11, n: 40}, want: failAltered,
			tamper: func(i int, b []byte) []byte { return flipLast(b) }},
		{name: "audio chunk dropped", s: spec{mode: modeAudio, seed: 12, n: 4, size: 1000}, want: failTruncated,
			tamper: func(i int, b []byte) []byte {
				if i == 2 {
					return nil
				}
				return b
			}},
		{name: "audio byte altered", s: spec{mode: modeAudio, seed: 13, n: 4, size: 1000}, want: failAltered,
			tamper: func(i int, b []byte) []byte {
				if i == 1 {
					b[10] ^= 0x80
				}
				return b
			}},
		{name: "audio cut", s: spec{mode: modeAudio, seed: 14, n: 4, size: 1000}, abort: 2, want: failTruncated},
		{name: "wrong upstream key", s: sse, key: clientKey, want: failStatus},
		{name: "sse gzip intact", s: gz},
		// The gzip header is the compressor's first write; its OS byte
		// changes no decoded byte, only the compressed ones.
		{name: "sse gzip recompressed", s: gz, want: failAltered,
			tamper: func(i int, b []byte) []byte {
				if i == 0 {
					b[9] ^= 1
				}
				return b
			}},
		{name: "sse gzip cut mid-stream", s: gz, abort: 6, want: failTruncated},
	}
	d := newDriver()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := tamperServer(t, tt.tamper, tt.abort)
			if tt.key != "" {
				a.key = tt.key
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var lat []time.Duration
			out, err := d.do(ctx, a, tt.s, &lat, nil)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("intact response failed its check: %v", err)
				}
				if tt.s.mode == modeSSE && (len(lat) != tt.s.n || out.events != tt.s.n+2) {
					t.Errorf("got %d latencies and %d events, want %d and %d", len(lat), out.events, tt.s.n, tt.s.n+2)
				}
				return
			}
			if err == nil {
				t.Fatalf("damaged response passed its check")
			}
			if got := kindOf(err); got != tt.want {
				t.Errorf("failure kind %q (%v), want %q", got, err, tt.want)
			}
			// The mock upstream refuses a wrong key with 401; the hostile
			// scenario tells refusals apart by this status.
			wantStatus := 0
			if tt.want == failStatus {
				wantStatus = http.StatusUnauthorized
			}
			if statusOf(err) != wantStatus {
				t.Errorf("status %d, want %d", statusOf(err), wantStatus)
			}
		})
	}
}

// TestDriverDetectsGzipDropped: a stream asked for gzip that a proxy
// fetched uncompressed (by dropping the client's Accept-Encoding) fails
// its check, although every event is intact.
func TestDriverDetectsGzipDropped(t *testing.T) {
	u := newUpstream()
	t.Cleanup(u.close)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Accept-Encoding")
		u.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	a := &arm{name: armDirect, base: srv.URL, key: upstreamKey}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := newDriver().do(ctx, a, spec{mode: modeSSE, seed: 17, n: 5, gzip: true}, nil, nil)
	if kindOf(err) != failAltered {
		t.Fatalf("got %v, want an altered stream", err)
	}
}

// TestUpstreamHold checks that a held stream waits after its first event
// until its group is released, and then completes intact.
func TestUpstreamHold(t *testing.T) {
	u := newUpstream()
	t.Cleanup(u.close)
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	ctl := httptest.NewServer(u.control())
	t.Cleanup(ctl.Close)
	a := &arm{name: armDirect, base: srv.URL, key: upstreamKey}

	opened := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := newDriver().do(ctx, a, spec{mode: modeSSE, seed: 3, n: heldEvents, hold: "g"}, nil, func() { close(opened) })
		done <- err
	}()
	select {
	case <-opened:
	case err := <-done:
		t.Fatalf("the held stream ended before it opened: %v", err)
	case <-time.After(testkit.Timeout):
		t.Fatal("the held stream did not open")
	}
	// The stream is open: it must not end before the release.
	select {
	case err := <-done:
		t.Fatalf("held stream ended before its release: %v", err)
	default:
	}
	// The upstream counts a stream as held just after flushing its first
	// event, so the client can see the event first: poll, bounded.
	var held bytes.Buffer
	for i := 0; i < 1000 && strings.TrimSpace(held.String()) != "1"; i++ {
		held.Reset()
		resp, err := http.Get(ctl.URL + "/held")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = held.ReadFrom(resp.Body)
		resp.Body.Close()
		if strings.TrimSpace(held.String()) != "1" {
			runtime.Gosched()
		}
	}
	if strings.TrimSpace(held.String()) != "1" {
		t.Errorf("upstream holds %q streams, want 1", held.String())
	}
	resp, err := http.Post(ctl.URL+"/release?hold=g", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := testkit.Recv(t, done, "the released stream did not end"); err != nil {
		t.Fatalf("released stream: %v", err)
	}
}

// TestRawClient checks the lean client against the mock upstream, over
// keep-alive, and against a chunked JSON response.
func TestRawClient(t *testing.T) {
	u := newUpstream()
	t.Cleanup(u.close)
	plain := httptest.NewServer(u)
	t.Cleanup(plain.Close)
	chunked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Writing through a flush drops the Content-Length: the body is chunked.
		u.ServeHTTP(&tamperWriter{ResponseWriter: w, tamper: func(_ int, b []byte) []byte {
			w.Header().Del("Content-Length")
			half := len(b) / 2
			_, _ = w.Write(b[:half])
			http.NewResponseController(w).Flush()
			return b[half:]
		}}, r)
	}))
	t.Cleanup(chunked.Close)
	for _, tt := range []struct {
		name string
		url  string
	}{{"content-length", plain.URL}, {"chunked", chunked.URL}} {
		t.Run(tt.name, func(t *testing.T) {
			c := newRawClient(strings.TrimPrefix(tt.url, "http://"))
			defer c.close()
			for i := range 3 {
				if err := c.do(spec{mode: modeJSON, seed: uint64(100 + i), n: 40}, upstreamKey); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
			}
			if err := c.do(spec{mode: modeJSON, seed: 1, n: 40}, clientKey); kindOf(err) != failStatus {
				t.Errorf("request with the wrong key: got %v, want a status failure", err)
			}
		})
	}
}
