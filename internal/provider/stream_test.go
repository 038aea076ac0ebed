package provider

import (
	"strings"
	"testing"
)

func TestEventContent(t *testing.T) {
	tests := []struct {
		name, event, data string
		want              bool
	}{
		// OpenAI-style chat chunks.
		{"chat text", "", `{"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}`, true},
		{"chat text spaced", "", `{"choices": [{"delta": {"content": "Hi"}}]}`, true},
		{"chat role only", "", `{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null}}]}`, false},
		{"chat content null", "", `{"choices":[{"delta":{"role":"assistant","content":null}}]}`, false},
		{"chat empty delta", "", `{"choices":[{"delta":{},"finish_reason":"stop"}]}`, false},
		{"chat usage only", "", `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}`, false},
		{"chat escaped quote first", "", `{"choices":[{"delta":{"content":"\"quoted\""}}]}`, true},
		{"reasoning_content", "", `{"choices":[{"delta":{"content":null,"reasoning_content":"H"}}]}`, true},
		{"reasoning_content empty", "", `{"choices":[{"delta":{"content":null,"reasoning_content":""}}]}`, false},
		{"openrouter reasoning", "", `{"choices":[{"delta":{"content":"","reasoning":"We"}}]}`, true},
		{"tool_calls", "", `{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}`, true},
		{"tool_calls empty", "", `{"choices":[{"delta":{"content":"","tool_calls":[]}}]}`, false},
		{"refusal", "", `{"choices":[{"delta":{"refusal":"No."}}]}`, true},
		{"legacy text", "", `{"object":"text_completion","choices":[{"text":"Once","index":0}]}`, true},
		{"legacy text empty", "", `{"object":"text_completion","choices":[{"text":"","finish_reason":"length"}]}`, false},
		{"azure prompt filter", "", `{"choices":[],"created":0,"id":"","model":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}`, false},
		{"azure async annotation", "", `{"choices":[{"content_filter_offsets":{"check_offset":1},"content_filter_results":{},"finish_reason":null,"index":0}],"created":0,"id":"","model":""}`, false},
		{"gemini text", "", `{"candidates": [{"content": {"parts": [{"text": "1"}],"role": "model"}}]}`, true},
		{"gemini function call", "", `{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}}}]}}]}`, true},
		{"done", "", `[DONE]`, false},
		{"empty", "", ``, false},
		{"message event name is default", "message", `{"choices":[{"delta":{"content":"x"}}]}`, true},

		// Anthropic.
		{"anthropic text_delta", "content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"2"}      }`, true},
		{"anthropic input_json_delta", "content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a"}}`, true},
		{"anthropic empty input_json_delta", "content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}`, false},
		{"anthropic thinking_delta", "content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hm"}}`, true},
		{"anthropic signature_delta", "content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"abc"}}`, false},
		{"anthropic text block start", "content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`, false},
		{"anthropic tool block start", "content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}`, true},
		{"anthropic ping", "ping", `{"type": "ping"}`, false},
		{"anthropic message_start", "message_start", `{"type":"message_start","message":{"model":"m","content":[],"usage":{"input_tokens":1,"output_tokens":1}}}`, false},
		{"anthropic message_delta", "message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}`, false},
		{"anthropic no event name", "", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}`, true},
		{"anthropic error", "error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, false},

		// Responses API.
		{"responses text delta", "response.output_text.delta", `{"type":"response.output_text.delta","delta":"Hi"}`, true},
		{"responses empty delta", "response.output_text.delta", `{"type":"response.output_text.delta","delta":""}`, false},
		{"responses args delta", "response.function_call_arguments.delta", `{"type":"response.function_call_arguments.delta","delta":"{\""}`, true},
		{"responses reasoning summary delta", "response.reasoning_summary_text.delta", `{"type":"response.reasoning_summary_text.delta","delta":"Think"}`, true},
		{"responses reasoning text delta", "response.reasoning_text.delta", `{"type":"response.reasoning_text.delta","delta":"Think"}`, true},
		{"responses text done", "response.output_text.done", `{"type":"response.output_text.done","text":"Hi there"}`, false},
		{"responses created", "response.created", `{"type":"response.created","response":{"model":"m","usage":null}}`, false},
		{"responses data only", "", `{"type":"response.output_text.delta","delta":"Hi"}`, true},

		// Audio.
		{"speech delta", "", `{"type":"speech.audio.delta","audio":"SUQz"}`, true},
		{"speech done", "", `{"type":"speech.audio.done","usage":{"input_tokens":1,"output_tokens":2,"total_tokens":3}}`, false},
		{"transcript delta", "", `{"type":"transcript.text.delta","delta":"Hello"}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStream(fam(ProviderOpenAI))
			if got := s.Event([]byte(tt.event), []byte(tt.data), false); got != tt.want {
				t.Errorf("content = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestEventTruncated(t *testing.T) {
	full := `{"id":"c","model":"gpt-x","choices":[],"usage":{"prompt_tokens":294,"completion_tokens":51}}`
	cut := full[:strings.Index(full, "294")+2] // ends in "29"

	s := NewStream(fam(ProviderOpenAI))
	s.Event(nil, []byte(cut), true)
	if s.HasUsage() {
		t.Fatalf("usage from a cut object: %+v", s.Usage())
	}
	if s.Model() != "gpt-x" {
		t.Errorf("model before the cut = %q, want gpt-x", s.Model())
	}
	s.Event(nil, []byte(full), false)
	if got, want := s.Usage(), (Usage{InputTokens: 294, OutputTokens: 51}); got != want {
		t.Errorf("usage = %+v, want %+v", got, want)
	}

	// A cut content chunk still counts as content, and a model cut inside
	// its string is not captured.
	s.Reset(fam(ProviderOpenAI))
	long := `{"choices":[{"delta":{"content":"` + strings.Repeat("a", 100) + `"}}],"model":"gpt-y"}`
	if !s.Event(nil, []byte(long[:60]), true) {
		t.Error("truncated content chunk not reported as content")
	}
	s.Event(nil, []byte(long[:len(long)-4]), true)
	if s.Model() != "" {
		t.Errorf("model from a cut string = %q", s.Model())
	}

	// Anthropic message_start cut before its usage closes.
	s.Reset(fam(ProviderAnthropic))
	ms := `{"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":20,"output_tokens":1}}}`
	s.Event([]byte("message_start"), []byte(ms[:len(ms)-5]), true)
	if s.HasUsage() {
		t.Errorf("usage from a cut message_start: %+v", s.Usage())
	}
}

func TestBody(t *testing.T) {
	tests := []struct {
		name, provider, body string
		want                 streamResult
	}{
		{"openai chat", ProviderOpenAI,
			`{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-x","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"}}],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":8}}}`,
			streamResult{usage: Usage{InputTokens: 10, OutputTokens: 20, CachedInputTokens: 4, ReasoningTokens: 8}, hasUsage: true, model: "gpt-x"}},
		{"legacy completions", ProviderOpenAI,
			`{"object":"text_completion","model":"instruct-x","choices":[{"text":"Hi"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}`,
			streamResult{usage: Usage{InputTokens: 3, OutputTokens: 1}, hasUsage: true, model: "instruct-x"}},
		{"responses", ProviderOpenAI,
			`{"id":"resp_1","object":"response","status":"completed","error":null,"model":"gpt-r","output":[],"usage":{"input_tokens":100,"input_tokens_details":{"cached_tokens":60},"output_tokens":40,"output_tokens_details":{"reasoning_tokens":30},"total_tokens":140}}`,
			streamResult{usage: Usage{InputTokens: 100, OutputTokens: 40, CachedInputTokens: 60, ReasoningTokens: 30}, hasUsage: true, model: "gpt-r"}},
		{"anthropic", ProviderAnthropic,
			`{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":5,"cache_creation_input_tokens":10,"cache_read_input_tokens":20,"output_tokens":7}}`,
			streamResult{usage: Usage{InputTokens: 35, OutputTokens: 7, CachedInputTokens: 20, CacheCreationInputTokens: 10}, hasUsage: true, model: "claude-x"}},
		{"anthropic shape under another provider", ProviderOpenAI,
			`{"type":"message","model":"claude-x","usage":{"input_tokens":5,"cache_read_input_tokens":20,"output_tokens":7}}`,
			streamResult{usage: Usage{InputTokens: 25, OutputTokens: 7, CachedInputTokens: 20}, hasUsage: true, model: "claude-x"}},
		{"openai shape under anthropic provider", ProviderAnthropic,
			`{"object":"chat.completion","model":"claude-compat","usage":{"prompt_tokens":9,"completion_tokens":2}}`,
			streamResult{usage: Usage{InputTokens: 9, OutputTokens: 2}, hasUsage: true, model: "claude-compat"}},
		{"gemini object", ProviderOpenAI,
			`{"candidates":[{"content":{"parts":[{"text":"Hi"}]}}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":2,"thoughtsTokenCount":5,"toolUsePromptTokenCount":3,"totalTokenCount":18},"modelVersion":"gemini-x"}`,
			streamResult{usage: Usage{InputTokens: 11, OutputTokens: 7, ReasoningTokens: 5}, hasUsage: true, model: "gemini-x"}},
		{"gemini array", ProviderOpenAI,
			`[{"candidates":[],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":1},"modelVersion":"gemini-x"},
			  {"candidates":[],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":6}}]`,
			streamResult{usage: Usage{InputTokens: 8, OutputTokens: 6}, hasUsage: true, model: "gemini-x"}},
		{"openai error", ProviderOpenAI,
			`{"error":{"message":"Rate limit","type":"requests","param":null,"code":"rate_limit_exceeded"}}`,
			streamResult{errType: "requests"}},
		{"openai error without type", ProviderOpenAI,
			`{"error":{"message":"bad","type":null,"code":"invalid_api_key"}}`,
			streamResult{errType: "invalid_api_key"}},
		{"anthropic error", ProviderAnthropic,
			`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`,
			streamResult{errType: "overloaded_error"}},
		{"gemini error", ProviderOpenAI,
			`{"error":{"code":429,"message":"Quota","status":"RESOURCE_EXHAUSTED"}}`,
			streamResult{errType: "RESOURCE_EXHAUSTED"}},
		{"escaped model", ProviderOpenAI,
			`{"model":"a\/b\u00e9","usage":{"prompt_tokens":1,"completion_tokens":1}}`,
			streamResult{usage: Usage{InputTokens: 1, OutputTokens: 1}, hasUsage: true, model: "a/bé"}},
		{"binary audio", ProviderOpenAI, "\xff\xf3\xe4\xc4\x00", streamResult{}},
		{"empty", ProviderOpenAI, "", streamResult{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStream(fam(tt.provider))
			s.Body([]byte(tt.body), false)
			checkResult(t, streamResult{usage: s.Usage(), hasUsage: s.HasUsage(), model: s.Model(), errType: s.ErrorType()}, tt.want)
		})
	}
}

func TestBodyTruncated(t *testing.T) {
	body := `{"id":"chatcmpl-1","model":"gpt-x","choices":[{"message":{"content":"` +
		strings.Repeat("x", 200) + `"}}],"usage":{"prompt_tokens":10,"completion_tokens":20}}`
	s := NewStream(fam(ProviderOpenAI))
	s.Body([]byte(body[:len(body)-10]), true)
	if s.HasUsage() || s.Model() != "gpt-x" {
		t.Errorf("usage %+v (has %v), model %q; want no usage, model gpt-x", s.Usage(), s.HasUsage(), s.Model())
	}
}

func TestResetClearsState(t *testing.T) {
	s := NewStream(fam(ProviderAnthropic))
	s.Event([]byte("message_start"), []byte(`{"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":20,"cache_read_input_tokens":5,"output_tokens":1}}}`), false)
	s.Event([]byte("error"), []byte(`{"type":"error","error":{"type":"overloaded_error"}}`), false)
	s.Reset(fam(ProviderOpenAI))
	if s.HasUsage() || s.Usage() != (Usage{}) || s.Model() != "" || s.ErrorType() != "" {
		t.Fatalf("state survived Reset: %+v %q %q", s.Usage(), s.Model(), s.ErrorType())
	}
	// Anthropic parts must not leak into the next Anthropic response either.
	s.Reset(fam(ProviderAnthropic))
	s.Event([]byte("message_delta"), []byte(`{"type":"message_delta","usage":{"output_tokens":3}}`), false)
	if got, want := s.Usage(), (Usage{OutputTokens: 3}); got != want {
		t.Errorf("usage = %+v, want %+v", got, want)
	}
}

func TestErrorTypeVariants(t *testing.T) {
	tests := []struct {
		name, event string
		data        []string
		want        string
	}{
		{"first error wins", "", []string{
			`{"error":{"type":"first"}}`, `{"error":{"type":"second"}}`}, "first"},
		{"responses error event with code", "error", []string{
			`{"type":"error","code":"rate_limit_exceeded","message":"slow down","param":null}`}, "rate_limit_exceeded"},
		{"responses error event nested", "error", []string{
			`{"type":"error","error":{"type":"invalid_request_error","code":"x","message":"m"}}`}, "invalid_request_error"},
		{"bare error event", "error", []string{`{"type":"error","message":"?"}`}, "error"},
		{"error null is not an error", "", []string{`{"choices":[],"error":null}`}, ""},
		{"responses failed without error object", "response.failed", []string{
			`{"type":"response.failed","response":{"error":null}}`}, "response.failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStream(fam(ProviderOpenAI))
			for _, d := range tt.data {
				s.Event([]byte(tt.event), []byte(d), false)
			}
			if got := s.ErrorType(); got != tt.want {
				t.Errorf("ErrorType = %q, want %q", got, tt.want)
			}
		})
	}
}

// allocEvents returns typical hot-path events: content chunks and the
// chunks that arrive between them.
func allocEvents() []struct{ name, provider, event, data string } {
	return []struct{ name, provider, event, data string }{
		{"openai content chunk", ProviderOpenAI, "",
			`{"id":"chatcmpl-Dx0XpqH8w09uBXwq1zFGYdETjtnEl","object":"chat.completion.chunk","created":1782955817,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_d0469e1700","choices":[{"index":0,"delta":{"content":" equals"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"ZEKTbJxjG"}`},
		{"openai tool call chunk", ProviderOpenAI, "",
			`{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"UK"}}]},"logprobs":null,"finish_reason":null}],"usage":null}`},
		{"anthropic content_block_delta", ProviderAnthropic, "content_block_delta",
			`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'ll retrieve the secrets for"}}`},
		{"anthropic ping", ProviderAnthropic, "ping", `{"type": "ping"}`},
		{"responses text delta", ProviderOpenAI, "response.output_text.delta",
			`{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":" there"}`},
		{"cumulative usage chunk", ProviderOpenAI, "",
			`{"id":"019a","object":"chat.completion.chunk","created":1,"model":"deepseek-ai/DeepSeek-R1","choices":[{"index":0,"delta":{"content":null,"reasoning_content":" can","role":"assistant"},"finish_reason":null}],"system_fingerprint":"","usage":{"prompt_tokens":294,"completion_tokens":32,"total_tokens":326,"completion_tokens_details":{"reasoning_tokens":32}}}`},
		{"gemini chunk", ProviderOpenAI, "",
			`{"candidates": [{"content": {"parts": [{"text": "4\n15"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 18,"candidatesTokenCount": 79,"totalTokenCount": 132,"thoughtsTokenCount": 35},"modelVersion": "gemini-2.5-flash"}`},
		{"speech delta", ProviderOpenAI, "", `{"type":"speech.audio.delta","audio":"SUQzBAAAAAAA"}`},
		{"done", ProviderOpenAI, "", `[DONE]`},
	}
}

// TestEventAllocs enforces the hot-path rule: Event does not allocate for
// ordinary events once the model is known, nor when a pooled Stream is
// Reset and captures the model again into its retained buffer.
func TestEventAllocs(t *testing.T) {
	for _, ev := range allocEvents() {
		t.Run(ev.name, func(t *testing.T) {
			name, data, f := []byte(ev.event), []byte(ev.data), fam(ev.provider)
			s := NewStream(f)
			s.Event(name, data, false) // first event may capture the model
			if n := testing.AllocsPerRun(100, func() { s.Event(name, data, false) }); n != 0 {
				t.Errorf("steady state: %v allocs per Event, want 0", n)
			}
			if n := testing.AllocsPerRun(100, func() {
				s.Reset(f)
				s.Event(name, data, false)
			}); n != 0 {
				t.Errorf("after Reset: %v allocs per Event, want 0", n)
			}
		})
	}
}

func BenchmarkEvent(b *testing.B) {
	for _, ev := range allocEvents() {
		b.Run(ev.name, func(b *testing.B) {
			name, data := []byte(ev.event), []byte(ev.data)
			s := NewStream(fam(ev.provider))
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				s.Event(name, data, false)
			}
		})
	}
}

// TestContentBytes: each family counts the text its content events carry,
// as written between the quotes, and nothing else: not the JSON around
// it, not audio or images, not an event without output; OpenRouter's
// reasoning, repeated as reasoning_details text, counts once.
func TestContentBytes(t *testing.T) {
	tests := []struct {
		name, event, data string
		want              int64
	}{
		{"chat text", "", `{"id":"c","choices":[{"index":0,"delta":{"content":"Hello"}}],"usage":null}`, 5},
		{"chat escapes as written", "", `{"id":"c","choices":[{"delta":{"content":"a\n\"b\""}}]}`, 8},
		{"chat role only", "", `{"id":"c","choices":[{"delta":{"role":"assistant","content":""}}]}`, 0},
		{"deepseek reasoning", "", `{"id":"d","choices":[{"delta":{"content":null,"reasoning_content":"Hmm"}}]}`, 3},
		{"openrouter reasoning counted once", "", `{"id":"o","choices":[{"delta":{"content":"","reasoning":"We go","reasoning_details":[{"type":"reasoning.text","text":"We go"}]}}]}`, 5},
		{"tool call name and arguments", "", `{"id":"c","choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"a\""}}]}}]}`, 3 + 6},
		{"audio transcript, not the audio", "", `{"id":"c","choices":[{"delta":{"audio":{"id":"a","data":"AAAAAAAA","transcript":"Hi"}}}]}`, 2},
		{"legacy text", "", `{"id":"c","object":"text_completion","choices":[{"text":"Once"}]}`, 4},
		{"usage chunk", "", `{"id":"c","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}`, 0},
		{"responses text delta", "response.output_text.delta", `{"type":"response.output_text.delta","delta":"Hi there"}`, 8},
		{"responses audio delta", "response.audio.delta", `{"type":"response.audio.delta","delta":"AAAAAAAA"}`, 0},
		{"anthropic text", "content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}`, 5},
		{"anthropic tool input", "content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"q\":1}"}}`, 9},
		{"anthropic thinking", "content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hm"}}`, 2},
		{"anthropic signature", "content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"abcd"}}`, 0},
		{"anthropic tool block", "content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"lookup","input":{}}}`, 6},
		{"anthropic message_start", "message_start", `{"type":"message_start","message":{"model":"m","content":[],"usage":{"input_tokens":1,"output_tokens":1}}}`, 0},
		{"gemini text and thoughts", "", `{"candidates":[{"content":{"parts":[{"text":"ab","thought":true},{"text":"cde"}]}}]}`, 5},
		{"gemini function call", "", `{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}}}]}}]}`, int64(len(`{"name":"f","args":{}}`))},
		{"gemini inline audio", "", `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"audio/pcm","data":"AAAA"}}]}}]}`, 0},
		{"speech audio", "", `{"type":"speech.audio.delta","audio":"SUQzBAAA"}`, 0},
		{"transcript", "", `{"type":"transcript.text.delta","delta":"Hello"}`, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStream(fam(ProviderOpenAI))
			s.Event([]byte(tt.event), []byte(tt.data), false)
			if got := s.ContentBytes(); got != tt.want {
				t.Errorf("ContentBytes = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestEstimate: a response cut short keeps every count the provider
// reported and estimates the others: input from the prompt estimate,
// output from the content seen (bytes / 4, at least one per content
// event); a response whose counts all arrived is not estimated.
func TestEstimate(t *testing.T) {
	tests := []struct {
		name      string
		route     string
		events    []event
		prompt    int64
		want      Usage
		estimated bool
	}{
		{"openai chat cut before its usage chunk", ProviderOpenAI, []event{
			{"", `{"id":"c","model":"m","choices":[{"delta":{"role":"assistant","content":""}}]}`},
			{"", `{"id":"c","model":"m","choices":[{"delta":{"content":"Hello, wor"}}]}`}, // 10 bytes: 3
			{"", `{"id":"c","model":"m","choices":[{"delta":{"content":"ld"}}]}`},
		}, 40, Usage{InputTokens: 40, OutputTokens: 3}, true},
		{"one token per chunk at least", ProviderOpenAI, []event{
			{"", `{"id":"c","choices":[{"delta":{"content":"a"}}]}`},
			{"", `{"id":"c","choices":[{"delta":{"content":"b"}}]}`},
			{"", `{"id":"c","choices":[{"delta":{"content":"c"}}]}`},
		}, 0, Usage{OutputTokens: 3}, true},
		{"anthropic cut before message_delta: the placeholder is not the output", ProviderAnthropic, []event{
			{"message_start", `{"type":"message_start","message":{"model":"c","usage":{"input_tokens":25,"cache_read_input_tokens":100,"output_tokens":1}}}`},
			{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"The answer is forty-two, as always."}}`}, // 35 bytes: 9
		}, 999, Usage{InputTokens: 125, OutputTokens: 9, CachedInputTokens: 100}, true},
		{"anthropic complete", ProviderAnthropic, []event{
			{"message_start", `{"type":"message_start","message":{"model":"c","usage":{"input_tokens":25,"output_tokens":1}}}`},
			{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}`},
			{"message_delta", `{"type":"message_delta","usage":{"output_tokens":4}}`},
		}, 999, Usage{InputTokens: 25, OutputTokens: 4}, false},
		{"gemini's cumulative counts so far stand", ProviderOpenAI, []event{
			{"", `{"candidates":[{"content":{"parts":[{"text":"1\n2\n3"}]}}],"usageMetadata":{"promptTokenCount":18,"candidatesTokenCount":5,"thoughtsTokenCount":30}}`},
			{"", `{"candidates":[{"content":{"parts":[{"text":"4\n5\n6\n7\n8\n9"}]}}]}`},
		}, 999, Usage{InputTokens: 18, OutputTokens: 35, ReasoningTokens: 30}, false},
		{"nothing seen", ProviderOpenAI, nil, 12, Usage{InputTokens: 12}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStream(fam(tt.route))
			for _, ev := range tt.events {
				s.Event([]byte(ev.name), []byte(ev.data), false)
			}
			got, estimated := s.Estimate(tt.prompt)
			if got != tt.want || estimated != tt.estimated {
				t.Errorf("Estimate = %+v, %v; want %+v, %v", got, estimated, tt.want, tt.estimated)
			}
		})
	}
}
