package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// reloader triggers reloads the way SIGHUP does and waits for their
// outcome.
type reloader struct {
	sig  chan os.Signal
	done chan error
}

func newReloader() *reloader {
	return &reloader{sig: make(chan os.Signal, 1), done: make(chan error, 16)}
}

func (r *reloader) hooks(h hooks) hooks {
	h.reload = r.sig
	h.reloaded = func(err error) { r.done <- err }
	return h
}

// reload sends SIGHUP and returns the reload's outcome.
func (r *reloader) reload(t *testing.T) error {
	t.Helper()
	r.sig <- syscall.SIGHUP
	return r.wait(t)
}

func (r *reloader) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no reload within 10s")
		return nil
	}
}

// status posts a non-streamed chat completion and returns the status.
func status(ctx context.Context, t *testing.T, url, key string) int {
	t.Helper()
	resp := post(ctx, t, url, key, `{"model":"demo","messages":[{"role":"user","content":"Hi"}]}`)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// readAll reads a stream to its end and returns its events.
func readAll(resp *http.Response) ([]sseEvent, error) {
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	var events []sseEvent
	for {
		ev, err := readEvent(r)
		if err == io.EOF {
			return events, nil
		}
		if err != nil {
			return events, err
		}
		events = append(events, ev)
	}
}

// metricValue polls /metrics until the series has the value, and reports
// whether it did.
func metricValue(t *testing.T, url, series string) bool {
	t.Helper()
	for range 1000 {
		if _, body := get(t, url); strings.Contains(body, series+"\n") {
			return true
		}
	}
	return false
}

const reloadConfig = `
server: {shutdown_timeout: 10s}
routes:
  - {name: chat, path: /v1/chat/completions, upstream: "%s", kind: sse}
rate_limit: {enabled: true, default: %d, burst: %d}
auth:
  api_keys:
%s
storage: {jsonl: {path: "%s"}}
log: {level: %s}
`

// SIGHUP while 50 streams run: none is cut, the new keys work at once,
// revoked keys are refused at once, new limits apply at once, and a bad
// file is rejected with its line while the running configuration stays.
func TestReloadKeepsStreams(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := make(gate)
	mock, err := startDemoUpstream(g.step)
	if err != nil {
		t.Fatal(err)
	}
	defer mock.Close()
	dir := t.TempDir()
	cfg, records := filepath.Join(dir, "relay.yaml"), filepath.Join(dir, "records.jsonl")
	write := func(rpm, burst int, keys, level string) {
		writeFile(t, cfg, fmt.Sprintf(reloadConfig, mock.url, rpm, burst, keys, records, level))
	}
	write(6000, 1000, "    - {key: key-old, id: old}\n    - {key: key-keep, id: keep}", "info")
	rl := newReloader()
	s := startServer(t, []string{"-config", cfg}, rl.hooks(hooks{}))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := s.base + "/v1/chat/completions"

	// 50 streams on the old key, each holding after its first event.
	const streams = 50
	started := make(chan struct{}, streams)
	results := make(chan string, streams)
	var wg sync.WaitGroup
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(chatBody))
			req.Header.Set("Authorization", "Bearer key-old")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				results <- err.Error()
				return
			}
			r := bufio.NewReader(resp.Body)
			first, err := readEvent(r)
			started <- struct{}{}
			if err != nil || resp.StatusCode != 200 {
				resp.Body.Close()
				results <- fmt.Sprintf("status %d, first event %q: %v", resp.StatusCode, first.data, err)
				return
			}
			resp.Body = io.NopCloser(r)
			events, err := readAll(resp)
			var text strings.Builder
			for _, ev := range events {
				var chunk struct {
					Choices []struct {
						Delta struct{ Content string } `json:"delta"`
					} `json:"choices"`
				}
				if json.Unmarshal([]byte(ev.data), &chunk) == nil && len(chunk.Choices) > 0 {
					text.WriteString(chunk.Choices[0].Delta.Content)
				}
			}
			switch {
			case err != nil:
				results <- "cut: " + err.Error()
			case len(events) == 0 || events[len(events)-1].data != "[DONE]" || !strings.HasSuffix(text.String(), "watch it stream."):
				results <- fmt.Sprintf("cut: %d events, text %q", len(events), text.String())
			default:
				results <- "ok"
			}
		}()
	}
	for range streams {
		select {
		case <-started:
		case <-ctx.Done():
			t.Fatal("the streams did not start")
		}
	}

	// New keys and limits, key-old revoked, debug logs.
	write(1, 1, "    - {key: key-new, id: new}\n    - {key: key-keep, id: keep}", "debug")
	if err := rl.reload(t); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if code := status(ctx, t, url, "key-new"); code != 200 {
		t.Errorf("new key right after the reload: %d, want 200", code)
	}
	if code := status(ctx, t, url, "key-old"); code != http.StatusUnauthorized {
		t.Errorf("revoked key right after the reload: %d, want 401", code)
	}
	if code := status(ctx, t, url, "key-new"); code != http.StatusTooManyRequests {
		t.Errorf("new key's second request: %d, want 429 from the new limit of 1 per minute", code)
	}

	// A bad file: rejected with its line; the running configuration stays.
	writeFile(t, cfg, strings.Replace(fmt.Sprintf(reloadConfig, mock.url, 1, 1, "    - key-new", records, "info"),
		"log: {level: info}", "log: {level: info, colour: true}", 1))
	err = rl.reload(t)
	if err == nil || !strings.Contains(err.Error(), `relay.yaml:10: unknown key "colour" in log`) {
		t.Errorf("bad file: reload error %v, want the unknown key with its line", err)
	}
	if code := status(ctx, t, url, "key-keep"); code != 200 {
		t.Errorf("after a rejected reload: %d, want 200 from the running configuration", code)
	}
	if code := status(ctx, t, url, "key-old"); code != http.StatusUnauthorized {
		t.Errorf("after a rejected reload, the revoked key: %d, want 401", code)
	}

	// Now let the 50 streams run to their end.
	stop := make(chan struct{})
	go g.run(stop)
	wg.Wait()
	close(stop)
	close(results)
	ok := 0
	for r := range results {
		if r == "ok" {
			ok++
		} else {
			t.Error(r)
		}
	}
	if ok != streams {
		t.Errorf("%d of %d streams complete", ok, streams)
	}

	// The metrics count the streams the old generation finished, and the
	// reloads.
	m := s.base + "/metrics"
	for _, series := range []string{
		`relay_requests_total{route="chat",status="2xx"} 52`,
		`relay_requests_total{route="chat",status="4xx"} 3`,
		`relay_config_reloads_total{result="success"} 1`,
		`relay_config_reloads_total{result="rejected"} 1`,
		`relay_config_restart_required 0`,
	} {
		if !metricValue(t, m, series) {
			t.Errorf("/metrics never showed %s", series)
		}
	}
	if err := s.shutdown(t); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(records)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n != streams+5 {
		t.Errorf("%d records, want %d (every request, across generations)", n, streams+5)
	}
	logs := s.stderr.String()
	for _, want := range []string{`"msg":"configuration reloaded","trigger":"SIGHUP","generation":2`,
		`"msg":"configuration reload rejected; the running configuration stays"`, `relay.yaml:10: unknown key \"colour\" in log`,
		`"level":"DEBUG","msg":"configuration generation retired","generation":1`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the logs lack %s:\n%s", want, logs)
		}
	}
}

