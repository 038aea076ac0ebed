package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// closedPort returns a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// jsonKeys returns the top-level keys of a JSON object, in order, with
// repeats, or an error when line is not one JSON object.
func jsonKeys(line []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object: %v", err)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("more after the object")
	}
	return keys, nil
}

// The process's stderr is JSON lines only, one key at most once per line,
// while Redis and ClickHouse are unreachable and their drivers complain:
// go-redis's and clickhouse-go's logs come through slog with their
// component named.
func TestLogsAreJSONLines(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
routes: [{name: up, path: /v1, upstream: "%s", kind: json}]
rate_limit: {enabled: true, default: 600}
auth: {api_keys: [client-key-7f3a]}
storage:
  redis: {addr: "%s", ttl: 60}
  clickhouse: {addr: "%s", async: true}
  queue: {flush_interval: 10ms, max_retries: 0}
observability: {detailed_logs: true}
log: {level: debug}
`, jsonUpstream(t), closedPort(t), closedPort(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := runMain(t, ctx, nil, "-config", cfg, "-addr", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	var lines []string
	next := func() bool {
		if !sc.Scan() {
			return false
		}
		lines = append(lines, sc.Text())
		return true
	}
	addr := ""
	for addr == "" && next() {
		var l struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "relay listening" {
			addr = l.Addr
		}
	}
	if addr == "" {
		t.Fatalf("the process never listened:\n%s", strings.Join(lines, "\n"))
	}
	for range 3 {
		if code := status(ctx, t, "http://"+addr+"/v1/x", "client-key-7f3a"); code != 200 {
			t.Errorf("request with Redis down: %d, want 200 (fail open)", code)
		}
	}
	if code, body := get(t, "http://"+addr+"/readyz"); code != 503 || body != "not ready: redis, clickhouse\n" {
		t.Errorf("/readyz = %d %q", code, body)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for next() {
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit: %v", err)
	}

	components := map[string]bool{}
	requests := 0
	for _, l := range lines {
		keys, err := jsonKeys([]byte(l))
		if err != nil {
			t.Errorf("not a JSON line (%v): %s", err, l)
			continue
		}
		seen := map[string]bool{}
		for _, k := range keys {
			if seen[k] {
				t.Errorf("key %q twice: %s", k, l)
			}
			seen[k] = true
		}
		var v struct{ Component, Msg, Level string }
		_ = json.Unmarshal([]byte(l), &v)
		components[v.Component] = true
		if v.Msg == "request" && v.Level == "DEBUG" {
			requests++
		}
		if strings.Contains(l, "client-key-7f3a") {
			t.Errorf("a line holds the client key: %s", l)
		}
	}
	for _, c := range []string{"go-redis", "limiter"} {
		if !components[c] {
			t.Errorf("no log line with \"component\":%q among:\n%s", c, strings.Join(lines, "\n"))
		}
	}
	if requests != 3 {
		t.Errorf("%d detailed request lines, want 3", requests)
	}
}

// observability.detailed_logs logs each request's metadata at DEBUG even
// when the level is info, never a key or a body; a reload turns it off.
func TestDetailedLogs(t *testing.T) {
	up := jsonUpstream(t)
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	const base = `
routes: [{name: up, path: /v1, upstream: "%s", kind: json}]
auth: {api_keys: [{key: secret-client-key, id: team}]}
storage: {discard: true}
observability: {logging: {level: info}, detailed_logs: %v}
`
	writeFile(t, cfg, fmt.Sprintf(base, up, true))
	rl := newReloader()
	s := startServer(t, []string{"-config", cfg}, rl.hooks(hooks{}))
	ctx := context.Background()
	resp := post(ctx, t, s.base+"/v1/chat/completions?api_key=in-the-query", "secret-client-key", `{"model":"m","messages":[{"role":"user","content":"private words"}]}`)
	resp.Body.Close()
	writeFile(t, cfg, fmt.Sprintf(base, up, false))
	if err := rl.reload(t); err != nil {
		t.Fatal(err)
	}
	if code := status(ctx, t, s.base+"/v1/chat/completions", "secret-client-key"); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	if err := s.shutdown(t); err != nil {
		t.Fatal(err)
	}
	var details []map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(s.stderr.String()), "\n") {
		var v map[string]any
		if err := json.Unmarshal([]byte(l), &v); err != nil {
			t.Fatalf("not JSON: %s", l)
		}
		if v["msg"] == "request" {
			details = append(details, v)
		}
		for _, secret := range []string{"secret-client-key", "private words", "in-the-query"} {
			if strings.Contains(l, secret) {
				t.Errorf("a log line holds %q: %s", secret, l)
			}
		}
	}
	if len(details) != 1 {
		t.Fatalf("%d request lines, want 1 (the second request came after detailed_logs was turned off):\n%s", len(details), s.stderr)
	}
	d := details[0]
	if d["level"] != "DEBUG" || d["route"] != "up" || d["key_id"] != "team" || d["status"] != 200.0 ||
		d["path"] != "/v1/chat/completions" || d["model"] != "m" {
		t.Errorf("request line = %v", d)
	}
}
