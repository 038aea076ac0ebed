package bench

import (
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// upstream is the mock provider. It serves OpenAI-style SSE and JSON chat
// completions and chunked audio, shaped by the request's spec, and stamps
// every payload with the time it was sent. It answers 401 unless the
// upstream key is presented and 400 if the client's key reached it, so a
// proxy that fails to swap credentials cannot pass.
//
// It is safe for concurrent use. Streams asked to hold wait, after their
// first event, until their hold group is released or the upstream closes.
type upstream struct {
	mu    sync.Mutex
	gates map[string]chan struct{}
	held  atomic.Int64
	done  chan struct{} // closed by close: ends every hold
	once  sync.Once
	gz    sync.Pool // *gzip.Writer, reset for each compressed stream
}

func newUpstream() *upstream {
	return &upstream{gates: make(map[string]chan struct{}), done: make(chan struct{})}
}

// close releases every held stream.
func (u *upstream) close() { u.once.Do(func() { close(u.done) }) }

// gate returns the channel a hold group waits on.
func (u *upstream) gate(name string) chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	g, ok := u.gates[name]
	if !ok {
		g = make(chan struct{})
		u.gates[name] = g
	}
	return g
}

// release lets the streams of a hold group, present and future, go on.
func (u *upstream) release(name string) {
	g := u.gate(name)
	u.mu.Lock()
	defer u.mu.Unlock()
	select {
	case <-g:
	default:
		close(g)
	}
}

// hold counts a stream as held from before its first event is sent, so
// that a client that has the event can rely on the count, until the
// returned function runs.
func (u *upstream) hold() func() {
	u.held.Add(1)
	return func() { u.held.Add(-1) }
}

// wait blocks a stream of a hold group until it is released.
func (u *upstream) wait(ctx context.Context, name string) bool {
	select {
	case <-u.gate(name):
		return true
	case <-u.done:
		return true
	case <-ctx.Done():
		return false
	}
}

// control serves the upstream's control endpoints: POST /release?hold=G
// and GET /held (the number of streams of hold groups open now, counted
// from before their first event is sent).
func (u *upstream) control() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /release", func(w http.ResponseWriter, r *http.Request) {
		u.release(r.URL.Query().Get("hold"))
	})
	mux.HandleFunc("GET /held", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strconv.FormatInt(u.held.Load(), 10))
	})
	return mux
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+upstreamKey {
		http.Error(w, `{"error":{"message":"bad upstream key"}}`, http.StatusUnauthorized)
		return
	}
	for _, vv := range r.Header {
		for _, v := range vv {
			if strings.Contains(v, clientKey) {
				http.Error(w, `{"error":{"message":"the client key reached the upstream"}}`, http.StatusBadRequest)
				return
			}
		}
	}
	if r.URL.Path == wsPath {
		u.serveWS(w, r)
		return
	}
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		return
	}
	s, err := parseSpec(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	var tm *time.Timer
	if s.delay > 0 || s.interval > 0 {
		tm = time.NewTimer(time.Hour)
		defer tm.Stop()
	}
	if s.delay > 0 && !pause(ctx, tm, s.delay) {
		return
	}
	switch s.mode {
	case modeJSON:
		u.serveJSON(w, s)
	case modeSSE:
		u.serveSSE(ctx, w, s, tm, acceptsGzip(r.Header))
	case modeAudio:
		u.serveAudio(ctx, w, s, tm)
	}
}

// pause waits for d, reusing the request's timer, unless ctx ends first.
func pause(ctx context.Context, tm *time.Timer, d time.Duration) bool {
	tm.Reset(d)
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (u *upstream) serveJSON(w http.ResponseWriter, s spec) {
	body := appendCompletion(make([]byte, 0, 256+6*s.n), s.seed, s.n, time.Now().UnixNano())
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
}

// serveSSE streams s.n chunks, then the usage chunk and [DONE] in one
// write. A spec asking for gzip, from a client that accepts it, gets the
// stream gzip-compressed and the compressor flushed after each chunk, as
// providers that compress streams do (appendGzipStream rebuilds these
// bytes for the driver's check).
func (u *upstream) serveSSE(ctx context.Context, w http.ResponseWriter, s spec, tm *time.Timer, gzipOK bool) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	rc := http.NewResponseController(w)
	if s.hold != "" {
		defer u.hold()()
	}
	var out io.Writer = w
	var zw *gzip.Writer
	if s.gzip && gzipOK {
		h.Set("Content-Encoding", "gzip")
		zw = u.gzipWriter(w)
		defer u.gz.Put(zw)
		out = zw
	}
	buf := make([]byte, 0, 512)
	for i := range s.n {
		if i > 0 && s.interval > 0 && !pause(ctx, tm, s.interval) {
			return
		}
		if s.failAt > 0 && i == s.failAt {
			panic(http.ErrAbortHandler) // cut the connection mid-stream
		}
		buf = append(buf[:0], "data: "...)
		buf = appendChunk(buf, s.seed, i, time.Now().UnixNano())
		buf = append(buf, "\n\n"...)
		if _, err := out.Write(buf); err != nil {
			return
		}
		if zw != nil && zw.Flush() != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		if i == 0 && s.hold != "" && !u.wait(ctx, s.hold) {
			return
		}
	}
	buf = append(buf[:0], "data: "...)
	buf = appendUsageChunk(buf, s.seed, s.n, time.Now().UnixNano())
	buf = append(buf, "\n\ndata: [DONE]\n\n"...)
	_, _ = out.Write(buf)
	if zw != nil {
		_ = zw.Close()
	}
}

// gzipWriter returns a gzip writer onto w, reused from stream to stream.
func (u *upstream) gzipWriter(w io.Writer) *gzip.Writer {
	if zw, ok := u.gz.Get().(*gzip.Writer); ok {
		zw.Reset(w)
		return zw
	}
	return gzip.NewWriter(w)
}

// acceptsGzip reports whether a request's Accept-Encoding offers gzip.
func acceptsGzip(h http.Header) bool {
	for _, v := range h.Values("Accept-Encoding") {
		for e := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(e, ";")
			if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
				continue
			}
			q := 1.0
			for p := range strings.SplitSeq(params, ";") {
				if k, v, _ := strings.Cut(p, "="); strings.EqualFold(strings.TrimSpace(k), "q") {
					q, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
				}
			}
			return q > 0
		}
	}
	return false
}

func (u *upstream) serveAudio(ctx context.Context, w http.ResponseWriter, s spec, tm *time.Timer) {
	w.Header().Set("Content-Type", "audio/mpeg")
	rc := http.NewResponseController(w)
	if s.hold != "" {
		defer u.hold()()
	}
	buf := make([]byte, 0, s.size)
	for i := range s.n {
		if i > 0 && s.interval > 0 && !pause(ctx, tm, s.interval) {
			return
		}
		if s.failAt > 0 && i == s.failAt {
			panic(http.ErrAbortHandler)
		}
		buf = appendAudio(buf[:0], s.seed, i, s.size)
		if _, err := w.Write(buf); err != nil {
			return
		}
		if rc.Flush() != nil {
			return
		}
		if i == 0 && s.hold != "" && !u.wait(ctx, s.hold) {
			return
		}
	}
}
