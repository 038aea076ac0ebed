package provider

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// sessionMessage is one message of a recorded-shape session
// (testdata/realtime/README.md).
type sessionMessage struct {
	upstream, binary bool
	payload          []byte
}

func readSession(t testing.TB, name string) []sessionMessage {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "realtime", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var msgs []sessionMessage
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		dir, payload, _ := strings.Cut(line, " ")
		switch dir {
		case "<", "<b":
			msgs = append(msgs, sessionMessage{upstream: true, binary: dir == "<b", payload: []byte(payload)})
		case ">":
			msgs = append(msgs, sessionMessage{payload: []byte(payload)})
		case "#", "":
		default:
			t.Fatalf("%s: bad line %q", name, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return msgs
}

// sessionResult is what a session told, message by message.
type sessionResult struct {
	content      int     // upstream messages with Content
	firstContent int     // index of the first, -1 if none
	tokens       []int64 // Tokens of each message that reported some
	errors       int
}

func runSession(rt *Realtime, msgs []sessionMessage) sessionResult {
	r := sessionResult{firstContent: -1}
	for i, m := range msgs {
		if !m.upstream {
			rt.Client(m.payload, nil, !m.binary, true)
			continue
		}
		f := rt.Upstream(m.payload, nil, !m.binary, true)
		if f.Content {
			r.content++
			if r.firstContent < 0 {
				r.firstContent = i
			}
		}
		if f.Tokens > 0 {
			r.tokens = append(r.tokens, f.Tokens)
		}
		if f.Error {
			r.errors++
		}
	}
	return r
}

// realtimeSessions are the recorded-shape sessions and what each must
// yield; TestEveryFamilyHasFixtures counts them as the recordings of the
// families that exist for WebSocket sessions only.
var realtimeSessions = []struct {
	file, provider, family string
	firstContent           string // a substring of the first content message
	content, errors        int
	tokens                 []int64
	usage                  Usage
	characters             int64
	model                  string
}{
	{
		// Two responses, each settled at its response.done, and the input
		// transcription's usage; the usage is their sum.
		file: "openai_realtime_ga.session", provider: ProviderOpenAI, family: "openai",
		firstContent: "response.output_audio_transcript.delta", content: 4,
		tokens: []int64{26, 253, 420},
		usage: Usage{InputTokens: 132 + 17 + 290, OutputTokens: 121 + 9 + 130, CachedInputTokens: 64 + 192,
			AudioInputTokens: 13 + 17 + 130, AudioOutputTokens: 91 + 105},
		model: "gpt-realtime-2025-08-25",
	},
	{
		file: "openai_realtime_beta.session", provider: ProviderAzure, family: "azure",
		firstContent: "response.text.delta", content: 3, errors: 1,
		tokens: []int64{275},
		usage:  Usage{InputTokens: 127, OutputTokens: 148, AudioInputTokens: 8, AudioOutputTokens: 112},
		model:  "gpt-4o-realtime-preview-2024-12-17",
	},
	{
		file: "openai_responses_ws.session", provider: "", family: "openai",
		firstContent: `"delta":"Hello"`, content: 2,
		tokens: []int64{82},
		usage:  Usage{InputTokens: 12, OutputTokens: 70, ReasoningTokens: 64},
		model:  "gpt-5.1-2025-11-13",
	},
	{
		// Two turns, summed: the second turn's prompt counts the history
		// again, as Gemini bills it. The second turn reports twice: the
		// final report replaces the first, and only the increase settles.
		file: "gemini_live.session", provider: ProviderOpenAI, family: "gemini",
		firstContent: "inlineData", content: 4,
		tokens: []int64{396, 423, 16},
		usage: Usage{InputTokens: 373 + 413, OutputTokens: 23 + 22 + 4, ReasoningTokens: 4,
			AudioInputTokens: 33, AudioOutputTokens: 23 + 22},
	},
	{
		// The init " " and the closing "" count nothing; escapes and an
		// emoji are one character each.
		file: "elevenlabs.session", provider: ProviderEleven, family: "elevenlabs",
		firstContent: `"audio":"SUQz`, content: 2,
		characters: 13 + 13 + 9,
	},
	{
		file: "cartesia.session", provider: ProviderCartesia, family: "cartesia",
		firstContent: `"type":"chunk"`, content: 2, errors: 1,
		characters: 14 + 7,
	},
}

// TestRealtimeSessions: usage, settlement, content, errors, characters
// and model of whole sessions, each on a fresh and on a reused Realtime.
func TestRealtimeSessions(t *testing.T) {
	var pooled Realtime
	for _, tt := range realtimeSessions {
		t.Run(tt.file, func(t *testing.T) {
			msgs := readSession(t, tt.file)
			for _, reuse := range []bool{false, true} {
				rt := new(Realtime)
				if reuse {
					rt = &pooled // carries the previous session's state until Reset
				}
				rt.Reset(tt.provider)
				got := runSession(rt, msgs)
				if got.content != tt.content || got.errors != tt.errors || !slices.Equal(got.tokens, tt.tokens) {
					t.Errorf("reuse=%v: content %d, errors %d, tokens %v; want %d, %d, %v",
						reuse, got.content, got.errors, got.tokens, tt.content, tt.errors, tt.tokens)
				}
				if got.firstContent < 0 || !bytes.Contains(msgs[got.firstContent].payload, []byte(tt.firstContent)) {
					t.Errorf("reuse=%v: first content at %d, want the message with %q", reuse, got.firstContent, tt.firstContent)
				}
				if u := rt.Usage(); u != tt.usage {
					t.Errorf("reuse=%v: usage %+v, want %+v", reuse, u, tt.usage)
				}
				var sum int64
				for _, n := range got.tokens {
					sum += n
				}
				if sum != rt.Usage().Total() {
					t.Errorf("reuse=%v: settled %d tokens, usage totals %d", reuse, sum, rt.Usage().Total())
				}
				if c := rt.Characters(); c != tt.characters {
					t.Errorf("reuse=%v: characters %d, want %d", reuse, c, tt.characters)
				}
				if m := rt.ResponseModel(); m != tt.model {
					t.Errorf("reuse=%v: model %q, want %q", reuse, m, tt.model)
				}
			}
		})
	}
}

// TestRealtimeRoutes: the route decides the protocol. Anthropic, Azure
// Speech and providers the table does not know observe nothing; a TTS
// route does not read OpenAI's events, nor an OpenAI route a TTS
// client's text.
func TestRealtimeRoutes(t *testing.T) {
	done := []byte(`{"type":"response.done","response":{"usage":{"input_tokens":5,"output_tokens":7}}}`)
	delta := []byte(`{"type":"response.output_audio.delta","delta":"AAAA"}`)
	text := []byte(`{"text":"Hello "}`)
	for _, tt := range []struct {
		provider   string
		tokens     int64
		content    bool
		characters int64
	}{
		{"", 12, true, 0},
		{"openai", 12, true, 0},
		{"azure", 12, true, 0},
		{"anthropic", 0, false, 0},
		{"azure-tts", 0, false, 0},
		{"bedrock", 0, false, 0},
		{"elevenlabs", 0, false, 6},
		{"cartesia", 0, false, 0},
	} {
		var rt Realtime
		rt.Reset(tt.provider)
		f := rt.Upstream(done, nil, true, true)
		c := rt.Upstream(delta, nil, true, true)
		rt.Client(text, nil, true, true)
		if f.Tokens != tt.tokens || c.Content != tt.content || rt.Characters() != tt.characters {
			t.Errorf("%q: tokens %d, content %v, characters %d; want %d, %v, %d",
				tt.provider, f.Tokens, c.Content, rt.Characters(), tt.tokens, tt.content, tt.characters)
		}
	}
	var zero Realtime // observes nothing until Reset
	if f := zero.Upstream(done, nil, true, true); f != (RealtimeFact{}) {
		t.Errorf("zero Realtime: %+v", f)
	}
}

// TestRealtimeLargeMessages: a message over the relay's cap arrives as
// its head and tail; the type is read from the head and the usage from
// the tail, where response.done and Gemini put it.
func TestRealtimeLargeMessages(t *testing.T) {
	long := strings.Repeat("All work and no play. ", 20000) // ~440 KB transcript
	const cut = 4096
	headTail := func(m string) ([]byte, []byte) { return []byte(m[:cut]), []byte(m[len(m)-cut:]) }

	t.Run("response.done", func(t *testing.T) {
		m := `{"type":"response.done","event_id":"e","response":{"object":"realtime.response","id":"r","status":"completed",` +
			`"output":[{"type":"message","content":[{"type":"output_audio","transcript":"` + long + `"}]}],` +
			`"usage":{"total_tokens":9000,"input_tokens":1000,"output_tokens":8000,"input_token_details":{"cached_tokens":10,"text_tokens":990,"audio_tokens":0},"output_token_details":{"text_tokens":2000,"audio_tokens":6000}},"metadata":null}}`
		head, tail := headTail(m)
		var rt Realtime
		rt.Reset("openai")
		f := rt.Upstream(head, tail, true, false)
		want := Usage{InputTokens: 1000, OutputTokens: 8000, CachedInputTokens: 10, AudioOutputTokens: 6000}
		if f.Tokens != 9000 || rt.Usage() != want {
			t.Errorf("tokens %d, usage %+v; want 9000, %+v", f.Tokens, rt.Usage(), want)
		}
	})
	t.Run("delta", func(t *testing.T) {
		// A usage object inside a delta's tail is not a report.
		m := `{"type":"response.output_text.delta","delta":"` + long + `\"usage\":{\"input_tokens\":5}"}`
		head, tail := headTail(m)
		var rt Realtime
		rt.Reset("openai")
		if f := rt.Upstream(head, tail, true, false); !f.Content || f.Tokens != 0 {
			t.Errorf("fact %+v, want content and no tokens", f)
		}
	})
	t.Run("gemini", func(t *testing.T) {
		m := `{"serverContent":{"modelTurn":{"parts":[{"text":"` + long + `"}]},"turnComplete":true},` +
			`"usageMetadata":{"promptTokenCount":50,"responseTokenCount":7000,"totalTokenCount":7050}}`
		head, tail := headTail(m)
		var rt Realtime
		rt.Reset("openai")
		f := rt.Upstream(head, tail, false, false)
		if !f.Content || f.Tokens != 7050 {
			t.Errorf("fact %+v, want content and 7050 tokens", f)
		}
		// turnComplete was in the tail: the next report is a new turn.
		f = rt.Upstream([]byte(`{"usageMetadata":{"promptTokenCount":60,"responseTokenCount":5}}`), nil, false, true)
		if f.Tokens != 65 || rt.Usage().Total() != 7050+65 {
			t.Errorf("next turn: %+v, usage %+v", f, rt.Usage())
		}
	})
	t.Run("tts client", func(t *testing.T) {
		// Only the head's part of the text is seen: a lower bound.
		m := `{"text":"` + long + `","flush":true}`
		head, tail := headTail(m)
		var rt Realtime
		rt.Reset("elevenlabs")
		rt.Client(head, tail, true, false)
		if got, want := rt.Characters(), int64(cut-len(`{"text":"`)); got != want {
			t.Errorf("characters %d, want %d", got, want)
		}
	})
}

// TestRealtimeGeminiTurns: how Gemini Live's per-turn reports add up.
func TestRealtimeGeminiTurns(t *testing.T) {
	report := func(p, r int) string {
		return `{"usageMetadata":{"promptTokenCount":` + itoa(p) + `,"responseTokenCount":` + itoa(r) + `}}`
	}
	for _, tt := range []struct {
		name   string
		msgs   []string
		tokens []int64
		total  int64
	}{
		{"one report per turn, on turnComplete", []string{
			`{"serverContent":{"turnComplete":true},"usageMetadata":{"promptTokenCount":100,"responseTokenCount":10}}`,
			`{"serverContent":{"turnComplete":true},"usageMetadata":{"promptTokenCount":120,"responseTokenCount":10}}`,
		}, []int64{110, 130}, 240},
		{"report after turnComplete", []string{
			`{"serverContent":{"turnComplete":true}}`, report(100, 10),
			`{"serverContent":{"turnComplete":true}}`, report(120, 10),
		}, []int64{110, 130}, 240},
		{"repeated within a turn", []string{
			report(100, 5), report(100, 10), `{"serverContent":{"turnComplete":true}}`, report(120, 3),
		}, []int64{105, 5, 123}, 233},
		{"interrupted and tool call end a turn", []string{
			report(100, 5), `{"serverContent":{"interrupted":true}}`, report(110, 5),
			`{"toolCall":{"functionCalls":[{"id":"1","name":"f","args":{}}]},"usageMetadata":{"promptTokenCount":130,"responseTokenCount":8}}`,
			report(150, 9),
		}, []int64{105, 115, 138 - 115, 159}, 105 + 138 + 159},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var rt Realtime
			rt.Reset("")
			var tokens []int64
			for _, m := range tt.msgs {
				if f := rt.Upstream([]byte(m), nil, false, true); f.Tokens > 0 {
					tokens = append(tokens, f.Tokens)
				}
			}
			if !slices.Equal(tokens, tt.tokens) || rt.Usage().Total() != tt.total {
				t.Errorf("tokens %v, total %d; want %v, %d", tokens, rt.Usage().Total(), tt.tokens, tt.total)
			}
		})
	}
}

