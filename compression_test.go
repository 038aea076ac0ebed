package relay

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// contentEncoder is a content coding as an upstream produces it.
type contentEncoder struct {
	name   string // Content-Encoding; "" for none
	writer func(io.Writer) flushWriteCloser
	reader func(io.Reader) (io.Reader, error) // the client's decoder
}

type flushWriteCloser interface {
	io.WriteCloser
	Flush() error
}

var (
	plainEnc = contentEncoder{"", nil, func(r io.Reader) (io.Reader, error) { return r, nil }}
	gzipEnc  = contentEncoder{"gzip", func(w io.Writer) flushWriteCloser { return gzip.NewWriter(w) },
		func(r io.Reader) (io.Reader, error) { return gzip.NewReader(r) }}
	// deflate as RFC 9110 defines it: zlib-wrapped.
	deflateEnc = contentEncoder{"deflate", func(w io.Writer) flushWriteCloser { return zlib.NewWriter(w) },
		func(r io.Reader) (io.Reader, error) { return zlib.NewReader(r) }}
	// deflate as some servers send it: raw.
	rawDeflateEnc = contentEncoder{"deflate", func(w io.Writer) flushWriteCloser {
		fw, _ := flate.NewWriter(w, flate.DefaultCompression)
		return fw
	}, func(r io.Reader) (io.Reader, error) { return flate.NewReader(r), nil }}
)

// encodePieces encodes pieces as an upstream that flushes its encoder
// after each (gzip.Writer.Flush) does: the bytes sent for each piece, and
// last those that close the encoding (the trailer; empty without one).
func encodePieces(t testing.TB, enc contentEncoder, pieces [][]byte) [][]byte {
	t.Helper()
	if enc.writer == nil {
		return append(append([][]byte{}, pieces...), nil)
	}
	var buf bytes.Buffer
	zw := enc.writer(&buf)
	out := make([][]byte, 0, len(pieces)+1)
	for _, p := range pieces {
		_, err := zw.Write(p)
		require.NoError(t, err)
		require.NoError(t, zw.Flush())
		out = append(out, bytes.Clone(buf.Bytes()))
		buf.Reset()
	}
	require.NoError(t, zw.Close())
	return append(out, bytes.Clone(buf.Bytes()))
}

// blankLine ends an SSE event, whatever the line endings.
var blankLine = regexp.MustCompile(`(\r\n|\r|\n)(\r\n|\r|\n)`)

// sseEvents splits a recorded stream after each blank line: its events,
// byte for byte, as an upstream sends them one by one.
func sseEvents(stream []byte) [][]byte {
	var out [][]byte
	for len(stream) > 0 {
		loc := blankLine.FindIndex(stream)
		if loc == nil {
			return append(out, stream)
		}
		out = append(out, stream[:loc[1]])
		stream = stream[loc[1]:]
	}
	return out
}

// steppedClock is a test clock that only the upstream moves.
type steppedClock struct {
	base time.Time
	secs atomic.Int64
}

func (c *steppedClock) Now() time.Time { return c.base.Add(time.Duration(c.secs.Load()) * time.Second) }

// lockstepRun relays pieces, encoded with enc, one at a time: the upstream
// moves the clock a second on and sends piece k, then waits until the
// client has decoded it before the next. Every read of piece k is thus
// made at second k+1, whatever the encoding, so that the record's timings
// compare exactly between encodings. It returns what the client got and
// the record.
func lockstepRun(t *testing.T, enc contentEncoder, prov Provider, path string, pieces [][]byte, opts ...Option) ([]byte, []byte, Record) {
	t.Helper()
	wire := encodePieces(t, enc, pieces)
	clock := &steppedClock{base: time.Unix(1700000000, 0)}
	acks := make(chan struct{})
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		if enc.name != "" {
			w.Header().Set("Content-Encoding", enc.name)
		}
		for k, b := range wire {
			if k > 0 {
				select {
				case <-acks:
				case <-r.Context().Done():
					return
				}
			}
			if k < len(pieces) {
				clock.secs.Add(1)
			}
			_, _ = w.Write(b)
			w.(http.Flusher).Flush()
		}
	}, Route{Prefix: "/", Provider: prov}, append([]Option{WithClock(clock), WithModels("m-known")}, opts...)...)
	req := e.request("POST", path, `{"model":"m-known","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`)
	req.Header.Set("Accept-Encoding", "gzip, deflate")
	resp, err := plainClient(t).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	require.Equal(t, enc.name, resp.Header.Get("Content-Encoding"))
	var raw bytes.Buffer
	tee := io.TeeReader(resp.Body, &raw)
	dec, err := enc.reader(tee)
	require.NoError(t, err)
	for k, p := range pieces {
		got := make([]byte, len(p))
		_, err := io.ReadFull(dec, got)
		require.NoError(t, err, "piece %d", k)
		require.Equal(t, string(p), string(got), "piece %d", k)
		testkit.Send(t, acks, struct{}{}, "the upstream did not wait for the client")
	}
	rest, err := io.ReadAll(dec)
	require.NoError(t, err, "the client's decoder")
	require.Empty(t, rest)
	_, err = io.Copy(io.Discard, tee)
	require.NoError(t, err)
	e.handled()
	return raw.Bytes(), bytes.Join(wire, nil), e.lastRecord()
}

