package relay

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fixturePrices prices every fixture's request model, "m-known", per
// million: input $2.50, output $10, reasoning $12 (priced apart so that
// the reasoning counts matter). Per token that is 2.5, 10 and 12
// micro-dollars.
func fixturePrices(t *testing.T) *PriceTable {
	return mustPrices(t, PriceEntry{Models: []string{"m-known"},
		Price: ModelPrice{Input: 2_500_000, Output: 10_000_000, Reasoning: 12_000_000}})
}

// TestCostSharedFixtures: each recorded provider stream, relayed, costs
// the hand-computed amount (usage as TestReplaySharedFixtures asserts it;
// sums rounded half up once), in the record and in relay_cost_total.
func TestCostSharedFixtures(t *testing.T) {
	dir := sharedFixtures(t)
	chat, msgs, resp := "/v1/chat/completions", "/v1/messages", "/v1/responses"
	for _, tt := range []struct {
		file     string
		provider Provider
		path     string
		want     Money // micro-dollars
	}{
		{"openai_chat_stream_tool_calls_include_usage.sse", ProviderOpenAI, chat, 283},                  // 53*2.5 + 15*10 = 132.5 + 150 = 282.5
		{"openai_chat_stream_text_include_usage.sse", ProviderOpenAI, chat, 285},                        // 78*2.5 + 9*10 = 195 + 90
		{"openai_chat_stream_text_include_usage_fullheaders.sse", ProviderOpenAI, chat, 140},            // 16*2.5 + 10*10 = 40 + 100
		{"openai_chat_stream_no_usage_2023.sse", ProviderOpenAI, chat, 93},                              // estimated 1*2.5 + 9*10 = 92.5
		{"openai_responses_stream_text_2025-03.sse", ProviderOpenAI, resp, 178},                         // 27*2.5 + 11*10 = 67.5 + 110 = 177.5
		{"openai_responses_stream_text_seqnum.sse", ProviderOpenAI, resp, 150},                          // 20*2.5 + 10*10 = 50 + 100
		{"openai_responses_stream_reasoning_function_call.sse", ProviderOpenAI, resp, 5719},             // 53*2.5 + (469-448)*10 + 448*12 = 132.5 + 210 + 5376 = 5718.5
		{"anthropic_messages_stream_text.sse", ProviderAnthropic, msgs, 100},                            // 20*2.5 + 5*10 = 50 + 50
		{"anthropic_messages_stream_tool_use_parallel.sse", ProviderAnthropic, msgs, 2130},              // 416*2.5 + 109*10 = 1040 + 1090
		{"anthropic_messages_stream_overloaded_error_CONSTRUCTED.sse", ProviderAnthropic, msgs, 60},     // 20*2.5 + estimated 1*10
		{"azure_openai_chat_stream_text_include_usage.sse", ProviderAzure, chat, 158},                   // 15*2.5 + 12*10 = 37.5 + 120 = 157.5
		{"azure_openai_chat_stream_tool_calls_include_usage.sse", ProviderAzure, chat, 1796},            // 159*2.5 + (127-64)*10 + 64*12 = 397.5 + 630 + 768 = 1795.5
		{"azure_openai_chat_stream_no_usage_gpt4o.sse", ProviderAzure, chat, 33},                        // estimated 1*2.5 + 3*10 = 32.5
		{"azure_openai_chat_stream_async_filter.sse", ProviderAzure, chat, 23},                          // estimated 1*2.5 + 2*10 = 22.5
		{"deepseek_chat_stream_reasoning_content.sse", ProviderOpenAI, chat, 2531},                      // 6*2.5 + (212-198)*10 + 198*12 = 15 + 140 + 2376
		{"deepseek_chat_stream_no_include_usage.sse", ProviderOpenAI, chat, 123},                        // 5*2.5 + 11*10 = 12.5 + 110 = 122.5
		{"siliconflow_chat_stream_reasoning_usage_every_chunk_EXCERPT.sse", ProviderOpenAI, chat, 1321}, // 294*2.5 + (51-38)*10 + 38*12 = 735 + 130 + 456
		// reasoning 11 reported above output 10: capped, never charged twice
		{"openrouter_chat_stream_comments_midstream_error.sse", ProviderOpenAI, chat, 228},                // 43*2.5 + 10*12 = 107.5 + 120 = 227.5
		{"groq_chat_stream_x_groq_usage.sse", ProviderOpenAI, chat, 270},                                  // 12*2.5 + 24*10 = 30 + 240
		{"gemini_native_stream_crlf.sse", ProviderOpenAI, "/v1beta/models/m:streamGenerateContent", 1265}, // 18*2.5 + (115-35)*10 + 35*12 = 45 + 800 + 420
		{"openai_speech_sse_CONSTRUCTED.sse", ProviderOpenAI, "/v1/audio/speech", 1045},                   // 14*2.5 + 101*10 = 35 + 1010
	} {
		t.Run(tt.file, func(t *testing.T) {
			stream, err := os.ReadFile(filepath.Join(dir, tt.file))
			require.NoError(t, err)
			e := newEnv(t, replay(stream, "text/event-stream"), Route{Prefix: "/", Provider: tt.provider},
				WithModels("m-known"), WithPrices(fixturePrices(t)))
			resp, body := e.do(e.request("POST", tt.path, `{"model":"m-known","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`))
			assert.Equal(t, 200, resp.StatusCode)
			assert.True(t, bytes.Equal(stream, body), "relayed bytes differ from the recording")
			rec := e.lastRecord()
			assert.Equal(t, Charge{Known: true, Amount: tt.want, Currency: "USD", PriceVersion: "test-2026-11"}, rec.Cost, "usage %+v", rec.Usage)
			assert.InDelta(t, float64(tt.want)/1e6, testutil.ToFloat64(e.relay.metrics.cost.WithLabelValues("test", "m-known")), 1e-12)
			assert.Zero(t, testutil.ToFloat64(e.relay.metrics.costUnknown.WithLabelValues("test", "model")))
		})
	}
}

