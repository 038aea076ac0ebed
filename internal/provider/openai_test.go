package provider

import "testing"

// TestOpenAIFamily is the OpenAI-compatible family's table: its requests,
// its rewrite, its events and bodies, and its error shape.
func TestOpenAIFamily(t *testing.T) {
	const chat = "/v1/chat/completions"
	runRequestCases(t, []requestCase{
		{name: "chat stream asks for usage", route: "openai", path: chat, contentType: "application/json",
			body: `{"model":"gpt-4o-mini","stream":true,"max_tokens":50,"max_completion_tokens":100,"messages":[{"role":"user","content":"Hello, world!"}]}`,
			// "Hello, world!" is 13 bytes: 4 tokens; max_completion_tokens beats max_tokens
			want:      Request{Model: "gpt-4o-mini", Stream: true, MaxOutputTokens: 100, PromptEstimate: 4},
			tokens:    104,
			rewritten: `{"model":"gpt-4o-mini","stream":true,"max_tokens":50,"max_completion_tokens":100,"messages":[{"role":"user","content":"Hello, world!"}],"stream_options":{"include_usage":true}}`},
		{name: "chat stream that asked", route: "openai", path: chat,
			body:   `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]}`,
			want:   Request{Model: "m", Stream: true, IncludeUsage: true},
			tokens: defaultMaxOutput},
		{name: "unary chat", route: "openai", path: chat,
			body:   `{"model":"m","messages":[{"role":"user","content":"abcd"}],"max_tokens":7}`,
			want:   Request{Model: "m", MaxOutputTokens: 7, PromptEstimate: 1},
			tokens: 8},
		{name: "responses", route: "openai", path: "/v1/responses",
			body: `{"model":"gpt-5","input":"Summarize","instructions":"Short.","max_output_tokens":500,"stream":true}`,
			// 9 + 6 = 15 bytes: 4; the Responses API reports usage unasked
			want:   Request{Model: "gpt-5", Stream: true, MaxOutputTokens: 500, PromptEstimate: 4},
			tokens: 504},
		{name: "embeddings generate nothing", route: "openai", path: "/v1/embeddings",
			body:   `{"model":"text-embedding-3-small","input":"The food was delicious"}`,
			want:   Request{Model: "text-embedding-3-small", PromptEstimate: 6},
			tokens: 6},
		{name: "audio is not billed in tokens", route: "openai", path: "/v1/audio/transcriptions",
			body: `{"model":"whisper-1"}`, want: Request{Model: "whisper-1"}},
		{name: "a body that tells nothing reserves nothing", route: "openai", path: chat,
			body: `{"stream":true}`, want: Request{Stream: true},
			rewritten: `{"stream":true,"stream_options":{"include_usage":true}}`},
		{name: "the default family", route: "", path: chat,
			body: `{"model":"m","stream":false}`, want: Request{Model: "m"}, tokens: defaultMaxOutput},
	})
	runResponseCases(t, []responseCase{
		{name: "chat stream", route: "openai", events: []event{
			{"", `{"id":"c","object":"chat.completion.chunk","model":"gpt-x","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}`},
			{"", `{"id":"c","object":"chat.completion.chunk","model":"gpt-x","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}`},
			{"", `{"id":"c","object":"chat.completion.chunk","model":"gpt-x","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}],"usage":null}`},
			{"", `{"id":"c","object":"chat.completion.chunk","model":"gpt-x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}`},
			{"", `{"id":"c","object":"chat.completion.chunk","model":"gpt-x","choices":[],"usage":{"prompt_tokens":30,"completion_tokens":12,"prompt_tokens_details":{"cached_tokens":16},"completion_tokens_details":{"reasoning_tokens":5}}}`},
			{"", `[DONE]`},
		}, want: streamResult{usage: Usage{InputTokens: 30, OutputTokens: 12, CachedInputTokens: 16, ReasoningTokens: 5},
			hasUsage: true, model: "gpt-x", content: 2}, done: true},
		{name: "a chunk that starts otherwise is still a chat chunk", route: "openai", events: []event{
			{"", `{"object":"chat.completion.chunk","model":"m","choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":2,"completion_tokens":1}}`},
		}, want: streamResult{usage: Usage{InputTokens: 2, OutputTokens: 1}, hasUsage: true, model: "m", content: 1}},
		{name: "deepseek cache hits", route: "openai", events: []event{
			{"", `{"id":"d","model":"deepseek-chat","choices":[{"delta":{"reasoning_content":"Hm"}}],"usage":{"prompt_tokens":90,"completion_tokens":4,"prompt_cache_hit_tokens":64}}`},
		}, want: streamResult{usage: Usage{InputTokens: 90, OutputTokens: 4, CachedInputTokens: 64}, hasUsage: true, model: "deepseek-chat", content: 1}},
		{name: "groq's x_groq", route: "openai", events: []event{
			{"", `{"id":"g","model":"llama","choices":[{"delta":{"content":"Hi"}}]}`},
			{"", `{"id":"g","model":"llama","choices":[],"x_groq":{"usage":{"prompt_tokens":17,"completion_tokens":2}}}`},
		}, want: streamResult{usage: Usage{InputTokens: 17, OutputTokens: 2}, hasUsage: true, model: "llama", content: 1}},
		{name: "the last usage wins, field by field", route: "openai", events: []event{
			{"", `{"id":"s","model":"m","choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":8},"completion_tokens_details":{"reasoning_tokens":1}}}`},
			// a later report without details keeps the cached and
			// reasoning counts; its totals replace the earlier ones
			{"", `{"id":"s","model":"m","choices":[{"delta":{"content":"b"}}],"usage":{"prompt_tokens":10,"completion_tokens":5}}`},
			{"", `{"id":"s","model":"m","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":null,"completion_tokens_details":{"reasoning_tokens":3}}}`},
		}, want: streamResult{usage: Usage{InputTokens: 12, OutputTokens: 5, CachedInputTokens: 8, ReasoningTokens: 3}, hasUsage: true, model: "m", content: 2}},
		{name: "audio tokens", route: "openai", events: []event{
			{"", `{"id":"a","model":"gpt-4o-audio-preview","choices":[{"delta":{"audio":{"id":"au","transcript":"Hi"}}}]}`},
			{"", `{"id":"a","model":"gpt-4o-audio-preview","choices":[],"usage":{"prompt_tokens":30,"completion_tokens":60,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":12},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":48}}}`},
		}, want: streamResult{usage: Usage{InputTokens: 30, OutputTokens: 60, AudioInputTokens: 12, AudioOutputTokens: 48}, hasUsage: true, model: "gpt-4o-audio-preview", content: 1}},
		{name: "in-band error with a numeric code", route: "openai", events: []event{
			{"", `{"id":"o","model":"vendor/m","choices":[{"delta":{"content":"partial"}}]}`},
			{"", `{"id":"o","choices":[{"delta":{"content":""},"finish_reason":"error"}],"error":{"code":502,"message":"Upstream failed"}}`},
		}, want: streamResult{model: "vendor/m", errType: "502", content: 1}},
		{name: "responses", route: "openai", events: []event{
			{"response.created", `{"type":"response.created","response":{"model":"gpt-r","usage":null}}`},
			{"response.output_text.delta", `{"type":"response.output_text.delta","delta":"Hel"}`},
			{"response.output_text.delta", `{"type":"response.output_text.delta","delta":""}`},
			{"response.function_call_arguments.delta", `{"type":"response.function_call_arguments.delta","delta":"{\""}`},
			{"response.completed", `{"type":"response.completed","response":{"model":"gpt-r","usage":{"input_tokens":50,"input_tokens_details":{"cached_tokens":10},"output_tokens":20,"output_tokens_details":{"reasoning_tokens":8}}}}`},
		}, want: streamResult{usage: Usage{InputTokens: 50, OutputTokens: 20, CachedInputTokens: 10, ReasoningTokens: 8},
			hasUsage: true, model: "gpt-r", content: 2}, done: true},
		{name: "responses failed", route: "openai", events: []event{
			{"", `{"type":"response.failed","response":{"model":"gpt-r","error":{"code":"server_error","message":"x"}}}`},
		}, want: streamResult{model: "gpt-r", errType: "server_error"}, done: true},
		{name: "responses error event", route: "openai", events: []event{
			{"error", `{"type":"error","code":"rate_limit_exceeded","message":"slow down"}`},
		}, want: streamResult{errType: "rate_limit_exceeded"}, done: true},
		{name: "chat completion body", route: "openai",
			json: `{"id":"c","object":"chat.completion","model":"gpt-x","choices":[{"message":{"content":"Hi"}}],"usage":{"prompt_tokens":10,"completion_tokens":20,"prompt_tokens_details":{"cached_tokens":4}}}`,
			want: streamResult{usage: Usage{InputTokens: 10, OutputTokens: 20, CachedInputTokens: 4}, hasUsage: true, model: "gpt-x"}},
		{name: "responses body", route: "openai",
			json: `{"id":"r","object":"response","model":"gpt-r","output":[],"usage":{"input_tokens":7,"input_tokens_details":{"cached_tokens":2},"output_tokens":3}}`,
			want: streamResult{usage: Usage{InputTokens: 7, OutputTokens: 3, CachedInputTokens: 2}, hasUsage: true, model: "gpt-r"}},
		{name: "error body", route: "openai",
			json: `{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}`,
			want: streamResult{errType: "invalid_request_error"}},
	})
	runErrorCases(t, "openai", ShapeOpenAI, []errorCase{
		{"auth", `{"error":{"message":"Msg.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`},
		{"rate_limited", `{"error":{"message":"Msg.","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`},
		{"body_too_large", `{"error":{"message":"Msg.","type":"invalid_request_error","param":null,"code":"request_too_large"}}`},
		{"bad_request", `{"error":{"message":"Msg.","type":"invalid_request_error","param":null,"code":"invalid_request"}}`},
		{"body_timeout", `{"error":{"message":"Msg.","type":"invalid_request_error","param":null,"code":"request_timeout"}}`},
		{"no_route", `{"error":{"message":"Msg.","type":"invalid_request_error","param":null,"code":"not_found"}}`},
		{"method_not_allowed", `{"error":{"message":"Msg.","type":"invalid_request_error","param":null,"code":"method_not_allowed"}}`},
		{"client_canceled", `{"error":{"message":"Msg.","type":"invalid_request_error","param":null,"code":"client_canceled"}}`},
		{"upstream_timeout", `{"error":{"message":"Msg.","type":"server_error","param":null,"code":"upstream_timeout"}}`},
		{"shutting_down", `{"error":{"message":"Msg.","type":"server_error","param":null,"code":"service_unavailable"}}`},
		{"limiter", `{"error":{"message":"Msg.","type":"server_error","param":null,"code":"service_unavailable"}}`},
		{"overloaded", `{"error":{"message":"Msg.","type":"server_error","param":null,"code":"service_unavailable"}}`},
		{"upstream_connect", `{"error":{"message":"Msg.","type":"server_error","param":null,"code":"upstream_error"}}`},
		{"stream_interrupted", `{"error":{"message":"Msg.","type":"server_error","param":null,"code":"upstream_error"}}`},
	})
}

