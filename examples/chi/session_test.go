package main

import (
	"io"
	"log"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/streamrelay/relay/examples/internal/realtimemock"
	"github.com/streamrelay/relay/examples/internal/streamtest"
	"github.com/streamrelay/relay/internal/testkit"
)

// TestRealtimeSessionUnderChi: a WebSocket session on the relay's route
// passes through the example's router and middleware unchanged (see
// realtimemock.CheckSession for what is checked).
func TestRealtimeSessionUnderChi(t *testing.T) {
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

// chi's middleware.Timeout puts a deadline on the request's context: a
// session under it is ended with 1001 when the deadline passes (and chi
// then tries to write its 504 on the hijacked connection, which net/http
// logs). README "Mounting" says to keep it off the relay's routes.
func TestChiTimeoutEndsSessions(t *testing.T) {
	_, upURL := realtimemock.Start(t, streamtest.UpstreamKey)
	rl, err := newRelay(upURL, streamtest.UpstreamKey, streamtest.ClientKey, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Shutdown(testkit.Context(t)) })
	r := chi.NewRouter()
	r.Use(middleware.Timeout(200 * time.Millisecond))
	r.Mount("/llm", http.StripPrefix("/llm", rl))
	base := streamtest.Serve(t, &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: log.New(io.Discard, "", 0)})
	url := "ws" + strings.TrimPrefix(base, "http") + "/llm/v1/realtime"
	if code := realtimemock.Ended(t, url, streamtest.ClientKey); code != websocket.StatusGoingAway {
		t.Errorf("close %d, want 1001 at chi's Timeout", code)
	}
}
