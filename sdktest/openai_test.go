package sdktest

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
)

// newOpenAI returns an unmodified openai-go client but for its base URL
// (the relay) and API key (the relay's client key). Retries are off so that
// a relay error is seen as it was sent.
func newOpenAI(relayURL, key string) openai.Client {
	return openai.NewClient(
		option.WithBaseURL(relayURL+"/v1/"),
		option.WithAPIKey(key),
		option.WithMaxRetries(0),
	)
}

// chatResult is what openai-go made of a streamed chat completion.
type chatResult struct {
	text  string
	usage openai.CompletionUsage // from the usage-only chunk, as the SDK parsed it
	err   error
}

// streamChat runs client.Chat.Completions.NewStreaming to the end.
func streamChat(ctx context.Context, relayURL, key string) chatResult {
	return streamChatAsking(ctx, relayURL, key, false)
}

// streamChatAsking is streamChat, asking for usage
// (stream_options.include_usage) when askUsage is set.
func streamChatAsking(ctx context.Context, relayURL, key string, askUsage bool) chatResult {
	client := newOpenAI(relayURL, key)
	params := openai.ChatCompletionNewParams{
		Model:    openAIModel,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say something about relays.")},
	}
	if askUsage {
		params.StreamOptions.IncludeUsage = openai.Bool(true)
	}
	stream := client.Chat.Completions.NewStreaming(ctx, params)
	defer stream.Close()
	var res chatResult
	var text strings.Builder
	for stream.Next() {
		chunk := stream.Current()
		for _, c := range chunk.Choices {
			text.WriteString(c.Delta.Content)
		}
		if chunk.JSON.Usage.Valid() && chunk.Usage.TotalTokens > 0 {
			res.usage = chunk.Usage
		}
	}
	res.text, res.err = text.String(), stream.Err()
	return res
}

// streamResponses runs client.Responses.NewStreaming to the end and returns
// the text deltas joined and the usage of response.completed.
func streamResponses(ctx context.Context, relayURL, key string) (string, responses.ResponseUsage, error) {
	client := newOpenAI(relayURL, key)
	stream := client.Responses.NewStreaming(ctx, responses.ResponseNewParams{
		Model: openAIModel,
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Say something about relays.")},
	})
	defer stream.Close()
	var text strings.Builder
	var usage responses.ResponseUsage
	for stream.Next() {
		ev := stream.Current()
		switch ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.AsResponseOutputTextDelta().Delta)
		case "response.completed":
			usage = ev.AsResponseCompleted().Response.Usage
		}
	}
	return text.String(), usage, stream.Err()
}

func TestOpenAIChatStreaming(t *testing.T) {
	tests := []struct {
		src       source
		file      string
		wantText  string
		wantUsage relay.Usage
	}{
		{ownStreams, "openai_chat_stream.sse", "Relays keep streams flowing, event by event.",
			relay.Usage{InputTokens: 31, OutputTokens: 10}},
		{sharedFixtures, "openai_chat_stream_text_include_usage.sse", "The capital of the UK is London.",
			relay.Usage{InputTokens: 78, OutputTokens: 9}},
	}
	for _, tt := range tests {
		for _, ask := range []bool{true, false} {
			name := tt.src.String() + "/" + tt.file + "/sdk asks for usage"
			if !ask {
				name = tt.src.String() + "/" + tt.file + "/relay asks for usage"
			}
			t.Run(name, func(t *testing.T) { chatStreaming(t, tt.src, tt.file, tt.wantText, tt.wantUsage, ask) })
		}
	}
}