// plainClient is a client that sends Accept-Encoding only when asked to
// and never decodes: it sees the bytes the relay sent.
func plainClient(t testing.TB) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// TestCompressedStreamsObserved replays recorded provider streams gzip-
// and deflate-encoded, flushed per event, as providers compress SSE: the
// client gets the upstream's compressed bytes exactly, and the record
// holds what the plain stream's does: usage, model, time to first token,
// events and an in-stream error.
func TestCompressedStreamsObserved(t *testing.T) {
	dir := sharedFixtures(t)
	for _, tt := range []struct {
		file string
		prov Provider
		path string
	}{
		{"openai_chat_stream_text_include_usage.sse", ProviderOpenAI, "/v1/chat/completions"},
		{"anthropic_messages_stream_text.sse", ProviderAnthropic, "/v1/messages"},
		{"anthropic_messages_stream_overloaded_error_CONSTRUCTED.sse", ProviderAnthropic, "/v1/messages"},
		{"gemini_native_stream_crlf.sse", ProviderOpenAI, "/v1beta/models/m:streamGenerateContent"},
		{"openai_responses_stream_text_2025-03.sse", ProviderOpenAI, "/v1/responses"},
	} {
		t.Run(tt.file, func(t *testing.T) {
			stream, err := os.ReadFile(filepath.Join(dir, tt.file))
			require.NoError(t, err)
			pieces := sseEvents(stream)
			require.GreaterOrEqual(t, len(pieces), 3)
			got, _, plain := lockstepRun(t, plainEnc, tt.prov, tt.path, pieces)
			require.Equal(t, string(stream), string(got))
			require.NotZero(t, plain.Usage.Total(), "the plain run must find usage for the comparison to mean anything")
			require.Positive(t, plain.TTFT)
			require.Positive(t, plain.Events)
			if strings.Contains(tt.file, "error") {
				require.Equal(t, ErrTypeUpstreamEvent, plain.ErrorType)
			}
			for _, enc := range []struct {
				name string
				enc  contentEncoder
			}{{"gzip", gzipEnc}, {"deflate", deflateEnc}, {"raw deflate", rawDeflateEnc}} {
				t.Run(enc.name, func(t *testing.T) {
					got, sent, rec := lockstepRun(t, enc.enc, tt.prov, tt.path, pieces)
					assert.True(t, bytes.Equal(sent, got), "the client's bytes differ from the upstream's compressed bytes")
					assert.Equal(t, plain.Usage, rec.Usage)
					assert.Equal(t, plain.Model, rec.Model)
					assert.Equal(t, plain.ResponseModel, rec.ResponseModel)
					assert.Equal(t, plain.TTFT, rec.TTFT, "time to first token")
					assert.Equal(t, plain.TTFB, rec.TTFB)
					assert.Equal(t, plain.Events, rec.Events, "events parsed from the decoded copy")
					assert.Equal(t, plain.ErrorType, rec.ErrorType)
					assert.Equal(t, int64(len(sent)), rec.BytesOut)
				})
			}
		})
	}
}

