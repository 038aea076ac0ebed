package provider

import "testing"

// TestAnthropicFamily is the Messages API's table.
func TestAnthropicFamily(t *testing.T) {
	runRequestCases(t, []requestCase{
		{name: "streamed message, no rewrite", route: "anthropic", path: "/v1/messages", contentType: "application/json",
			body: `{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"system":"You are terse.","messages":[{"role":"user","content":"What is 1+1?"}]}`,
			// "You are terse." 14 + "What is 1+1?" 12 = 26 bytes: 7
			want:   Request{Model: "claude-sonnet-4-5", Stream: true, MaxOutputTokens: 1024, PromptEstimate: 7},
			tokens: 1031},
		{name: "system blocks, tools", route: "anthropic", path: "/v1/messages?beta=true",
			body: `{"model":"claude-x","max_tokens":10,"system":[{"type":"text","text":"abcd","cache_control":{"type":"ephemeral"}}],"tools":[{"name":"f","description":"efgh","input_schema":{"type":"object"}}],"messages":[]}`,
			// "abcd" + "f" + "efgh" = 9 bytes: 3; types and cache_control do not count
			want:   Request{Model: "claude-x", MaxOutputTokens: 10, PromptEstimate: 3},
			tokens: 13},
	})
	runResponseCases(t, []responseCase{
		{name: "message with cache and a tool", route: "anthropic", events: []event{
			{"message_start", `{"type":"message_start","message":{"model":"claude-t","usage":{"input_tokens":10,"cache_creation_input_tokens":20,"cache_read_input_tokens":30,"output_tokens":1}}}`},
			{"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`},
			{"ping", `{"type": "ping"}`},
			{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me look."}}`},
			{"content_block_stop", `{"type":"content_block_stop","index":0}`},
			{"content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t","name":"lookup","input":{}}}`},
			{"content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}`},
			{"content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"q\":1}"}}`},
			{"content_block_stop", `{"type":"content_block_stop","index":1}`},
			// message_delta repeats the input fields: replaced, not added
			{"message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"input_tokens":10,"cache_creation_input_tokens":20,"cache_read_input_tokens":30,"output_tokens":42}}`},
			{"message_stop", `{"type":"message_stop"}`},
		}, want: streamResult{usage: Usage{InputTokens: 60, OutputTokens: 42, CachedInputTokens: 30, CacheCreationInputTokens: 20},
			hasUsage: true, model: "claude-t", content: 3}, done: true},
		{name: "data-only events are typed by their data", route: "anthropic", events: []event{
			{"", `{"type":"message_start","message":{"model":"claude-t","usage":{"input_tokens":5,"output_tokens":1}}}`},
			{"", `{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hm"}}`},
			{"", `{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"abc"}}`},
			{"", `{"type":"message_delta","usage":{"output_tokens":9}}`},
		}, want: streamResult{usage: Usage{InputTokens: 5, OutputTokens: 9}, hasUsage: true, model: "claude-t", content: 1}},
		{name: "overloaded mid-stream", route: "anthropic", events: []event{
			{"message_start", `{"type":"message_start","message":{"model":"claude-t","usage":{"input_tokens":20,"output_tokens":1}}}`},
			{"error", `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`},
			// message_start's output_tokens is a placeholder, not a count:
			// no output was reported (Estimate fills it in)
		}, want: streamResult{usage: Usage{InputTokens: 20}, hasUsage: true, model: "claude-t",
			errType: "overloaded_error"}, done: true},
		{name: "message_delta revises the input", route: "anthropic", events: []event{
			{"message_start", `{"type":"message_start","message":{"model":"claude-t","usage":{"input_tokens":25,"cache_read_input_tokens":7,"output_tokens":1}}}`},
			{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Searching."}}`},
			// server tools: the final, cumulative usage raises input_tokens;
			// cache_read_input_tokens is absent and keeps its earlier value
			{"message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"input_tokens":10682,"output_tokens":510,"server_tool_use":{"web_search_requests":1}}}`},
			{"message_stop", `{"type":"message_stop"}`},
		}, want: streamResult{usage: Usage{InputTokens: 10689, OutputTokens: 510, CachedInputTokens: 7},
			hasUsage: true, model: "claude-t", content: 1}, done: true},
		{name: "message body", route: "anthropic",
			json: `{"id":"msg_1","type":"message","role":"assistant","model":"claude-t","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":3,"cache_read_input_tokens":4,"output_tokens":2}}`,
			want: streamResult{usage: Usage{InputTokens: 7, OutputTokens: 2, CachedInputTokens: 4}, hasUsage: true, model: "claude-t"}},
		{name: "a Messages body says so on any route", route: "openai",
			json: `{"type":"message","model":"claude-t","usage":{"input_tokens":3,"cache_creation_input_tokens":4,"output_tokens":2}}`,
			want: streamResult{usage: Usage{InputTokens: 7, OutputTokens: 2, CacheCreationInputTokens: 4}, hasUsage: true, model: "claude-t"}},
		{name: "error body", route: "anthropic",
			json: `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`,
			want: streamResult{errType: "authentication_error"}},
	})
	runErrorCases(t, "anthropic", ShapeAnthropic, []errorCase{
		{"auth", `{"type":"error","error":{"type":"authentication_error","message":"Msg."}}`},
		{"rate_limited", `{"type":"error","error":{"type":"rate_limit_error","message":"Msg."}}`},
		{"body_too_large", `{"type":"error","error":{"type":"request_too_large","message":"Msg."}}`},
		{"bad_request", `{"type":"error","error":{"type":"invalid_request_error","message":"Msg."}}`},
		{"body_timeout", `{"type":"error","error":{"type":"invalid_request_error","message":"Msg."}}`},
		{"method_not_allowed", `{"type":"error","error":{"type":"invalid_request_error","message":"Msg."}}`},
		{"client_canceled", `{"type":"error","error":{"type":"invalid_request_error","message":"Msg."}}`},
		{"no_route", `{"type":"error","error":{"type":"not_found_error","message":"Msg."}}`},
		{"shutting_down", `{"type":"error","error":{"type":"overloaded_error","message":"Msg."}}`},
		{"limiter", `{"type":"error","error":{"type":"overloaded_error","message":"Msg."}}`},
		{"overloaded", `{"type":"error","error":{"type":"overloaded_error","message":"Msg."}}`},
		{"upstream_timeout", `{"type":"error","error":{"type":"api_error","message":"Msg."}}`},
		{"upstream_connect", `{"type":"error","error":{"type":"api_error","message":"Msg."}}`},
		{"stream_interrupted", `{"type":"error","error":{"type":"api_error","message":"Msg."}}`},
	})
}