func itoa(n int) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		if n /= 10; n == 0 {
			return string(b)
		}
	}
}

// TestRealtimeAllocs enforces the hot-path rule for sessions: observing
// a message does not allocate, audio deltas above all, once the model is
// known; nor after a pooled Realtime is Reset.
func TestRealtimeAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without -race (.ci/run runs one)")
	}
	audio := strings.Repeat("AAEAAQABAAEAAQAB", 2048) // 32 KiB of base64
	for _, tt := range []struct {
		name, provider string
		upstream       bool
		msg            string
	}{
		{"openai audio delta", "openai", true, `{"type":"response.output_audio.delta","event_id":"e","response_id":"r","item_id":"i","output_index":0,"content_index":0,"delta":"` + audio + `"}`},
		{"openai audio delta, type last", "openai", true, `{"event_id":"e","delta":"` + audio + `","type":"response.audio.delta"}`},
		{"openai response.done", "openai", true, `{"type":"response.done","response":{"id":"r","output":[],"usage":{"total_tokens":3,"input_tokens":1,"output_tokens":2,"input_token_details":{"cached_tokens":0,"cached_tokens_details":{"text_tokens":0}},"output_token_details":{"audio_tokens":2}}}}`},
		{"openai session.created", "openai", true, `{"type":"session.created","session":{"model":"gpt-realtime"}}`},
		{"openai error", "azure", true, `{"type":"error","error":{"type":"invalid_request_error","message":"x"}}`},
		{"client audio append", "openai", false, `{"type":"input_audio_buffer.append","audio":"` + audio + `"}`},
		{"gemini audio", "openai", true, `{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"mimeType":"audio/pcm;rate=24000","data":"` + audio + `"}}]}}}`},
		{"gemini usage", "openai", true, `{"serverContent":{"turnComplete":true},"usageMetadata":{"promptTokenCount":3,"responseTokenCount":4,"promptTokensDetails":[{"modality":"AUDIO","tokenCount":3}]}}`},
		{"elevenlabs audio", "elevenlabs", true, `{"audio":"` + audio + `","isFinal":null}`},
		{"elevenlabs text", "elevenlabs", false, `{"text":"Caf\u00e9 au lait. "}`},
		{"cartesia chunk", "cartesia", true, `{"type":"chunk","data":"` + audio + `","done":false}`},
		{"cartesia transcript", "cartesia", false, `{"model_id":"sonic-2","transcript":"Hello, world! ","context_id":"c"}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msg := []byte(tt.msg)
			var rt Realtime
			observe := func() {
				if tt.upstream {
					rt.Upstream(msg, nil, true, true)
				} else {
					rt.Client(msg, nil, true, true)
				}
			}
			rt.Reset(tt.provider)
			observe() // may capture the model
			if n := testing.AllocsPerRun(100, observe); n != 0 {
				t.Errorf("steady state: %v allocs per message, want 0", n)
			}
			if n := testing.AllocsPerRun(100, func() { rt.Reset(tt.provider); observe() }); n != 0 {
				t.Errorf("after Reset: %v allocs per message, want 0", n)
			}
		})
	}
}

func BenchmarkRealtimeAudioDelta(b *testing.B) {
	msg := []byte(`{"type":"response.output_audio.delta","event_id":"e","response_id":"r","item_id":"i","output_index":0,"content_index":0,"delta":"` +
		strings.Repeat("AAEAAQABAAEAAQAB", 2048) + `"}`)
	var rt Realtime
	rt.Reset("openai")
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		rt.Upstream(msg, nil, true, true)
	}
}

