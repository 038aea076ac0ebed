package bench

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// arm is one way to reach the upstream: directly, through the bare proxy,
// or through the relay.
type arm struct {
	name string
	base string   // base URL
	key  string   // the credential the driver presents
	proc *process // nil for the direct arm
	h2c  bool     // the server speaks cleartext HTTP/2 to the upstream
	sent atomic.Int64

	wsMu    sync.Mutex
	wsUsage wsUsage // the usage of the WebSocket sessions sent since the server started
}

// addWSUsage counts the usage a WebSocket session's upstream will report.
func (a *arm) addWSUsage(u wsUsage) {
	a.wsMu.Lock()
	defer a.wsMu.Unlock()
	a.wsUsage = a.wsUsage.plus(u)
}

// takeWSUsage returns the usage counted so far and starts again from zero.
func (a *arm) takeWSUsage() wsUsage {
	a.wsMu.Lock()
	defer a.wsMu.Unlock()
	u := a.wsUsage
	a.wsUsage = wsUsage{}
	return u
}

// Arm names, in report order.
const (
	armDirect = "direct"
	armBare   = "bare"
	armRelay  = "relay"
)

// driver sends requests and checks every response byte for byte.
type driver struct {
	hc *http.Client
	gz sync.Pool // *gzip.Writer, rebuilding compressed streams to check them
}

