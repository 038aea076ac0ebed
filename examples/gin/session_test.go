package main

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamrelay/relay/examples/internal/realtimemock"
	"github.com/streamrelay/relay/examples/internal/streamtest"
	"github.com/streamrelay/relay/internal/testkit"
)

// TestRealtimeSessionUnderGin: a WebSocket session on the relay's route
// passes through the example's router and middleware unchanged (see
// realtimemock.CheckSession for what is checked).
func TestRealtimeSessionUnderGin(t *testing.T) {
	up, upURL := realtimemock.Start(t, streamtest.UpstreamKey)
	rl, err := newRelay(upURL, streamtest.UpstreamKey, streamtest.ClientKey, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Shutdown(testkit.Context(t)) })
	base := streamtest.Serve(t, &http.Server{Handler: newHandler(rl), ReadHeaderTimeout: 5 * time.Second})
	url := "ws" + strings.TrimPrefix(base, "http") + "/llm/v1/realtime?model=gpt-realtime"
	realtimemock.CheckSession(t, up, url, streamtest.ClientKey, streamtest.UpstreamKey)
}
