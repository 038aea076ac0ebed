package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/streamrelay/relay/internal/testkit"
)

// realtimeUpstream is a small OpenAI Realtime-shaped upstream: it accepts
// a session only with the injected credential, reports what each
// handshake carried, sends session.created, echoes text and binary
// messages, and answers response.create with response.done and usage
// (253 tokens).
type realtimeUpstream struct {
	key        string
	handshakes chan http.Header
	closed     chan websocket.StatusCode
}

func (u *realtimeUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := r.Header.Clone()
	h.Set(":path", r.URL.RequestURI()) // the key must not be in the URL either
	u.handshakes <- h
	if r.Header.Get("Authorization") != "Bearer "+u.key {
		http.Error(w, `{"error":{"message":"bad upstream key"}}`, http.StatusUnauthorized)
		return
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"realtime"}, InsecureSkipVerify: true})
	if err != nil {
		return
	}
	defer func() { _ = c.CloseNow() }()
	c.SetReadLimit(1 << 20)
	ctx := r.Context()
	if c.Write(ctx, websocket.MessageText, []byte(`{"type":"session.created","event_id":"e0","session":{"id":"sess_1","object":"realtime.session","model":"gpt-realtime"}}`)) != nil {
		return
	}
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			u.closed <- websocket.CloseStatus(err)
			return
		}
		if typ == websocket.MessageText && bytes.Contains(msg, []byte(`"response.create"`)) {
			msg = []byte(`{"type":"response.done","event_id":"e1","response":{"id":"resp_1","object":"realtime.response","status":"completed",` +
				`"usage":{"total_tokens":253,"input_tokens":132,"output_tokens":121,"input_token_details":{"text_tokens":132,"audio_tokens":0,"cached_tokens":0},"output_token_details":{"text_tokens":121,"audio_tokens":0}}}}`)
		}
		if err := c.Write(ctx, typ, msg); err != nil {
			u.closed <- websocket.CloseStatus(err)
			return
		}
	}
}

// TestServerRelaysSessions: the standalone server relays a WebSocket
// session on a route's path with nothing WebSocket-specific in its
// configuration — a server client with its key in Authorization and a
// browser with its key as a subprotocol — injects the route's credential,
// passes text and binary messages and the close, and writes one
// websocket record per session with the usage, never a key.
func TestServerRelaysSessions(t *testing.T) {
	up := &realtimeUpstream{key: "upstream-secret", handshakes: make(chan http.Header, 4), closed: make(chan websocket.StatusCode, 4)}
	base := serveLoopback(t, &http.Server{Handler: up, ReadHeaderTimeout: 5 * time.Second})
	dir := t.TempDir()
	records := filepath.Join(dir, "records.jsonl")
	cfg := filepath.Join(dir, "relay.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
routes:
  - {name: openai, path: /v1, upstream: "%s", auth_header: Authorization, auth_env: UP_KEY}
auth:
  api_keys:
    - {key: "${CLIENT_KEY}", id: web, tenant: t1}
storage: {jsonl: {path: "%s"}}
`, base, records))
	e := env(map[string]string{"UP_KEY": "upstream-secret", "CLIENT_KEY": "client-secret"})
	s := startServer(t, []string{"-config", cfg}, hooks{getenv: e})
	url := "ws" + strings.TrimPrefix(s.base, "http") + "/v1/realtime?model=gpt-realtime"

	for _, browser := range []bool{false, true} {
		ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
		h := http.Header{}
		protocols := []string{"realtime"}
		if browser {
			h.Set("Origin", "http://app.example")
			protocols = append(protocols, "openai-insecure-api-key.client-secret")
		} else {
			h.Set("Authorization", "Bearer client-secret")
		}
		c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h, Subprotocols: protocols})
		if err != nil {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			cancel()
			t.Fatalf("browser=%v: dial: %v (status %d)\nstderr:\n%s", browser, err, status, s.stderr)
		}
		hs := testkit.Recv(t, up.handshakes, "the session did not reach the upstream")
		if hs.Get("Authorization") != "Bearer upstream-secret" || hs.Get("Sec-WebSocket-Protocol") != "realtime" {
			t.Errorf("browser=%v: upstream handshake %v", browser, hs)
		}
		for name, vs := range hs {
			if strings.Contains(name+strings.Join(vs, ","), "client-secret") {
				t.Errorf("browser=%v: the client key reached the upstream in %s", browser, name)
			}
		}
		c.SetReadLimit(1 << 20)
		if c.Subprotocol() != "realtime" {
			t.Errorf("browser=%v: subprotocol %q", browser, c.Subprotocol())
		}
		exchange(ctx, t, c)
		if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Errorf("close: %v", err)
		}
		if code := testkit.Recv(t, up.closed, "the close did not reach the upstream"); code != websocket.StatusNormalClosure {
			t.Errorf("upstream saw close %d", code)
		}
		cancel()
	}

	// A wrong key is refused before the upgrade, and reaches nobody.
	ctx := testkit.Context(t)
	_, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer nope"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong key: %v %v, want 401 before the upgrade", err, resp)
	}

	if err := s.shutdown(t); err != nil {
		t.Fatal(err)
	}
	select {
	case hs := <-up.handshakes:
		t.Errorf("a refused session reached the upstream: %v", hs)
	default:
	}
	f, err := os.Open(records)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var sessions int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		for _, secret := range []string{"upstream-secret", "client-secret"} {
			if strings.Contains(line, secret) {
				t.Errorf("%s in a record: %s", secret, line)
			}
		}
		var rec struct {
			Kind   string `json:"kind"`
			Status int    `json:"status"`
			KeyID  string `json:"key_id"`
			Usage  struct {
				InputTokens  int64 `json:"input_tokens"`
				OutputTokens int64 `json:"output_tokens"`
			} `json:"usage"`
			FramesIn  int64  `json:"frames_in"`
			FramesOut int64  `json:"frames_out"`
			CloseCode int    `json:"close_code"`
			ClosedBy  string `json:"closed_by"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("record %q: %v", line, err)
		}
		if rec.Kind != "websocket" || rec.Status != http.StatusSwitchingProtocols {
			continue // the refusal
		}
		sessions++
		if rec.KeyID != "web" || rec.Usage.InputTokens != 132 || rec.Usage.OutputTokens != 121 ||
			rec.FramesIn < 4 || rec.FramesOut < 4 || rec.CloseCode != 1000 || rec.ClosedBy != "client" {
			t.Errorf("session record: %s", line)
		}
	}
	if sessions != 2 {
		t.Errorf("%d websocket records, want 2", sessions)
	}
	for _, secret := range []string{"upstream-secret", "client-secret"} {
		if strings.Contains(s.stderr.String(), secret) {
			t.Errorf("%s in the logs", secret)
		}
	}
}

