package provider

import "testing"

// TestOpenAISpeechFamily is OpenAI speech's table (on "openai" routes):
// characters in, audio or speech events out.
func TestOpenAISpeechFamily(t *testing.T) {
	runRequestCases(t, []requestCase{
		{name: "sse speech", route: "openai", path: "/v1/audio/speech", contentType: "application/json",
			body: `{"model":"gpt-4o-mini-tts","input":"Hello!","voice":"alloy","stream_format":"sse"}`,
			// billed in characters: no tokens reserved
			want: Request{Model: "gpt-4o-mini-tts", Stream: true, Characters: 6, StreamFormat: "sse", PromptEstimate: 2}},
		{name: "audio speech", route: "openai", path: "/v1/audio/speech",
			body: `{"model":"tts-1","input":"\u00e9t\u00e9","voice":"alloy"}`,
			want: Request{Model: "tts-1", Characters: 3, PromptEstimate: 4}},
		{name: "a rewritten prefix hides the path: input and voice tell", route: "openai", path: "/speak",
			body: `{"model":"tts-1","input":"abc","voice":"alloy"}`,
			// the path is not OpenAI's audio path, so tokens are reserved as well
			want:   Request{Model: "tts-1", Characters: 3, PromptEstimate: 1},
			tokens: 1 + defaultMaxOutput},
		{name: "input without voice is a Responses prompt", route: "openai", path: "/v1/responses",
			body: `{"model":"gpt-5","input":"abcd"}`, want: Request{Model: "gpt-5", PromptEstimate: 1}, tokens: 1 + defaultMaxOutput},
	})
	runResponseCases(t, []responseCase{
		{name: "speech events", route: "openai", events: []event{
			{"", `{"type":"speech.audio.delta","audio":"SUQzBAAAAAAA"}`},
			{"", `{"type":"speech.audio.delta","audio":""}`},
			{"", `{"type":"speech.audio.delta","audio":"//PkxAAAAAAA"}`},
			{"", `{"type":"speech.audio.done","usage":{"input_tokens":14,"output_tokens":101,"total_tokens":115}}`},
			{"", `[DONE]`},
		}, want: streamResult{usage: Usage{InputTokens: 14, OutputTokens: 101}, hasUsage: true, content: 2}, done: true},
		{name: "transcription events: duration is not tokens", route: "openai", events: []event{
			{"", `{"type":"transcript.text.delta","delta":"Hello"}`},
			{"", `{"type":"transcript.text.done","text":"Hello","usage":{"type":"duration","seconds":3}}`},
		}, want: streamResult{content: 1}, done: true},
		{name: "transcription events billed in tokens, audio input apart", route: "openai", events: []event{
			{"", `{"type":"transcript.text.delta","delta":"Hello"}`},
			{"", `{"type":"transcript.text.done","text":"Hello","usage":{"type":"tokens","input_tokens":20,"input_token_details":{"text_tokens":4,"audio_tokens":16},"output_tokens":2,"total_tokens":22}}`},
		}, want: streamResult{usage: Usage{InputTokens: 20, OutputTokens: 2, AudioInputTokens: 16}, hasUsage: true, content: 1}, done: true},
	})
}