// Changes a reload cannot apply are named, and the rest applies.
func TestReloadNamesRestartOnlyChanges(t *testing.T) {
	up := jsonUpstream(t)
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	const base = "routes: [{name: up, path: /v1, upstream: \"%s\", kind: json}]\nauth: {api_keys: [%s]}\nstorage: {discard: true}\n"
	writeFile(t, cfg, fmt.Sprintf(base, up, "k1")+"server: {port: 8080}\n")
	rl := newReloader()
	s := startServer(t, []string{"-config", cfg}, rl.hooks(hooks{}))
	ctx := context.Background()
	if code := status(ctx, t, s.base+"/v1/x", "k2"); code != http.StatusUnauthorized {
		t.Fatalf("k2 before the reload: %d", code)
	}
	writeFile(t, cfg, strings.Replace(fmt.Sprintf(base, up, "k2"), "{discard: true}", "{log: true}", 1)+
		"server: {port: 9090, read_header_timeout: 5s}\nlog: {format: text}\nobservability: {prometheus: {path: /m}}\n")
	if err := rl.reload(t); err != nil {
		t.Fatal(err)
	}
	if code := status(ctx, t, s.base+"/v1/x", "k2"); code != 200 {
		t.Errorf("k2 after the reload: %d, want 200", code)
	}
	if !metricValue(t, s.base+"/metrics", "relay_config_restart_required 1") {
		t.Error("relay_config_restart_required is not 1")
	}
	want := `"msg":"configuration changes that need a restart were not applied","keys":["server.read_header_timeout","storage","observability.prometheus","log.format"]`
	if !strings.Contains(s.stderr.String(), want) {
		t.Errorf("the logs lack %s:\n%s", want, s.stderr)
	}
	// (server.port is overridden by -addr here, so it needs no restart.)
}