// jsonAnswer serves body as a JSON response with status.
func jsonAnswer(status int, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

// TestCostUnknownAndZero: a model the table lacks is an unknown cost,
// never zero, counted by route and reason (no model label: clients name
// models freely); so is an answer without usage. A request that consumed
// nothing costs a known zero; without prices nothing is priced.
func TestCostUnknownAndZero(t *testing.T) {
	prices := mustPrices(t,
		PriceEntry{Models: []string{"big-model"}, Price: ModelPrice{Input: 1_000_000, Output: 2_000_000}},
		PriceEntry{Models: []string{"alias"}, Price: ModelPrice{Input: 5_000_000, Output: 5_000_000}})
	known := func(n Money) Charge {
		return Charge{Known: true, Amount: n, Currency: "USD", PriceVersion: "test-2026-11"}
	}
	unknown := Charge{Currency: "USD", PriceVersion: "test-2026-11"}
	for _, tt := range []struct {
		name    string
		up      http.HandlerFunc
		model   string
		key     string
		prices  *PriceTable
		want    Charge
		reason  string // relay_cost_unknown_total's reason counted, if any
		metered Money  // relay_cost_total{route,"other"} in micro-units
	}{
		// 100*1 + 10*2 = 120: the model the upstream used, not the alias
		{"response model priced", jsonAnswer(200, `{"model":"big-model-2025-01-01","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":10}}`), "alias", testKey, prices, known(120), "", 120},
		// the upstream's model is unknown: the requested one, 100*5 + 10*5 = 550
		{"request model priced", jsonAnswer(200, `{"model":"mystery","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":10}}`), "alias", testKey, prices, known(550), "", 550},
		{"unknown model", jsonAnswer(200, `{"model":"mystery","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":10}}`), "secret-model-x", testKey, prices, unknown, "model", 0},
		{"no usage reported", jsonAnswer(200, `{"model":"big-model","choices":[]}`), "big-model", testKey, prices, unknown, "usage", 0},
		{"upstream error without usage", jsonAnswer(500, `{"error":{"message":"x"}}`), "secret-model-x", testKey, prices, known(0), "", 0},
		{"refused by the relay", jsonAnswer(200, `{}`), "secret-model-x", "sk-wrong", prices, known(0), "", 0},
		{"no prices", jsonAnswer(200, `{"model":"big-model","choices":[],"usage":{"prompt_tokens":100,"completion_tokens":10}}`), "big-model", testKey, nil, Charge{}, "", 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.up, Route{Prefix: "/v1"}, WithPrices(tt.prices))
			req := e.request("POST", "/v1/chat/completions", `{"model":"`+tt.model+`","messages":[]}`)
			req.Header.Set("Authorization", "Bearer "+tt.key)
			e.do(req)
			rec := e.lastRecord()
			assert.Equal(t, tt.want, rec.Cost)
			for _, reason := range []string{"model", "usage"} {
				want := 0.0
				if reason == tt.reason {
					want = 1
				}
				assert.Equal(t, want, testutil.ToFloat64(e.relay.metrics.costUnknown.WithLabelValues("test", reason)), reason)
			}
			assert.InDelta(t, float64(tt.metered)/1e6, testutil.ToFloat64(e.relay.metrics.cost.WithLabelValues("test", "other")), 1e-12)
			// A client's model name never becomes a label.
			mfs, err := e.reg.Gather()
			require.NoError(t, err)
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					for _, lp := range m.GetLabel() {
						assert.NotEqual(t, "secret-model-x", lp.GetValue(), mf.GetName())
					}
				}
			}
		})
	}
}

