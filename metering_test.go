package relay

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The tests in this file prove the metering rules (README, Metering) over
// loopback, upstreams serving recorded provider streams
// (../shared/fixtures) or streams in their shape: for each case, what the
// client got, the record, and the settlement of the token reservation.

// recordingSettler is a MemoryLimiter the relay settles with as it does
// with a remote limiter (in the background, awaited by Flush), recording
// each settlement on its way.
type recordingSettler struct {
	*MemoryLimiter
	mu      sync.Mutex
	settled []settlement
}

// settlement is one Settle call: the tokens reserved and those used.
type settlement struct{ reserved, used int64 }

func newRecordingSettler(l Limits) *recordingSettler {
	return &recordingSettler{MemoryLimiter: NewMemoryLimiter(l)}
}

func (s *recordingSettler) Settle(ctx context.Context, req LimitRequest, used int64) error {
	s.mu.Lock()
	s.settled = append(s.settled, settlement{req.Cost.Tokens, used})
	s.mu.Unlock()
	return s.MemoryLimiter.Settle(ctx, req, used)
}

// all waits for the relay's settlements under way, then returns them.
func (s *recordingSettler) all(t *testing.T, rl *Relay) []settlement {
	t.Helper()
	require.NoError(t, rl.Flush(testkit.Context(t)))
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]settlement(nil), s.settled...)
}

// prompt40 is 40 bytes of prompt: the relay estimates it at 10 tokens, so
// each request below reserves 10 + 300 (its max tokens).
const prompt40 = "Count from one to ten, a number per line"

