package relay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sharedFixtures returns ../shared/fixtures beside the repository: other
// projects' recordings, read in place and never copied here. Locally the
// tests skip without them; in CI a missing folder fails (testkit.Missing).
func sharedFixtures(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "shared", "fixtures"))
	require.NoError(t, err)
	if _, err := os.Stat(dir); err != nil {
		testkit.Missing(t, "shared fixtures not available: %v", err)
	}
	return dir
}

// replay serves a recorded stream in small uneven writes, flushing each, so
// that events and even CRLF pairs straddle reads.
func replay(stream []byte, contentType string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", contentType)
		for i, size := 0, 1; i < len(stream); size = size%97 + 13 {
			end := min(len(stream), i+size)
			_, _ = w.Write(stream[i:end])
			w.(http.Flusher).Flush()
			i = end
		}
	}
}

type replayCase struct {
	file     string
	provider Provider
	path     string
	usage    Usage
	upstream ErrorType // expected in-band error, if any
}

func runReplay(t *testing.T, dir string, tt replayCase, opts ...Option) {
	stream, err := os.ReadFile(filepath.Join(dir, tt.file))
	require.NoError(t, err)
	lim := newRecordingSettler(Limits{})
	e := newEnv(t, replay(stream, "text/event-stream"), Route{Prefix: "/", Provider: tt.provider},
		append([]Option{WithModels("m-known"), WithLimiter(lim)}, opts...)...)
	// The client asks for usage, as the recorded clients did (or their
	// providers report it unasked), so nothing of the stream is the relay's
	// to hide (TestIncludeUsageChunkHidden covers a client that did not).
	resp, body := e.do(e.request("POST", tt.path, `{"model":"m-known","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`))
	assert.Equal(t, 200, resp.StatusCode)
	assert.True(t, bytes.Equal(stream, body), "relayed bytes differ from the recording")
	rec := e.lastRecord()
	assert.Equal(t, tt.usage, rec.Usage)
	assert.Equal(t, "m-known", rec.Model)
	assert.True(t, rec.Stream)
	assert.Equal(t, tt.upstream, rec.ErrorType)
	if tt.usage.OutputTokens > 0 {
		assert.Positive(t, rec.TTFT, "time to first token")
		assert.GreaterOrEqual(t, rec.TTFT, rec.TTFB)
	}
	var estimated int64
	if tt.usage.Estimated {
		estimated = tt.usage.Total()
	}
	for typ, n := range map[string]int64{"input": tt.usage.InputTokens, "output": tt.usage.OutputTokens,
		"cached_input": tt.usage.CachedInputTokens, "reasoning": tt.usage.ReasoningTokens,
		"cache_creation_input": tt.usage.CacheCreationInputTokens, "audio_input": tt.usage.AudioInputTokens,
		"audio_output": tt.usage.AudioOutputTokens, "estimated": estimated} {
		assert.Equal(t, float64(n), testutil.ToFloat64(e.relay.metrics.tokens.WithLabelValues("test", "m-known", typ)), typ)
	}
	// The reservation (the prompt's 1 token and the default 4096 output)
	// settles at the usage, reported or estimated. Speech is billed in
	// characters and reserves no tokens.
	switch settled := lim.all(t, e.relay); {
	case strings.Contains(tt.path, "/audio/"):
		assert.Empty(t, settled)
	case tt.usage.Total() > 0:
		assert.Equal(t, []settlement{{reserved: 4097, used: tt.usage.Total()}}, settled)
	default:
		assert.Equal(t, []settlement{{reserved: 4097, used: 4097}}, settled)
	}
}

