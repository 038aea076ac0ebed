package main

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/streamrelay/relay/examples/internal/realtimemock"
	"github.com/streamrelay/relay/examples/internal/streamtest"
	"github.com/streamrelay/relay/internal/testkit"
)

// TestRealtimeSessionUnderEcho: a WebSocket session on the relay's route
// passes through the example's router and middleware unchanged (see
// realtimemock.CheckSession for what is checked).
func TestRealtimeSessionUnderEcho(t *testing.T) {
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

// What Echo's middleware does to sessions. Gzip, even without the
// example's Skipper and with the browser's Accept-Encoding: gzip, passes
// them (its writer hijacks, and nothing is written before). Timeout
// (built on http.TimeoutHandler) refuses them with the relay's 501.
// ContextTimeout ends them with 1001 at its deadline.
func TestEchoMiddlewareAndSessions(t *testing.T) {
	up, upURL := realtimemock.Start(t, streamtest.UpstreamKey)
	rl, err := newRelay(upURL, streamtest.UpstreamKey, streamtest.ClientKey, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Shutdown(testkit.Context(t)) })
	serve := func(mw echo.MiddlewareFunc) string {
		e := echo.New()
		e.HideBanner, e.HidePort = true, true
		e.Use(mw)
		e.Any("/llm/*", echo.WrapHandler(http.StripPrefix("/llm", rl)))
		base := streamtest.Serve(t, &http.Server{Handler: e, ReadHeaderTimeout: 5 * time.Second})
		return "ws" + strings.TrimPrefix(base, "http") + "/llm/v1/realtime?model=gpt-realtime"
	}
	t.Run("Gzip without Skipper", func(t *testing.T) {
		realtimemock.CheckSession(t, up, serve(middleware.Gzip()), streamtest.ClientKey, streamtest.UpstreamKey)
	})
	t.Run("Timeout", func(t *testing.T) {
		// Deprecated in Echo, still in use: the trap is worth a test.
		//lint:ignore SA1019 the test documents what the deprecated middleware does to sessions
		url := serve(middleware.TimeoutWithConfig(middleware.TimeoutConfig{Timeout: time.Minute}))
		if code := realtimemock.Refused(t, url, streamtest.ClientKey); code != http.StatusNotImplemented {
			t.Errorf("status %d, want 501", code)
		}
	})
	t.Run("ContextTimeout", func(t *testing.T) {
		if code := realtimemock.Ended(t, serve(middleware.ContextTimeout(200*time.Millisecond)), streamtest.ClientKey); code != websocket.StatusGoingAway {
			t.Errorf("close %d, want 1001 at the deadline", code)
		}
	})
}