// TestCostCharacters: speech billed in characters is priced by
// Record.Characters when the table prices characters; a "*" entry
// prices every voice of the provider.
func TestCostCharacters(t *testing.T) {
	prices := mustPrices(t, PriceEntry{Provider: ProviderAzureTTS, Models: []string{"*"}, Price: ModelPrice{Characters: 16_000_000}})
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "audio/mpeg")
		_, _ = w.Write([]byte("\xff\xf3\x00\x00"))
	}, Route{Prefix: "/cognitiveservices", Provider: ProviderAzureTTS}, WithPrices(prices))
	req := e.request("POST", "/cognitiveservices/v1", `<speak version="1.0" xml:lang="en-US"><voice name="en-US-AvaNeural">Hi there</voice></speak>`)
	req.Header.Set("Content-Type", "application/ssml+xml")
	resp, _ := e.do(req)
	assert.Equal(t, 200, resp.StatusCode)
	rec := e.lastRecord()
	require.Equal(t, int64(8), rec.Characters)
	// 8 characters * $16 per million = 8 * 16 = 128 micro-dollars
	assert.Equal(t, Charge{Known: true, Amount: 128, Currency: "USD", PriceVersion: "test-2026-11"}, rec.Cost)
}

// benchRelay is a relay over tr, with prices for model "m" or none.
func benchRelay(tb testing.TB, tr http.RoundTripper, prices *PriceTable) *Relay {
	rl, err := New(WithRoutes(Route{Name: "r", Prefix: "/", Upstream: "http://upstream.test"}),
		WithAPIKeys(APIKey{Key: testKey}), WithTransport(tr), WithRegisterer(prometheus.NewRegistry()),
		WithRecorder(NopRecorder{}), WithModels("m"), WithPrices(prices))
	require.NoError(tb, err)
	return rl
}

func benchPrices(tb testing.TB) *PriceTable {
	pt, err := NewPriceTable("v", "USD", []PriceEntry{
		{Models: []string{"gpt-4o", "gpt-4o-mini", "claude-sonnet-4"}, Price: ModelPrice{Input: 3_000_000, Output: 15_000_000}},
		{Models: []string{"m*"}, Price: ModelPrice{Input: 2_500_000, CachedInput: 1_250_000, Output: 10_000_000}},
	})
	require.NoError(tb, err)
	return pt
}

// TestCostNoAllocation: pricing a request (lookup, arithmetic, the cost
// metric) adds no allocation to it.
func TestCostNoAllocation(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without -race (.ci/run runs one)")
	}
	tr := &memTransport{sse: benchStream()}
	measure := func(rl *Relay) float64 {
		w := &discardWriter{h: http.Header{}}
		return testing.AllocsPerRun(200, func() {
			clear(w.h)
			rl.ServeHTTP(w, benchRequest("/v1/chat/completions"))
		})
	}
	priced := benchRelay(t, tr, benchPrices(t))
	plain, withPrices := measure(benchRelay(t, tr, nil)), measure(priced)
	assert.LessOrEqual(t, withPrices, plain, "allocations per request with prices vs without")
	assert.Positive(t, testutil.ToFloat64(priced.metrics.cost.WithLabelValues("r", "m")), "the requests were priced")
}

// BenchmarkHandlerPriced is BenchmarkHandler's sse case with and without
// a price table: the difference is what pricing costs a request.
func BenchmarkHandlerPriced(b *testing.B) {
	tr := &memTransport{sse: benchStream()}
	for _, tt := range []struct {
		name   string
		prices *PriceTable
	}{{"unpriced", nil}, {"priced", benchPrices(b)}} {
		b.Run(tt.name, func(b *testing.B) {
			rl := benchRelay(b, tr, tt.prices)
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				rl.ServeHTTP(w, benchRequest("/v1/chat/completions"))
			}
		})
	}
}
