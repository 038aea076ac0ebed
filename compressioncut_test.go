package relay

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestGzipCutShortEstimated: a gzip stream (flushed per event) cut
// short is recorded as the plain one is (README matrix: gzip "as plain").
func TestGzipCutShortEstimated(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(sharedFixtures(t), "anthropic_messages_stream_tool_use_parallel.sse"))
	require.NoError(t, err)
	head := fixtureHead(t, raw, "event: message_delta")
	const body = `{"model":"m","stream":true,"max_tokens":300,"messages":[{"role":"user","content":"` + prompt40 + `"}]}`
	for _, how := range []string{clientLeaves, upstreamBreaks} {
		t.Run(how, func(t *testing.T) {
			var gz bytes.Buffer
			zw := gzip.NewWriter(&gz)
			for _, ev := range bytes.SplitAfter(head, []byte("\n\n")) {
				_, _ = zw.Write(ev)
				_ = zw.Flush()
			}
			served := make(chan struct{}, 1)
			lim := newRecordingSettler(Limits{})
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				w.Header().Set("Content-Encoding", "gzip")
				_, _ = w.Write(gz.Bytes())
				w.(http.Flusher).Flush()
				served <- struct{}{}
				if how == upstreamBreaks {
					if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
						conn.Close()
					}
					return
				}
				<-r.Context().Done()
			}, Route{Prefix: "/", Provider: ProviderAnthropic}, WithLimiter(lim))
			req := e.request("POST", "/v1/messages", body)
			req.Header.Set("Accept-Encoding", "gzip")
			if how == clientLeaves {
				ctx, cancel := context.WithTimeout(req.Context(), testkit.Timeout)
				defer cancel()
				tr := &http.Transport{DisableCompression: true}
				defer tr.CloseIdleConnections()
				resp, err := (&http.Client{Transport: tr}).Do(req.WithContext(ctx))
				require.NoError(t, err)
				got := make([]byte, gz.Len())
				_, err = io.ReadFull(resp.Body, got)
				require.NoError(t, err)
				assert.Equal(t, gz.Bytes(), got, "compressed bytes unchanged")
				cancel()
				resp.Body.Close()
				e.handled()
			} else {
				tr := &http.Transport{DisableCompression: true}
				defer tr.CloseIdleConnections()
				resp, err := (&http.Client{Transport: tr}).Do(req)
				require.NoError(t, err)
				_, _ = io.ReadAll(resp.Body)
				resp.Body.Close()
				e.handled()
			}
			testkit.Recv(t, served, "served")
			rec := e.lastRecord()
			assert.Equal(t, Usage{InputTokens: 416, OutputTokens: 39, Estimated: true}, rec.Usage)
			assert.Equal(t, []settlement{{reserved: 310, used: 455}}, lim.all(t, e.relay))
		})
	}
}
