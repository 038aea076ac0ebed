package provider

import "testing"

// TestGeminiFamily is Gemini native's table (on "openai" routes).
func TestGeminiFamily(t *testing.T) {
	runRequestCases(t, []requestCase{
		{name: "streamGenerateContent", route: "openai", path: "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
			contentType: "application/json",
			body:        `{"systemInstruction":{"parts":[{"text":"Be brief."}]},"contents":[{"role":"user","parts":[{"text":"Count to ten"}]}],"generationConfig":{"maxOutputTokens":500,"temperature":0}}`,
			// "Be brief." 9 + "Count to ten" 12 = 21 bytes: 6; no rewrite, Gemini reports usage unasked
			want:   Request{Model: "gemini-2.5-flash", Stream: true, MaxOutputTokens: 500, PromptEstimate: 6},
			tokens: 506},
		{name: "generateContent", route: "openai", path: "/v1beta/models/gemini-2.5-pro:generateContent",
			body:   `{"contents":[{"parts":[{"text":"Hi"},{"inlineData":{"mimeType":"image/png","data":"iVBORw0KGgo="}}]}]}`,
			want:   Request{Model: "gemini-2.5-pro", PromptEstimate: 1},
			tokens: 1 + defaultMaxOutput},
	})
	runResponseCases(t, []responseCase{
		{name: "chunks with cumulative usage", route: "openai", events: []event{
			{"", `{"candidates":[{"content":{"parts":[{"text":"1\n2"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":40,"candidatesTokenCount":2,"thoughtsTokenCount":12,"cachedContentTokenCount":32},"modelVersion":"gemini-t","responseId":"r"}`},
			{"", `{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}}}],"role":"model"}}],"usageMetadata":{"promptTokenCount":40,"candidatesTokenCount":3,"thoughtsTokenCount":12,"cachedContentTokenCount":32},"modelVersion":"gemini-t"}`},
			{"", `{"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":40,"toolUsePromptTokenCount":5,"candidatesTokenCount":3,"thoughtsTokenCount":12,"cachedContentTokenCount":32},"modelVersion":"gemini-t"}`},
		}, want: streamResult{usage: Usage{InputTokens: 45, OutputTokens: 15, CachedInputTokens: 32, ReasoningTokens: 12},
			hasUsage: true, model: "gemini-t", content: 2}},
		{name: "a proxy that reorders keys", route: "openai", events: []event{
			{"", `{"responseId":"r","modelVersion":"gemini-t","usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":1},"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"audio/pcm","data":"AAAA"}}]}}]}`},
			{"", `{"zzz":1,"candidates":[{"content":{"parts":[{"text":"x"}]}}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2}}`},
		}, want: streamResult{usage: Usage{InputTokens: 4, OutputTokens: 2}, hasUsage: true, model: "gemini-t", content: 2}},
		{name: "audio by modality; the last usage wins, field by field", route: "openai", events: []event{
			{"", `{"candidates":[{"content":{"parts":[{"text":"Hi"}]}}],"usageMetadata":{"promptTokenCount":30,"candidatesTokenCount":1,"cachedContentTokenCount":8,"promptTokensDetails":[{"modality":"TEXT","tokenCount":10},{"modality":"AUDIO","tokenCount":20}]},"modelVersion":"gemini-live-t"}`},
			// a later chunk without cachedContentTokenCount or the details
			// keeps them; its counts replace the earlier ones
			{"", `{"candidates":[{"content":{"parts":[{"inlineData":{"mimeType":"audio/pcm","data":"AAAA"}}]}}],"usageMetadata":{"promptTokenCount":30,"candidatesTokenCount":40,"candidatesTokensDetails":[{"modality":"AUDIO","tokenCount":36},{"modality":"TEXT","tokenCount":4}]},"modelVersion":"gemini-live-t"}`},
		}, want: streamResult{usage: Usage{InputTokens: 30, OutputTokens: 40, CachedInputTokens: 8, AudioInputTokens: 20, AudioOutputTokens: 36},
			hasUsage: true, model: "gemini-live-t", content: 2}},
		{name: "error chunk", route: "openai", events: []event{
			{"", `{"error":{"code":429,"message":"Quota exceeded","status":"RESOURCE_EXHAUSTED"}}`},
		}, want: streamResult{errType: "RESOURCE_EXHAUSTED"}},
		{name: "the JSON array streamGenerateContent sends without alt=sse", route: "openai",
			json: `[{"candidates":[{"content":{"parts":[{"text":"a"}]}}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1},"modelVersion":"gemini-t"},
			{"candidates":[{"content":{"parts":[{"text":"b"}]}}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"thoughtsTokenCount":4},"modelVersion":"gemini-t"}]`,
			want: streamResult{usage: Usage{InputTokens: 3, OutputTokens: 6, ReasoningTokens: 4}, hasUsage: true, model: "gemini-t"}},
	})
}