// exchange runs session.created, a text and a binary echo, and a
// response with usage on c.
func exchange(ctx context.Context, t *testing.T, c *websocket.Conn) {
	t.Helper()
	read := func() (websocket.MessageType, []byte) {
		t.Helper()
		typ, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return typ, msg
	}
	if _, msg := read(); !bytes.Contains(msg, []byte(`"session.created"`)) {
		t.Fatalf("first event %q", msg)
	}
	for _, m := range []struct {
		typ websocket.MessageType
		msg []byte
	}{
		{websocket.MessageText, []byte(`{"type":"conversation.item.create","item":{"type":"message","role":"user","content":[{"type":"input_text","text":"hi"}]}}`)},
		{websocket.MessageBinary, bytes.Repeat([]byte{0, 1, 2, 0xff}, 1<<14)},
	} {
		if err := c.Write(ctx, m.typ, m.msg); err != nil {
			t.Fatal(err)
		}
		if typ, msg := read(); typ != m.typ || !bytes.Equal(msg, m.msg) {
			t.Fatalf("echo: %v, %d bytes; want %v, %d bytes unchanged", typ, len(msg), m.typ, len(m.msg))
		}
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create"}`)); err != nil {
		t.Fatal(err)
	}
	if _, msg := read(); !bytes.Contains(msg, []byte(`"response.done"`)) {
		t.Fatalf("after response.create: %q", msg)
	}
}

// TestServerRelaysSessionsOverTLS: with TLS on, the server offers HTTP/2,
// and a client whose transport prefers HTTP/2 (as http.DefaultTransport
// does) still opens its session: the upgrade goes over HTTP/1.1, which
// the listener still speaks.
func TestServerRelaysSessionsOverTLS(t *testing.T) {
	up := &realtimeUpstream{key: "upstream-secret", handshakes: make(chan http.Header, 4), closed: make(chan websocket.StatusCode, 4)}
	base := serveLoopback(t, &http.Server{Handler: up, ReadHeaderTimeout: 5 * time.Second})
	dir := t.TempDir()
	ca := newTestCA(t)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	ca.issue(t, certFile, keyFile, "relay", 2, time.Now().Add(-time.Hour))
	cfg := filepath.Join(dir, "relay.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
server: {tls: {cert_file: "%s", key_file: "%s"}}
routes:
  - {name: openai, path: /v1, upstream: "%s", auth_header: Authorization, auth_env: UP_KEY}
auth: {api_keys: [client-secret]}
storage: {discard: true}
`, certFile, keyFile, base))
	s := startServer(t, []string{"-config", cfg}, hooks{getenv: env(map[string]string{"UP_KEY": "upstream-secret"})})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	defer cancel()
	url := "wss://" + strings.TrimPrefix(s.base, "http://") + "/v1/realtime?model=gpt-realtime"
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr},
		HTTPHeader: http.Header{"Authorization": {"Bearer client-secret"}}})
	if err != nil {
		t.Fatalf("dial over TLS: %v", err)
	}
	defer func() { _ = c.CloseNow() }()
	if resp.ProtoMajor != 1 {
		t.Errorf("handshake over %s", resp.Proto)
	}
	if hs := testkit.Recv(t, up.handshakes, "the session did not reach the upstream"); hs.Get("Authorization") != "Bearer upstream-secret" {
		t.Errorf("upstream saw Authorization %q", hs.Get("Authorization"))
	}
	c.SetReadLimit(1 << 20)
	exchange(ctx, t, c)
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("close: %v", err)
	}
	if code := testkit.Recv(t, up.closed, "the close did not reach the upstream"); code != websocket.StatusNormalClosure {
		t.Errorf("upstream saw close %d", code)
	}
}