// server.watch_interval reloads the file when its content changes.
func TestReloadOnFileChange(t *testing.T) {
	up := jsonUpstream(t)
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	const base = "server: {watch_interval: 20ms}\nroutes: [{name: up, path: /v1, upstream: \"%s\", kind: json}]\nauth: {api_keys: [%s]}\nstorage: {discard: true}\n"
	writeFile(t, cfg, fmt.Sprintf(base, up, "k1"))
	rl := newReloader()
	s := startServer(t, []string{"-config", cfg}, rl.hooks(hooks{}))
	writeFile(t, cfg, fmt.Sprintf(base, up, "k2"))
	if err := rl.wait(t); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if code := status(ctx, t, s.base+"/v1/x", "k2"); code != 200 {
		t.Errorf("k2 after the file changed: %d, want 200", code)
	}
	if code := status(ctx, t, s.base+"/v1/x", "k1"); code != http.StatusUnauthorized {
		t.Errorf("k1 after the file changed: %d, want 401", code)
	}
	if !strings.Contains(s.stderr.String(), `"trigger":"file changed"`) {
		t.Errorf("no reload logged:\n%s", s.stderr)
	}
}

// A real SIGHUP reloads the running process.
func TestMainSIGHUP(t *testing.T) {
	up := jsonUpstream(t)
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	const base = "routes: [{name: up, path: /v1, upstream: \"%s\", kind: json}]\nauth: {api_keys: [%s]}\nstorage: {discard: true}\n"
	writeFile(t, cfg, fmt.Sprintf(base, up, "k1"))
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
	// until reads log lines up to the one with msg, and returns its addr.
	until := func(msg string) string {
		for sc.Scan() {
			var l struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == msg {
				return l.Addr
			}
		}
		t.Fatalf("the process never logged %q", msg)
		return ""
	}
	addr := until("relay listening")
	url := "http://" + addr + "/v1/x"
	if code := status(ctx, t, url, "k1"); code != 200 {
		t.Fatalf("k1: %d", code)
	}
	writeFile(t, cfg, fmt.Sprintf(base, up, "k2"))
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	until("configuration reloaded")
	if code := status(ctx, t, url, "k2"); code != 200 {
		t.Errorf("k2 after SIGHUP: %d, want 200", code)
	}
	if code := status(ctx, t, url, "k1"); code != http.StatusUnauthorized {
		t.Errorf("k1 after SIGHUP: %d, want 401", code)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	until("stopped")
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v", err)
	}
}

