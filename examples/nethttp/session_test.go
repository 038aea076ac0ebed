package main

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/streamrelay/relay/examples/internal/realtimemock"
	"github.com/streamrelay/relay/examples/internal/streamtest"
	"github.com/streamrelay/relay/internal/testkit"
)

// TestRealtimeSessionUnderNetHTTP: a WebSocket session on the relay's route
// passes through the example's router and middleware unchanged (see
// realtimemock.CheckSession for what is checked).
func TestRealtimeSessionUnderNetHTTP(t *testing.T) {
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

// The traps README's "Mounting" names, as they behave today: a writer
// that hides Hijack (no Unwrap) and http.TimeoutHandler get a 501 before
// any upstream is dialled; a deadline on the request's context ends the
// session with 1001 (going away) when it passes; http.Server's
// ReadTimeout and WriteTimeout do not cut it. If one of these starts
// failing, the relay or net/http changed and the README must follow.
func TestSessionTraps(t *testing.T) {
	up, upURL := realtimemock.Start(t, streamtest.UpstreamKey)
	rl, err := newRelay(upURL, streamtest.UpstreamKey, streamtest.ClientKey, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Shutdown(testkit.Context(t)) })
	serve := func(h http.Handler) string {
		base := streamtest.Serve(t, &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second})
		return "ws" + strings.TrimPrefix(base, "http") + "/v1/realtime"
	}
	for _, tc := range []struct {
		name string
		h    http.Handler
	}{
		{"writer without Unwrap", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rl.ServeHTTP(struct{ http.ResponseWriter }{w}, r) // hides Hijack
		})},
		{"http.TimeoutHandler", http.TimeoutHandler(rl, time.Minute, "timeout")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code := realtimemock.Refused(t, serve(tc.h), streamtest.ClientKey); code != http.StatusNotImplemented {
				t.Errorf("status %d, want 501", code)
			}
			select {
			case hs := <-up.Handshakes:
				t.Errorf("a session that could not be served was dialled upstream: %+v", hs)
			default:
			}
		})
	}
	t.Run("server timeouts", func(t *testing.T) {
		// ReadTimeout and WriteTimeout leave deadlines on the connection
		// the relay hijacks; it must clear them. The wait past them is the
		// condition under test, not a synchronisation.
		const d = 50 * time.Millisecond
		base := streamtest.Serve(t, &http.Server{Handler: rl, ReadTimeout: d, WriteTimeout: d})
		url := "ws" + strings.TrimPrefix(base, "http") + "/v1/realtime"
		ctx := testkit.Context(t)
		c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + streamtest.ClientKey}}})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.CloseNow() }()
		<-time.After(4 * d)
		realtimemock.Exchange(ctx, t, c)
		if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	t.Run("context deadline", func(t *testing.T) {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), 200*time.Millisecond)
			defer cancel()
			rl.ServeHTTP(w, r.WithContext(ctx))
		})
		if code := realtimemock.Ended(t, serve(h), streamtest.ClientKey); code != websocket.StatusGoingAway {
			t.Errorf("close %d, want 1001 at the context's deadline", code)
		}
	})
}
