package relay

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestIdentityEncodingHides: an upstream that labels its plain
// stream "Content-Encoding: identity" (contentCoding: identity, observed
// without a decoder) still has the relay's usage chunk hidden.
func TestIdentityEncodingHides(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(sharedFixtures(t), "openai_chat_stream_text_include_usage.sse"))
	require.NoError(t, err)
	want, _ := withoutUsageChunks(raw)
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Content-Encoding", "identity")
		_, _ = w.Write(raw)
	}, Route{Prefix: "/", Provider: ProviderOpenAI})
	_, got := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true,"messages":[]}`))
	assert.Equal(t, string(want), string(got), "the client did not ask for the usage chunk")
}

// TestNoUsageStreamEstimated: an Azure api-version that takes no
// stream_options (or the include_usage retry) gives a whole stream with no
// usage: the provider billed it, so the record is estimated from the
// content that passed, never zero.
func TestNoUsageStreamEstimated(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(sharedFixtures(t), "azure_openai_chat_stream_no_usage_gpt4o.sse"))
	require.NoError(t, err)
	e := newEnv(t, whole(raw), Route{Prefix: "/", Provider: ProviderAzure})
	_, got := e.do(e.request("POST", "/openai/deployments/d/chat/completions?api-version=2024-06-01",
		`{"stream":true,"max_tokens":300,"messages":[{"role":"user","content":"`+prompt40+`"}]}`))
	assert.Equal(t, string(raw), string(got))
	u := e.lastRecord().Usage
	assert.True(t, u.Total() > 0 || u.Estimated, "record usage %+v: billed tokens not metered", u)
}