func newDriver() *driver {
	tr := &http.Transport{
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &driver{hc: &http.Client{Transport: tr}}
}

// Request bodies: an OpenAI chat request (asking for usage in streams, so
// that the relay need not rewrite it and every arm gets the same stream)
// and an OpenAI speech request.
const (
	chatStreamBody = `{"model":"` + modelName + `","stream":true,"stream_options":{"include_usage":true},` +
		`"max_tokens":256,"messages":[{"role":"system","content":"You are a benchmark."},` +
		`{"role":"user","content":"Tell me about streams, briefly."}]}`
	chatBody = `{"model":"` + modelName + `","max_tokens":256,"messages":[{"role":"system",` +
		`"content":"You are a benchmark."},{"role":"user","content":"Tell me about streams, briefly."}]}`
	speechBody = `{"model":"tts-1","voice":"alloy","input":"Streams are sacred; never buffer them."}`
)

// outcome is what one checked response measured.
type outcome struct {
	// ttfb is the time to the response headers for JSON, and to the first
	// event or audio chunk for streams.
	ttfb   time.Duration
	events int // SSE events including the usage chunk and [DONE], or audio chunks
}

// Failure kinds, for the report.
const (
	failTransport = "transport"
	failStatus    = "status"
	failTruncated = "truncated"
	failAltered   = "altered"
	failTimeout   = "timeout"
)

// checkError is a response that failed its check.
type checkError struct {
	kind   string
	msg    string
	status int // the response's status, for failStatus
}

func (e *checkError) Error() string { return e.kind + ": " + e.msg }

func failf(kind, format string, args ...any) error {
	return &checkError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// statusOf is the response status of a failStatus error, or 0.
func statusOf(err error) int {
	var ce *checkError
	if errors.As(err, &ce) {
		return ce.status
	}
	return 0
}

// kindOf classifies an error returned by do.
func kindOf(err error) string {
	var ce *checkError
	if errors.As(err, &ce) {
		return ce.kind
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return failTimeout
	}
	return failTransport
}

// do sends one request through a and checks the whole response. lat, when
// not nil, receives each SSE event's latency (receive time minus send
// stamp). opened, when not nil, is called once the first event or chunk
// has arrived (or the request failed before that).
func (d *driver) do(ctx context.Context, a *arm, s spec, lat *[]time.Duration, opened func()) (outcome, error) {
	once := opened
	open := func() {
		if once != nil {
			once()
			once = nil
		}
	}
	defer open()
	var body string
	switch s.mode {
	case modeSSE:
		body = chatStreamBody
	case modeJSON:
		body = chatBody
	default:
		body = speechBody
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.base+s.path()+"?"+s.query(), strings.NewReader(body))
	if err != nil {
		return outcome{}, err
	}
	req.Header.Set("Authorization", "Bearer "+a.key)
	req.Header.Set("Content-Type", "application/json")
	if s.gzip {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	a.sent.Add(1)
	start := time.Now()
	resp, err := d.hc.Do(req)
	if err != nil {
		return outcome{}, wrapTransport(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return outcome{}, &checkError{kind: failStatus, status: resp.StatusCode, msg: fmt.Sprintf("%s: %s", resp.Status, snippet)}
	}
	switch s.mode {
	case modeJSON:
		return checkJSON(resp, s, time.Since(start))
	case modeSSE:
		return d.checkSSE(resp, s, start, lat, open)
	default:
		return checkAudio(resp, s, start, open)
	}
}

func wrapTransport(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return failf(failTransport, "%v", err)
}

// readErr classifies an error while reading a body that had begun well.
func readErr(err error, what string) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return failf(failTruncated, "%s: %v", what, err)
}

func checkJSON(resp *http.Response, s spec, ttfb time.Duration) (outcome, error) {
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return outcome{}, readErr(err, "reading JSON body")
	}
	if resp.ContentLength >= 0 && int64(len(got)) != resp.ContentLength {
		return outcome{}, failf(failTruncated, "JSON body has %d bytes, Content-Length %d", len(got), resp.ContentLength)
	}
	t, err := stamp(got)
	if err != nil {
		return outcome{}, failf(failAltered, "JSON body: %v", err)
	}
	want := appendCompletion(make([]byte, 0, len(got)), s.seed, s.n, t)
	if !bytes.Equal(got, want) {
		return outcome{}, failf(failAltered, "JSON body differs: got %q, want %q", clip(got), clip(want))
	}
	return outcome{ttfb: ttfb, events: 1}, nil
}

// checkSSE reads a chat stream, checking each event as it arrives: n
// content chunks in order, the usage chunk, then [DONE], each a data line
// followed by a blank line, every byte but the send stamps as the upstream
// generates them, and the content's hash. A stream asked for gzip must
// come gzip-compressed, and its compressed bytes must be the upstream's:
// once it has ended, they are rebuilt from the stamps received and
// compared; any other must come uncompressed.
func (d *driver) checkSSE(resp *http.Response, s spec, start time.Time, lat *[]time.Duration, opened func()) (outcome, error) {
	var out outcome
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		return out, failf(failAltered, "Content-Type %q", ct)
	}
	var (
		body   io.Reader     = resp.Body
		wire   *bytes.Buffer // the compressed bytes received
		stamps []int64       // of each chunk and the usage chunk, to rebuild them
	)
	switch ce := resp.Header.Get("Content-Encoding"); {
	case s.gzip && ce != "gzip":
		return out, failf(failAltered, "Content-Encoding %q, want gzip", ce)
	case !s.gzip && ce != "":
		return out, failf(failAltered, "Content-Encoding %q on a stream not asked to be compressed", ce)
	case s.gzip:
		wire = new(bytes.Buffer)
		stamps = make([]int64, 0, s.n+1)
		zr, err := gzip.NewReader(io.TeeReader(resp.Body, wire))
		if err != nil {
			return out, gzipErr(err, "the gzip header")
		}
		body = zr
	}
	br := bufio.NewReaderSize(body, 4096)
	h := fnv.New64a()
	want := make([]byte, 0, 512)
	var (
		i         int  // next content chunk expected
		usageSeen bool // the usage chunk arrived
		done      bool // [DONE] arrived
		blank     bool // a blank line is due
	)
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if err == io.EOF && len(line) == 0 && done && !blank {
				break
			}
			if err == io.EOF {
				return out, failf(failTruncated, "stream ended after %d of %d chunks (usage %v, done %v)", i, s.n, usageSeen, done)
			}
			return out, gzipErr(err, fmt.Sprintf("after %d of %d chunks", i, s.n))
		}
		now := time.Now()
		if blank {
			if len(line) != 1 {
				return out, failf(failAltered, "expected a blank line after event %d, got %q", out.events, clip(line))
			}
			blank = false
			continue
		}
		payload, ok := bytes.CutPrefix(line[:len(line)-1], []byte("data: "))
		if !ok {
			if bytes.HasPrefix(line, []byte("event: error")) {
				rest, _ := io.ReadAll(io.LimitReader(br, 300))
				return out, failf(failTruncated, "stream ended with an error event after %d chunks: %q", i, rest)
			}
			return out, failf(failAltered, "unexpected line %q after %d chunks", clip(line), i)
		}
		out.events++
		blank = true
		switch {
		case done:
			return out, failf(failAltered, "data after [DONE]: %q", clip(payload))
		case string(payload) == "[DONE]":
			if !usageSeen {
				return out, failf(failTruncated, "[DONE] after %d of %d chunks, no usage", i, s.n)
			}
			done = true
			continue
		case usageSeen:
			return out, failf(failAltered, "data after the usage chunk: %q", clip(payload))
		}
		t, err := stamp(payload)
		if err != nil {
			return out, failf(failAltered, "chunk %d: %v: %q", i, err, clip(payload))
		}
		if i < s.n {
			want = appendChunk(want[:0], s.seed, i, t)
		} else {
			want = appendUsageChunk(want[:0], s.seed, s.n, t)
		}
		if !bytes.Equal(payload, want) {
			return out, failf(failAltered, "chunk %d differs: got %q, want %q", i, clip(payload), clip(want))
		}
		if wire != nil {
			stamps = append(stamps, t)
		}
		if i == s.n {
			usageSeen = true
			continue
		}
		if c, ok := content(payload); ok {
			_, _ = h.Write(c)
		}
		if i == 0 {
			out.ttfb = now.Sub(start)
			opened()
		}
		if lat != nil {
			*lat = append(*lat, time.Duration(now.UnixNano()-t))
		}
		i++
	}
	if got, want := h.Sum64(), contentHash(s.seed, s.n); got != want {
		return out, failf(failAltered, "content hash %x, want %x", got, want)
	}
	if wire != nil {
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return out, readErr(err, "after the gzip trailer")
		}
		if want := d.gzipStream(s, stamps); !bytes.Equal(wire.Bytes(), want) {
			return out, failf(failAltered, "compressed bytes differ from the upstream's (%d bytes, want %d)", wire.Len(), len(want))
		}
	}
	return out, nil
}

