package provider

import (
	"bytes"
	"encoding/json"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/streamrelay/relay/internal/testkit"
)

// fixturesDir finds the shared recordings: ../shared/fixtures next to the
// root module. They belong to other projects and are not copied here, so
// the test skips without them locally but fails in CI (testkit.Missing),
// where a silently skipped suite would hide a broken checkout.
func fixturesDir(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(mod, []byte("module github.com/streamrelay/relay\n")) {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("root module go.mod not found above the package directory")
		}
		dir = parent
	}
	fixtures := filepath.Join(dir, "..", "shared", "fixtures")
	if _, err := os.Stat(fixtures); err != nil {
		testkit.Missing(t, "shared fixtures not available: %v", err)
	}
	return fixtures
}

// fixtureStream is a recorded stream, the route's provider it arrives on,
// and the family whose format it is ("" for the route's).
type fixtureStream struct {
	file, provider string
	want           streamResult
	family         string
}

// fixtureStreams are the recorded streams; the expected usage is the one
// fixtures/README.md states for each file. Content counts were derived
// independently by decoding each event's JSON.
func fixtureStreams() []fixtureStream {
	return []fixtureStream{
		{"openai_chat_stream_tool_calls_include_usage.sse", ProviderOpenAI, streamResult{
			usage: Usage{InputTokens: 53, OutputTokens: 15}, hasUsage: true,
			model: "gpt-4o-mini-2024-07-18", content: 6}, ""},
		{"openai_chat_stream_text_include_usage.sse", ProviderOpenAI, streamResult{
			usage: Usage{InputTokens: 78, OutputTokens: 9}, hasUsage: true,
			model: "gpt-4o-mini-2024-07-18", content: 8}, ""},
		{"openai_chat_stream_text_include_usage_fullheaders.sse", ProviderOpenAI, streamResult{
			usage: Usage{InputTokens: 16, OutputTokens: 10}, hasUsage: true,
			model: "gpt-4o-2024-08-06", content: 10}, ""},
		{"openai_chat_stream_no_usage_2023.sse", ProviderOpenAI, streamResult{
			model: "gpt-3.5-turbo-0613", content: 9}, ""},
		{"openai_responses_stream_text_2025-03.sse", ProviderOpenAI, streamResult{
			usage: Usage{InputTokens: 27, OutputTokens: 11}, hasUsage: true,
			model: "gpt-4o-2024-08-06", content: 10}, ""},
		{"openai_responses_stream_text_seqnum.sse", ProviderOpenAI, streamResult{
			usage: Usage{InputTokens: 20, OutputTokens: 10}, hasUsage: true,
			model: "gpt-5.2-2025-12-11", content: 6}, ""},
		{"openai_responses_stream_reasoning_function_call.sse", ProviderOpenAI, streamResult{
			usage:    Usage{InputTokens: 53, OutputTokens: 469, ReasoningTokens: 448},
			hasUsage: true, model: "gpt-5-2025-08-07", content: 6}, ""},
		{"anthropic_messages_stream_text.sse", ProviderAnthropic, streamResult{
			usage: Usage{InputTokens: 20, OutputTokens: 5}, hasUsage: true,
			model: "claude-sonnet-4-5-20250929", content: 1}, ""},
		{"anthropic_messages_stream_tool_use_parallel.sse", ProviderAnthropic, streamResult{
			usage: Usage{InputTokens: 416, OutputTokens: 109}, hasUsage: true,
			model: "claude-sonnet-4-20250514", content: 13}, ""},
		{"anthropic_messages_stream_overloaded_error_CONSTRUCTED.sse", ProviderAnthropic, streamResult{
			// README: only message_start arrived: input 20, and output 1,
			// which is message_start's placeholder, not a count
			usage: Usage{InputTokens: 20}, hasUsage: true,
			model: "claude-sonnet-4-5-20250929", errType: "overloaded_error", content: 1}, ""},
		{"azure_openai_chat_stream_text_include_usage.sse", ProviderAzure, streamResult{
			usage: Usage{InputTokens: 15, OutputTokens: 12}, hasUsage: true,
			model: "gpt-5-mini-2025-08-07", content: 2}, ""},
		{"azure_openai_chat_stream_tool_calls_include_usage.sse", ProviderAzure, streamResult{
			usage:    Usage{InputTokens: 159, OutputTokens: 127, ReasoningTokens: 64},
			hasUsage: true, model: "gpt-5-mini-2025-08-07", content: 12}, ""},
		{"azure_openai_chat_stream_no_usage_gpt4o.sse", ProviderAzure, streamResult{
			model: "gpt-4o-2024-08-06", content: 3}, ""},
		{"azure_openai_chat_stream_async_filter.sse", ProviderAzure, streamResult{
			model: "gpt-4o-2024-05-13", content: 1}, ""},
		{"deepseek_chat_stream_reasoning_content.sse", ProviderOpenAI, streamResult{
			usage:    Usage{InputTokens: 6, OutputTokens: 212, ReasoningTokens: 198},
			hasUsage: true, model: "deepseek-reasoner", content: 209}, ""},
		{"deepseek_chat_stream_no_include_usage.sse", ProviderOpenAI, streamResult{
			usage: Usage{InputTokens: 5, OutputTokens: 11}, hasUsage: true,
			model: "deepseek-chat", content: 10}, ""},
		{"siliconflow_chat_stream_reasoning_usage_every_chunk_EXCERPT.sse", ProviderOpenAI, streamResult{
			usage:    Usage{InputTokens: 294, OutputTokens: 51, ReasoningTokens: 38},
			hasUsage: true, model: "deepseek-ai/DeepSeek-R1", content: 21}, ""},
		{"openrouter_chat_stream_comments_midstream_error.sse", ProviderOpenAI, streamResult{
			// OpenRouter's error has only a numeric code
			usage:    Usage{InputTokens: 43, OutputTokens: 10, ReasoningTokens: 11},
			hasUsage: true, model: "minimax/minimax-m2:free", errType: "400", content: 2}, ""},
		{"groq_chat_stream_x_groq_usage.sse", ProviderOpenAI, streamResult{
			usage: Usage{InputTokens: 12, OutputTokens: 24}, hasUsage: true,
			model: "llama3-8b-8192", content: 24}, ""},
		{"gemini_native_stream_crlf.sse", ProviderOpenAI, streamResult{
			// output = candidates 80 + thoughts 35, so input+output = totalTokenCount 133
			usage:    Usage{InputTokens: 18, OutputTokens: 115, ReasoningTokens: 35},
			hasUsage: true, model: "gemini-2.5-flash", content: 3}, "gemini"},
		{"openai_speech_sse_CONSTRUCTED.sse", ProviderOpenAI, streamResult{
			usage: Usage{InputTokens: 14, OutputTokens: 101}, hasUsage: true, content: 1}, "openai-speech"},
	}
}