// TestUsageChunk: only the usage-only chunk include_usage adds (empty
// choices, a usage object) is the one the relay may hide, and only until
// the next event; Azure's
// prompt filter chunk, content chunks with "usage":null, chunks that
// carry usage beside choices, named events and other shapes are not.
func TestUsageChunk(t *testing.T) {
	for _, tt := range []struct {
		name, data string
		want       bool
	}{
		{"", `{"id":"c","object":"chat.completion.chunk","model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}`, true},
		{"", ` {"choices": [ ],"usage": {"prompt_tokens":1}}`, true},
		{"message", `{"choices":[],"usage":{}}`, true},
		{"", `{"id":"c","choices":[{"index":0,"delta":{"content":"x"}}],"usage":null}`, false},
		{"", `{"id":"c","choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":1}}`, false}, // usage on a content chunk
		{"", `{"choices":[],"created":0,"id":"","prompt_filter_results":[]}`, false},
		{"", `{"choices":[],"usage":null}`, false},
		{"", `{"choices":[{"delta":{"x":{"choices":[]}}}],"usage":{"a":1}}`, false}, // a nested empty choices
		{"", `{"choices":[],"x":{"usage":{"a":1}},"usage":null}`, false},            // a nested usage
		{"response.completed", `{"choices":[],"usage":{}}`, false},
		{"", `[DONE]`, false},
		{"", ``, false},
	} {
		s := NewStream(fam("openai"))
		s.Event([]byte(tt.name), []byte(tt.data), false)
		if got := s.UsageChunk(); got != tt.want {
			t.Errorf("UsageChunk after %q %s = %v, want %v", tt.name, tt.data, got, tt.want)
		}
		if s.Event(nil, []byte(`{"id":"c","choices":[{"delta":{"content":"x"}}]}`), false); s.UsageChunk() {
			t.Errorf("UsageChunk still set after the next event")
		}
	}
}