// TestUpstreamErrorsReturnTheReservation: an upstream 4xx or 5xx with a
// JSON body (recorded provider error shapes) generated nothing, so its
// request gets its whole token reservation back and a failing provider
// cannot spend a tenant's budget: with 1,000 tokens a minute and requests
// reserving 301, the fourth failed request (and the sixth) still reaches
// the upstream and gets the upstream's answer, never the relay's 429. One
// case per status class; a body that reports usage settles at it.
// Mutation it kills: finish treating an error body's bytes as generated
// tokens (keeping the reservation), as it did.
func TestUpstreamErrorsReturnTheReservation(t *testing.T) {
	for _, tt := range []struct {
		name     string
		status   int
		provider Provider
		path     string
		body     string
		used     int64
	}{
		{"400 invalid request (OpenAI)", 400, ProviderOpenAI, "/v1/chat/completions",
			`{"error":{"message":"Unrecognized request argument supplied: foo","type":"invalid_request_error","param":null,"code":null}}`, 0},
		{"429 rate limited (Anthropic)", 429, ProviderAnthropic, "/v1/messages",
			`{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}`, 0},
		{"500 server error (OpenAI)", 500, ProviderOpenAI, "/v1/chat/completions",
			`{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}`, 0},
		{"529 overloaded (Anthropic)", 529, ProviderAnthropic, "/v1/messages",
			`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, 0},
		// Constructed: an error body that reports usage settles at it.
		{"500 with usage in its body", 500, ProviderOpenAI, "/v1/chat/completions",
			`{"error":{"message":"The model produced invalid content.","type":"server_error","param":null,"code":null},"usage":{"prompt_tokens":12,"completion_tokens":3}}`, 15},
	} {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			var mu sync.Mutex
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			lim := newRecordingSettler(Limits{TokensPerMinute: 1000})
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				mu.Lock()
				calls++
				mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				_, _ = io.WriteString(w, tt.body)
			}, Route{Prefix: "/v1", Provider: tt.provider}, WithLimiter(lim),
				WithClock(ClockFunc(func() time.Time { return now }))) // no refill
			const n = 6
			for i := range n {
				resp, body := e.do(e.request("POST", tt.path,
					`{"model":"m","max_tokens":300,"messages":[{"role":"user","content":"hi"}]}`))
				require.Equal(t, tt.status, resp.StatusCode, "request %d: the upstream's answer, not the relay's", i+1)
				assert.Equal(t, tt.body, string(body), "request %d: the client gets the upstream's body", i+1)
				rec := e.lastRecord()
				assert.Equal(t, ErrTypeUpstreamStatus, rec.ErrorType, "request %d", i+1)
				assert.Equal(t, tt.used, rec.Usage.Total(), "request %d", i+1)
				assert.False(t, rec.Usage.Estimated, "request %d", i+1)
				// Settled before the next request is admitted.
				require.Len(t, lim.all(t, e.relay), i+1)
			}
			mu.Lock()
			assert.Equal(t, n, calls, "every request reached the upstream")
			mu.Unlock()
			for i, s := range lim.all(t, e.relay) {
				assert.Equal(t, settlement{reserved: 301, used: tt.used}, s, "settlement %d", i+1)
			}
		})
	}
}

// fixtureHead returns a recorded stream up to (not including) the event
// that contains marker: the events a client got before the stream was cut.
func fixtureHead(t *testing.T, raw []byte, marker string) []byte {
	t.Helper()
	i := bytes.Index(raw, []byte(marker))
	require.Positive(t, i, "marker %q not in the recording", marker)
	blank := "\n\n"
	if bytes.Contains(raw, []byte("\r\n")) {
		blank = "\r\n\r\n"
	}
	j := bytes.LastIndex(raw[:i], []byte(blank))
	require.Positive(t, j, "no event before marker %q", marker)
	return raw[:j+len(blank)]
}

// How a stream is cut short.
const (
	upstreamBreaks = "upstream breaks" // the connection is closed mid-stream
	upstreamStalls = "upstream stalls" // the route's Idle timeout fires
	clientLeaves   = "client leaves"   // the client hangs up after head
)

// cutUpstream serves head, then breaks off (upstreamBreaks) or waits for
// the relay to give up on it (the others). served is told once head is
// sent.
func cutUpstream(head []byte, how, contentType string, served chan<- struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(200)
		_, _ = w.Write(head)
		w.(http.Flusher).Flush()
		served <- struct{}{}
		if how == upstreamBreaks {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		<-r.Context().Done()
	}
}

// leave sends req, reads exactly n bytes of the response and hangs up.
func (e *env) leave(req *http.Request, n int) []byte {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(req.Context(), testkit.Timeout)
	defer cancel()
	resp, err := e.front.Client().Do(req.WithContext(ctx))
	require.NoError(e.t, err)
	got := make([]byte, n)
	_, err = io.ReadFull(resp.Body, got)
	require.NoError(e.t, err, "reading what the client gets before it leaves")
	cancel()
	resp.Body.Close()
	e.handled()
	return got
}

// The error events the relay appends to a stream cut short.
const (
	interruptedOpenAI    = "event: error\ndata: " + `{"error":{"message":"The upstream stream was interrupted.","type":"server_error","param":null,"code":"upstream_error"}}` + "\n\n"
	stalledOpenAI        = "event: error\ndata: " + `{"error":{"message":"The upstream stream stalled.","type":"server_error","param":null,"code":"upstream_timeout"}}` + "\n\n"
	interruptedAnthropic = "event: error\ndata: " + `{"type":"error","error":{"type":"api_error","message":"The upstream stream was interrupted."}}` + "\n\n"
)

// TestStreamsCutShortAreEstimated: a stream cut short (the client leaves,
// the upstream breaks off or stalls) is recorded and settled with the best
// count there is: what the provider reported so far, else input from the
// request's prompt estimate (10 here) and output from the content that
// passed (its bytes / 4, at least one per content event), flagged
// Estimated. Each recording is cut where its provider has not yet sent
// its final usage; the expected output estimates are its content's bytes
// and events as internal/provider's TestFixtureOutputEstimates derives
// them. Anthropic's message_start output (a placeholder) is never
// recorded, and Gemini's cumulative counts so far stand, not estimated.
// Mutations it kills: finish keeping the whole reservation of a stream cut
// short; recording zero usage for it; taking message_start's placeholder
// as the output.
func TestStreamsCutShortAreEstimated(t *testing.T) {
	dir := sharedFixtures(t)
	chat := `{"model":"m","stream":true,"max_tokens":300,"messages":[{"role":"user","content":"` + prompt40 + `"}]}`
	for _, tt := range []struct {
		file, marker string // the recording, cut before the event holding marker
		how          string
		provider     Provider
		path, body   string
		tail         string // what the relay appends for the client
		status       int
		errType      ErrorType
		usage        Usage
	}{
		{"openai_chat_stream_text_include_usage.sse", `"usage":{`, upstreamBreaks, ProviderOpenAI,
			"/v1/chat/completions", chat, interruptedOpenAI, 200, ErrTypeStreamInterrupted,
			// 32 bytes of content in 8 chunks: 8
			Usage{InputTokens: 10, OutputTokens: 8, Estimated: true}},
		{"azure_openai_chat_stream_text_include_usage.sse", `"usage":{`, clientLeaves, ProviderAzure,
			"/openai/deployments/gpt-5-mini/chat/completions", chat, "", StatusClientClosedRequest, ErrTypeClientCanceled,
			// 4 bytes in 2 chunks: 2
			Usage{InputTokens: 10, OutputTokens: 2, Estimated: true}},
		{"openai_responses_stream_text_2025-03.sse", "event: response.completed", upstreamStalls, ProviderOpenAI,
			"/v1/responses", `{"model":"m","stream":true,"max_output_tokens":300,"input":"` + prompt40 + `"}`,
			stalledOpenAI, 200, ErrTypeUpstreamTimeout,
			// 37 bytes in 10 deltas: 10
			Usage{InputTokens: 10, OutputTokens: 10, Estimated: true}},
		{"anthropic_messages_stream_tool_use_parallel.sse", "event: message_delta", clientLeaves, ProviderAnthropic,
			"/v1/messages", chat, "", StatusClientClosedRequest, ErrTypeClientCanceled,
			// input as message_start reported it; 154 bytes of text and
			// tool input: 39, not message_start's placeholder 1
			Usage{InputTokens: 416, OutputTokens: 39, Estimated: true}},
		{"anthropic_messages_stream_text.sse", "event: message_delta", upstreamBreaks, ProviderAnthropic,
			"/v1/messages", chat, interruptedAnthropic, 200, ErrTypeStreamInterrupted,
			Usage{InputTokens: 20, OutputTokens: 1, Estimated: true}},
		{"gemini_native_stream_crlf.sse", `"finishReason"`, upstreamStalls, ProviderOpenAI,
			"/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
			`{"contents":[{"role":"user","parts":[{"text":"` + prompt40 + `"}]}],"generationConfig":{"maxOutputTokens":300}}`,
			stalledOpenAI, 200, ErrTypeUpstreamTimeout,
			// the second chunk's cumulative counts: provider-reported
			Usage{InputTokens: 18, OutputTokens: 79 + 35, ReasoningTokens: 35}},
	} {
		t.Run(tt.file+"/"+tt.how, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, tt.file))
			require.NoError(t, err)
			head := fixtureHead(t, raw, tt.marker)
			served := make(chan struct{}, 1)
			lim := newRecordingSettler(Limits{})
			e := newEnv(t, cutUpstream(head, tt.how, "text/event-stream", served),
				Route{Prefix: "/", Provider: tt.provider, Timeouts: Timeouts{Idle: 100 * time.Millisecond}},
				WithLimiter(lim))
			var got []byte
			if tt.how == clientLeaves {
				got = e.leave(e.request("POST", tt.path, tt.body), len(head))
			} else {
				resp, body := e.do(e.request("POST", tt.path, tt.body))
				require.Equal(t, 200, resp.StatusCode)
				got = body
			}
			testkit.Recv(t, served, "the upstream did not serve the stream")
			assert.Equal(t, string(head)+tt.tail, string(got), "the client's bytes")

			rec := e.lastRecord()
			assert.Equal(t, tt.status, rec.Status)
			assert.Equal(t, tt.errType, rec.ErrorType)
			assert.Equal(t, tt.usage, rec.Usage)
			assert.Equal(t, []settlement{{reserved: 310, used: tt.usage.Total()}}, lim.all(t, e.relay),
				"settled on the record's usage")
			var estimated float64
			if tt.usage.Estimated {
				estimated = float64(tt.usage.Total())
			}
			assert.Equal(t, estimated, testutil.ToFloat64(e.relay.metrics.tokens.WithLabelValues("test", "other", "estimated")))
			assert.Equal(t, float64(tt.usage.OutputTokens), testutil.ToFloat64(e.relay.metrics.tokens.WithLabelValues("test", "other", "output")))
		})
	}
}

// TestFinalUsageWins: Anthropic's final message_delta revises the input
// message_start reported (server tools: 25 becomes 10,682), and its
// output replaces message_start's placeholder; the record and the
// settlement take the final values, and the client gets the stream byte
// for byte. (A stream in the shape of Anthropic's recordings; the revision
// is the one stripe/ai#519 reports.)
func TestFinalUsageWins(t *testing.T) {
	stream := "event: message_start\n" +
		`data: {"type":"message_start","message":{"model":"claude-sonnet-4-5-20250929","id":"msg_01","type":"message","role":"assistant","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":2048,"output_tokens":1}}}` + "\n\n" +
		"event: content_block_start\n" +
		`data: {"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use","id":"srvtoolu_01","name":"web_search","input":{}}}` + "\n\n" +
		"event: content_block_delta\n" +
		`data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"query\": \"weather\"}"}}` + "\n\n" +
		"event: content_block_stop\n" +
		`data: {"type":"content_block_stop","index":0}` + "\n\n" +
		"event: content_block_delta\n" +
		`data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Sunny, 21°C."}}` + "\n\n" +
		"event: message_delta\n" +
		// cache_read_input_tokens is absent: it keeps message_start's 2048
		`data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":10682,"cache_creation_input_tokens":512,"output_tokens":510,"server_tool_use":{"web_search_requests":1}}}` + "\n\n" +
		"event: message_stop\n" +
		`data: {"type":"message_stop"}` + "\n\n"
	lim := newRecordingSettler(Limits{})
	e := newEnv(t, replay([]byte(stream), "text/event-stream"), Route{Prefix: "/", Provider: ProviderAnthropic}, WithLimiter(lim))
	resp, body := e.do(e.request("POST", "/v1/messages",
		`{"model":"m","stream":true,"max_tokens":300,"messages":[{"role":"user","content":"`+prompt40+`"}]}`))
	require.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, stream, string(body))
	want := Usage{InputTokens: 10682 + 512 + 2048, OutputTokens: 510, CachedInputTokens: 2048, CacheCreationInputTokens: 512}
	assert.Equal(t, want, e.lastRecord().Usage)
	assert.Equal(t, []settlement{{reserved: 310, used: want.Total()}}, lim.all(t, e.relay))
}