// TestFixtureStreams replays the recorded streams.
func TestFixtureStreams(t *testing.T) {
	dir := fixturesDir(t)
	for _, tt := range fixtureStreams() {
		t.Run(tt.file, func(t *testing.T) {
			got := runStream(t, tt.provider, filepath.Join(dir, tt.file))
			checkResult(t, got, tt.want)
		})
	}
}

// fixtureErrorBodies are the recorded pre-stream error bodies.
func fixtureErrorBodies() []struct{ file, provider, errType string } {
	return []struct{ file, provider, errType string }{
		{"anthropic_messages_stream_request_401.json", ProviderAnthropic, "authentication_error"},
		{"openai_chat_stream_request_401.json", ProviderOpenAI, "invalid_request_error"},
	}
}

// TestFixtureErrorBodies checks the pre-stream 401 JSON bodies via Body.
func TestFixtureErrorBodies(t *testing.T) {
	dir := fixturesDir(t)
	for _, tt := range fixtureErrorBodies() {
		t.Run(tt.file, func(t *testing.T) {
			body, err := os.ReadFile(filepath.Join(dir, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			s := NewStream(fam(tt.provider))
			s.Body(body, false)
			if got := s.ErrorType(); got != tt.errType {
				t.Errorf("ErrorType = %q, want %q", got, tt.errType)
			}
			if s.HasUsage() {
				t.Errorf("unexpected usage %+v", s.Usage())
			}
		})
	}
}

// TestFixturesCovered makes sure every recorded stream, error body and
// recorded request is in a table, so a fixture added later is not
// silently ignored.
func TestFixturesCovered(t *testing.T) {
	dir := fixturesDir(t)
	files, err := filepath.Glob(filepath.Join(dir, "*.sse"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no .sse fixtures found")
	}
	bodies, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	if len(bodies) == 0 {
		t.Fatal("no .json fixtures found")
	}
	files = append(files, bodies...)
	sidecars, _ := filepath.Glob(filepath.Join(dir, "*.md"))
	for _, f := range sidecars {
		if md, err := os.ReadFile(f); err == nil && recordedRequestRE().Match(md) {
			files = append(files, f)
		}
	}
	src, err := os.ReadFile("fixtures_test.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !bytes.Contains(src, []byte(`"`+filepath.Base(f)+`"`)) {
			t.Errorf("fixture %s has no test case", filepath.Base(f))
		}
	}
}

// fixtureRequest is a request recorded beside a shared stream (in its .md
// sidecar) or quoted in TTS_NOTES.md (quote matches its path and body),
// and what the route's family reads from it: the facts (a PromptEstimate
// of -1 is not checked: the body is too long to count by hand), the
// tokens reserved (with defaultMaxOutput; checked with the estimate), and
// whether the family rewrites it to report usage.
type fixtureRequest struct {
	file, provider, family string
	quote                  *regexp.Regexp
	contentType            string
	want                   Request
	tokens                 int64
	rewrite                bool
}

func fixtureRequests() []fixtureRequest {
	const j = "application/json"
	return []fixtureRequest{
		{file: "anthropic_messages_stream_request_401.md", provider: ProviderAnthropic, contentType: j,
			want:   Request{Model: "claude-sonnet-4-0", Stream: true, MaxOutputTokens: 16000, PromptEstimate: 11},
			tokens: 16011},
		{file: "anthropic_messages_stream_text.md", provider: ProviderAnthropic, contentType: j,
			want:   Request{Model: "claude-sonnet-4-5", Stream: true, MaxOutputTokens: 32000, PromptEstimate: 11},
			tokens: 32011},
		{file: "anthropic_messages_stream_tool_use_parallel.md", provider: ProviderAnthropic, contentType: j,
			want: Request{Model: "claude-sonnet-4-0", Stream: true, MaxOutputTokens: 16000, PromptEstimate: -1}},
		{file: "azure_openai_chat_stream_text_include_usage.md", provider: ProviderAzure, contentType: j,
			want:   Request{Model: "gpt-5-mini", Stream: true, IncludeUsage: true, PromptEstimate: 5},
			tokens: 5 + defaultMaxOutput},
		{file: "azure_openai_chat_stream_tool_calls_include_usage.md", provider: ProviderAzure, contentType: j,
			want: Request{Model: "gpt-5-mini", Stream: true, IncludeUsage: true, PromptEstimate: -1}},
		{file: "deepseek_chat_stream_no_include_usage.md", provider: ProviderOpenAI, contentType: j,
			want:   Request{Model: "deepseek-chat", Stream: true, PromptEstimate: 2},
			tokens: 2 + defaultMaxOutput, rewrite: true},
		{file: "deepseek_chat_stream_reasoning_content.md", provider: ProviderOpenAI, contentType: j,
			want:   Request{Model: "deepseek-reasoner", Stream: true, IncludeUsage: true, PromptEstimate: 2},
			tokens: 2 + defaultMaxOutput},
		{file: "gemini_native_stream_crlf.md", provider: ProviderOpenAI, family: "gemini", contentType: j,
			want:   Request{Model: "gemini-2.5-flash", Stream: true, PromptEstimate: 14},
			tokens: 14 + defaultMaxOutput},
		{file: "groq_chat_stream_x_groq_usage.md", provider: ProviderOpenAI, contentType: j,
			want:   Request{Model: "llama3-8b-8192", Stream: true, PromptEstimate: 2},
			tokens: 2 + defaultMaxOutput, rewrite: true},
		{file: "openai_chat_stream_no_usage_2023.md", provider: ProviderOpenAI, contentType: j,
			want:   Request{Model: "gpt-3.5-turbo", Stream: true, PromptEstimate: 2},
			tokens: 2 + defaultMaxOutput, rewrite: true},
		{file: "openai_chat_stream_request_401.md", provider: ProviderOpenAI, contentType: j,
			want:   Request{Model: "gpt-4o", Stream: true, IncludeUsage: true, PromptEstimate: 11},
			tokens: 11 + defaultMaxOutput},
		{file: "openai_chat_stream_text_include_usage.md", provider: ProviderOpenAI, contentType: j,
			want: Request{Model: "gpt-4o-mini", Stream: true, IncludeUsage: true, PromptEstimate: -1}},
		{file: "openai_chat_stream_text_include_usage_fullheaders.md", provider: ProviderOpenAI, contentType: j,
			want:   Request{Model: "gpt-4o", Stream: true, IncludeUsage: true, PromptEstimate: 5},
			tokens: 5 + defaultMaxOutput},
		{file: "openai_chat_stream_tool_calls_include_usage.md", provider: ProviderOpenAI, contentType: j,
			want: Request{Model: "gpt-4o-mini", Stream: true, IncludeUsage: true, PromptEstimate: -1}},
		{file: "openai_responses_stream_reasoning_function_call.md", provider: ProviderOpenAI, contentType: j,
			want: Request{Model: "gpt-5", Stream: true, PromptEstimate: -1}},
		{file: "openai_responses_stream_text_2025-03.md", provider: ProviderOpenAI, contentType: j,
			want:   Request{Model: "gpt-4o", Stream: true, PromptEstimate: 2},
			tokens: 2 + defaultMaxOutput},
		{file: "openai_responses_stream_text_seqnum.md", provider: ProviderOpenAI, contentType: j,
			// "What is 2+2?" and "Answer directly.": 28 bytes
			want:   Request{Model: "gpt-5.2", Stream: true, PromptEstimate: 7},
			tokens: 7 + defaultMaxOutput},
		{file: "openrouter_chat_stream_comments_midstream_error.md", provider: ProviderOpenAI, contentType: j,
			want:   Request{Model: "minimax/minimax-m2:free", Stream: true, MaxOutputTokens: 10, IncludeUsage: true, PromptEstimate: 3},
			tokens: 13},
		{file: "TTS_NOTES.md", provider: ProviderOpenAI, family: "openai-speech", contentType: j,
			quote: regexp.MustCompile("(?s)POST https://api\\.openai\\.com(/v1/audio/speech)`.*?body `(\\{[^`]+\\})`"),
			// "This is a speech test!": 22 characters, billed as such
			want: Request{Model: "tts-1", Characters: 22, PromptEstimate: 6}},
		{file: "TTS_NOTES.md", provider: ProviderAzureTTS, contentType: "application/ssml+xml",
			quote: regexp.MustCompile("(?s)POST https://\\{region\\}\\.tts\\.speech\\.microsoft\\.com(/cognitiveservices/v1)`.*?`(<speak .*?</speak>)`"),
			// "I'm excited to try text to speech!": 34 characters
			want: Request{Model: "en-US-ChristopherNeural", Characters: 34, PromptEstimate: 9}},
	}
}

// recordedRequestRE finds a sidecar's recorded request: its URL and the
// first line of its JSON body.
func recordedRequestRE() *regexp.Regexp {
	return regexp.MustCompile("(?s)## Recorded request\n- `POST ([^`]+)`.*?```json\n([^\n]+)\n")
}

// recordedRequest returns the path (with query) and body of a recorded
// request.
func recordedRequest(t *testing.T, file string, quote *regexp.Regexp) (path string, body []byte) {
	t.Helper()
	md, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if quote == nil {
		quote = recordedRequestRE()
	}
	m := quote.FindSubmatch(md)
	if m == nil {
		t.Fatalf("%s: no recorded request", filepath.Base(file))
	}
	u, err := url.Parse(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	return u.RequestURI(), m[2]
}

// TestFixtureRequests reads the recorded requests as their routes'
// families do.
func TestFixtureRequests(t *testing.T) {
	dir := fixturesDir(t)
	for _, tt := range fixtureRequests() {
		t.Run(tt.file+"/"+tt.provider, func(t *testing.T) {
			path, body := recordedRequest(t, filepath.Join(dir, tt.file), tt.quote)
			f := fam(tt.provider)
			got := f.Request(path, tt.contentType, body)
			want := tt.want
			if want.PromptEstimate < 0 {
				want.PromptEstimate = got.PromptEstimate
				if got.PromptEstimate <= 0 {
					t.Errorf("no prompt estimate for %s", body)
				}
			} else if n := f.TokenEstimate(path, got, defaultMaxOutput); n != tt.tokens {
				t.Errorf("TokenEstimate = %d, want %d", n, tt.tokens)
			}
			if got != want {
				t.Errorf("Request:\n got  %+v\n want %+v", got, want)
			}
			out, ok := f.Rewrite(path, body, got)
			if ok != tt.rewrite {
				t.Fatalf("Rewrite = %v, want %v", ok, tt.rewrite)
			}
			if ok {
				var v struct {
					StreamOptions struct {
						IncludeUsage bool `json:"include_usage"`
					} `json:"stream_options"`
				}
				if err := json.Unmarshal(out, &v); err != nil || !v.StreamOptions.IncludeUsage {
					t.Errorf("rewritten body %s: %v", out, err)
				}
				if again := f.Request(path, tt.contentType, out); !again.IncludeUsage || again.Model != got.Model {
					t.Errorf("the rewritten body reads as %+v", again)
				}
			}
		})
	}
}

// TestEveryFamilyHasFixtures: every family in the table is exercised by a
// shared recording (a stream, an error body or a recorded request), so
// that a family added later comes with its fixtures.
func TestEveryFamilyHasFixtures(t *testing.T) {
	fixturesDir(t)
	exercised := map[string][]string{}
	add := func(family, provider, file string) {
		if family == "" {
			family = provider
		}
		exercised[family] = append(exercised[family], file)
	}
	for _, s := range fixtureStreams() {
		add(s.family, s.provider, s.file)
	}
	for _, e := range fixtureErrorBodies() {
		add("", e.provider, e.file)
	}
	for _, r := range fixtureRequests() {
		add(r.family, r.provider, r.file)
	}
	// The streaming TTS families exist for WebSocket sessions, which the
	// shared fixtures do not record yet: their recorded-shape sessions
	// (testdata/realtime) stand in.
	for _, r := range realtimeSessions {
		add(r.family, r.provider, r.file)
	}
	names := map[string]bool{}
	for _, f := range families() {
		names[f.name()] = true
		if len(exercised[f.name()]) == 0 {
			t.Errorf("family %s has no shared fixture: record its streams in ../shared/fixtures and add them to fixtures_test.go", f.name())
		}
	}
	for name, files := range exercised {
		if !names[name] {
			t.Errorf("%v name family %q, which is not in the table", files, name)
		}
	}
}

// TestFixtureOutputEstimates: the content of recorded streams, as the
// estimate of a cut stream counts it. The byte counts were derived
// independently, by decoding each event's JSON and summing the UTF-8
// length of its text; the estimate is bytes / 4, rounded up, but at least
// one token per content event. Beside each, the output the provider
// reported: the estimate is close for visible text (groq 24 of 24) and
// low where output is hidden (reasoning) or structured (tool use).
func TestFixtureOutputEstimates(t *testing.T) {
	dir := fixturesDir(t)
	for _, tt := range []struct {
		file, provider      string
		bytes, estimate     int64
		reportedForContrast int64
	}{
		{"groq_chat_stream_x_groq_usage.sse", ProviderOpenAI, 95, 24, 24},
		{"deepseek_chat_stream_no_include_usage.sse", ProviderOpenAI, 39, 10, 11}, // "😊" is 4 bytes
		{"openai_responses_stream_text_2025-03.sse", ProviderOpenAI, 37, 10, 11},
		{"anthropic_messages_stream_tool_use_parallel.sse", ProviderAnthropic, 154, 39, 109},
	} {
		t.Run(tt.file, func(t *testing.T) {
			got := runStream(t, tt.provider, filepath.Join(dir, tt.file))
			if got.contentBytes != tt.bytes || got.outputEstimate != tt.estimate {
				t.Errorf("ContentBytes, OutputEstimate = %d, %d; want %d, %d", got.contentBytes, got.outputEstimate, tt.bytes, tt.estimate)
			}
			if got.usage.OutputTokens != tt.reportedForContrast {
				t.Errorf("reported output = %d, want %d", got.usage.OutputTokens, tt.reportedForContrast)
			}
		})
	}
}
