package sdktest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
)

// wsRecords collects the relay's records.
type wsRecords struct {
	mu   sync.Mutex
	recs []relay.Record
}

func (s *wsRecords) Record(_ context.Context, r relay.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, r)
	return nil
}

// TestWebSocketLibraryThroughRelay: a client and a server of a real
// WebSocket library (github.com/coder/websocket) talk through the relay
// unchanged: text, a 1 MiB binary message, a fragmented message, ping
// and pong, and close codes with their reasons both ways.
func TestWebSocketLibraryThroughRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	closes := make(chan websocket.CloseError, 2)
	auth := make(chan string, 2)
	var handlers sync.WaitGroup
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers.Add(1)
		defer handlers.Done()
		auth <- r.Header.Get("Authorization")
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		defer c.CloseNow()
		c.SetReadLimit(4 << 20)
		for range 16 { // echo, bounded
			typ, b, err := c.Read(ctx)
			if err != nil {
				var ce websocket.CloseError
				if errors.As(err, &ce) {
					closes <- ce
				}
				return
			}
			switch string(b) {
			case "ping me":
				go func() { // Ping needs this loop reading, for the pong
					msg := "pong came"
					if err := c.Ping(ctx); err != nil {
						msg = "ping failed: " + err.Error()
					}
					_ = c.Write(ctx, websocket.MessageText, []byte(msg))
				}()
				continue
			case "close me":
				_ = c.Close(4002, "server bye")
				return
			}
			if err := c.Write(ctx, typ, b); err != nil {
				return
			}
		}
	}))
	defer up.Close()
	recs := &wsRecords{}
	rl, err := relay.New(
		relay.WithRoutes(relay.Route{Name: "rt", Prefix: "/v1", Upstream: up.URL, AuthHeader: "Authorization", AuthValue: "up-secret"}),
		relay.WithAPIKeys(relay.APIKey{Key: clientKey, ID: "k", Tenant: tenant}),
		relay.WithRecorder(recs),
		relay.WithRegisterer(prometheus.NewRegistry()),
	)
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(rl)
	defer front.Close()
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), waitTimeout)
		defer scancel()
		_ = rl.Shutdown(sctx)
	}()
	dial := func() *websocket.Conn {
		c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(front.URL, "http")+"/v1/realtime?model=gpt-realtime",
			&websocket.DialOptions{
				HTTPHeader:      http.Header{"Authorization": {"Bearer " + clientKey}},
				CompressionMode: websocket.CompressionContextTakeover, // offered; the relay removes the offer
			})
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		if resp.Header.Get("Sec-WebSocket-Extensions") != "" {
			t.Errorf("an extension was negotiated through the relay: %q", resp.Header.Get("Sec-WebSocket-Extensions"))
		}
		c.SetReadLimit(4 << 20)
		return c
	}
	expect := func(c *websocket.Conn, typ websocket.MessageType, want []byte) {
		t.Helper()
		gt, got, err := c.Read(ctx)
		if err != nil || gt != typ || !bytes.Equal(got, want) {
			t.Fatalf("read %v %d bytes (%v), want %v %d bytes", gt, len(got), err, typ, len(want))
		}
	}

	c := dial()
	if a := testkit.Recv(t, auth, "the upstream handshake"); a != "Bearer up-secret" {
		t.Errorf("upstream Authorization %q", a)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"session.update"}`)); err != nil {
		t.Fatal(err)
	}
	expect(c, websocket.MessageText, []byte(`{"type":"session.update"}`))
	big := make([]byte, 1<<20)
	_, _ = rand.Read(big)
	if err := c.Write(ctx, websocket.MessageBinary, big); err != nil {
		t.Fatal(err)
	}
	expect(c, websocket.MessageBinary, big)
	// A fragmented message: each Write of a Writer is a frame.
	wr, err := c.Writer(ctx, websocket.MessageText)
	if err != nil {
		t.Fatal(err)
	}
	frag := strings.Repeat("fragment ", 2000)
	for i := 0; i < len(frag); i += 1000 {
		if _, err := wr.Write([]byte(frag[i:min(i+1000, len(frag))])); err != nil {
			t.Fatal(err)
		}
	}
	if err := wr.Close(); err != nil {
		t.Fatal(err)
	}
	expect(c, websocket.MessageText, []byte(frag))
	// Ping and pong both ways: the client's ping needs a reader running.
	pinged := make(chan error, 1)
	go func() { pinged <- c.Ping(ctx) }()
	if err := c.Write(ctx, websocket.MessageText, []byte("ping me")); err != nil {
		t.Fatal(err)
	}
	expect(c, websocket.MessageText, []byte("pong came")) // the server's ping answered; the client's pong came back too
	if err := testkit.Recv(t, pinged, "the client's ping answered"); err != nil {
		t.Errorf("client ping: %v", err)
	}
	if err := c.Close(4001, "client bye"); err != nil {
		t.Errorf("close: %v", err)
	}
	if ce := testkit.Recv(t, closes, "the client's close upstream"); ce.Code != 4001 || ce.Reason != "client bye" {
		t.Errorf("upstream got close %d %q", ce.Code, ce.Reason)
	}

	// The server closes.
	c = dial()
	testkit.Recv(t, auth, "the second handshake")
	if err := c.Write(ctx, websocket.MessageText, []byte("close me")); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != 4002 || ce.Reason != "server bye" {
		t.Errorf("client read %v, want close 4002 server bye", err)
	}
	_ = c.CloseNow()
	handlers.Wait()
	if err := rl.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	recs.mu.Lock()
	defer recs.mu.Unlock()
	if len(recs.recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs.recs))
	}
	// Records come as handlers return: in either order.
	byCode := map[int]relay.Record{}
	for _, r := range recs.recs {
		byCode[r.CloseCode] = r
	}
	for i, want := range []struct {
		code int
		by   string
	}{{4001, "client"}, {4002, "upstream"}} {
		r := byCode[want.code]
		if r.Kind != relay.KindWebSocket || r.Status != 101 || r.CloseCode != want.code || r.ClosedBy != want.by || r.FramesIn == 0 || r.FramesOut == 0 {
			t.Errorf("record %d: kind %s status %d close %d by %q frames %d/%d", i, r.Kind, r.Status, r.CloseCode, r.ClosedBy, r.FramesIn, r.FramesOut)
		}
	}
}
