package provider

import (
	"bytes"
	"os"
	"path/filepath"
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

// TestFixtureStreams replays the recorded streams; the expected usage is
// the one fixtures/README.md states for each file. Content counts were
// derived independently by decoding each event's JSON.
func TestFixtureStreams(t *testing.T) {
	dir := fixturesDir(t)
	tests := []struct {
		file, provider string
		want           streamResult
	}{
		{"openai_chat_stream_tool_calls_include_usage.sse", ProviderOpenAI, streamResult{
			usage: Usage{InputTokens: 53, OutputTokens: 15}, hasUsage: true,
			model: "gpt-4o-mini-2024-07-18", content: 6}},
		{"openai_chat_stream_text_include_usage.sse", ProviderOpenAI, streamResult{
			usage: Usage{InputTokens: 78, OutputTokens: 9}, hasUsage: true,
			model: "gpt-4o-mini-2024-07-18", content: 8}},
		{"openai_chat_stream_text_include_usage_fullheaders.sse", ProviderOpenAI, streamResult{
			usage: Usage{InputTokens: 16, OutputTokens: 10}, hasUsage: true,
			model: "gpt-4o-2024-08-06", content: 10}},
		{"openai_chat_stream_no_usage_2023.sse", ProviderOpenAI, streamResult{
			model: "gpt-3.5-turbo-0613", content: 9}},
		{"openai_responses_stream_text_2025-03.sse", ProviderOpenAI, streamResult{
			usage: Usage{InputTokens: 27, OutputTokens: 11}, hasUsage: true,
			model: "gpt-4o-2024-08-06", content: 10}},
		{"openai_responses_stream_text_seqnum.sse", ProviderOpenAI, streamResult{
			usage: Usage{InputTokens: 20, OutputTokens: 10}, hasUsage: true,
			model: "gpt-5.2-2025-12-11", content: 6}},
		{"openai_responses_stream_reasoning_function_call.sse", ProviderOpenAI, streamResult{
			usage:    Usage{InputTokens: 53, OutputTokens: 469, ReasoningTokens: 448},
			hasUsage: true, model: "gpt-5-2025-08-07", content: 6}},
		{"anthropic_messages_stream_text.sse", ProviderAnthropic, streamResult{
			usage: Usage{InputTokens: 20, OutputTokens: 5}, hasUsage: true,
			model: "claude-sonnet-4-5-20250929", content: 1}},
		{"anthropic_messages_stream_tool_use_parallel.sse", ProviderAnthropic, streamResult{
			usage: Usage{InputTokens: 416, OutputTokens: 109}, hasUsage: true,
			model: "claude-sonnet-4-20250514", content: 13}},
		{"anthropic_messages_stream_overloaded_error_CONSTRUCTED.sse", ProviderAnthropic, streamResult{
			// README: only message_start arrived: input 20, output 1
			usage: Usage{InputTokens: 20, OutputTokens: 1}, hasUsage: true,
			model: "claude-sonnet-4-5-20250929", errType: "overloaded_error", content: 1}},
		{"azure_openai_chat_stream_text_include_usage.sse", ProviderAzure, streamResult{
			usage: Usage{InputTokens: 15, OutputTokens: 12}, hasUsage: true,
			model: "gpt-5-mini-2025-08-07", content: 2}},
		{"azure_openai_chat_stream_tool_calls_include_usage.sse", ProviderAzure, streamResult{
			usage:    Usage{InputTokens: 159, OutputTokens: 127, ReasoningTokens: 64},
			hasUsage: true, model: "gpt-5-mini-2025-08-07", content: 12}},
		{"azure_openai_chat_stream_no_usage_gpt4o.sse", ProviderAzure, streamResult{
			model: "gpt-4o-2024-08-06", content: 3}},
		{"azure_openai_chat_stream_async_filter.sse", ProviderAzure, streamResult{
			model: "gpt-4o-2024-05-13", content: 1}},
		{"deepseek_chat_stream_reasoning_content.sse", ProviderOpenAI, streamResult{
			usage:    Usage{InputTokens: 6, OutputTokens: 212, ReasoningTokens: 198},
			hasUsage: true, model: "deepseek-reasoner", content: 209}},
		{"deepseek_chat_stream_no_include_usage.sse", ProviderOpenAI, streamResult{
			usage: Usage{InputTokens: 5, OutputTokens: 11}, hasUsage: true,
			model: "deepseek-chat", content: 10}},
		{"siliconflow_chat_stream_reasoning_usage_every_chunk_EXCERPT.sse", ProviderOpenAI, streamResult{
			usage:    Usage{InputTokens: 294, OutputTokens: 51, ReasoningTokens: 38},
			hasUsage: true, model: "deepseek-ai/DeepSeek-R1", content: 21}},
		{"openrouter_chat_stream_comments_midstream_error.sse", ProviderOpenAI, streamResult{
			// OpenRouter's error has only a numeric code
			usage:    Usage{InputTokens: 43, OutputTokens: 10, ReasoningTokens: 11},
			hasUsage: true, model: "minimax/minimax-m2:free", errType: "400", content: 2}},
		{"groq_chat_stream_x_groq_usage.sse", ProviderOpenAI, streamResult{
			usage: Usage{InputTokens: 12, OutputTokens: 24}, hasUsage: true,
			model: "llama3-8b-8192", content: 24}},
		{"gemini_native_stream_crlf.sse", ProviderOpenAI, streamResult{
			// output = candidates 80 + thoughts 35, so input+output = totalTokenCount 133
			usage:    Usage{InputTokens: 18, OutputTokens: 115, ReasoningTokens: 35},
			hasUsage: true, model: "gemini-2.5-flash", content: 3}},
		{"openai_speech_sse_CONSTRUCTED.sse", ProviderOpenAI, streamResult{
			usage: Usage{InputTokens: 14, OutputTokens: 101}, hasUsage: true, content: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got := runStream(t, tt.provider, filepath.Join(dir, tt.file))
			checkResult(t, got, tt.want)
		})
	}
}

// TestFixtureErrorBodies checks the pre-stream 401 JSON bodies via Body.
func TestFixtureErrorBodies(t *testing.T) {
	dir := fixturesDir(t)
	tests := []struct {
		file, provider, errType string
	}{
		{"anthropic_messages_stream_request_401.json", ProviderAnthropic, "authentication_error"},
		{"openai_chat_stream_request_401.json", ProviderOpenAI, "invalid_request_error"},
	}
	for _, tt := range tests {
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

// TestFixturesCovered makes sure every recorded stream is in the table, so
// a fixture added later is not silently ignored.
func TestFixturesCovered(t *testing.T) {
	dir := fixturesDir(t)
	files, err := filepath.Glob(filepath.Join(dir, "*.sse"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no .sse fixtures found")
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