// TestReplaySharedFixtures relays every recorded provider stream: the
// client gets the recording byte for byte, and the record and metrics hold
// exactly the usage the recording reports (fixtures/README.md), also with
// the shared observation budget spent.
func TestReplaySharedFixtures(t *testing.T) {
	dir := sharedFixtures(t)
	chat, msgs, resp := "/v1/chat/completions", "/v1/messages", "/v1/responses"
	for _, tt := range []replayCase{
		{"openai_chat_stream_tool_calls_include_usage.sse", ProviderOpenAI, chat, Usage{InputTokens: 53, OutputTokens: 15}, ""},
		{"openai_chat_stream_text_include_usage.sse", ProviderOpenAI, chat, Usage{InputTokens: 78, OutputTokens: 9}, ""},
		{"openai_chat_stream_text_include_usage_fullheaders.sse", ProviderOpenAI, chat, Usage{InputTokens: 16, OutputTokens: 10}, ""},
		// no usage reported (the recorded client did not ask): estimated
		// from the content that passed, one token a content chunk at least
		{"openai_chat_stream_no_usage_2023.sse", ProviderOpenAI, chat, Usage{InputTokens: 1, OutputTokens: 9, Estimated: true}, ""},
		{"openai_responses_stream_text_2025-03.sse", ProviderOpenAI, resp, Usage{InputTokens: 27, OutputTokens: 11}, ""},
		{"openai_responses_stream_text_seqnum.sse", ProviderOpenAI, resp, Usage{InputTokens: 20, OutputTokens: 10}, ""},
		{"openai_responses_stream_reasoning_function_call.sse", ProviderOpenAI, resp, Usage{InputTokens: 53, OutputTokens: 469, ReasoningTokens: 448}, ""},
		{"anthropic_messages_stream_text.sse", ProviderAnthropic, msgs, Usage{InputTokens: 20, OutputTokens: 5}, ""},
		{"anthropic_messages_stream_tool_use_parallel.sse", ProviderAnthropic, msgs, Usage{InputTokens: 416, OutputTokens: 109}, ""},
		// cut by the provider's error before message_delta: input as
		// message_start reported it, output estimated from the one delta
		// that passed ("2": one token), not message_start's placeholder
		{"anthropic_messages_stream_overloaded_error_CONSTRUCTED.sse", ProviderAnthropic, msgs, Usage{InputTokens: 20, OutputTokens: 1, Estimated: true}, ErrTypeUpstreamEvent},
		{"azure_openai_chat_stream_text_include_usage.sse", ProviderAzure, chat, Usage{InputTokens: 15, OutputTokens: 12}, ""},
		{"azure_openai_chat_stream_tool_calls_include_usage.sse", ProviderAzure, chat, Usage{InputTokens: 159, OutputTokens: 127, ReasoningTokens: 64}, ""},
		{"azure_openai_chat_stream_no_usage_gpt4o.sse", ProviderAzure, chat, Usage{InputTokens: 1, OutputTokens: 3, Estimated: true}, ""}, // "Hallo", " Welt", "!"
		{"azure_openai_chat_stream_async_filter.sse", ProviderAzure, chat, Usage{InputTokens: 1, OutputTokens: 2, Estimated: true}, ""},
		{"deepseek_chat_stream_reasoning_content.sse", ProviderOpenAI, chat, Usage{InputTokens: 6, OutputTokens: 212, ReasoningTokens: 198}, ""},
		{"deepseek_chat_stream_no_include_usage.sse", ProviderOpenAI, chat, Usage{InputTokens: 5, OutputTokens: 11}, ""},
		{"siliconflow_chat_stream_reasoning_usage_every_chunk_EXCERPT.sse", ProviderOpenAI, chat, Usage{InputTokens: 294, OutputTokens: 51, ReasoningTokens: 38}, ""},
		{"openrouter_chat_stream_comments_midstream_error.sse", ProviderOpenAI, chat, Usage{InputTokens: 43, OutputTokens: 10, ReasoningTokens: 11}, ErrTypeUpstreamEvent},
		{"groq_chat_stream_x_groq_usage.sse", ProviderOpenAI, chat, Usage{InputTokens: 12, OutputTokens: 24}, ""},
		{"gemini_native_stream_crlf.sse", ProviderOpenAI, "/v1beta/models/m:streamGenerateContent", Usage{InputTokens: 18, OutputTokens: 115, ReasoningTokens: 35}, ""},
		{"openai_speech_sse_CONSTRUCTED.sse", ProviderOpenAI, "/v1/audio/speech", Usage{InputTokens: 14, OutputTokens: 101}, ""},
	} {
		t.Run(tt.file, func(t *testing.T) { runReplay(t, dir, tt) })
		t.Run(tt.file+"/budget spent", func(t *testing.T) { runReplay(t, dir, tt, WithObservationBudget(0)) })
	}
}

