package relay

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTTSAudioStreamsChunkByChunk: each audio chunk reaches the client
// before the upstream sends the next (the upstream waits for the client's
// acknowledgement), for OpenAI speech and Azure Speech.
func TestTTSAudioStreamsChunkByChunk(t *testing.T) {
	tests := []struct {
		name     string
		route    Route
		path     string
		ctype    string
		body     string
		header   map[string]string
		chars    int64
		upHeader string // header the upstream must receive
	}{
		{
			name:  "openai speech",
			route: Route{Prefix: "/v1/audio", Kind: KindAudio, AuthHeader: "Authorization", AuthValue: "sk-up"},
			path:  "/v1/audio/speech", ctype: "application/json",
			body:  `{"model":"gpt-4o-mini-tts","voice":"alloy","input":"Hello, wörld!"}`,
			chars: 13, upHeader: "Authorization",
		},
		{
			name: "azure speech",
			route: Route{Prefix: "/cognitiveservices", Provider: ProviderAzureTTS,
				AuthHeader: "Ocp-Apim-Subscription-Key", AuthValue: "azure-secret"},
			path: "/cognitiveservices/v1", ctype: "application/ssml+xml",
			body:   `<speak version="1.0" xml:lang="en-US"><voice name="en-US-AvaNeural">Hi there</voice></speak>`,
			header: map[string]string{"X-Microsoft-OutputFormat": "audio-24khz-48kbitrate-mono-mp3"},
			chars:  8, upHeader: "Ocp-Apim-Subscription-Key",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			acks := make(chan struct{})
			var gotHeader, gotFormat string
			audio := lockstep("audio/mpeg", acks, "\xff\xf3\x00\x00", "\xff\xf3\x01\x00", "\xff\xf3\x02\x00", "\xff\xf3\x03\x00")
			up := func(w http.ResponseWriter, r *http.Request) {
				gotHeader = r.Header.Get(tt.upHeader)
				gotFormat = r.Header.Get("X-Microsoft-OutputFormat")
				audio(w, r)
			}
			e := newEnv(t, up, tt.route)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req := e.request("POST", tt.path, tt.body).WithContext(ctx)
			req.Header.Set("Content-Type", tt.ctype)
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := e.front.Client().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(t, "audio/mpeg", resp.Header.Get("Content-Type"))
			for i := range 4 {
				chunk := make([]byte, 4)
				_, err := io.ReadFull(resp.Body, chunk)
				require.NoError(t, err, "chunk %d", i)
				assert.Equal(t, byte(i), chunk[2])
				testkit.Send(t, acks, struct{}{}, "the upstream did not wait for the next acknowledgement")
			}
			_, err = io.ReadAll(resp.Body)
			require.NoError(t, err)
			e.handled()
			rec := e.lastRecord()
			assert.Equal(t, KindAudio, rec.Kind)
			assert.Equal(t, int64(16), rec.BytesOut, "audio bytes")
			assert.Equal(t, int64(4), rec.Events, "chunks")
			assert.Positive(t, rec.TTFB, "time to first audio byte")
			assert.Equal(t, tt.chars, rec.Characters)
			assert.NotEmpty(t, gotHeader)
			assert.False(t, strings.Contains(gotHeader, testKey), "client key never forwarded")
			if tt.header != nil {
				assert.Equal(t, tt.header["X-Microsoft-OutputFormat"], gotFormat)
			}
			assert.Zero(t, rec.Usage.Total(), "TTS is billed in characters")
		})
	}
}
