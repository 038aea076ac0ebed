package provider

import (
	"encoding/json"
	"testing"
)

// The fuzz targets run their seeds in every `go test`; run them with
// -fuzz to search further. They check that hostile input never panics and
// that AddIncludeUsage only ever emits valid JSON.

func FuzzEvent(f *testing.F) {
	f.Add("", `{"choices":[{"delta":{"content":"x"}}],"usage":{"prompt_tokens":1}}`)
	f.Add("message_start", `{"type":"message_start","message":{"model":"m","usage":{"input_tokens":1}}}`)
	f.Add("response.completed", `{"type":"response.completed","response":{"model":"m","usage":{"input_tokens":1}}}`)
	f.Add("error", `{"type":"error","error":{"type":"overloaded_error"}}`)
	f.Add("", `{"usageMetadata":{"promptTokenCount":1},"error":{"code":1}}`)
	f.Add("", `{"x_groq":{"usage":{"prompt_tokens":"\`)
	f.Fuzz(func(t *testing.T, name, data string) {
		s := NewStream(fam(ProviderOpenAI))
		s.Event([]byte(name), []byte(data), false)
		s.Body([]byte(data), true)
		s.Reset(fam(ProviderAnthropic))
		s.Event([]byte(name), []byte(data), true)
		s.Body([]byte(data), false)
		d := []byte(data)
		s.LargeEvent([]byte(name), d[:len(d)/2], d[len(d)/3:])
		_ = fam(ProviderOpenAI).Request("/v1/audio/speech", "application/json", []byte(data))
		_ = fam(ProviderAzureTTS).Request("/", "application/ssml+xml", []byte(data))
	})
}

func FuzzAddIncludeUsage(f *testing.F) {
	f.Add(`{"stream":true}`)
	f.Add(`{"stream":true,"stream_options":{}}`)
	f.Add(`{"stream":true,"stream_options":{"include_usage":false}}`)
	f.Add(`{"stream":true,"stream_options":null}`)
	f.Add(` { "stream" : true , "a" : [ "}" ] } `)
	f.Fuzz(func(t *testing.T, body string) {
		out, ok := addIncludeUsage("/v1/chat/completions", []byte(body))
		if !ok {
			if string(out) != body {
				t.Fatalf("ok=false but body changed: %q", out)
			}
			return
		}
		var v struct {
			StreamOptions struct {
				IncludeUsage bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		if err := json.Unmarshal(out, &v); err != nil || !v.StreamOptions.IncludeUsage {
			t.Fatalf("bad output %q from %q: %v", out, body, err)
		}
	})
}

// FuzzRealtime: Upstream and Client never panic on arbitrary bytes, on
// any route, whole or cut into a head and a tail, and never report
// negative tokens.
func FuzzRealtime(f *testing.F) {
	f.Add(`{"type":"response.done","response":{"usage":{"input_tokens":1,"output_tokens":2}}}`)
	f.Add(`{"type":"session.created","session":{"model":"m\u00e9"}}`)
	f.Add(`{"serverContent":{"modelTurn":{"parts":[{"text":"x"}]},"turnComplete":true},"usageMetadata":{"promptTokenCount":1}}`)
	f.Add(`{"usageMetadata":{"promptTokenCount":5,"responseTokenCount":-9}}`)
	f.Add(`{"text":"\ud83d\ude0a \u00","flush":true}`)
	f.Add(`{"type":"chunk","transcript":"é","error":{}}`)
	f.Add(`{"type":"response.completed","response":{"usage":{"input_tokens":-7}}}`)
	f.Add(`{"event_id":"e","delta":"\"","type":"response.audio.delta"}`)
	f.Fuzz(func(t *testing.T, data string) {
		d := []byte(data)
		for _, p := range []string{"", "azure", "elevenlabs", "cartesia", "anthropic"} {
			var rt Realtime
			rt.Reset(p)
			for _, complete := range []bool{true, false} {
				head, tail := d, []byte(nil)
				if !complete {
					head, tail = d[:len(d)/2], d[len(d)/3:]
				}
				if f := rt.Upstream(head, tail, true, complete); f.Tokens < 0 {
					t.Fatalf("%s: negative tokens %d", p, f.Tokens)
				}
				rt.Client(head, tail, false, complete)
			}
			_, _, _ = rt.Usage(), rt.Characters(), rt.ResponseModel()
		}
	})
}