// TestReplayOwnStreams runs anywhere, on the project's own recordings.
func TestReplayOwnStreams(t *testing.T) {
	dir := filepath.Join("internal", "provider", "testdata")
	for _, tt := range []replayCase{
		{"openai_chat_include_usage.sse", ProviderOpenAI, "/v1/chat/completions", Usage{InputTokens: 120, OutputTokens: 33, CachedInputTokens: 64, ReasoningTokens: 7}, ""},
		{"anthropic_full.sse", ProviderAnthropic, "/v1/messages", Usage{InputTokens: 512, OutputTokens: 42, CachedInputTokens: 300, CacheCreationInputTokens: 200}, ""},
	} {
		t.Run(tt.file, func(t *testing.T) { runReplay(t, dir, tt) })
	}
}

func TestIncludeUsageInjection(t *testing.T) {
	var got []byte
	var mu sync.Mutex
	up := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got, _ = io.ReadAll(r.Body)
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
	}
	tests := []struct {
		name string
		opts []Option
		body string
		want bool
	}{
		{"streaming chat gets usage", nil, `{"model":"m","stream":true,"messages":[]}`, true},
		{"option off", []Option{WithIncludeUsage(false)}, `{"model":"m","stream":true,"messages":[]}`, false},
		{"not streaming", nil, `{"model":"m","messages":[]}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, up, Route{Prefix: "/v1"}, tt.opts...)
			e.do(e.request("POST", "/v1/chat/completions", tt.body))
			mu.Lock()
			defer mu.Unlock()
			var m map[string]any
			require.NoError(t, json.Unmarshal(got, &m))
			so, _ := m["stream_options"].(map[string]any)
			assert.Equal(t, tt.want, so["include_usage"] == true, string(got))
			assert.Equal(t, "m", m["model"])
		})
	}
}

func TestNonStreamingJSONUsage(t *testing.T) {
	const body = `{"id":"c1","object":"chat.completion","model":"m-2030","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15}}`
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}, Route{Prefix: "/v1"})
	_, got := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","messages":[]}`))
	assert.Equal(t, body, string(got))
	rec := e.lastRecord()
	assert.Equal(t, Usage{InputTokens: 11, OutputTokens: 4}, rec.Usage)
	assert.Equal(t, "m-2030", rec.ResponseModel)
	assert.False(t, rec.Stream)
}

