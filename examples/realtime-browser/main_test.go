package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/streamrelay/relay/examples/internal/realtimemock"
	"github.com/streamrelay/relay/examples/internal/streamtest"
	"github.com/streamrelay/relay/internal/testkit"
)

// outcome is what the page writes into #outcome.
type outcome struct {
	OK             bool   `json:"ok"`
	Protocol       string `json:"protocol"`
	SessionCreated bool   `json:"sessionCreated"`
	TextEcho       bool   `json:"textEcho"`
	BinaryEcho     bool   `json:"binaryEcho"`
	Text           string `json:"text"`
	Usage          *struct {
		TotalTokens int `json:"total_tokens"`
	} `json:"usage"`
	CloseCode int    `json:"closeCode"`
	Error     string `json:"error"`
}

// TestBrowserSession runs the example's page in headless chromium: the
// page opens a session through the relay with its key as a subprotocol,
// exchanges a text and a binary message with the mock upstream, asks for
// a response, and the test reads the outcome from the page's DOM.
func TestBrowserSession(t *testing.T) {
	const clientKey, upstreamKey = streamtest.ClientKey, streamtest.UpstreamKey
	up := realtimemock.New(upstreamKey)
	upURL := streamtest.Serve(t, &http.Server{Handler: up, ReadHeaderTimeout: 5 * time.Second})
	rl, err := newRelay(upURL, upstreamKey, clientKey, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rl.Shutdown(testkit.Context(t)) })
	base := streamtest.Serve(t, &http.Server{Handler: newHandler(rl), ReadHeaderTimeout: 5 * time.Second})
	browser := startChromium(t)

	t.Run("session", func(t *testing.T) {
		got := runPage(t, browser, base+"/#key="+clientKey)
		if !got.OK || got.Protocol != "realtime" || !got.SessionCreated || !got.TextEcho || !got.BinaryEcho ||
			got.Text != "echo: hello relay" || got.Usage == nil || got.Usage.TotalTokens != realtimemock.UsageTotalTokens {
			t.Errorf("page outcome: %+v", got)
		}
		hs := testkit.Recv(t, up.Handshakes, "no handshake reached the upstream")
		if !hs.Accepted || hs.Header.Get("Authorization") != "Bearer "+upstreamKey {
			t.Errorf("upstream saw Authorization %q, want the injected credential", hs.Header.Get("Authorization"))
		}
		if hs.Contains(clientKey) {
			t.Errorf("the browser's key reached the upstream: %s?%s %v", hs.Path, hs.RawQuery, hs.Header)
		}
		if p := hs.Header.Get("Sec-WebSocket-Protocol"); p != "realtime" {
			t.Errorf("upstream saw Sec-WebSocket-Protocol %q, want realtime alone", p)
		}
		if code := testkit.Recv(t, up.Closed, "the session's end did not reach the upstream"); code != websocket.StatusNormalClosure {
			t.Errorf("upstream saw close %d, want the page's 1000", code)
		}
	})

	t.Run("wrong key", func(t *testing.T) {
		got := runPage(t, browser, base+"/#key=not-a-relay-key")
		if got.OK || got.SessionCreated || got.CloseCode != 1006 {
			t.Errorf("page outcome with a wrong key: %+v (want a failed handshake, close 1006)", got)
		}
		select {
		case hs := <-up.Handshakes:
			t.Errorf("a refused session reached the upstream: %+v", hs)
		default:
		}
	})
}

// runPage opens url in a new tab, waits for the page's outcome and
// returns it as read from the DOM.
func runPage(t *testing.T, browser *chromium, url string) outcome {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tab, err := browser.openPage(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	text, err := browser.await(ctx, tab, `window.outcome.then(() => document.getElementById("outcome").textContent)`)
	if err != nil {
		t.Fatal(err)
	}
	var got outcome
	if err := json.Unmarshal([]byte(text), &got); err != nil {
		t.Fatalf("#outcome is not the page's JSON: %q", text)
	}
	return got
}
