package sdktest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
)

// newAnthropic returns an unmodified anthropic-sdk-go client but for its
// base URL (the relay) and API key (the relay's client key). Its request
// paths carry the "v1/" themselves. Retries are off so that a relay error is
// seen as it was sent.
func newAnthropic(relayURL, key string) anthropic.Client {
	return anthropic.NewClient(
		option.WithBaseURL(relayURL+"/"),
		option.WithAPIKey(key),
		option.WithMaxRetries(0),
	)
}

// streamMessages runs client.Messages.NewStreaming to the end and returns
// the text deltas joined and the message the SDK accumulated.
func streamMessages(ctx context.Context, relayURL, key string) (string, anthropic.Message, error) {
	client := newAnthropic(relayURL, key)
	stream := client.Messages.NewStreaming(ctx, anthropic.MessageNewParams{
		Model:     anthropicModel,
		MaxTokens: 256,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Say something about relays."))},
	})
	defer stream.Close()
	var text strings.Builder
	var msg anthropic.Message
	for stream.Next() {
		ev := stream.Current()
		if err := msg.Accumulate(ev); err != nil {
			return text.String(), msg, err
		}
		if ev.Type == "content_block_delta" {
			text.WriteString(ev.Delta.Text)
		}
	}
	return text.String(), msg, stream.Err()
}

func TestAnthropicMessagesStreaming(t *testing.T) {
	tests := []struct {
		src       source
		file      string
		wantText  string
		wantUsage relay.Usage
	}{
		{ownStreams, "anthropic_messages_stream.sse", "A relay should never hold a stream back.",
			relay.Usage{InputTokens: 24, OutputTokens: 13}},
		// README: input 20 from message_start, output 5 from message_delta.
		{sharedFixtures, "anthropic_messages_stream_text.sse", "2",
			relay.Usage{InputTokens: 20, OutputTokens: 5}},
	}
	for _, tt := range tests {
		t.Run(tt.src.String()+"/"+tt.file, func(t *testing.T) {
			up := newReplayUpstream(t, readStream(t, tt.src, tt.file), ending{})
			h := newHarness(t, up)

			text, msg, err := streamMessages(testkit.Context(t), h.url, clientKey)
			if err != nil {
				t.Fatalf("stream ended with error: %v", err)
			}
			if text != tt.wantText {
				t.Errorf("text = %q, want %q", text, tt.wantText)
			}
			if msg.Usage.InputTokens != tt.wantUsage.InputTokens || msg.Usage.OutputTokens != tt.wantUsage.OutputTokens {
				t.Errorf("SDK usage = %d/%d, want %d/%d", msg.Usage.InputTokens, msg.Usage.OutputTokens,
					tt.wantUsage.InputTokens, tt.wantUsage.OutputTokens)
			}

			rec := h.record(t)
			checkRecord(t, rec, "anthropic", relay.ProviderAnthropic, anthropicModel)
			if rec.Usage.InputTokens != tt.wantUsage.InputTokens || rec.Usage.OutputTokens != tt.wantUsage.OutputTokens ||
				rec.Usage.Estimated != tt.wantUsage.Estimated {
				t.Errorf("record usage = %+v, want input %d output %d estimated %v", rec.Usage,
					tt.wantUsage.InputTokens, tt.wantUsage.OutputTokens, tt.wantUsage.Estimated)
			}

			req := onlyRequest(t, up)
			if req.Path != "/v1/messages" {
				t.Errorf("upstream path = %q, want /v1/messages", req.Path)
			}
			checkNoClientCredential(t, req)
			if got := req.Header.Get("X-Api-Key"); got != upstreamSecret {
				t.Errorf("upstream x-api-key is not the route's credential (len %d)", len(got))
			}
			if req.Header.Get("Anthropic-Version") == "" {
				t.Error("the SDK's anthropic-version header did not reach the upstream")
			}
		})
	}
}

// TestAnthropicInStreamError replays a stream that ends in an in-band
// "event: error" (HTTP status already 200): the relay passes it through and
// the SDK raises it as an API error of that type.
func TestAnthropicInStreamError(t *testing.T) {
	tests := []struct {
		src      source
		file     string
		wantText string
		// No message_delta arrives: the input is message_start's, and the
		// output (whose message_start value is a placeholder) is estimated
		// from the text that passed (README, Metering).
		wantUsage relay.Usage
	}{
		// "A relay" + " should never": 20 bytes, 5 tokens
		{ownStreams, "anthropic_messages_stream_overloaded.sse", "A relay should never",
			relay.Usage{InputTokens: 24, OutputTokens: 5, Estimated: true}},
		// "2": one delta, one token
		{sharedFixtures, "anthropic_messages_stream_overloaded_error_CONSTRUCTED.sse", "2",
			relay.Usage{InputTokens: 20, OutputTokens: 1, Estimated: true}},
	}
	for _, tt := range tests {
		t.Run(tt.src.String()+"/"+tt.file, func(t *testing.T) {
			up := newReplayUpstream(t, readStream(t, tt.src, tt.file), ending{})
			h := newHarness(t, up)

			text, _, err := streamMessages(testkit.Context(t), h.url, clientKey)
			if text != tt.wantText {
				t.Errorf("text before the error = %q, want %q", text, tt.wantText)
			}
			var apiErr *anthropic.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("stream error = %v (%T), want *anthropic.Error", err, err)
			}
			if apiErr.Type() != "overloaded_error" || apiErr.Message != "Overloaded" {
				t.Errorf("error type %q message %q, want overloaded_error Overloaded", apiErr.Type(), apiErr.Message)
			}

			rec := h.record(t)
			if rec.Status != 200 || rec.ErrorType != relay.ErrTypeUpstreamEvent {
				t.Errorf("record status %d error %q, want 200 and %q", rec.Status, rec.ErrorType, relay.ErrTypeUpstreamEvent)
			}
			if rec.Usage.InputTokens != tt.wantUsage.InputTokens || rec.Usage.OutputTokens != tt.wantUsage.OutputTokens ||
				rec.Usage.Estimated != tt.wantUsage.Estimated {
				t.Errorf("record usage = %+v, want input %d output %d estimated %v", rec.Usage,
					tt.wantUsage.InputTokens, tt.wantUsage.OutputTokens, tt.wantUsage.Estimated)
			}
		})
	}
}
