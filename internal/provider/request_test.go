package provider

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name, provider, path, contentType, body string
		want                                    Request
	}{
		{"openai chat streaming", ProviderOpenAI, "/v1/chat/completions", "application/json",
			`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_tokens":256,
			  "messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hello there, how are you?"}]}`,
			// "Be brief." 9 + 25 = 34 bytes -> 9 tokens; roles are not counted
			Request{Model: "gpt-4o", Stream: true, MaxOutputTokens: 256, PromptEstimate: 9, IncludeUsage: true}},
		{"include_usage false", ProviderOpenAI, "/v1/chat/completions", "application/json",
			`{"model":"m","stream":true,"stream_options":{"include_usage":false},"messages":[]}`,
			Request{Model: "m", Stream: true}},
		{"stream false", ProviderOpenAI, "/v1/chat/completions", "",
			`{"model":"m","stream":false,"max_completion_tokens":100,"max_tokens":50,"messages":[{"role":"user","content":"abcd"}]}`,
			Request{Model: "m", MaxOutputTokens: 100, PromptEstimate: 1}},
		{"responses", ProviderOpenAI, "/v1/responses", "application/json",
			`{"model":"gpt-5","input":"Summarize this text please","instructions":"Short.","max_output_tokens":2048,"stream":true}`,
			// 26 + 6 = 32 bytes -> 8
			Request{Model: "gpt-5", Stream: true, MaxOutputTokens: 2048, PromptEstimate: 8}},
		{"responses with image", ProviderOpenAI, "/v1/responses", "application/json",
			`{"model":"gpt-5","input":[{"role":"user","content":[{"type":"input_text","text":"What is this?"},{"type":"input_image","image_url":"data:image/png;base64,` + strings.Repeat("A", 4000) + `"}]}]}`,
			// only "What is this?" (13 bytes) counts
			Request{Model: "gpt-5", PromptEstimate: 4}},
		{"anthropic", ProviderAnthropic, "/v1/messages", "application/json",
			`{"model":"claude-sonnet-4-5","max_tokens":32000,"stream":true,"system":[{"type":"text","text":"You are terse.","cache_control":{"type":"ephemeral"}}],
			  "messages":[{"role":"user","content":[{"type":"text","text":"What is 1+1?"}]}]}`,
			// 14 + 12 = 26 bytes -> 7
			Request{Model: "claude-sonnet-4-5", Stream: true, MaxOutputTokens: 32000, PromptEstimate: 7}},
		{"legacy completions", ProviderOpenAI, "/v1/completions", "application/json",
			`{"model":"instruct","prompt":"Once upon a time","max_tokens":7}`,
			Request{Model: "instruct", MaxOutputTokens: 7, PromptEstimate: 4}},
		{"azure deployment from path", ProviderAzure, "/openai/deployments/my-gpt4o/chat/completions?api-version=2024-10-21", "application/json",
			`{"stream":true,"messages":[{"role":"user","content":"Hi"}]}`,
			Request{Model: "my-gpt4o", Stream: true, PromptEstimate: 1}},
		{"body model beats azure path", ProviderAzure, "/openai/deployments/dep/chat/completions", "application/json",
			`{"model":"gpt-4o-mini","messages":[]}`,
			Request{Model: "gpt-4o-mini"}},
		{"gemini native stream", ProviderOpenAI, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", "application/json",
			`{"contents":[{"role":"user","parts":[{"text":"Count to ten"}]}],"generationConfig":{"maxOutputTokens":500}}`,
			Request{Model: "gemini-2.5-flash", Stream: true, MaxOutputTokens: 500, PromptEstimate: 3}},
		{"gemini native unary", ProviderOpenAI, "/v1beta/models/gemini-2.5-flash:generateContent", "application/json",
			`{"contents":[{"parts":[{"text":"Hi"}]}]}`,
			Request{Model: "gemini-2.5-flash", PromptEstimate: 1}},
		{"openai speech sse", ProviderOpenAI, "/v1/audio/speech", "application/json",
			// Héllo\nworld 😀 : 13 characters, written with escapes
			`{"model":"gpt-4o-mini-tts","input":"H\u00e9llo\nworld \ud83d\ude00","voice":"alloy","stream_format":"sse"}`,
			Request{Model: "gpt-4o-mini-tts", Stream: true, Characters: 13, StreamFormat: "sse", PromptEstimate: 8}},
		{"openai speech binary", ProviderOpenAI, "/v1/audio/speech", "application/json",
			`{"model":"tts-1","input":"Größe: 5 €","voice":"alloy"}`,
			Request{Model: "tts-1", Characters: 10, PromptEstimate: 4}},
		{"openai speech audio format", ProviderOpenAI, "/v1/audio/speech", "application/json",
			`{"model":"gpt-4o-mini-tts","input":"abc","voice":"alloy","stream_format":"audio"}`,
			Request{Model: "gpt-4o-mini-tts", Characters: 3, StreamFormat: "audio", PromptEstimate: 1}},
		{"invalid json", ProviderOpenAI, "/v1/chat/completions", "application/json",
			`{"model":"m","stream":tr`,
			Request{Model: "m"}},
		{"empty body", ProviderOpenAI, "/v1/chat/completions", "application/json", ``, Request{}},
		{"json array", ProviderOpenAI, "/v1/chat/completions", "application/json", `[1,2]`, Request{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fam(tt.provider).Request(tt.path, tt.contentType, []byte(tt.body))
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseRequestSSML(t *testing.T) {
	tests := []struct {
		name, provider, contentType, body string
		chars                             int64
		model                             string
	}{
		{"doc example", ProviderAzureTTS, "application/ssml+xml",
			`<speak version='1.0' xml:lang='en-US'><voice xml:lang='en-US' xml:gender='Male' name='en-US-ChristopherNeural'>I'm excited to try text to speech!</voice></speak>`,
			34, "en-US-ChristopherNeural"},
		{"indented with prolog and comment", ProviderAzureTTS, "application/ssml+xml; charset=utf-8",
			"<?xml version=\"1.0\"?>\n<speak version=\"1.0\" xmlns=\"http://www.w3.org/2001/10/synthesis\" xml:lang=\"de-DE\">\n  <!-- greeting <voice name=\"x\"> -->\n  <voice name=\"de-DE-KatjaNeural\">\n    Grüße  aus\n    Köln\n  </voice>\n</speak>\n",
			// "Grüße aus Köln"
			14, "de-DE-KatjaNeural"},
		{"entities, break and prosody", ProviderAzureTTS, "",
			`<speak><voice name="v1">Fish &amp; chips<break time="500ms"/>cost &#163;5 <prosody rate="+10%">today</prosody>.</voice><voice name="v2">Bye</voice></speak>`,
			// "Fish & chipscost £5 today.Bye"
			29, "v1"},
		{"cdata and quoted angle bracket", "", "application/ssml+xml",
			`<speak><voice name='a>b'><![CDATA[x < y]]></voice></speak>`,
			5, "a>b"},
		{"plain text body", ProviderAzureTTS, "text/plain", "  Hello,\n world  ", 12, ""}, // "Hello, world"
		{"detected by leading angle bracket", ProviderOpenAI, "", `<speak><voice name="v">日本語</voice></speak>`, 3, "v"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := fam(tt.provider).Request("/cognitiveservices/v1", tt.contentType, []byte(tt.body))
			if got.Characters != tt.chars || got.Model != tt.model {
				t.Errorf("Characters %d, Model %q; want %d, %q", got.Characters, got.Model, tt.chars, tt.model)
			}
			if got.Stream || got.IncludeUsage || got.MaxOutputTokens != 0 {
				t.Errorf("unexpected fields: %+v", got)
			}
		})
	}
}

// addIncludeUsage is the body includeUsageEdit makes, for the tests that
// read the edited bytes.
func addIncludeUsage(path string, body []byte) ([]byte, bool) {
	e, ok := includeUsageEdit(path, body)
	if !ok {
		return body, false
	}
	return e.Apply(body), true
}

func TestAddIncludeUsage(t *testing.T) {
	const chat = "/v1/chat/completions"
	tests := []struct {
		name, path, body string
		want             string // "" means unchanged with ok=false
	}{
		{"adds at top level", chat,
			`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`,
			`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}`},
		{"keeps pretty layout", chat,
			"{\n  \"model\": \"m\",\n  \"stream\": true\n}\n",
			"{\n  \"model\": \"m\",\n  \"stream\": true,\"stream_options\":{\"include_usage\":true}\n}\n"},
		{"into existing stream_options", chat,
			`{"stream":true,"stream_options":{"continuous_usage_stats":true},"model":"m"}`,
			`{"stream":true,"stream_options":{"include_usage":true,"continuous_usage_stats":true},"model":"m"}`},
		{"into empty stream_options", chat,
			`{"stream":true,"stream_options":{ },"model":"m"}`,
			`{"stream":true,"stream_options":{"include_usage":true },"model":"m"}`},
		{"stream_options null", chat,
			`{"stream":true,"stream_options":null}`,
			`{"stream":true,"stream_options":{"include_usage":true}}`},
		{"include_usage false", chat,
			`{"stream":true,"stream_options":{"include_usage": false,"x":1}}`,
			`{"stream":true,"stream_options":{"include_usage": true,"x":1}}`},
		{"azure path with query", "/openai/deployments/d/chat/completions?api-version=2024-10-21",
			`{"stream":true,"messages":[]}`,
			`{"stream":true,"messages":[],"stream_options":{"include_usage":true}}`},
		{"escaped strings untouched", chat,
			`{"messages":[{"content":"say \"}\" and \\"}],"stream":true}`,
			`{"messages":[{"content":"say \"}\" and \\"}],"stream":true,"stream_options":{"include_usage":true}}`},
		{"already present", chat, `{"stream":true,"stream_options":{"include_usage":true}}`, ""},
		{"not streaming", chat, `{"stream":false,"messages":[]}`, ""},
		{"stream absent", chat, `{"messages":[]}`, ""},
		{"stream as string", chat, `{"stream":"true"}`, ""},
		{"responses api", "/v1/responses", `{"stream":true,"input":"x"}`, ""},
		{"legacy completions", "/v1/completions", `{"stream":true,"prompt":"x"}`, ""},
		{"invalid json", chat, `{"stream":true,`, ""},
		{"trailing garbage", chat, `{"stream":true} x`, ""},
		{"array", chat, `[{"stream":true}]`, ""},
		{"stream_options not an object", chat, `{"stream":true,"stream_options":5}`, ""},
		{"empty", chat, ``, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.body)
			orig := string(in)
			out, ok := addIncludeUsage(tt.path, in)
			if string(in) != orig {
				t.Fatal("input body was modified in place")
			}
			if tt.want == "" {
				if ok || string(out) != orig {
					t.Errorf("ok=%v out=%s; want unchanged", ok, out)
				}
				return
			}
			if !ok || string(out) != tt.want {
				t.Fatalf("ok=%v\n got %s\nwant %s", ok, out, tt.want)
			}
			if !json.Valid(out) {
				t.Fatalf("output is not valid JSON: %s", out)
			}
			if ri := fam(ProviderOpenAI).Request(tt.path, "application/json", out); !ri.IncludeUsage || !ri.Stream {
				t.Errorf("ParseRequest on output: %+v", ri)
			}
		})
	}
}

