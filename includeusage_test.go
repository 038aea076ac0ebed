package relay

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bodies records the request bodies an upstream received.
type bodies struct {
	mu sync.Mutex
	b  [][]byte
}

func (s *bodies) add(r *http.Request) []byte {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, b)
	return b
}

func (s *bodies) all() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.b...)
}

// includeUsage reports whether a request body asks for usage.
func includeUsage(t *testing.T, body []byte) bool {
	t.Helper()
	var v struct {
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	require.NoError(t, json.Unmarshal(body, &v), "%s", body)
	return v.StreamOptions.IncludeUsage
}

// TestIncludeUsageWhereAccepted: the relay adds include_usage only where
// the upstream takes it: on OpenAI and Azure routes, but not to an Azure
// api-version before 2024-09-01-preview, whether the client's query or
// the route's upstream URL names it; there the body goes upstream byte
// for byte as the client sent it.
func TestIncludeUsageWhereAccepted(t *testing.T) {
	const body = `{"stream": true, "messages":[{"role":"user","content":"hi"}]}`
	const chat = "/openai/deployments/gpt-4o/chat/completions"
	for _, tt := range []struct {
		name     string
		provider Provider
		base     string // the upstream URL's own query
		path     string
		inject   bool
	}{
		{"azure old GA", ProviderAzure, "", chat + "?api-version=2024-06-01", false},
		{"azure old preview", ProviderAzure, "", chat + "?api-version=2024-08-01-preview", false},
		{"azure first preview that takes it", ProviderAzure, "", chat + "?api-version=2024-09-01-preview", true},
		{"azure GA that takes it", ProviderAzure, "", chat + "?api-version=2024-10-21", true},
		{"azure v1 API", ProviderAzure, "", "/openai/v1/chat/completions", true},
		{"azure old version on the upstream URL", ProviderAzure, "api-version=2024-02-01", chat, false},
		{"azure new version on the upstream URL", ProviderAzure, "api-version=2025-04-01-preview", chat, true},
		{"openai", ProviderOpenAI, "", "/v1/chat/completions", true},
		{"openai route in front of an old azure", ProviderOpenAI, "", chat + "?api-version=2024-06-01", false},
		{"anthropic has no such edit", ProviderAnthropic, "", "/v1/chat/completions", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got bodies
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got.add(r)
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, "data: [DONE]\n\n")
			}))
			defer up.Close()
			u := up.URL
			if tt.base != "" {
				u += "/?" + tt.base
			}
			e := newEnv(t, okUpstream, Route{Prefix: "/", Provider: tt.provider, Upstream: u})
			resp, _ := e.do(e.request("POST", tt.path, body))
			require.Equal(t, 200, resp.StatusCode)
			sent := got.all()
			require.Len(t, sent, 1)
			if !tt.inject {
				assert.Equal(t, body, string(sent[0]), "the body as the client sent it")
				return
			}
			assert.True(t, includeUsage(t, sent[0]), "%s", sent[0])
			var before, after map[string]any
			require.NoError(t, json.Unmarshal([]byte(body), &before))
			require.NoError(t, json.Unmarshal(sent[0], &after))
			delete(after, "stream_options")
			assert.Equal(t, before, after, "nothing else changed")
		})
	}
}

// azureRefusal is Azure's answer to stream_options on an api-version that does
// not know it.
const azureRefusal = `{"error":{"message":"Unrecognized request argument supplied: stream_options","type":"invalid_request_error","param":null,"code":null}}`

// recSettler is a limiter with token budgets that records each
// settlement.
type recSettler struct {
	noLimit
	mu   sync.Mutex
	used []int64
}

func (s *recSettler) Settle(_ context.Context, _ LimitRequest, used int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.used = append(s.used, used)
	return nil
}