// ownStream is an OpenAI-style stream of the project's own: n content
// events, then usage and [DONE].
func ownStream(n int) [][]byte {
	evs := make([][]byte, 0, n+2)
	for i := range n {
		evs = append(evs, fmt.Appendf(nil, `data: {"id":"c","object":"chat.completion.chunk","model":"m-known","choices":[{"index":0,"delta":{"content":"tok%d "}}]}`+"\n\n", i))
	}
	return append(evs, []byte(`data: {"id":"c","model":"m-known","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":22,"total_tokens":33}}`+"\n\n"),
		[]byte("data: [DONE]\n\n"))
}

// wireUpstream writes the given bytes as a response with contentType and
// Content-Encoding enc, flushing after each.
func wireUpstream(contentType, enc string, wire ...[]byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", contentType)
		w.Header().Set("Content-Encoding", enc)
		for _, b := range wire {
			_, _ = w.Write(b)
			w.(http.Flusher).Flush()
		}
	}
}

// TestBrokenCompressedStream: a gzip stream that is corrupt or truncated
// midway reaches the client unchanged; its observation stops there, with
// no panic and no usage recorded; the observation budget is given back.
func TestBrokenCompressedStream(t *testing.T) {
	wire := encodePieces(t, gzipEnc, ownStream(20))
	for _, tt := range []struct {
		name string
		wire [][]byte
	}{
		// 0x07 starts a final block of the reserved type 3: the inflater
		// fails there; the rest of the stream follows unchanged.
		{"corrupt", append(append(append([][]byte{}, wire[:5]...), []byte{0x07, 0x55, 0xaa}), wire[5:]...)},
		{"truncated", append(append([][]byte{}, wire[:5]...), wire[5][:len(wire[5])/2])},
		{"bad header", append([][]byte{[]byte("not gzip at all\n\n")}, wire[1:]...)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, wireUpstream("text/event-stream", "gzip", tt.wire...), Route{Prefix: "/", Provider: ProviderOpenAI})
			req := e.request("POST", "/v1/chat/completions", `{"model":"m-known","stream":true}`)
			req.Header.Set("Accept-Encoding", "gzip")
			resp, err := plainClient(t).Do(req)
			require.NoError(t, err)
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			e.handled()
			assert.Equal(t, bytes.Join(tt.wire, nil), got, "the client's bytes are the upstream's")
			rec := e.lastRecord()
			assert.Equal(t, 200, rec.Status)
			assert.Equal(t, ErrTypeNone, rec.ErrorType)
			if tt.name == "bad header" {
				assert.Zero(t, rec.Usage, "nothing could be observed")
			} else {
				// The usage event follows the break: the stream is estimated
				// from the content observed before it.
				assert.True(t, rec.Usage.Estimated, "usage follows the break: estimated")
				assert.Positive(t, rec.Usage.OutputTokens)
			}
			assert.Zero(t, e.relay.observed.used.Load(), "observation budget given back")
		})
	}
}

// TestCompressedJSONObserved: a non-streamed gzip or deflate JSON body
// (a small completion, and an embeddings body whose usage follows
// megabytes) is relayed as the upstream sent it, Content-Length kept, and
// its usage is recorded as the plain body's.
func TestCompressedJSONObserved(t *testing.T) {
	small := []byte(`{"id":"c","object":"chat.completion","model":"m-other","choices":[{"index":0,"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}`)
	var large bytes.Buffer
	large.WriteString(`{"object":"list","data":[`)
	for i := range 40000 {
		if i > 0 {
			large.WriteByte(',')
		}
		fmt.Fprintf(&large, "%d.%06d", i%3, (i*7919)%1000000)
	}
	large.WriteString(`],"model":"m-known","usage":{"prompt_tokens":512,"total_tokens":512}}`)
	for _, body := range []struct {
		name string
		b    []byte
		path string
	}{{"completion", small, "/v1/chat/completions"}, {"embeddings", large.Bytes(), "/v1/embeddings"}} {
		t.Run(body.name, func(t *testing.T) {
			var plain Usage
			for _, enc := range []contentEncoder{plainEnc, gzipEnc, deflateEnc} {
				wire := bytes.Join(encodePieces(t, enc, [][]byte{body.b}), nil)
				e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.ReadAll(r.Body)
					w.Header().Set("Content-Type", "application/json")
					if enc.name != "" {
						w.Header().Set("Content-Encoding", enc.name)
					}
					w.Header().Set("Content-Length", fmt.Sprint(len(wire)))
					_, _ = w.Write(wire)
				}, Route{Prefix: "/", Provider: ProviderOpenAI})
				req := e.request("POST", body.path, `{"model":"m-known"}`)
				req.Header.Set("Accept-Encoding", "gzip, deflate")
				resp, err := plainClient(t).Do(req)
				require.NoError(t, err)
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				require.NoError(t, err)
				e.handled()
				assert.Equal(t, int64(len(wire)), resp.ContentLength)
				assert.True(t, bytes.Equal(wire, got), "%s: the client's bytes are the upstream's", enc.name)
				rec := e.lastRecord()
				if enc.name == "" {
					plain = rec.Usage
					require.NotZero(t, plain.InputTokens)
					continue
				}
				assert.Equal(t, plain, rec.Usage, enc.name)
				if body.name == "completion" {
					assert.Equal(t, "m-other", rec.ResponseModel)
				}
			}
		})
	}
}