// TestAddIncludeUsagePreservesFields decodes before and after: every other
// field must be unchanged.
func TestAddIncludeUsagePreservesFields(t *testing.T) {
	body := []byte(`{"model":"gpt-4o-mini","stream":true,"temperature":0.2,"n":1,
		"messages":[{"role":"user","content":"Use the tool."}],
		"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object","properties":{"stream_options":{"type":"string"}}}}}],
		"stream_options":{"chunk_size":3},"metadata":{"a":"b"},"logit_bias":{"50256":-100}}`)
	out, ok := addIncludeUsage("/v1/chat/completions", body)
	if !ok {
		t.Fatal("not applied")
	}
	var before, after map[string]any
	if err := json.Unmarshal(body, &before); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(out, &after); err != nil {
		t.Fatal(err)
	}
	so := after["stream_options"].(map[string]any)
	if so["include_usage"] != true || so["chunk_size"] != float64(3) {
		t.Errorf("stream_options = %v", so)
	}
	delete(before, "stream_options")
	delete(after, "stream_options")
	if !reflect.DeepEqual(before, after) {
		t.Errorf("other fields changed:\nbefore %v\nafter  %v", before, after)
	}
}

// TestRequestPin: RequestPin reads the members a sticky route pins by in
// the same pass as Request, as raw values sliced from the body.
func TestRequestPin(t *testing.T) {
	str := func(b []byte) string { return string(b) }
	for _, tc := range []struct {
		name, provider, path, body string
		want                       [4]string // prompt_cache_key, user, system, first message
	}{
		{"openai chat", ProviderOpenAI, "/v1/chat/completions",
			`{"model":"m","prompt_cache_key":"c1","user":"u1","messages":[ {"role":"system","content":"s"} ,{"role":"user","content":"q"}]}`,
			[4]string{`"c1"`, `"u1"`, ``, `{"role":"system","content":"s"}`}},
		{"responses", ProviderOpenAI, "/v1/responses",
			`{"model":"m","instructions":"Short.","input":"hello"}`,
			[4]string{``, ``, `"Short."`, `"hello"`}},
		{"anthropic", ProviderAnthropic, "/v1/messages",
			`{"model":"m","system":[{"type":"text","text":"sys"}],"metadata":{"user_id":"u2"},"messages":[{"role":"user","content":"hi"}]}`,
			[4]string{``, `"u2"`, `[{"type":"text","text":"sys"}]`, `{"role":"user","content":"hi"}`}},
		{"openai user wins over metadata", ProviderOpenAI, "/v1/chat/completions",
			`{"metadata":{"user_id":"a"},"user":"b"}`, [4]string{``, `"b"`, ``, ``}},
		{"gemini", ProviderOpenAI, "/v1beta/models/g:generateContent",
			`{"systemInstruction":{"parts":[{"text":"s"}]},"contents":[{"role":"user","parts":[{"text":"q"}]}]}`,
			[4]string{``, ``, `{"parts":[{"text":"s"}]}`, `{"role":"user","parts":[{"text":"q"}]}`}},
		{"empty messages", ProviderOpenAI, "/v1/chat/completions", `{"messages":[]}`, [4]string{}},
		{"none", ProviderOpenAI, "/v1/chat/completions", `{"model":"m"}`, [4]string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			f := fam(tc.provider)
			req, pin := f.RequestPin(tc.path, "application/json", body)
			if req != f.Request(tc.path, "application/json", body) {
				t.Errorf("RequestPin's Request differs from Request's")
			}
			got := [4]string{str(pin.PromptCacheKey), str(pin.User), str(pin.System), str(pin.FirstMessage)}
			if got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}