// TestIncludeUsageRefusedIsRetried: an upstream that answers 400 naming
// stream_options (plain or gzip-compressed, on the route's only backend or
// on the first of two) gets the same request once more without it, as the
// client sent it; the client gets the 200 stream byte for byte, the retry
// is counted, and the record shows two attempts at that upstream and no
// usage (none was reported), settled as such.
func TestIncludeUsageRefusedIsRetried(t *testing.T) {
	stream, err := os.ReadFile(filepath.Join(sharedFixtures(t), "azure_openai_chat_stream_no_usage_gpt4o.sse"))
	require.NoError(t, err)
	const body = `{"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	for _, tt := range []struct {
		name     string
		gzip     bool
		backends int
	}{
		{"plain", false, 1},
		{"gzip", true, 1},
		{"first of two backends", false, 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got bodies
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b := got.add(r)
				if !bytes.Contains(b, []byte("stream_options")) {
					replay(stream, "text/event-stream")(w, r)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				if !tt.gzip {
					w.WriteHeader(http.StatusBadRequest)
					_, _ = io.WriteString(w, azureRefusal)
					return
				}
				w.Header().Set("Content-Encoding", "gzip")
				w.WriteHeader(http.StatusBadRequest)
				zw := gzip.NewWriter(w)
				_, _ = io.WriteString(zw, azureRefusal)
				_ = zw.Close()
			}))
			defer up.Close()
			route := Route{Prefix: "/", Provider: ProviderAzure, Upstream: up.URL}
			if tt.backends == 2 {
				other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					t.Error("the second backend was tried")
				}))
				defer other.Close()
				route.Upstreams = []Upstream{{Name: "first", URL: up.URL}, {Name: "second", URL: other.URL}}
			}
			settler := &recSettler{}
			e := newEnv(t, okUpstream, route, WithLimiter(settler))
			resp, got2 := e.do(e.request("POST", "/openai/deployments/d/chat/completions?api-version=2024-10-21", body))
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, string(stream), string(got2), "the client got the stream byte for byte")

			sent := got.all()
			require.Len(t, sent, 2)
			assert.True(t, includeUsage(t, sent[0]), "the first attempt asked for usage")
			assert.Equal(t, body, string(sent[1]), "the retry sent the body as the client sent it")

			rec := e.lastRecord()
			assert.Equal(t, 2, rec.Attempts)
			assert.Equal(t, 200, rec.Status)
			assert.Equal(t, ErrTypeNone, rec.ErrorType)
			assert.True(t, rec.Usage.Estimated, "the retried stream reports no usage: it is estimated from its content")
			assert.Positive(t, rec.Usage.OutputTokens)
			assert.Equal(t, 1.0, testutil.ToFloat64(e.relay.metrics.includeUsageRetries.WithLabelValues("test")))
			assert.Equal(t, 1.0, testutil.ToFloat64(e.relay.metrics.upstreamReqs.WithLabelValues("test", rec.Upstream, "400")))
			assert.Equal(t, 1.0, testutil.ToFloat64(e.relay.metrics.upstreamReqs.WithLabelValues("test", rec.Upstream, "200")))
			assert.Equal(t, []AttemptInfo{{rec.Upstream, 400, ErrTypeUpstreamStatus}, {rec.Upstream, 200, ErrTypeNone}},
				rec.AttemptLog, "the refusal, then the retry without the edit")
			if tt.backends == 2 {
				assert.Equal(t, "first", rec.Upstream)
			}
			require.NoError(t, e.relay.Flush(context.Background())) // settlement runs in the background
			settler.mu.Lock()
			defer settler.mu.Unlock()
			require.Len(t, settler.used, 1)
			assert.Equal(t, rec.Usage.Total(), settler.used[0], "a request whose usage went unreported settles at its estimate")
		})
	}
}

// withoutUsageChunks returns stream without its usage-only chunks (data
// whose "choices" is [] and whose "usage" is an object, as encoding/json
// reads it), every other byte and line ending kept, and how many it
// removed: what a client that did not ask for usage gets from the
// provider.
func withoutUsageChunks(stream []byte) ([]byte, int) {
	var out, event []byte
	var data []string
	removed := 0
	for len(stream) > 0 {
		line, rest := stream, []byte(nil)
		if i := bytes.IndexAny(stream, "\r\n"); i >= 0 {
			j := i + 1
			if stream[i] == '\r' && j < len(stream) && stream[j] == '\n' {
				j++
			}
			line, rest = stream[:i], stream[j:]
			event = append(event, stream[:j]...)
		} else {
			event = append(event, stream...)
		}
		stream = rest
		if len(line) > 0 {
			if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				data = append(data, strings.TrimPrefix(string(v), " "))
			}
			continue
		}
		var v struct{ Choices, Usage json.RawMessage }
		if json.Unmarshal([]byte(strings.Join(data, "\n")), &v) == nil &&
			string(bytes.TrimSpace(v.Choices)) == "[]" && bytes.HasPrefix(v.Usage, []byte("{")) {
			removed++
		} else {
			out = append(out, event...)
		}
		event, data = nil, nil
	}
	return append(out, event...), removed
}

// crlf returns stream with CRLF line endings.
func crlf(stream []byte) []byte { return bytes.ReplaceAll(stream, []byte("\n"), []byte("\r\n")) }

// whole serves a stream in one write.
func whole(stream []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write(stream)
	}
}

// TestIncludeUsageChunkHidden: when the relay added include_usage, the
// usage-only chunk it caused is observed (the record has the usage) but
// not sent: a client that did not ask gets exactly the recording minus
// that one event, with LF or CRLF endings, however the reads split the
// events (a large event included); a client that asked gets the recording
// unchanged.
func TestIncludeUsageChunkHidden(t *testing.T) {
	dir := sharedFixtures(t)
	read := func(dir, file string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, file))
		require.NoError(t, err)
		return b
	}
	big := `data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"` +
		strings.Repeat("lorem ipsum ", (20<<10)/12) + `"}}],"usage":null}` + "\n\n" +
		`data: {"id":"c","object":"chat.completion.chunk","model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4000}}` + "\n\n" +
		"data: [DONE]\n\n"
	const azure = "/openai/deployments/d/chat/completions?api-version=2024-10-21"
	for _, tt := range []struct {
		name     string
		stream   []byte
		provider Provider
		path     string
		usage    Usage
	}{
		{"openai text", read(dir, "openai_chat_stream_text_include_usage.sse"), ProviderOpenAI, "/v1/chat/completions", Usage{InputTokens: 78, OutputTokens: 9}},
		{"openai tool calls", read(dir, "openai_chat_stream_tool_calls_include_usage.sse"), ProviderOpenAI, "/v1/chat/completions", Usage{InputTokens: 53, OutputTokens: 15}},
		{"openai full headers", read(dir, "openai_chat_stream_text_include_usage_fullheaders.sse"), ProviderOpenAI, "/v1/chat/completions", Usage{InputTokens: 16, OutputTokens: 10}},
		{"azure text", read(dir, "azure_openai_chat_stream_text_include_usage.sse"), ProviderAzure, azure, Usage{InputTokens: 15, OutputTokens: 12}},
		{"azure tool calls", read(dir, "azure_openai_chat_stream_tool_calls_include_usage.sse"), ProviderAzure, azure, Usage{InputTokens: 159, OutputTokens: 127, ReasoningTokens: 64}},
		{"own recording", read(filepath.Join("internal", "provider", "testdata"), "openai_chat_include_usage.sse"), ProviderOpenAI, "/v1/chat/completions",
			Usage{InputTokens: 120, OutputTokens: 33, CachedInputTokens: 64, ReasoningTokens: 7}},
		{"a 20 KiB event before it", []byte(big), ProviderOpenAI, "/v1/chat/completions", Usage{InputTokens: 3, OutputTokens: 4000}},
	} {
		for _, ending := range []string{"LF", "CRLF"} {
			stream := tt.stream
			if ending == "CRLF" {
				stream = crlf(stream)
			}
			want, removed := withoutUsageChunks(stream)
			require.Equal(t, 1, removed, "the recording has one usage chunk")
			for wname, serve := range map[string]func([]byte) http.HandlerFunc{
				"uneven writes": func(b []byte) http.HandlerFunc { return replay(b, "text/event-stream") },
				"one write":     whole,
			} {
				t.Run(tt.name+"/"+ending+"/"+wname, func(t *testing.T) {
					e := newEnv(t, serve(stream), Route{Prefix: "/", Provider: tt.provider})
					resp, got := e.do(e.request("POST", tt.path, `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
					assert.Equal(t, 200, resp.StatusCode)
					assert.Equal(t, string(want), string(got), "the recording minus its usage chunk")
					rec := e.lastRecord()
					assert.Equal(t, tt.usage, rec.Usage, "observed all the same")
					assert.Equal(t, int64(len(want)), rec.BytesOut)
					assert.Equal(t, ErrTypeNone, rec.ErrorType)

					resp, got = e.do(e.request("POST", tt.path, `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}`))
					assert.Equal(t, 200, resp.StatusCode)
					assert.Equal(t, string(stream), string(got), "a client that asked gets it unchanged")
					assert.Equal(t, tt.usage, e.lastRecord().Usage)
				})
			}
		}
	}
}

// TestIncludeUsageHeldEventEnds: what the relay held of an event the
// stream left incomplete reaches the client: at a clean end of the body,
// and before the error event of a stream that broke off, closed first.
func TestIncludeUsageHeldEventEnds(t *testing.T) {
	const sent = `data: {"id":"c","model":"m","choices":[{"delta":{"content":"Hi"}}],"usage":null}` + "\n\n" +
		`data: {"id":"c","model":"m","choices":[],"usa`
	for _, tt := range []struct {
		name  string
		abort bool
	}{{"clean end", false}, {"broken off", true}} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, sent)
				w.(http.Flusher).Flush()
				if tt.abort {
					panic(http.ErrAbortHandler)
				}
			}, Route{Prefix: "/v1"})
			resp, got := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
			assert.Equal(t, 200, resp.StatusCode)
			rec := e.lastRecord()
			if !tt.abort {
				assert.Equal(t, sent, string(got))
				assert.Equal(t, ErrTypeNone, rec.ErrorType)
				return
			}
			assert.True(t, strings.HasPrefix(string(got), sent+"\n\nevent: error\n"), "%q", got)
			assert.Equal(t, ErrTypeStreamInterrupted, rec.ErrorType)
		})
	}
}

// TestIncludeUsageHoldsOnlyIncompleteEvents: while the relay may hide the
// usage chunk, a complete event and a comment still reach the client
// before the upstream sends anything more.
func TestIncludeUsageHoldsOnlyIncompleteEvents(t *testing.T) {
	next := make(chan struct{})
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for _, part := range []string{": keep-alive\n\n", `data: {"id":"c","choices":[{"delta":{"content":"Hi"}}]}` + "\r\n\r\n", ": ping\n"} {
			_, _ = io.WriteString(w, part)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
	}, Route{Prefix: "/v1"})
	resp, err := e.front.Client().Do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	for _, want := range []string{": keep-alive\n\n", `data: {"id":"c","choices":[{"delta":{"content":"Hi"}}]}` + "\r\n\r\n", ": ping\n"} {
		buf := make([]byte, len(want))
		read := make(chan error, 1)
		go func() { _, err := io.ReadFull(resp.Body, buf); read <- err }()
		require.NoError(t, testkit.Recv(t, read, "the relay held back "+want))
		assert.Equal(t, want, string(buf))
		next <- struct{}{}
	}
	rest, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "data: [DONE]\n\n", string(rest))
	e.handled()
}