func BenchmarkRealtimeGeminiAudio(b *testing.B) {
	msg := []byte(`{"serverContent":{"modelTurn":{"parts":[{"inlineData":{"mimeType":"audio/pcm;rate=24000","data":"` +
		strings.Repeat("AAEAAQABAAEAAQAB", 2048) + `"}}]}}}`)
	var rt Realtime
	rt.Reset("openai")
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		rt.Upstream(msg, nil, false, true)
	}
}

// TestRealtimeObservesClient: ObservesClient is true exactly for the
// providers whose client messages count characters, so a relay that
// skips client messages when it is false loses nothing.
func TestRealtimeObservesClient(t *testing.T) {
	msgs := [][]byte{
		[]byte(`{"text":"Hello "}`),
		[]byte(`{"model_id":"sonic-2","transcript":"Hello, world! ","context_id":"c"}`),
	}
	for _, tt := range []struct {
		provider string
		observes bool
	}{
		{"", false}, {"openai", false}, {"azure", false}, {"anthropic", false},
		{"bedrock", false}, {"elevenlabs", true}, {"cartesia", true},
	} {
		var rt Realtime
		rt.Reset(tt.provider)
		if got := rt.ObservesClient(); got != tt.observes {
			t.Errorf("%q: ObservesClient %v, want %v", tt.provider, got, tt.observes)
		}
		for _, m := range msgs {
			rt.Client(m, nil, true, true)
		}
		if !tt.observes && rt.Characters() != 0 {
			t.Errorf("%q: ObservesClient false, yet %d characters counted", tt.provider, rt.Characters())
		}
		if tt.observes && rt.Characters() == 0 {
			t.Errorf("%q: ObservesClient true, no characters counted", tt.provider)
		}
	}
}