// gzipStream rebuilds the compressed bytes of a gzip stream whose chunks
// were sent at stamps (appendGzipStream), with a reused writer.
func (d *driver) gzipStream(s spec, stamps []int64) []byte {
	zw, _ := d.gz.Get().(*gzip.Writer)
	if zw == nil {
		zw = gzip.NewWriter(io.Discard)
	}
	defer d.gz.Put(zw)
	return appendGzipStream(nil, zw, s, stamps)
}

// gzipErr classifies an error while reading a body that had begun well,
// telling a compressed stream that was altered (a corrupt block, a bad
// checksum or header) from one cut short.
func gzipErr(err error, what string) error {
	var corrupt flate.CorruptInputError
	if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.As(err, &corrupt) {
		return failf(failAltered, "%s: %v", what, err)
	}
	return readErr(err, what)
}

// content returns the delta content of a chunk.
func content(p []byte) ([]byte, bool) {
	const key = `"content":"`
	i := bytes.Index(p, []byte(key))
	if i < 0 {
		return nil, false
	}
	p = p[i+len(key):]
	j := bytes.IndexByte(p, '"')
	if j < 0 {
		return nil, false
	}
	return p[:j], true
}

func checkAudio(resp *http.Response, s spec, start time.Time, opened func()) (outcome, error) {
	var out outcome
	if ct := resp.Header.Get("Content-Type"); ct != "audio/mpeg" {
		return out, failf(failAltered, "Content-Type %q", ct)
	}
	h := fnv.New64a()
	buf := make([]byte, 32<<10)
	var total int
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if total == 0 {
				out.ttfb = time.Since(start)
				opened()
			}
			total += n
			_, _ = h.Write(buf[:n])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return out, readErr(err, fmt.Sprintf("audio after %d of %d bytes", total, s.n*s.size))
		}
	}
	out.events = s.n
	if total != s.n*s.size {
		return out, failf(failTruncated, "audio has %d of %d bytes", total, s.n*s.size)
	}
	if got, want := h.Sum64(), audioHash(s.seed, s.n, s.size); got != want {
		return out, failf(failAltered, "audio hash %x, want %x", got, want)
	}
	return out, nil
}

// clip shortens a payload for an error message.
func clip(b []byte) string {
	const max = 160
	if len(b) > max {
		return string(b[:max]) + "…(" + strconv.Itoa(len(b)) + " bytes)"
	}
	return string(b)
}