// TestTokenBudget: 1,000 tokens per minute and requests reserving 300
// output tokens each: the fourth is refused at admission, and the budget
// comes back as the (injected) clock moves on.
func TestTokenBudget(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := ClockFunc(func() time.Time { mu.Lock(); defer mu.Unlock(); return now })
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"model":"m","usage":{"prompt_tokens":1,"completion_tokens":300}}`)
	}, Route{Prefix: "/v1"}, WithRateLimit(Limits{TokensPerMinute: 1000}), WithClock(clock))
	const req = `{"model":"m","max_tokens":300,"messages":[{"role":"user","content":"hi"}]}`
	for i := range 3 {
		resp, _ := e.do(e.request("POST", "/v1/chat/completions", req))
		require.Equal(t, 200, resp.StatusCode, "request %d", i+1)
	}
	resp, body := e.do(e.request("POST", "/v1/chat/completions", req))
	assert.Equal(t, 429, resp.StatusCode)
	assert.Contains(t, string(body), "token budget")
	assert.Equal(t, "1000", resp.Header.Get("X-Ratelimit-Limit-Tokens"))
	assert.Equal(t, "97", resp.Header.Get("X-Ratelimit-Remaining-Tokens"))
	assert.NotEmpty(t, resp.Header.Get("X-Ratelimit-Reset-Tokens"))
	assert.Equal(t, "13", resp.Header.Get("Retry-After"), "204 missing tokens at 1000/min")
	assert.Equal(t, 1.0, testutil.ToFloat64(e.relay.metrics.limited.WithLabelValues("test", "tokens")))

	mu.Lock()
	now = now.Add(13 * time.Second)
	mu.Unlock()
	resp, _ = e.do(e.request("POST", "/v1/chat/completions", req))
	assert.Equal(t, 200, resp.StatusCode, "recovered as the window passed")
}

func TestTokenSettlementRefunds(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := ClockFunc(func() time.Time { return now })
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"usage":{"prompt_tokens":1,"completion_tokens":9}}`)
	}, Route{Prefix: "/v1"}, WithRateLimit(Limits{TokensPerMinute: 1000}), WithClock(clock))
	// Each reserves 301 but uses 10: far more than three fit.
	for i := range 10 {
		resp, _ := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","max_tokens":300,"messages":[{"role":"user","content":"hi"}]}`))
		require.Equal(t, 200, resp.StatusCode, "request %d", i+1)
	}
}

// TestFailedRequestGetsReservationBack: a request that fails before
// anything reaches the client (its upstream refuses connections: 502)
// generated nothing and gets its whole token reservation back, so failures
// never exhaust a tenant's budget.
// Mutation it kills: finish keeping the reservation of a failed request.
func TestFailedRequestGetsReservationBack(t *testing.T) {
	refused := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		return "http://" + l.Addr().String()
	}()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := ClockFunc(func() time.Time { return now }) // no refill
	e := newEnv(t, func(http.ResponseWriter, *http.Request) { t.Error("upstream called") },
		Route{Prefix: "/v1", Upstream: refused}, WithRateLimit(Limits{TokensPerMinute: 1000}), WithClock(clock))
	// Each reserves 301 tokens: without refunds the fourth would be refused.
	for i := range 6 {
		resp, _ := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","max_tokens":300,"messages":[{"role":"user","content":"hi"}]}`))
		require.Equal(t, 502, resp.StatusCode, "request %d", i+1)
		assert.Equal(t, "699", resp.Header.Get("X-Ratelimit-Remaining-Tokens"), "request %d: only its own reservation is out", i+1)
	}
}

func TestFailover(t *testing.T) {
	deadURL := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		return "http://" + l.Addr().String()
	}()
	const good = "data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\ndata: [DONE]\n\n"
	var mu sync.Mutex
	secondCalls := 0
	alive := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		secondCalls++
		mu.Unlock()
		replay([]byte(good), "text/event-stream")(w, r)
	}))
	defer alive.Close()
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(429)
	}))
	defer busy.Close()
	// A content event, then a reset: the first content commits the stream
	// (hold.go), so nothing after it fails over.
	flaky := httptest.NewServer(hijackAfter("text/event-stream", "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"))
	defer flaky.Close()
	unused := func(w http.ResponseWriter, r *http.Request) { t.Error("unexpected upstream call") }

	tests := []struct {
		name      string
		first     string
		body      string // prefix of what the client gets
		attempts  int
		upstream  string
		secondHit int
	}{
		{"connection refused moves on", deadURL, good, 2, "alive", 1},
		{"429 moves on", busy.URL, good, 2, "alive", 1},
		{"failure after the first content is never retried", flaky.URL, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\nevent: error\n", 1, "first", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			before := secondCalls
			mu.Unlock()
			e := newEnv(t, unused, Route{Prefix: "/v1", Upstreams: []Upstream{
				{Name: "first", URL: tt.first}, {Name: "alive", URL: alive.URL},
			}})
			resp, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
			assert.Equal(t, 200, resp.StatusCode)
			assert.True(t, strings.HasPrefix(string(body), tt.body), string(body))
			rec := e.lastRecord()
			assert.Equal(t, tt.attempts, rec.Attempts)
			assert.Equal(t, tt.upstream, rec.Upstream)
			mu.Lock()
			assert.Equal(t, tt.secondHit, secondCalls-before)
			mu.Unlock()
		})
	}
}

