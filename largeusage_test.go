package relay

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// base64Blob is n bytes of base64, as an image the Responses API returns.
func base64Blob(n int) string {
	raw := make([]byte, n*3/4)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range raw {
		raw[i] = byte(r.Uint32())
	}
	return base64.StdEncoding.EncodeToString(raw)
}

// responseObject is a Responses API response object as OpenAI orders its
// members: the image's base64 in output, then tools (one of whose schemas
// has a "usage" object of its own), then usage, user and metadata.
func responseObject(blob string) string {
	return `{"id":"resp_1","object":"response","created_at":1768775279,"status":"completed","error":null,` +
		`"instructions":null,"model":"gpt-image-test","output":[{"id":"ig_1","type":"image_generation_call",` +
		`"status":"completed","output_format":"png","result":"` + blob + `"}],"parallel_tool_calls":true,` +
		`"tools":[{"type":"image_generation","size":"1024x1024"},{"type":"function","name":"f","parameters":` +
		`{"type":"object","properties":{"usage":{"type":"object","properties":{}}}}}],"top_p":1.0,"truncation":"disabled",` +
		`"usage":{"input_tokens":1234,"input_tokens_details":{"cached_tokens":200},"output_tokens":5678,` +
		`"output_tokens_details":{"reasoning_tokens":0},"total_tokens":6912},"user":null,"metadata":{}}`
}

// TestUsageAtTheEndOfHugeResponses: usage at the end of a Responses API
// response.completed event over 4 MiB (a base64 image before it), and of
// JSON bodies over 4 MiB (embeddings in base64, a Responses object), with
// or without a Content-Length, is recorded: with the default observation
// budget, with none at all, and with a tiny one, where the window each
// response keeps of its own still holds the usage object. The client gets
// every byte; the budget is never exceeded and is all given back.
func TestUsageAtTheEndOfHugeResponses(t *testing.T) {
	blob := base64Blob(4<<20 + 1000)
	respUsage := Usage{InputTokens: 1234, OutputTokens: 5678, CachedInputTokens: 200}
	sse := "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"model\":\"gpt-image-test\",\"usage\":null}}\n\n" +
		"event: response.image_generation_call.partial_image\ndata: {\"type\":\"response.image_generation_call.partial_image\",\"sequence_number\":1,\"partial_image_b64\":\"" + blob[:1<<20] + "\"}\n\n" +
		"event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":" + responseObject(blob) + "}\n\n"
	embeddings := `{"object":"list","data":[{"object":"embedding","index":0,"embedding":"` + blob + `"}],` +
		`"model":"text-embedding-3-large","usage":{"prompt_tokens":42,"total_tokens":42}}`
	for _, tt := range []struct {
		name, ct, path, body string
		length               bool // the upstream sends a Content-Length
		want                 Usage
		model                string // the response's, when its head names it ("": it comes after the vectors)
	}{
		{"responses sse", "text/event-stream", "/v1/responses", sse, false, respUsage, "gpt-image-test"},
		{"responses sse, CRLF", "text/event-stream", "/v1/responses", crlfString(sse), false, respUsage, "gpt-image-test"},
		{"responses json", "application/json", "/v1/responses", responseObject(blob), true, respUsage, "gpt-image-test"},
		{"responses json of unknown length", "application/json", "/v1/responses", responseObject(blob), false, respUsage, "gpt-image-test"},
		{"embeddings json", "application/json", "/v1/embeddings", embeddings, true, Usage{InputTokens: 42}, ""},
		{"embeddings json of unknown length", "application/json", "/v1/embeddings", embeddings, false, Usage{InputTokens: 42}, ""},
	} {
		require.Greater(t, len(tt.body), 4<<20)
		for _, budget := range []struct {
			name string
			opts []Option
		}{
			{"default budget", nil},
			{"no budget", []Option{WithObservationBudget(0)}},
			{"tiny budget", []Option{WithObservationBudget(1 << 10)}},
		} {
			t.Run(tt.name+"/"+budget.name, func(t *testing.T) {
				e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.ReadAll(r.Body)
					w.Header().Set("Content-Type", tt.ct)
					if tt.length {
						w.Header().Set("Content-Length", fmt.Sprint(len(tt.body)))
					}
					// 32 KiB writes, flushed, so that the relay's reads end
					// anywhere, the usage object's middle included.
					for i := 0; i < len(tt.body); i += 32 << 10 {
						_, _ = io.WriteString(w, tt.body[i:min(len(tt.body), i+32<<10)])
						w.(http.Flusher).Flush()
					}
				}, Route{Prefix: "/v1"}, budget.opts...)
				resp, got := e.do(e.request("POST", tt.path, `{"model":"m","stream":true,"input":"draw"}`))
				assert.Equal(t, 200, resp.StatusCode)
				assert.Equal(t, sha256.Sum256([]byte(tt.body)), sha256.Sum256(got), "the client got every byte")
				rec := e.lastRecord()
				assert.Equal(t, tt.want, rec.Usage)
				if tt.model != "" {
					assert.Equal(t, tt.model, rec.ResponseModel, "read from the head")
				}
				assert.Equal(t, ErrTypeNone, rec.ErrorType)
				if budget.opts != nil {
					assert.LessOrEqual(t, e.relay.observed.peak.Load(), e.relay.observed.limit)
				}
				assert.Zero(t, e.relay.observed.used.Load(), "the budget is given back")
			})
		}
	}
}

func crlfString(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }
