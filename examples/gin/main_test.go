package main

import (
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/streamrelay/relay/examples/internal/streamtest"
	"github.com/streamrelay/relay/internal/testkit"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.ReleaseMode) // no route debug output
	os.Exit(m.Run())
}

func TestRelayUnderGin(t *testing.T) {
	up := streamtest.NewUpstream(t)
	rl, err := newRelay(up.URL, streamtest.UpstreamKey, streamtest.ClientKey, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Shutdown(testkit.Context(t)) })
	base := streamtest.Check(t, up, newHandler(rl), "/llm")

	// With Recovery kept off the relay's route, an interrupted binary
	// stream is aborted and the client sees the failure.
	if sawError, _ := streamtest.AudioBreak(t, base+"/llm"); !sawError {
		t.Error("an interrupted audio stream ended cleanly")
	}
}

// The trap the example avoids: with gin.Recovery on every route, the
// relay's abort of an interrupted binary stream is recovered and the
// truncated body ends like a complete one. If this test starts failing, gin
// has changed and the README's advice can be relaxed.
func TestGinRecoveryHidesAbortedStreams(t *testing.T) {
	up := streamtest.NewUpstream(t)
	rl, err := newRelay(up.URL, streamtest.UpstreamKey, streamtest.ClientKey, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Shutdown(testkit.Context(t)) })
	r := gin.New()
	r.Use(gin.RecoveryWithWriter(io.Discard))
	r.Any("/llm/*path", gin.WrapH(http.StripPrefix("/llm", rl)))
	base := streamtest.Serve(t, &http.Server{Handler: r})
	sawError, n := streamtest.AudioBreak(t, base+"/llm")
	if sawError || n == 0 {
		t.Errorf("saw error %v after %d bytes; want a clean end after some bytes (gin.Recovery swallowing the abort)", sawError, n)
	}
}