func TestKeyPoolRotatesAndRests(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rt, err := NewRouteTable([]Route{{Name: "r", Prefix: "/", Upstreams: []Upstream{
		{URL: "http://up", AuthHeader: "Authorization", Keys: []string{"k1", "k2", "k3"}},
	}}}, ClockFunc(func() time.Time { return now }))
	require.NoError(t, err)
	req, _ := http.NewRequest("POST", "http://relay/v1/x", nil)
	var seen []string
	for range 4 {
		tg, err := rt.Resolve(req)
		require.NoError(t, err)
		seen = append(seen, tg.Backends[0].Header.Get("Authorization"))
	}
	assert.Equal(t, []string{"Bearer k1", "Bearer k2", "Bearer k3", "Bearer k1"}, seen)

	// k2 answers 429 with Retry-After: it rests for that long.
	tg, _ := rt.Resolve(req) // k2
	require.Equal(t, "Bearer k2", tg.Backends[0].Header.Get("Authorization"))
	tg.Backends[0].Done(AttemptResult{Status: 429, RetryAfter: time.Minute})
	seen = nil
	for range 3 {
		tg, _ := rt.Resolve(req)
		seen = append(seen, tg.Backends[0].Header.Get("Authorization"))
	}
	assert.NotContains(t, seen, "Bearer k2")
}

// TestKeyRestDoubles: a key that fails without a Retry-After rests from its
// second failure in a row, for 1s, then 2s, 4s and so on up to a minute
// (README, "Failover and key pools"); a success ends the streak.
// Mutation it kills: the rest not doubling (always 1s).
func TestKeyRestDoubles(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rt, err := NewRouteTable([]Route{{Name: "r", Prefix: "/", Upstreams: []Upstream{
		{URL: "http://up", AuthHeader: "Authorization", Keys: []string{"k1", "k2"}},
	}}}, ClockFunc(func() time.Time { return now }))
	require.NoError(t, err)
	req, _ := http.NewRequest("POST", "http://relay/v1/x", nil)
	// k1 returns this request's backend that uses k1 (a resting key is
	// still a last resort, so there always is one).
	k1 := func() Backend {
		tg, err := rt.Resolve(req)
		require.NoError(t, err)
		for _, b := range tg.Backends {
			if b.Header.Get("Authorization") == "Bearer k1" {
				return b
			}
		}
		t.Fatal("no backend uses k1")
		return Backend{}
	}
	// resting: k1 is never the first choice of two requests in a row
	// (round robin over two keys would make it one of them).
	resting := func() bool {
		for range 2 {
			tg, err := rt.Resolve(req)
			require.NoError(t, err)
			if tg.Backends[0].Header.Get("Authorization") == "Bearer k1" {
				return false
			}
		}
		return true
	}
	rests := []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 32 * time.Second, time.Minute, time.Minute}
	for i, rest := range rests {
		k1().Done(AttemptResult{Status: 500})
		if rest == 0 {
			assert.False(t, resting(), "failure %d: no rest yet", i+1)
			continue
		}
		start := now
		now = start.Add(rest - time.Millisecond)
		assert.True(t, resting(), "failure %d: rests for %v", i+1, rest)
		now = start.Add(rest)
		assert.False(t, resting(), "failure %d: back after %v", i+1, rest)
	}
	k1().Done(AttemptResult{Status: 200})
	k1().Done(AttemptResult{Status: 500})
	assert.False(t, resting(), "a success ends the streak: the next failure is a first one")
}

