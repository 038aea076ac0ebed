package main

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/examples/internal/realtimemock"
	"github.com/streamrelay/relay/examples/internal/streamtest"
	"github.com/streamrelay/relay/internal/testkit"
)

// TestConverse runs the example's client through a relay in front of the
// mock upstream: the key goes in the Authorization header, the answer
// streams back, usage arrives, and the upstream saw only the injected
// credential.
func TestConverse(t *testing.T) {
	const clientKey, upstreamKey = streamtest.ClientKey, streamtest.UpstreamKey
	up := realtimemock.New(upstreamKey)
	upURL := streamtest.Serve(t, &http.Server{Handler: up, ReadHeaderTimeout: 5 * time.Second})
	rl, err := relay.New(
		relay.WithRoutes(relay.Route{Name: "openai", Prefix: "/v1", Upstream: upURL,
			AuthHeader: "Authorization", AuthValue: upstreamKey}),
		relay.WithAPIKeys(relay.APIKey{Key: clientKey, ID: "server"}),
		relay.WithLogger(slog.New(slog.DiscardHandler)),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Shutdown(testkit.Context(t)) })
	base := streamtest.Serve(t, &http.Server{Handler: rl, ReadHeaderTimeout: 5 * time.Second})
	url := "ws" + strings.TrimPrefix(base, "http") + "/v1/realtime?model=gpt-realtime"

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out strings.Builder
	u, err := converse(ctx, url, clientKey, "hello relay", &out)
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "echo: hello relay" {
		t.Errorf("streamed text %q", out.String())
	}
	if u.TotalTokens != realtimemock.UsageTotalTokens || u.InputTokens != realtimemock.UsageInputTokens {
		t.Errorf("usage %+v", u)
	}
	hs := testkit.Recv(t, up.Handshakes, "no handshake reached the upstream")
	if hs.Header.Get("Authorization") != "Bearer "+upstreamKey || hs.Contains(clientKey) {
		t.Errorf("upstream handshake: %v", hs.Header)
	}
	if hs.Path != "/v1/realtime" || hs.RawQuery != "model=gpt-realtime" {
		t.Errorf("upstream saw %s?%s", hs.Path, hs.RawQuery)
	}
	if code := testkit.Recv(t, up.Closed, "the session's end did not reach the upstream"); code != websocket.StatusNormalClosure {
		t.Errorf("upstream saw close %d, want 1000", code)
	}

	// A wrong key is refused before the upgrade, with the HTTP status.
	if _, err := converse(ctx, url, "wrong-key", "hi", &out); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong key: err %v, want a 401 refusal", err)
	}
}