// TestCompressedUnobserved: a compressed body is relayed unchanged, and
// not observed (no usage; its reads counted as chunks), when its coding
// is one the relay does not decode, and when the observation budget
// cannot hold a decoder.
func TestCompressedUnobserved(t *testing.T) {
	wire := encodePieces(t, gzipEnc, ownStream(5))
	for _, tt := range []struct {
		name, enc string
		opts      []Option
	}{
		{"br", "br", nil},
		{"gzip twice", "gzip, gzip", nil},
		{"budget refused", "gzip", []Option{WithObservationBudget(decoderMem - 1)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, wireUpstream("text/event-stream", tt.enc, wire...), Route{Prefix: "/", Provider: ProviderOpenAI}, tt.opts...)
			req := e.request("POST", "/v1/chat/completions", `{"model":"m-known","stream":true}`)
			req.Header.Set("Accept-Encoding", "gzip")
			resp, err := plainClient(t).Do(req)
			require.NoError(t, err)
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			e.handled()
			assert.Equal(t, bytes.Join(wire, nil), got)
			rec := e.lastRecord()
			assert.Zero(t, rec.Usage, "usage unknown")
			assert.Positive(t, rec.Events, "chunks")
			assert.Zero(t, e.relay.observed.used.Load())
		})
	}
}

// TestCompressedStreamEndsCleanly: the decoder's goroutine ends with the
// response whether the client leaves mid-stream or the upstream breaks
// off (the compressed body is then aborted, never given a plain-text
// error event), and the observation budget is given back.
func TestCompressedStreamEndsCleanly(t *testing.T) {
	wire := encodePieces(t, gzipEnc, ownStream(10))
	for _, tt := range []struct {
		name     string
		breakOff bool
	}{{"client leaves", false}, {"upstream breaks off", true}} {
		t.Run(tt.name, func(t *testing.T) {
			// Registered first, so run last: once the relay is shut down.
			ignore := goleak.IgnoreCurrent()
			t.Cleanup(func() { goleak.VerifyNone(t, leakOptions(ignore)...) })
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				w.Header().Set("Content-Encoding", "gzip")
				for _, b := range wire[:3] {
					_, _ = w.Write(b)
				}
				w.(http.Flusher).Flush()
				if tt.breakOff {
					if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
						conn.Close()
					}
					return
				}
				<-r.Context().Done() // the relay cancels it when the client leaves
			}, Route{Prefix: "/", Provider: ProviderOpenAI})
			ctx, cancel := context.WithCancel(testkit.Context(t))
			defer cancel()
			req := e.request("POST", "/v1/chat/completions", `{"model":"m-known","stream":true}`).WithContext(ctx)
			req.Header.Set("Accept-Encoding", "gzip")
			resp, err := plainClient(t).Do(req)
			require.NoError(t, err)
			zr, err := gzip.NewReader(resp.Body)
			require.NoError(t, err)
			first := ownStream(1)[0]
			_, err = io.ReadFull(zr, make([]byte, len(first)))
			require.NoError(t, err, "the first event, decoded by the client")
			if tt.breakOff {
				_, err = io.ReadAll(resp.Body)
				assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "the client must see a truncated body")
			} else {
				cancel()
			}
			resp.Body.Close()
			e.handled()
			rec := e.lastRecord()
			if tt.breakOff {
				assert.Equal(t, ErrTypeStreamInterrupted, rec.ErrorType)
			} else {
				assert.True(t, rec.ClientGone)
			}
			assert.Positive(t, rec.TTFT, "events before the end were observed")
			assert.Zero(t, e.relay.observed.used.Load())
		})
	}
}