// TestNoAllocationPerHeldEvent: a stream whose every event is split
// across two reads, each start held until its read completes it, costs no
// allocation per event, and its usage chunk is still left out.
func TestNoAllocationPerHeldEvent(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without -race (.ci/run runs one)")
	}
	tr := &memTransport{}
	rl, err := New(WithRoutes(Route{Name: "r", Prefix: "/", Upstream: "http://upstream.test"}),
		WithAPIKeys(APIKey{Key: testKey}), WithTransport(tr), WithRegisterer(prometheus.NewRegistry()))
	require.NoError(t, err)
	evs := benchStream()
	split := func(evs [][]byte) [][]byte {
		var out [][]byte
		for _, ev := range evs {
			out = append(out, ev[:len(ev)/2], ev[len(ev)/2:])
		}
		return out
	}
	measure := func(n int) float64 {
		tr.sse = split(append(append([][]byte{}, evs[:n]...), evs[len(evs)-2:]...))
		w := &discardWriter{h: http.Header{}}
		return testing.AllocsPerRun(200, func() {
			clear(w.h)
			rl.ServeHTTP(w, benchRequest("/v1/chat/completions"))
		})
	}
	short, long := measure(2), measure(benchEvents)
	assert.LessOrEqual(t, long, short, "allocations grow with events: %v for 2 events, %v for %d", short, long, benchEvents)

	w := &discardWriter{h: http.Header{}}
	rl.ServeHTTP(w, benchRequest("/v1/chat/completions"))
	want, removed := withoutUsageChunks(bytes.Join(tr.sse, nil))
	require.Equal(t, 1, removed)
	assert.Equal(t, len(want), w.n, "every byte but the usage chunk's")
}