// TestUsageEditParts: the edit's parts, length and applied body agree
// with each other for every kind of insertion, and the zero edit changes
// nothing.
func TestUsageEditParts(t *testing.T) {
	for _, body := range []string{
		`{"stream":true}`,
		`{"stream":true,"stream_options":null}`,
		`{"stream":true,"stream_options":{"include_usage":false}}`,
		`{"stream":true,"stream_options":{ }}`,
		`{"stream":true,"stream_options":{"x":1}}`,
	} {
		b := []byte(body)
		e, ok := fam("openai").UsageEdit("/v1/chat/completions", b, Request{Stream: true})
		if !ok {
			t.Fatalf("%s: no edit", body)
		}
		head, ins, rest := e.Parts(b)
		joined := string(head) + ins + string(rest)
		if got := string(e.Apply(b)); got != joined || len(got) != e.Len(len(b)) {
			t.Errorf("%s: Apply %s, Parts %s, Len %d", body, got, joined, e.Len(len(b)))
		}
		if string(b) != body {
			t.Fatalf("the body was modified in place")
		}
	}
	var zero Edit
	if head, ins, rest := zero.Parts([]byte("abc")); string(head) != "abc" || ins != "" || rest != nil || zero.Len(3) != 3 {
		t.Errorf("the zero edit changes something: %q %q %q", head, ins, rest)
	}
	if _, ok := fam("openai").UsageEdit("/v1/chat/completions", []byte(`{"stream":true}`), Request{Stream: true, IncludeUsage: true}); ok {
		t.Error("a request that asked for usage got an edit")
	}
}

func TestRefusesUsageEdit(t *testing.T) {
	for body, want := range map[string]bool{
		`{"error":{"message":"Unrecognized request argument supplied: stream_options","type":"invalid_request_error","param":null,"code":null}}`:          true,
		`{"error":{"message":"Unknown parameter: 'stream_options'.","type":"invalid_request_error","param":"stream_options","code":"unknown_parameter"}}`: true,
		`{"error":{"message":"Unknown parameter: 'foo'.","type":"invalid_request_error","param":"foo","code":"unknown_parameter"}}`:                       false,
		``: false,
	} {
		if got := RefusesUsageEdit([]byte(body)); got != want {
			t.Errorf("RefusesUsageEdit(%s) = %v, want %v", body, got, want)
		}
	}
}