func TestRouteMatching(t *testing.T) {
	rt, err := NewRouteTable([]Route{
		{Name: "root", Prefix: "/", Upstream: "http://root"},
		{Name: "v1", Prefix: "/v1", Upstream: "http://v1"},
		{Name: "chat", Prefix: "/v1/chat/", Upstream: "http://chat/base/"},
		{Name: "strip", Prefix: "/azure", StripPrefix: true, Upstream: "http://azure"},
	}, nil)
	require.NoError(t, err)
	tests := []struct{ path, route, url string }{
		{"/v1/chat/completions?x=1", "chat", "http://chat/base/v1/chat/completions?x=1"},
		{"/v1/chat", "chat", "http://chat/base/v1/chat"},
		{"/v1/chatx", "v1", "http://v1/v1/chatx"},
		{"/v1", "v1", "http://v1/v1"},
		{"/v1x", "root", "http://root/v1x"},
		{"/azure/openai/deployments/d/chat?api-version=1", "strip", "http://azure/openai/deployments/d/chat?api-version=1"},
		{"/v1/a%2Fb", "v1", "http://v1/v1/a%2Fb"},
		{"/azur%65/deployments/x", "strip", "http://azure/deployments/x"},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest("GET", "http://relay"+tt.path, nil)
		tg, err := rt.Resolve(req)
		require.NoError(t, err, tt.path)
		assert.Equal(t, tt.route, tg.Route, tt.path)
		assert.Equal(t, tt.url, tg.Backends[0].URL.String(), tt.path)
	}
}

func TestKeyPoolFailsOverToNextKey(t *testing.T) {
	var mu sync.Mutex
	var keys []string
	up := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.Header.Get("Authorization") == "Bearer k1" {
			w.WriteHeader(429)
			return
		}
		_, _ = io.WriteString(w, "{}")
	}
	e := newEnv(t, up, Route{Prefix: "/v1", AuthHeader: "Authorization"})
	u := e.upstream.URL
	e2 := newEnv(t, up, Route{Prefix: "/v1", Upstreams: []Upstream{{URL: u, AuthHeader: "Authorization", Keys: []string{"k1", "k2"}}}})
	resp, _ := e2.do(e2.request("POST", "/v1/x", `{}`))
	assert.Equal(t, 200, resp.StatusCode)
	mu.Lock()
	assert.Equal(t, []string{"Bearer k1", "Bearer k2"}, keys)
	mu.Unlock()
	assert.Equal(t, 2, e2.lastRecord().Attempts)
}

// TestLargeJSONUsage: usage at the end of a multi-megabyte body (batched
// embeddings) is still read.
func TestLargeJSONUsage(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"object":"list","model":"text-embedding-3-small","data":[`)
	for i := range 100 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"object":"embedding","index":%d,"embedding":[%s0.1]}`, i, strings.Repeat("0.0123456789,", 1500))
	}
	b.WriteString(`],"usage":{"prompt_tokens":4242,"total_tokens":4242}}`)
	body := b.String()
	require.Greater(t, len(body), 1<<20)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		_, _ = io.WriteString(w, body)
	}, Route{Prefix: "/v1"})
	_, got := e.do(e.request("POST", "/v1/embeddings", `{"model":"text-embedding-3-small","input":["a","b"]}`))
	assert.Equal(t, len(body), len(got))
	rec := e.lastRecord()
	assert.Equal(t, int64(4242), rec.Usage.InputTokens)
	assert.Equal(t, "text-embedding-3-small", rec.Model)
}

