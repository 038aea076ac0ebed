package sdktest

import (
	"net/http"
	"testing"

	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
)

// TestHangUpAfterFinalEvent covers SDKs that close the connection as soon
// as they have read a stream's final event, before the body's end: openai-go
// at "data: [DONE]", anthropic-sdk-go at an "event: error". When the
// provider's end of stream lags that event (linger), the client is gone
// before the relay reads it. The client got everything, so the exchange
// must be recorded as the upstream answered it: not as a 499 cancelled by
// the client, and with every event counted.
func TestHangUpAfterFinalEvent(t *testing.T) {
	tests := []struct {
		name      string
		call      sdkCall
		file      string
		wantError relay.ErrorType
		wantUsage relay.Usage
	}{
		{"openai chat after [DONE]", chatCall, "openai_chat_stream.sse", relay.ErrTypeNone,
			relay.Usage{InputTokens: 31, OutputTokens: 10}},
		// the error event ends the stream before message_delta: the output
		// is estimated from the 20 bytes of text that passed (README,
		// Metering), never message_start's placeholder 1
		{"anthropic after an error event", messagesCall, "anthropic_messages_stream_overloaded.sse", relay.ErrTypeUpstreamEvent,
			relay.Usage{InputTokens: 24, OutputTokens: 5, Estimated: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stream := readStream(t, ownStreams, tt.file)
			up := newReplayUpstream(t, stream, ending{linger: true})
			h := newHarness(t, up)

			_, _ = tt.call(testkit.Context(t), h.url, clientKey) // how the SDK ends is covered elsewhere

			rec := h.record(t)
			if rec.Status != http.StatusOK || rec.ErrorType != tt.wantError || rec.ClientGone {
				t.Errorf("record status %d error %q client_gone %v, want 200 %q false",
					rec.Status, rec.ErrorType, rec.ClientGone, tt.wantError)
			}
			if want := int64(len(splitEvents(stream))); rec.Events != want {
				t.Errorf("record events = %d, want %d", rec.Events, want)
			}
			if rec.Usage.InputTokens != tt.wantUsage.InputTokens || rec.Usage.OutputTokens != tt.wantUsage.OutputTokens ||
				rec.Usage.Estimated != tt.wantUsage.Estimated {
				t.Errorf("record usage = %+v, want input %d output %d estimated %v", rec.Usage,
					tt.wantUsage.InputTokens, tt.wantUsage.OutputTokens, tt.wantUsage.Estimated)
			}
		})
	}
}