// leakOptions are TestMain's (idle connections close asynchronously),
// and ignore the goroutines of before the test (ignore, from
// goleak.IgnoreCurrent).
func leakOptions(ignore goleak.Option) []goleak.Option {
	return []goleak.Option{
		ignore,
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
	}
}

// newTestDecoder starts a decoder as relayResponse does, its decoded
// events going to onEvent.
func newTestDecoder(t *testing.T, rl *Relay, c coding, onEvent func(at time.Time, name, data, tail []byte, truncated bool)) *decoder {
	t.Helper()
	d := rl.newDecoder(c)
	require.NotNil(t, d)
	d.sse = true
	d.parser = sseParser{maxData: maxObservedHead, tailCap: observedTail, onEvent: onEvent}
	return d
}

// TestDecoderObservesEachReadAtOnce: each event is observed during the
// feed of the read that completes it, with that read's time, however the
// compressed bytes are split into reads (byte by byte included); nothing
// waits for a later read or the body's end.
func TestDecoderObservesEachReadAtOnce(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	events := ownStream(8)
	for name, enc := range map[string]contentEncoder{"gzip": gzipEnc, "deflate": deflateEnc, "raw deflate": rawDeflateEnc} {
		c := codingGzip
		if enc.name == "deflate" {
			c = codingDeflate
		}
		wire := encodePieces(t, enc, events)
		for _, split := range []int{1, 7, 1 << 20} {
			rl := &Relay{observed: byteBudget{limit: 1 << 20}}
			var seen []string
			var at []time.Time
			d := newTestDecoder(t, rl, c, func(when time.Time, _, data, _ []byte, _ bool) {
				seen = append(seen, string(data))
				at = append(at, when)
			})
			for k, piece := range wire[:len(events)] {
				for i := 0; i < len(piece); i += split {
					d.feed(piece[i:min(len(piece), i+split)], time.Unix(int64(k), 0))
				}
				require.Len(t, seen, k+1, "%s, reads of %d: event %d observed as its last byte is fed", name, split, k)
				assert.Equal(t, time.Unix(int64(k), 0), at[k])
				assert.Equal(t, strings.TrimSuffix(strings.TrimPrefix(string(events[k]), "data: "), "\n\n"), seen[k])
			}
			d.feed(wire[len(events)], time.Unix(99, 0))
			d.end()
			assert.True(t, d.done, "the trailer ends the decoding")
			rl.closeDecoder(d)
			assert.Zero(t, rl.observed.used.Load())
		}
	}
	goleak.VerifyNone(t, leakOptions(ignore)...)
}

// TestDecoderBoundsDecompressionBombs: a body that inflates far beyond
// maxDecodeRatio times its size is decoded only up to that bound (the
// CPU it costs is bounded), then no longer observed.
func TestDecoderBoundsDecompressionBombs(t *testing.T) {
	var wire bytes.Buffer
	zw := gzip.NewWriter(&wire)
	_, _ = zw.Write([]byte("data: "))
	zeros := make([]byte, 1<<20)
	for range 64 { // 64 MiB of zeros: about 64 KiB compressed
		_, _ = zw.Write(zeros)
	}
	_, _ = zw.Write([]byte("\n\n"))
	require.NoError(t, zw.Close())
	rl := &Relay{observed: byteBudget{limit: 1 << 20}}
	events := 0
	d := newTestDecoder(t, rl, codingGzip, func(time.Time, []byte, []byte, []byte, bool) { events++ })
	b := wire.Bytes()
	for i := 0; i < len(b); i += 4096 {
		d.feed(b[i:min(len(b), i+4096)], time.Time{})
	}
	d.end()
	assert.True(t, d.done)
	assert.LessOrEqual(t, d.out, maxDecodeRatio*int64(len(b))+decodeAllowance)
	assert.Less(t, d.out, int64(64<<20), "decoding stopped at the bound")
	assert.Zero(t, events, "the event was not observed past the bound")
	rl.closeDecoder(d)
	assert.Zero(t, rl.observed.used.Load())
}