// TestJSONUsageAtTheHeadBoundaryAndGemini: a usage object that straddles
// the end of the kept head, and Gemini's usageMetadata, are both found.
func TestJSONUsageAtTheHeadBoundaryAndGemini(t *testing.T) {
	pad := func(n int) string { return strings.Repeat("x", n) }
	openai := `{"model":"m","choices":[{"message":{"content":"` + pad(maxCapturedHead-40) + `"}}],"usage":{"prompt_tokens":5,"completion_tokens":7}}`
	gemini := `{"candidates":[{"content":{"parts":[{"text":"` + pad(100<<10) + `"}]}}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":7,"totalTokenCount":12}}`
	for name, body := range map[string]string{"boundary": openai, "gemini": gemini} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Content-Length", fmt.Sprint(len(body)))
				_, _ = io.WriteString(w, body)
			}, Route{Prefix: "/v1"})
			e.do(e.request("POST", "/v1/x", `{"model":"m","messages":[]}`))
			assert.Equal(t, Usage{InputTokens: 5, OutputTokens: 7}, e.lastRecord().Usage)
		})
	}
}

func TestFailoverRoundsOverKeyPools(t *testing.T) {
	keys := func(tg *Target) []string {
		var out []string
		for _, b := range tg.Backends[:tg.MaxAttempts] {
			out = append(out, b.Name+":"+b.Header.Get("Authorization"))
		}
		return out
	}
	rt, err := NewRouteTable([]Route{{Name: "r", Prefix: "/", Upstreams: []Upstream{
		{Name: "x", URL: "http://x"},
		{Name: "y", URL: "http://y", AuthHeader: "Authorization", Keys: []string{"a", "b"}},
	}}}, nil)
	require.NoError(t, err)
	req, _ := http.NewRequest("POST", "http://relay/v1", nil)
	tg, err := rt.Resolve(req)
	require.NoError(t, err)
	assert.Equal(t, []string{"x:", "y:Bearer a", "y:Bearer b"}, keys(tg), "a keyless upstream is tried once")

	// Concurrent requests never get the same key twice within one request.
	one, err := NewRouteTable([]Route{{Name: "r", Prefix: "/", MaxAttempts: 2, Upstreams: []Upstream{
		{URL: "http://y", AuthHeader: "Authorization", Keys: []string{"a", "b"}},
	}}}, nil)
	require.NoError(t, err)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				tg, _ := one.Resolve(req)
				if tg.Backends[0].Header.Get("Authorization") == tg.Backends[1].Header.Get("Authorization") {
					t.Error("the same key twice in one request")
					return
				}
			}
		}()
	}
	testkit.Wait(t, wg.Wait, "the concurrent resolvers did not finish")
}

// TestUnknownProviderBodyUnchanged: the
// include_usage edit applies only to targets whose Provider is
// "openai" or "azure"; a custom resolver's target with an empty or
// unknown Provider has its body forwarded as the client sent it.
func TestUnknownProviderBodyUnchanged(t *testing.T) {
	for _, p := range []Provider{"", "mistral"} {
		t.Run(string(p), func(t *testing.T) {
			got := make(chan string, 1)
			up := func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got <- string(b)
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, "data: [DONE]\n\n")
			}
			var e *env
			e = newEnv(t, up, Route{Prefix: "/v1"}, withoutRoutes(), WithResolver(UpstreamResolverFunc(func(r *http.Request) (*Target, error) {
				u, err := url.Parse(e.upstream.URL + r.URL.Path)
				return &Target{Route: "custom", Provider: p, Backends: []Backend{{Name: "up", URL: u}}}, err
			})))
			const body = `{"model":"m","stream":true,"messages":[]}`
			resp, _ := e.do(e.request("POST", "/v1/chat/completions", body))
			assert.Equal(t, 200, resp.StatusCode)
			select {
			case b := <-got:
				assert.Equal(t, body, b, "the body a target of provider %q gets", p)
			default:
				t.Fatal("upstream not called")
			}
		})
	}
}