// TestIncludeUsageOtherRefusalsPass: a 400 that does not name
// stream_options, or one to a request whose stream_options was the
// client's own, reaches the client as the upstream sent it, without a
// retry.
func TestIncludeUsageOtherRefusalsPass(t *testing.T) {
	const other = `{"error":{"message":"Unknown parameter: 'foo'.","type":"invalid_request_error","param":"foo","code":"unknown_parameter"}}`
	for _, tt := range []struct {
		name, body, answer string
	}{
		{"another parameter", `{"stream":true,"foo":1}`, other},
		{"the client's own stream_options", `{"stream":true,"stream_options":{"include_usage":true}}`, azureRefusal},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got bodies
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				got.add(r)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				_, _ = io.WriteString(w, tt.answer)
			}, Route{Prefix: "/", Provider: ProviderAzure})
			resp, body := e.do(e.request("POST", "/openai/deployments/d/chat/completions?api-version=2024-10-21", tt.body))
			assert.Equal(t, 400, resp.StatusCode)
			assert.Equal(t, tt.answer, string(body))
			assert.Len(t, got.all(), 1)
			assert.Equal(t, 1, e.lastRecord().Attempts)
			assert.Zero(t, testutil.ToFloat64(e.relay.metrics.includeUsageRetries.WithLabelValues("test")))
		})
	}
}

