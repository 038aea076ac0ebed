package main

import (
	"log/slog"
	"testing"

	"github.com/streamrelay/relay/examples/internal/streamtest"
	"github.com/streamrelay/relay/internal/testkit"
)

func TestRelayUnderNetHTTP(t *testing.T) {
	up := streamtest.NewUpstream(t)
	rl, err := newRelay(up.URL, streamtest.UpstreamKey, streamtest.ClientKey, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Shutdown(testkit.Context(t)) })
	base := streamtest.Check(t, up, newHandler(rl), "/llm")

	// A binary stream cannot carry an error event: the relay aborts it
	// (http.ErrAbortHandler), so the client sees a truncated body as an
	// error, not as a complete file.
	if sawError, _ := streamtest.AudioBreak(t, base+"/llm"); !sawError {
		t.Error("an interrupted audio stream ended cleanly")
	}
}