// TestDecoderPanicEndsItsGoroutine: a panic while observing decoded bytes
// reaches the relaying goroutine (as any panic while relaying does), the
// coroutine is gone, and its decoder is not reused.
func TestDecoderPanicEndsItsGoroutine(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	wire := encodePieces(t, gzipEnc, ownStream(2))
	rl := &Relay{observed: byteBudget{limit: 1 << 20}}
	d := newTestDecoder(t, rl, codingGzip, func(time.Time, []byte, []byte, []byte, bool) { panic("observer bug") })
	func() {
		defer rl.closeDecoder(d)
		defer func() { assert.Equal(t, "observer bug", recover()) }()
		d.feed(wire[0], time.Time{})
		t.Error("feed returned")
	}()
	assert.Zero(t, rl.observed.used.Load())
	reused, _ := rl.decoders.Get().(*decoder)
	assert.NotSame(t, d, reused, "a decoder a panic left mid-decode is not reused")
	goleak.VerifyNone(t, leakOptions(ignore)...)
}

// TestAcceptEncodingForwarded: the upstream is offered only the codings
// the relay can observe, with the client's q-values; identity when none
// is left. The result does not depend on the transport: one that would
// add gzip itself (DisableCompression false) neither adds it nor decodes
// the response behind the relay's back.
func TestAcceptEncodingForwarded(t *testing.T) {
	body := ownStream(3)
	gz := bytes.Join(encodePieces(t, gzipEnc, body), nil)
	plain := bytes.Join(body, nil)
	compressing := &http.Transport{} // DisableCompression false: Go's transport would add gzip
	t.Cleanup(compressing.CloseIdleConnections)
	for _, tr := range []struct {
		name string
		opts []Option
	}{{"relay transport", nil}, {"compressing transport", []Option{WithTransport(compressing)}}} {
		t.Run(tr.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []string
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				mu.Lock()
				got = r.Header.Values("Accept-Encoding")
				mu.Unlock()
				w.Header().Set("Content-Type", "text/event-stream")
				if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
					w.Header().Set("Content-Encoding", "gzip")
					_, _ = w.Write(gz)
					return
				}
				_, _ = w.Write(plain)
			}, Route{Prefix: "/", Provider: ProviderOpenAI}, tr.opts...)
			for _, tt := range []struct {
				client []string // the client's Accept-Encoding lines
				want   string
			}{
				{nil, "identity"},
				{[]string{"gzip"}, "gzip"},
				{[]string{"br"}, "identity"},
				{[]string{"gzip, deflate, br"}, "gzip, deflate"},
				{[]string{"zstd;q=1, gzip;q=0.5"}, "gzip;q=0.5"},
				{[]string{"gzip, deflate"}, "gzip, deflate"},
				{[]string{"br, zstd, *"}, "identity"},
				{[]string{"gzip;q=0, br"}, "identity"},
				{[]string{"identity;q=0, GZIP ; q=0.8"}, "identity;q=0, GZIP ; q=0.8"},
				{[]string{"br", "deflate;q=0.9"}, "deflate;q=0.9"},
				{[]string{"x-gzip, compress"}, "identity"},
			} {
				t.Run(strings.Join(tt.client, "|"), func(t *testing.T) {
					req := e.request("POST", "/v1/chat/completions", `{"model":"m-known","stream":true,"stream_options":{"include_usage":true}}`)
					for _, v := range tt.client {
						req.Header.Add("Accept-Encoding", v)
					}
					resp, err := plainClient(t).Do(req)
					require.NoError(t, err)
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					require.NoError(t, err)
					e.handled()
					mu.Lock()
					assert.Equal(t, []string{tt.want}, got, "Accept-Encoding sent upstream")
					mu.Unlock()
					rec := e.lastRecord()
					if strings.Contains(tt.want, "gzip") {
						assert.Equal(t, "gzip", resp.Header.Get("Content-Encoding"))
						assert.Equal(t, gz, b, "compressed bytes, not decoded by the transport")
					} else {
						assert.Empty(t, resp.Header.Get("Content-Encoding"))
						assert.Equal(t, plain, b)
					}
					assert.Equal(t, int64(33), rec.Usage.Total(), "observed either way")
				})
			}
		})
	}
}