// chatStreaming relays a recorded chat stream to openai-go, asking for
// usage or not: the record has the usage either way, and the SDK gets the
// usage-only chunk only when it asked for it.
func chatStreaming(t *testing.T, src source, file, wantText string, wantUsage relay.Usage, ask bool) {
	up := newReplayUpstream(t, readStream(t, src, file), ending{})
	h := newHarness(t, up)
	res := streamChatAsking(testkit.Context(t), h.url, clientKey, ask)
	if res.err != nil {
		t.Fatalf("stream ended with error: %v", res.err)
	}
	if res.text != wantText {
		t.Errorf("text = %q, want %q", res.text, wantText)
	}
	// The SDK itself parsed the usage-only chunk (choices: []) when
	// it asked for it; the relay's own request for it is hidden.
	wantSDK := wantUsage
	if !ask {
		wantSDK = relay.Usage{}
	}
	if res.usage.PromptTokens != wantSDK.InputTokens || res.usage.CompletionTokens != wantSDK.OutputTokens {
		t.Errorf("SDK usage = %d/%d, want %d/%d", res.usage.PromptTokens, res.usage.CompletionTokens,
			wantSDK.InputTokens, wantSDK.OutputTokens)
	}

	rec := h.record(t)
	checkRecord(t, rec, "openai", relay.ProviderOpenAI, openAIModel)
	if rec.Usage.InputTokens != wantUsage.InputTokens || rec.Usage.OutputTokens != wantUsage.OutputTokens {
		t.Errorf("record usage = %+v, want input %d output %d", rec.Usage, wantUsage.InputTokens, wantUsage.OutputTokens)
	}

	req := onlyRequest(t, up)
	if req.Path != "/v1/chat/completions" {
		t.Errorf("upstream path = %q, want /v1/chat/completions", req.Path)
	}
	checkNoClientCredential(t, req)
	var body struct {
		Stream        bool `json:"stream"`
		StreamOptions *struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.Unmarshal(req.Body, &body); err != nil {
		t.Fatalf("upstream body is not JSON: %v\n%s", err, req.Body)
	}
	if !body.Stream {
		t.Errorf("upstream body lacks stream:true: %s", req.Body)
	}
	// Whether the SDK asked for usage or not, the upstream is asked.
	if body.StreamOptions == nil || !body.StreamOptions.IncludeUsage {
		t.Errorf("upstream body lacks stream_options.include_usage:true: %s", req.Body)
	}
}

func TestOpenAIResponsesStreaming(t *testing.T) {
	tests := []struct {
		src       source
		file      string
		wantText  string
		wantUsage relay.Usage
	}{
		{ownStreams, "openai_responses_stream.sse", "Backpressure is a feature.",
			relay.Usage{InputTokens: 17, OutputTokens: 6}},
		{sharedFixtures, "openai_responses_stream_text_seqnum.sse", "2+2 = 4",
			relay.Usage{InputTokens: 20, OutputTokens: 10}},
	}
	for _, tt := range tests {
		t.Run(tt.src.String()+"/"+tt.file, func(t *testing.T) {
			up := newReplayUpstream(t, readStream(t, tt.src, tt.file), ending{})
			h := newHarness(t, up)

			text, usage, err := streamResponses(testkit.Context(t), h.url, clientKey)
			if err != nil {
				t.Fatalf("stream ended with error: %v", err)
			}
			if text != tt.wantText {
				t.Errorf("text = %q, want %q", text, tt.wantText)
			}
			if usage.InputTokens != tt.wantUsage.InputTokens || usage.OutputTokens != tt.wantUsage.OutputTokens {
				t.Errorf("SDK usage = %d/%d, want %d/%d", usage.InputTokens, usage.OutputTokens,
					tt.wantUsage.InputTokens, tt.wantUsage.OutputTokens)
			}

			rec := h.record(t)
			checkRecord(t, rec, "openai", relay.ProviderOpenAI, openAIModel)
			if rec.Usage.InputTokens != tt.wantUsage.InputTokens || rec.Usage.OutputTokens != tt.wantUsage.OutputTokens {
				t.Errorf("record usage = %+v, want input %d output %d", rec.Usage, tt.wantUsage.InputTokens, tt.wantUsage.OutputTokens)
			}
			req := onlyRequest(t, up)
			if req.Path != "/v1/responses" {
				t.Errorf("upstream path = %q, want /v1/responses", req.Path)
			}
			checkNoClientCredential(t, req)
		})
	}
}

// checkRecord checks the fields every successful streamed exchange shares.
func checkRecord(t *testing.T, rec relay.Record, route string, p relay.Provider, model string) {
	t.Helper()
	if rec.Model != model || !rec.Stream {
		t.Errorf("record model %q stream %v, want %q true", rec.Model, rec.Stream, model)
	}
	if rec.Status != 200 || rec.ErrorType != relay.ErrTypeNone {
		t.Errorf("record status %d error %q, want 200 and none", rec.Status, rec.ErrorType)
	}
	if rec.Route != route || rec.Provider != p || rec.Kind != relay.KindSSE {
		t.Errorf("record route %q provider %q kind %q, want %q %q %q", rec.Route, rec.Provider, rec.Kind, route, p, relay.KindSSE)
	}
	if rec.Tenant != tenant || rec.ClientGone {
		t.Errorf("record tenant %q client_gone %v, want %q false", rec.Tenant, rec.ClientGone, tenant)
	}
	if rec.Events == 0 || rec.BytesOut == 0 {
		t.Errorf("record events %d bytes out %d, want both > 0", rec.Events, rec.BytesOut)
	}
}

// onlyRequest returns the single request the upstream received.
func onlyRequest(t *testing.T, up *replayUpstream) capturedRequest {
	t.Helper()
	reqs := up.requests()
	if len(reqs) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(reqs))
	}
	return reqs[0]
}

// checkNoClientCredential makes sure the client's key for the relay did not
// travel on to the upstream, in any header.
func checkNoClientCredential(t *testing.T, req capturedRequest) {
	t.Helper()
	for k, vv := range req.Header {
		for _, v := range vv {
			if strings.Contains(v, clientKey) {
				t.Errorf("upstream received the client key in header %s", k)
			}
		}
	}
}
