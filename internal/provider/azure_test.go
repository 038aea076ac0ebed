package provider

import "testing"

// TestAzureFamily is Azure OpenAI's table: OpenAI's API, with the
// deployment in the path and Azure's content filter chunks.
func TestAzureFamily(t *testing.T) {
	const chat = "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21"
	runRequestCases(t, []requestCase{
		{name: "deployment names the model", route: "azure", path: chat, contentType: "application/json",
			body:      `{"stream":true,"messages":[{"role":"user","content":"Hi"}]}`,
			want:      Request{Model: "my-gpt4o", Stream: true, PromptEstimate: 1},
			tokens:    1 + defaultMaxOutput,
			rewritten: `{"stream":true,"messages":[{"role":"user","content":"Hi"}],"stream_options":{"include_usage":true}}`},
		{name: "the body's model wins", route: "azure", path: chat,
			body:   `{"model":"gpt-4o-mini","max_completion_tokens":64,"messages":[]}`,
			want:   Request{Model: "gpt-4o-mini", MaxOutputTokens: 64},
			tokens: 64},
		{name: "v1 path without a deployment", route: "azure", path: "/openai/v1/chat/completions",
			body: `{"model":"gpt-5-mini","stream":true,"stream_options":{"include_usage":true}}`,
			want: Request{Model: "gpt-5-mini", Stream: true, IncludeUsage: true}, tokens: defaultMaxOutput},
		{name: "embeddings", route: "azure", path: "/openai/deployments/emb/embeddings?api-version=2024-10-21",
			body: `{"input":"abcdefgh"}`, want: Request{Model: "emb", PromptEstimate: 2}, tokens: 2},
		{name: "speech is billed in characters", route: "azure", path: "/openai/deployments/tts/audio/speech",
			body: `{"input":"Hallo","voice":"alloy"}`,
			want: Request{Model: "tts", Characters: 5, PromptEstimate: 2}},
	})
	runResponseCases(t, []responseCase{
		{name: "content filter chunks carry no output", route: "azure", events: []event{
			{"", `{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}`},
			{"", `{"choices":[{"delta":{"content":"Hi","role":"assistant"},"content_filter_results":{},"index":0}],"created":1,"id":"c","model":"gpt-az","object":"chat.completion.chunk"}`},
			{"", `{"choices":[{"content_filter_offsets":{"check_offset":2,"start_offset":0,"end_offset":2},"content_filter_results":{"hate":{"filtered":false}},"finish_reason":null,"index":0}],"created":0,"id":"","model":""}`},
			{"", `{"choices":[],"created":1,"id":"c","model":"gpt-az","usage":{"prompt_tokens":44,"completion_tokens":21,"total_tokens":65}}`},
			{"", `[DONE]`},
		}, want: streamResult{usage: Usage{InputTokens: 44, OutputTokens: 21}, hasUsage: true, model: "gpt-az", content: 1}, done: true},
	})
	runErrorCases(t, "azure", ShapeOpenAI, []errorCase{
		{"auth", `{"error":{"message":"Msg.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`},
	})
}

// TestAzureAcceptsStreamOptions: the usage edit goes only to Azure
// api-versions that take stream_options (2024-09-01-preview and later,
// preview or GA), to the v1 API without one, and to OpenAI (whose
// routes judge an api-version as Azure's); never to older ones.
func TestAzureAcceptsStreamOptions(t *testing.T) {
	for _, tt := range []struct {
		route, query string
		want         bool
	}{
		{"azure", "api-version=2023-05-15", false},
		{"azure", "api-version=2024-02-01", false},
		{"azure", "api-version=2024-05-01-preview", false},
		{"azure", "api-version=2024-06-01", false},
		{"azure", "api-version=2024-08-01-preview", false},
		{"azure", "api-version=2024-09-01-preview", true},
		{"azure", "api-version=2024-10-21", true},
		{"azure", "api-version=2025-04-01-preview", true},
		{"azure", "x=1&api-version=2024-06-01&y=2", false},
		{"azure", "api-version=2024-06-01&api-version=2024-10-21", false}, // the first counts
		{"azure", "", true},                    // the v1 API takes no api-version
		{"azure", "api-version=preview", true}, // nor a dated one
		{"azure", "api-version=latest", true},
		{"azure", "api-versions=2024-06-01", true},
		{"azure", "api-version=2024-6-01", true}, // not a date: the retry is the safety net
		{"openai", "", true},
		{"openai", "api-version=2024-06-01", false}, // Azure behind an "openai" route
		{"anthropic", "api-version=2024-06-01", true},
	} {
		if got := fam(tt.route).AcceptsUsageEdit(tt.query); got != tt.want {
			t.Errorf("%s ?%s: AcceptsUsageEdit = %v, want %v", tt.route, tt.query, got, tt.want)
		}
	}
}