// A stream that a retired generation still runs when the process stops is
// held to the same shutdown deadline as the current generation's: cut
// with an error event ahead of the deadline by the library's reserve (so
// that the cut stream, the records and the servers all finish by it),
// recorded, and the process exits in time.
func TestShutdownCutsRetiredGeneration(t *testing.T) {
	g := make(gate) // never opened: the stream holds after its first event
	mock, err := startDemoUpstream(g.step)
	if err != nil {
		t.Fatal(err)
	}
	defer mock.Close()
	dir := t.TempDir()
	cfg, records := filepath.Join(dir, "relay.yaml"), filepath.Join(dir, "records.jsonl")
	// Long enough for the reserve (a quarter of it) to tell a cut ahead of
	// the deadline from a cut at the deadline.
	const grace = 3 * time.Second
	const base = "server: {shutdown_timeout: 3s}\nroutes: [{name: chat, path: /v1/chat/completions, upstream: \"%s\", kind: sse}]\nauth: {api_keys: [%s]}\nstorage: {jsonl: {path: \"%s\"}}\n"
	writeFile(t, cfg, fmt.Sprintf(base, mock.url, "k1", records))
	rl := newReloader()
	s := startServer(t, []string{"-config", cfg}, rl.hooks(hooks{}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp := post(ctx, t, s.base+"/v1/chat/completions", "k1", chatBody)
	r := bufio.NewReader(resp.Body)
	if _, err := readEvent(r); err != nil {
		t.Fatal(err)
	}
	writeFile(t, cfg, fmt.Sprintf(base, mock.url, "k2", records))
	if err := rl.reload(t); err != nil {
		t.Fatal(err)
	}
	type result struct {
		events []sseEvent
		at     time.Time // when the stream ended
	}
	ended := make(chan result, 1)
	go func() {
		resp.Body = io.NopCloser(r)
		events, _ := readAll(resp)
		ended <- result{events, time.Now()}
	}()
	start := time.Now()
	if err := s.shutdown(t); err != nil {
		t.Fatalf("runWith: %v", err)
	}
	if d := time.Since(start); d > grace+time.Second {
		t.Errorf("runWith returned %v after the shutdown began, shutdown_timeout is %v", d, grace)
	}
	var res result
	select {
	case res = <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the held stream did not end within 10s of the shutdown")
	}
	if len(res.events) == 0 || res.events[len(res.events)-1].name != "error" {
		t.Errorf("the held stream ended with %+v, want an error event", res.events)
	}
	// The library's reserve is at least 250ms: a cut at the deadline
	// itself leaves no time to end the stream and write its record.
	if d := res.at.Sub(start); d >= grace-250*time.Millisecond {
		t.Errorf("the retired generation's stream was cut %v after the shutdown began, want ahead of the %v deadline by the reserve", d, grace)
	}
	b, err := os.ReadFile(records)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n != 1 || !strings.Contains(string(b), `"key_id":"key-`) {
		t.Errorf("records:\n%s", b)
	}
}

// The line logging a reload is written whatever the new log level.
func TestReloadLoggedAtAnyLevel(t *testing.T) {
	up := jsonUpstream(t)
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	const base = "routes: [{name: up, path: /v1, upstream: \"%s\", kind: json}]\nauth: {api_keys: [k]}\nstorage: {discard: true}\nlog: {level: %s}\n"
	writeFile(t, cfg, fmt.Sprintf(base, up, "info"))
	rl := newReloader()
	s := startServer(t, []string{"-config", cfg}, rl.hooks(hooks{}))
	for _, level := range []string{"error", "info"} {
		writeFile(t, cfg, fmt.Sprintf(base, up, level))
		if err := rl.reload(t); err != nil {
			t.Fatal(err)
		}
	}
	got := strings.Count(s.stderr.String(), `"msg":"configuration reloaded"`)
	if got != 2 {
		t.Errorf("%d reloads logged, want 2:\n%s", got, s.stderr)
	}
}
