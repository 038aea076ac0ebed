package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The server keys that bound what a client can make the relay hold reach
// the library: a slow body gets 408 and its connection is closed, a method
// outside server.methods gets 405, and a route's pass_headers lets an
// account header through.
func TestBoundKeys(t *testing.T) {
	seen := make(chan http.Header, 4)
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Clone()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	})}
	base := serveLoopback(t, up)
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
server:
  body_min_rate: 1000
  body_grace: 100ms
  body_timeout: 2s
  body_budget: 20971520
  body_tenant_budget: 20971520
  observation_budget: 1048576
  methods: [POST]
routes:
  - {name: up, path: /v1, upstream: "%s", kind: json, pass_headers: [OpenAI-Organization]}
auth: {api_keys: [client-key]}
storage: {queue: {max_bytes: 1048576}}
`, base))
	s := startServer(t, []string{"-config", cfg}, hooks{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// server.methods: GET is not allowed.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer client-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" {
		t.Errorf("GET: status %d, Allow %q; want 405, POST", resp.StatusCode, resp.Header.Get("Allow"))
	}

	// routes[].pass_headers: the account header reaches the upstream.
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
	req.Header.Set("Authorization", "Bearer client-key")
	req.Header.Set("OpenAI-Organization", "org-1")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case h := <-seen:
		if h.Get("OpenAI-Organization") != "org-1" {
			t.Errorf("upstream saw OpenAI-Organization %q, want org-1 (pass_headers)", h.Get("OpenAI-Organization"))
		}
	case <-ctx.Done():
		t.Fatal("the upstream saw no request")
	}

	// server.body_min_rate and body_grace: a body that stops after its
	// first bytes gets 408 once the grace is over, and the connection ends.
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", strings.TrimPrefix(s.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer client-key\r\n"+
		"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"model\":")
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn) // ends when the relay closes the connection
	if err != nil {
		t.Fatalf("reading the answer to a stalled body: %v (got %q)", err, got)
	}
	if !strings.HasPrefix(string(got), "HTTP/1.1 408") {
		t.Errorf("stalled body: got %q, want a 408", got)
	}
}

// -check applies the library's own rules too: a key with a trailing
// newline, or a method that can never be allowed, fails it without
// printing the key.
func TestCheckLibraryRules(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, src, want string
	}{
		{"key with a newline", "routes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [\"sk-secret-key\\n\"]}\n", "whitespace"},
		{"trace", "server: {methods: [POST, TRACE]}\nroutes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [k]}\n", "TRACE"},
		{"negative rate", "server: {body_min_rate: -1}\nroutes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [k]}\n", "server.body_min_rate"},
		{"budget below the body limit", "server: {body_budget: 1000}\nroutes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [k]}\n", "server.body_budget"},
		{"negative refusal memo", "server: {refusal_memo: -1s}\nroutes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [k]}\n", "server.refusal_memo"},
		{"tenant share below the body limit", "server: {body_tenant_budget: 1000}\nroutes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [k]}\n", "server.body_tenant_budget"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := filepath.Join(dir, fmt.Sprintf("c%d.yaml", i))
			writeFile(t, cfg, tt.src)
			var out strings.Builder
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := runWith(ctx, []string{"-config", cfg, "-check"}, &out, &out, hooks{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("-check: %v, want an error naming %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "sk-secret-key") {
				t.Errorf("the error prints the key: %v", err)
			}
		})
	}
}

// server.drain_on_client_gone reaches the library: with it, the upstream
// request of a client that left mid-stream is not cancelled (the relay
// reads on for the provider's final usage); without it, it is, at once.
func TestDrainKey(t *testing.T) {
	for _, tt := range []struct {
		name, key, want string
	}{{"off", "", "cancelled"}, {"on", "drain_on_client_gone: 30s", "read on"}} {
		t.Run(tt.name, func(t *testing.T) {
			left := make(chan struct{})
			outcome := make(chan string, 1)
			up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				w.Header().Set("Content-Type", "text/event-stream")
				_, _ = io.WriteString(w, `data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}]}`+"\n\n")
				w.(http.Flusher).Flush()
				select {
				case <-left:
				case <-time.After(10 * time.Second):
				}
				// Bounds a wait for a cancellation that must not come when
				// draining; without draining it comes within milliseconds.
				select {
				case <-r.Context().Done():
					outcome <- "cancelled"
				case <-time.After(2 * time.Second):
					outcome <- "read on"
					_, _ = io.WriteString(w, `data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}`+"\n\ndata: [DONE]\n\n")
				}
			})}
			base := serveLoopback(t, up)
			cfg := filepath.Join(t.TempDir(), "relay.yaml")
			writeFile(t, cfg, fmt.Sprintf(`
server:
  %s
routes:
  - {name: up, path: /v1, upstream: "%s", kind: sse}
auth: {api_keys: [client-key]}
storage: {discard: true}
`, tt.key, base))
			s := startServer(t, []string{"-config", cfg}, hooks{})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/v1/chat/completions",
				strings.NewReader(`{"model":"m","stream":true,"stream_options":{"include_usage":true}}`))
			req.Header.Set("Authorization", "Bearer client-key")
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			first := make([]byte, 8)
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				t.Fatalf("the first event: %v", err)
			}
			resp.Body.Close() // mid-stream: the connection goes with it
			close(left)
			select {
			case got := <-outcome:
				if got != tt.want {
					t.Errorf("the upstream request was %s, want %s", got, tt.want)
				}
			case <-ctx.Done():
				t.Fatal("the upstream did not finish")
			}
		})
	}
}
