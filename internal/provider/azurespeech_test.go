package provider

import "testing"

// TestAzureSpeechFamily is Azure Speech's table: SSML in, audio out.
func TestAzureSpeechFamily(t *testing.T) {
	const path = "/cognitiveservices/v1"
	runRequestCases(t, []requestCase{
		{name: "ssml", route: "azure-tts", path: path, contentType: "application/ssml+xml",
			body: `<speak version='1.0' xml:lang='en-US'><voice name='en-US-AvaNeural'>Hello, <break time="200ms"/>world &amp; you.</voice></speak>`,
			// "Hello, world & you." is 19 characters; billed in characters
			want: Request{Model: "en-US-AvaNeural", Characters: 19, PromptEstimate: 5}},
		{name: "plain text on its route", route: "azure-tts", path: path, contentType: "text/plain",
			body: "  Hello,\n world  ", want: Request{Characters: 12, PromptEstimate: 3}},
		{name: "ssml by its type on any route", route: "openai", path: "/tts", contentType: "application/ssml+xml; charset=utf-8",
			body: `<speak><voice name="v">abc</voice></speak>`,
			// an "openai" route bills tokens on any path but OpenAI's audio paths
			want:   Request{Model: "v", Characters: 3, PromptEstimate: 1},
			tokens: 1 + defaultMaxOutput},
	})
	runResponseCases(t, []responseCase{
		{name: "audio carries nothing to observe", route: "azure-tts", json: "ID3\x04\x00\x00\xff\xf3\xe4\xc4"},
	})
	runErrorCases(t, "azure-tts", ShapeOpenAI, []errorCase{
		{"rate_limited", `{"error":{"message":"Msg.","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`},
	})
}
