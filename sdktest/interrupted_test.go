package sdktest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3/packages/ssestream"
	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
)

// sdkCall runs one streaming SDK call through the relay at relayURL and
// returns the text it received and how the stream ended.
type sdkCall func(ctx context.Context, relayURL, key string) (string, error)

func chatCall(ctx context.Context, relayURL, key string) (string, error) {
	r := streamChat(ctx, relayURL, key)
	return r.text, r.err
}

func responsesCall(ctx context.Context, relayURL, key string) (string, error) {
	text, _, err := streamResponses(ctx, relayURL, key)
	return text, err
}

func messagesCall(ctx context.Context, relayURL, key string) (string, error) {
	text, _, err := streamMessages(ctx, relayURL, key)
	return text, err
}

// TestMidStreamFailure drops the upstream connection after a few events:
// the SDK must report an error, never a clean end of a truncated answer.
// Cut between events, the relay's own error event is what the SDK raises;
// cut inside an event, the SDK may fail on the broken event first, which is
// just as visible.
func TestMidStreamFailure(t *testing.T) {
	tests := []struct {
		name     string
		call     sdkCall
		file     string
		fullText string
		end      ending
		// check inspects the error of a cut between events.
		check func(t *testing.T, err error)
	}{
		{name: "openai chat/between events", call: chatCall, file: "openai_chat_stream.sse",
			fullText: "Relays keep streams flowing, event by event.", end: ending{cutAfter: 4}, check: checkOpenAIStreamError},
		{name: "openai chat/inside an event", call: chatCall, file: "openai_chat_stream.sse",
			fullText: "Relays keep streams flowing, event by event.", end: ending{cutAfter: 4, midEvent: true}},
		{name: "openai responses/between events", call: responsesCall, file: "openai_responses_stream.sse",
			fullText: "Backpressure is a feature.", end: ending{cutAfter: 6}, check: checkOpenAIStreamError},
		{name: "openai responses/inside an event", call: responsesCall, file: "openai_responses_stream.sse",
			fullText: "Backpressure is a feature.", end: ending{cutAfter: 6, midEvent: true}},
		{name: "anthropic/between events", call: messagesCall, file: "anthropic_messages_stream.sse",
			fullText: "A relay should never hold a stream back.", end: ending{cutAfter: 4}, check: checkAnthropicInterrupted},
		{name: "anthropic/inside an event", call: messagesCall, file: "anthropic_messages_stream.sse",
			fullText: "A relay should never hold a stream back.", end: ending{cutAfter: 4, midEvent: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newReplayUpstream(t, readStream(t, ownStreams, tt.file), tt.end)
			h := newHarness(t, up)

			text, err := tt.call(testkit.Context(t), h.url, clientKey)
			if err == nil {
				t.Fatalf("stream ended cleanly after %q; want an error", text)
			}
			if len(text) >= len(tt.fullText) || !strings.HasPrefix(tt.fullText, text) {
				t.Errorf("text before the error = %q, want a proper prefix of %q", text, tt.fullText)
			}
			if tt.check != nil {
				tt.check(t, err)
			}

			rec := h.record(t)
			if rec.Status != 200 || rec.ErrorType != relay.ErrTypeStreamInterrupted || rec.ClientGone {
				t.Errorf("record status %d error %q client_gone %v, want 200 %q false",
					rec.Status, rec.ErrorType, rec.ClientGone, relay.ErrTypeStreamInterrupted)
			}
		})
	}
}

// checkOpenAIStreamError expects openai-go to have raised the relay's error
// event, an OpenAI-shaped {"error":{...}} object.
func checkOpenAIStreamError(t *testing.T, err error) {
	t.Helper()
	var se *ssestream.StreamError
	if !errors.As(err, &se) {
		t.Fatalf("error = %v (%T), want *ssestream.StreamError", err, err)
	}
	if !strings.Contains(se.Message, "interrupted") {
		t.Errorf("error message %q does not say the stream was interrupted", se.Message)
	}
}

// checkAnthropicInterrupted expects anthropic-sdk-go to have raised the
// relay's Anthropic-shaped error event as an API error.
func checkAnthropicInterrupted(t *testing.T, err error) {
	t.Helper()
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("error = %v (%T), want *anthropic.Error", err, err)
	}
	if apiErr.Type() != "api_error" || !strings.Contains(apiErr.Message, "interrupted") {
		t.Errorf("error type %q message %q, want api_error saying the stream was interrupted", apiErr.Type(), apiErr.Message)
	}
}
