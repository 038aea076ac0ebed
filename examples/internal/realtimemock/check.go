package realtimemock

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// checkTimeout bounds one whole session of CheckSession; a healthy one
// takes milliseconds over loopback.
const checkTimeout = 10 * time.Second

// BrowserKeyProtocol is the subprotocol prefix that carries a browser
// client's key ("openai-insecure-api-key.<key>"); the relay removes it.
const BrowserKeyProtocol = "openai-insecure-api-key."

// Start serves a mock accepting upstreamKey on a loopback port until the
// test ends and returns it with its base URL.
func Start(t testing.TB, upstreamKey string) (*Upstream, string) {
	t.Helper()
	u := New(upstreamKey)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: u, ReadHeaderTimeout: checkTimeout}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return u, "http://" + ln.Addr().String()
}

// CheckSession opens two sessions at url (an http:// or ws:// URL served
// by the relay in front of u), one presenting clientKey in the
// Authorization header as a server would, one in the
// Sec-WebSocket-Protocol header as a browser does, and in each proves
// that:
//
//   - the upgrade succeeds and the "realtime" subprotocol is negotiated
//     end to end;
//   - a text and a binary message come back from the upstream unchanged,
//     and a response.create gets its delta and response.done with usage;
//   - the upstream saw "Authorization: Bearer upstreamKey" and never the
//     client's key, in any header or the URL;
//   - the client's close (1000) reaches the upstream.
//
// The dial sends the headers a browser sends (Origin, Accept-Encoding:
// gzip…), so compression middleware meets what it meets in production.
func CheckSession(t *testing.T, u *Upstream, url, clientKey, upstreamKey string) {
	t.Helper()
	for _, browser := range []bool{false, true} {
		name := "header key"
		if browser {
			name = "subprotocol key"
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
			defer cancel()
			h := http.Header{}
			h.Set("Origin", "http://app.example")
			h.Set("Accept-Encoding", "gzip, deflate, br, zstd")
			protocols := []string{"realtime"}
			if browser {
				protocols = append(protocols, BrowserKeyProtocol+clientKey)
			} else {
				h.Set("Authorization", "Bearer "+clientKey)
			}
			c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h, Subprotocols: protocols})
			if err != nil {
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				t.Fatalf("dial %s: %v (status %d)", url, err, status)
			}
			defer func() { _ = c.CloseNow() }()
			if got := c.Subprotocol(); got != "realtime" {
				t.Errorf("negotiated subprotocol %q, want realtime", got)
			}
			hs := recv(t, u.Handshakes, "the session's handshake did not reach the upstream")
			if got := hs.Header.Get("Authorization"); got != "Bearer "+upstreamKey {
				t.Errorf("upstream saw Authorization %q, want the injected credential", got)
			}
			if hs.Contains(clientKey) {
				t.Errorf("the client's key reached the upstream: %s %s %v", hs.Path, hs.RawQuery, hs.Header)
			}
			if got := hs.Header.Get("Sec-WebSocket-Protocol"); got != "realtime" {
				t.Errorf("upstream saw Sec-WebSocket-Protocol %q, want realtime", got)
			}
			Exchange(ctx, t, c)
			if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
				t.Errorf("close: %v", err)
			}
			if code := recv(t, u.Closed, "the upstream did not see the session end"); code != websocket.StatusNormalClosure {
				t.Errorf("upstream saw close %d, want 1000", code)
			}
		})
	}
}

// Exchange runs the mock's conversation on an open session: session.created,
// a text and a binary echo, and a response with usage. It raises c's read
// limit to fit the 64 KiB echo.
func Exchange(ctx context.Context, t *testing.T, c *websocket.Conn) {
	t.Helper()
	c.SetReadLimit(readLimit)
	if ev := readEvent(ctx, t, c); ev.Type != "session.created" {
		t.Fatalf("first event %q, want session.created", ev.Type)
	}
	item := []byte(`{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"hello relay"}]}}`)
	write(ctx, t, c, websocket.MessageText, item)
	if typ, msg := read(ctx, t, c); typ != websocket.MessageText || !bytes.Equal(msg, item) {
		t.Fatalf("text echo: %v %q", typ, msg)
	}
	bin := make([]byte, 64<<10)
	for i := range bin {
		bin[i] = byte(i * 7)
	}
	write(ctx, t, c, websocket.MessageBinary, bin)
	if typ, msg := read(ctx, t, c); typ != websocket.MessageBinary || !bytes.Equal(msg, bin) {
		t.Fatalf("binary echo: %v, %d bytes (want %d unchanged)", typ, len(msg), len(bin))
	}
	write(ctx, t, c, websocket.MessageText, []byte(`{"type":"response.create"}`))
	var text strings.Builder
	for range 3 {
		ev := readEvent(ctx, t, c)
		switch ev.Type {
		case "response.output_text.delta":
			text.WriteString(ev.Delta)
		case "response.done":
			if ev.Response.Usage.TotalTokens != UsageTotalTokens {
				t.Errorf("response.done usage %+v", ev.Response.Usage)
			}
			if text.String() != "echo: hello relay" {
				t.Errorf("text %q, want %q", text.String(), "echo: hello relay")
			}
			return
		}
	}
	t.Fatal("no response.done after response.create")
}

// Event is the part of a server event the checks read.
type Event struct {
	Type     string `json:"type"`
	Delta    string `json:"delta"`
	Response struct {
		Usage struct {
			TotalTokens  int `json:"total_tokens"`
			InputTokens  int `json:"input_tokens"`
			OutputTokens int `json:"output_tokens"`
		} `json:"usage"`
	} `json:"response"`
}

func readEvent(ctx context.Context, t *testing.T, c *websocket.Conn) Event {
	t.Helper()
	typ, msg := read(ctx, t, c)
	var ev Event
	if typ != websocket.MessageText || json.Unmarshal(msg, &ev) != nil {
		t.Fatalf("not a JSON text event: %v %q", typ, msg)
	}
	return ev
}

func read(ctx context.Context, t *testing.T, c *websocket.Conn) (websocket.MessageType, []byte) {
	t.Helper()
	typ, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return typ, msg
}

func write(ctx context.Context, t *testing.T, c *websocket.Conn, typ websocket.MessageType, msg []byte) {
	t.Helper()
	if err := c.Write(ctx, typ, msg); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	timer := time.NewTimer(checkTimeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatal(what)
		var zero T
		return zero
	}
}

// Refused dials url with clientKey in Authorization, expecting the
// session to be refused before the upgrade, and returns the HTTP status
// of the refusal. It fails the test if the session opens.
func Refused(t *testing.T, url, clientKey string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + clientKey}}})
	if err == nil {
		_ = c.CloseNow()
		t.Fatal("the session opened")
	}
	if resp == nil {
		t.Fatalf("dial: %v, and no HTTP answer", err)
	}
	return resp.StatusCode
}

// Ended opens a session at url with clientKey in Authorization, reads
// session.created and then waits, up to checkTimeout, for the other side
// to end the session; it returns the close code the client got (-1 for
// none).
func Ended(t *testing.T, url, clientKey string) websocket.StatusCode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + clientKey}}})
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	defer func() { _ = c.CloseNow() }()
	if ev := readEvent(ctx, t, c); ev.Type != "session.created" {
		t.Fatalf("first event %q, want session.created", ev.Type)
	}
	for range 100 { // the mock sends nothing unasked; bounded all the same
		if _, _, err := c.Read(ctx); err != nil {
			if ctx.Err() != nil {
				t.Fatal("the session was not ended")
			}
			return websocket.CloseStatus(err)
		}
	}
	t.Fatal("the session went on")
	return -1
}