// logHook is a slog handler that tells ch each time msg is logged.
type logHook struct {
	msg string
	ch  chan struct{}
}

func (h logHook) Enabled(context.Context, slog.Level) bool { return true }
func (h logHook) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h logHook) WithGroup(string) slog.Handler            { return h }

func (h logHook) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		select {
		case h.ch <- struct{}{}:
		default:
		}
	}
	return nil
}

// drainStarted is what the relay logs (at Debug) when it drains the
// upstream of a client that left.
const drainStarted = "relay: client left; draining the upstream for its usage"

// TestDrainOnClientGone: with WithDrainOnClientGone, a client that leaves
// mid-stream (an Anthropic recording, cut before its message_delta) does
// not end the upstream request: the relay reads the rest, sending the
// client nothing more, and records and settles the provider's final usage,
// not an estimate. The drain is bounded: an upstream that sends nothing
// more is cancelled when d has passed, or at once by Shutdown; the record
// then holds the estimate.
// Mutations it kills: the drain cancelling the upstream when the client
// leaves; the drain not bounded by d; Shutdown not ending a drain.
func TestDrainOnClientGone(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(sharedFixtures(t), "anthropic_messages_stream_tool_use_parallel.sse"))
	require.NoError(t, err)
	head := fixtureHead(t, raw, "event: message_delta")
	const body = `{"model":"m","stream":true,"max_tokens":300,"messages":[{"role":"user","content":"` + prompt40 + `"}]}`
	estimate := Usage{InputTokens: 416, OutputTokens: 39, Estimated: true} // as in TestStreamsCutShortAreEstimated

	for _, tt := range []struct {
		name     string
		drain    time.Duration
		finish   bool // the upstream sends the rest once the client left
		shutdown bool // Shutdown ends the drain
		usage    Usage
	}{
		{"the rest is read: final usage", testkit.Timeout, true, false, Usage{InputTokens: 416, OutputTokens: 109}},
		{"bounded by d", 100 * time.Millisecond, false, false, estimate},
		{"ended by Shutdown", time.Hour, false, true, estimate},
	} {
		t.Run(tt.name, func(t *testing.T) {
			left := make(chan struct{}, 1)
			upstreamDone := make(chan struct{})
			lim := newRecordingSettler(Limits{})
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				defer close(upstreamDone)
				_, _ = io.ReadAll(r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = w.Write(head)
				w.(http.Flusher).Flush()
				if !tt.finish {
					<-r.Context().Done() // only the relay ends it
					return
				}
				select {
				case <-left:
				case <-r.Context().Done():
					t.Error("the upstream request was cancelled when the client left")
					return
				}
				_, _ = w.Write(raw[len(head):])
			}, Route{Prefix: "/", Provider: ProviderAnthropic}, WithLimiter(lim),
				WithDrainOnClientGone(tt.drain), WithLogger(slog.New(logHook{drainStarted, left})))

			ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
			defer cancel()
			resp, err := e.front.Client().Do(e.request("POST", "/v1/messages", body).WithContext(ctx))
			require.NoError(t, err)
			got := make([]byte, len(head))
			_, err = io.ReadFull(resp.Body, got)
			require.NoError(t, err)
			assert.Equal(t, string(head), string(got))
			cancel()
			resp.Body.Close()
			if !tt.finish {
				testkit.Recv(t, left, "the relay did not start draining when the client left")
			}
			if tt.shutdown {
				done, stop := context.WithCancel(context.Background())
				stop() // a cancelled context: Shutdown cuts at once
				assert.ErrorIs(t, e.relay.Shutdown(done), context.Canceled)
			}
			testkit.Recv(t, upstreamDone, "the upstream request did not end")
			e.handled()

			rec := e.lastRecord()
			assert.Equal(t, StatusClientClosedRequest, rec.Status)
			assert.True(t, rec.ClientGone)
			assert.Equal(t, ErrTypeClientCanceled, rec.ErrorType)
			assert.Equal(t, tt.usage, rec.Usage)
			assert.Equal(t, int64(len(head)), rec.BytesOut, "nothing is sent after the client left")
			assert.Equal(t, []settlement{{reserved: 310, used: tt.usage.Total()}}, lim.all(t, e.relay))
		})
	}
}