// TestRouteAcceptEncodingFiltered: an Accept-Encoding a route sets is
// held to the same rule as the client's.
func TestRouteAcceptEncodingFiltered(t *testing.T) {
	got := make(chan string, 1)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("Accept-Encoding")
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}")
	}, Route{Prefix: "/", Headers: map[string]string{"Accept-Encoding": "br, gzip"}})
	e.do(e.request("POST", "/v1/x", `{}`))
	assert.Equal(t, "gzip", testkit.Recv(t, got, "the upstream was not called"))
}

// BenchmarkObserveStream observes one 200-event stream per op, read by
// read as the relay does: parsed as it comes (plain), or gzip-compressed
// and flushed per event, decoded by a decoder (from the relay's pool) on
// its way to the parser. The difference per event is what decoding costs.
func BenchmarkObserveStream(b *testing.B) {
	evs := benchStream()
	gz := gzipEvents(evs)
	noop := func(time.Time, []byte, []byte, []byte, bool) {}
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			p := sseParser{maxData: maxObservedHead, tailCap: observedTail, onEvent: noop}
			for _, ev := range evs {
				p.feed(ev, time.Time{})
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(evs)), "ns/event")
	})
	b.Run("gzip", func(b *testing.B) {
		rl := &Relay{observed: byteBudget{limit: 1 << 30}}
		b.ReportAllocs()
		for b.Loop() {
			d := rl.newDecoder(codingGzip)
			d.sse = true
			d.parser = sseParser{maxData: maxObservedHead, tailCap: observedTail, onEvent: noop,
				field: d.parser.field, name: d.parser.name}
			for _, piece := range gz {
				d.feed(piece, time.Time{})
			}
			d.end()
			rl.closeDecoder(d)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(evs)), "ns/event")
	})
}

// TestAcceptEncodingWithoutDecoderRoom: when the observation budget has no
// room for a decoder, the upstream is offered identity only, so that the
// answer stays observable: a client's Accept-Encoding never switches
// metering off.
func TestAcceptEncodingWithoutDecoderRoom(t *testing.T) {
	body := ownStream(3)
	gz := bytes.Join(encodePieces(t, gzipEnc, body), nil)
	asked := make(chan string, 1)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		asked <- r.Header.Get("Accept-Encoding")
		w.Header().Set("Content-Type", "text/event-stream")
		if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = w.Write(gz)
			return
		}
		_, _ = w.Write(bytes.Join(body, nil))
	}, Route{Prefix: "/", Provider: ProviderOpenAI}, WithObservationBudget(decoderMem-1))
	req := e.request("POST", "/v1/chat/completions", `{"model":"m-known","stream":true,"stream_options":{"include_usage":true}}`)
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := plainClient(t).Do(req)
	require.NoError(t, err)
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	e.handled()
	assert.Equal(t, "identity", testkit.Recv(t, asked, "the upstream's Accept-Encoding"))
	assert.Equal(t, bytes.Join(body, nil), got)
	assert.Positive(t, e.lastRecord().Usage.Total(), "usage observed from the plain answer")
}

// TestEditedAttemptAsksForIdentity: an attempt that sends the relay's
// include_usage edit offers the upstream identity only, whatever the
// client accepts, so that the usage chunk the edit causes can be kept
// from the client (it can only be cut from an uncompressed stream).
func TestEditedAttemptAsksForIdentity(t *testing.T) {
	asked := make(chan string, 1)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		asked <- r.Header.Get("Accept-Encoding")
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write(bytes.Join(ownStream(2), nil))
	}, Route{Prefix: "/", Provider: ProviderOpenAI})
	req := e.request("POST", "/v1/chat/completions", `{"model":"m-known","stream":true}`)
	req.Header.Set("Accept-Encoding", "gzip, deflate")
	resp, err := plainClient(t).Do(req)
	require.NoError(t, err)
	_, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	e.handled()
	assert.Equal(t, "identity", testkit.Recv(t, asked, "the upstream's Accept-Encoding"))
}