// TestIncludeUsageRetryIsBounded: the retry without include_usage is an
// attempt of its own, bounded by the route's FirstByte timeout: an
// upstream that refuses the edit and then does not answer gets a 504 in
// time, after two attempts.
func TestIncludeUsageRetryIsBounded(t *testing.T) {
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		if b, _ := io.ReadAll(r.Body); bytes.Contains(b, []byte("stream_options")) {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, azureRefusal)
			return
		}
		<-r.Context().Done()
	}, Route{Prefix: "/", Provider: ProviderAzure, Timeouts: Timeouts{FirstByte: 100 * time.Millisecond}})
	resp, _ := e.do(e.request("POST", "/openai/v1/chat/completions", `{"stream":true}`))
	assert.Equal(t, http.StatusGatewayTimeout, resp.StatusCode)
	rec := e.lastRecord()
	assert.Equal(t, 2, rec.Attempts)
	assert.Equal(t, ErrTypeUpstreamTimeout, rec.ErrorType)
	assert.Equal(t, 1.0, testutil.ToFloat64(e.relay.metrics.includeUsageRetries.WithLabelValues("test")))
}

// TestSSEParserRuns: feedTo cuts a stream into the same runs, each ending
// between two events (after a blank line that ended one, or a comment line
// outside any), however the stream is split into reads, a CRLF pair split
// included; an "id" line belongs to its event's run.
func TestSSEParserRuns(t *testing.T) {
	stream := []byte(": c\n" + "data: a\r\n\r\n" + "id: 1\ndata: b\n\n" + "data: c\r\r" + "data: d\n\n" + "data: e")
	want := []int{4, 14, 30, 39, 48}
	for size := 1; size <= len(stream); size++ {
		var p sseParser
		var got []int
		for off := 0; off < len(stream); off += size {
			b := stream[off:min(len(stream), off+size)]
			for i := 0; i < len(b); {
				i += p.feedTo(b[i:], time.Time{})
				// A read of the lone LF that completes a CRLF pair is a run
				// of its own, also between events: not a new boundary.
				if at := off + i; p.between() && !(len(got) > 0 && got[len(got)-1] == at-1 && stream[at-1] == '\n') {
					got = append(got, at)
				}
			}
		}
		require.Equal(t, want, got, "reads of %d bytes", size)
		require.Equal(t, int64(4), p.events)
	}
}
