package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamrelay/relay/internal/testkit"
	"go.uber.org/goleak"
)

// TestMain lets the tests run main itself in a child process, to check
// exit codes and signal handling.
func TestMain(m *testing.M) {
	if os.Getenv("RELAY_TEST_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// syncBuffer is a bytes.Buffer safe for the server's writers and the
// test's readers at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// server is a runWith running in the test.
type server struct {
	base           string
	stdout, stderr *syncBuffer
	stop           context.CancelFunc
	done           chan error
}

// startServer runs runWith with args plus -addr 127.0.0.1:0 and waits
// until it listens.
func startServer(t *testing.T, args []string, h hooks) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{stdout: &syncBuffer{}, stderr: &syncBuffer{}, stop: cancel, done: make(chan error, 1)}
	addrc := make(chan string, 1)
	h.listening = func(a string) { addrc <- a }
	go func() {
		s.done <- runWith(ctx, append(args, "-addr", "127.0.0.1:0"), s.stdout, s.stderr, h)
	}()
	select {
	case a := <-addrc:
		s.base = "http://" + a
	case err := <-s.done:
		cancel()
		t.Fatalf("server did not start: %v\nstderr:\n%s", err, s.stderr)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("server did not start in 10s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			t.Error("server did not stop")
		}
	})
	return s
}

// shutdown cancels the server's context and returns what runWith returned.
func (s *server) shutdown(t *testing.T) error {
	t.Helper()
	s.stop()
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		return err
	case <-time.After(15 * time.Second):
		t.Fatal("server did not stop in 15s")
		return nil
	}
}

func post(ctx context.Context, t *testing.T, url, key, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := (&http.Client{Timeout: testkit.Timeout}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// sseEvent is one parsed server-sent event.
type sseEvent struct{ name, data string }

// readEvent reads the next event from r.
func readEvent(r *bufio.Reader) (sseEvent, error) {
	var ev sseEvent
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if ev.data != "" || ev.name != "" {
				return ev, nil
			}
		case strings.HasPrefix(line, "event:"):
			ev.name = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			ev.data = strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
		}
	}
}

// gate is a demo step that lets the upstream send its next event only
// when the test says so.
type gate chan struct{}

func (g gate) step(ctx context.Context) error {
	select {
	case <-g:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// open lets the next event go, or fails the test when the upstream does
// not ask for it in time.
func (g gate) open(ctx context.Context, t *testing.T) {
	t.Helper()
	select {
	case g <- struct{}{}:
	case <-ctx.Done():
		t.Fatal("the upstream did not get to its next event")
	}
}

// run lets every event go until stop is closed.
func (g gate) run(stop <-chan struct{}) {
	for {
		select {
		case g <- struct{}{}:
		case <-stop:
			return
		}
	}
}

// chatBody asks for usage itself, so that the relay adds nothing to it and
// hides nothing of the stream: the lockstep reader (streamChat) sees every
// event the upstream sends, the usage chunk included.
const chatBody = `{"model":"demo","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello"}]}`

// streamChat reads a demo chat stream event by event, letting the upstream
// send each next event only once the previous one reached the client, and
// returns the text and the events.
func streamChat(ctx context.Context, t *testing.T, g gate, resp *http.Response, first func()) (string, []sseEvent) {
	t.Helper()
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	r := bufio.NewReader(resp.Body)
	var text strings.Builder
	var events []sseEvent
	for {
		ev, err := readEvent(r)
		if err != nil {
			t.Fatalf("after %d events: %v (a buffering relay stalls here)", len(events), err)
		}
		events = append(events, ev)
		if len(events) == 1 && first != nil {
			first()
		}
		if ev.data == "[DONE]" || ev.name == "error" {
			// Read to the end, so that the relay sees the stream complete
			// before the client goes.
			if _, err := io.Copy(io.Discard, r); err != nil {
				t.Errorf("after the last event: %v", err)
			}
			return text.String(), events
		}
		var chunk struct {
			Choices []struct {
				Delta struct{ Content string } `json:"delta"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(ev.data), &chunk); err != nil {
			t.Fatalf("event %q: %v", ev.data, err)
		}
		if len(chunk.Choices) > 0 {
			text.WriteString(chunk.Choices[0].Delta.Content)
		}
		g.open(ctx, t) // only now may the upstream send the next event
	}
}

func TestDemoEndToEnd(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	g := make(gate)
	s := startServer(t, []string{"-demo"}, hooks{demoStep: g.step})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	requests := 0

	t.Run("tokens arrive one by one", func(t *testing.T) {
		requests++
		text, events := streamChat(ctx, t, g, post(ctx, t, s.base+"/v1/chat/completions", demoKey, chatBody), nil)
		if !strings.HasPrefix(text, "Hello from the Stream Relay demo upstream! You said: \"Hello\".") {
			t.Errorf("text = %q", text)
		}
		if n := len(strings.Fields(text)); len(events) != n+4 { // role, n tokens, finish, usage, [DONE]
			t.Errorf("%d events for %d tokens", len(events), n)
		}
		if !strings.Contains(events[len(events)-2].data, `"usage"`) {
			t.Errorf("no usage chunk before [DONE]: %q", events[len(events)-2].data)
		}
	})

	t.Run("other endpoints", func(t *testing.T) {
		stop := make(chan struct{})
		go g.run(stop)
		defer close(stop)

		requests++
		resp := post(ctx, t, s.base+"/v1/messages", "", `{"model":"demo","stream":true,"max_tokens":50,"messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}]}`)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("no key: status %d, want 401", resp.StatusCode)
		}

		requests++
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/v1/messages",
			strings.NewReader(`{"model":"demo","stream":true,"max_tokens":50,"messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}]}`))
		req.Header.Set("x-api-key", demoKey)
		req.Header.Set("anthropic-version", "2023-06-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(resp.Body)
		var names []string
		for {
			ev, err := readEvent(r)
			if err != nil {
				break
			}
			names = append(names, ev.name)
		}
		resp.Body.Close()
		if len(names) < 6 || names[0] != "message_start" || names[len(names)-1] != "message_stop" {
			t.Errorf("anthropic events = %v", names)
		}

		requests++
		resp = post(ctx, t, s.base+"/v1/audio/speech", demoKey, `{"model":"tts","input":"one two three","voice":"alloy"}`)
		audio, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.Header.Get("Content-Type") != "audio/mpeg" || len(audio) != 3*len(silentMP3(4)) ||
			audio[0] != 0xFF || audio[1] != 0xFB {
			t.Errorf("audio: %v, %s, %d bytes", err, resp.Header.Get("Content-Type"), len(audio))
		}

		requests++
		resp = post(ctx, t, s.base+"/v1/chat/completions", demoKey, `{"model":"demo","messages":[{"role":"user","content":"Hi"}]}`)
		var completion struct {
			Choices []struct{ Message struct{ Content string } }
			Usage   struct {
				TotalTokens int `json:"total_tokens"`
			}
		}
		err = json.NewDecoder(resp.Body).Decode(&completion)
		resp.Body.Close()
		if err != nil || len(completion.Choices) != 1 || completion.Usage.TotalTokens == 0 {
			t.Errorf("completion: %v %+v", err, completion)
		}
	})

	t.Run("health and metrics", func(t *testing.T) {
		if code, body := get(t, s.base+"/healthz"); code != 200 || body != "ok\n" {
			t.Errorf("/healthz = %d %q", code, body)
		}
		if code, body := get(t, s.base+"/readyz"); code != 200 || body != "ready\n" {
			t.Errorf("/readyz = %d %q", code, body)
		}
		// A request is counted when its handler returns, which may be just
		// after the client has read the end of the response: poll.
		wants := []string{`relay_requests_total{route="openai",status="2xx"} 2`,
			`relay_requests_total{route="anthropic",status="2xx"} 1`,
			`relay_requests_total{route="anthropic",status="4xx"} 1`, "go_goroutines", "process_"}
		var missing []string
		for range 1000 {
			code, body := get(t, s.base+"/metrics")
			missing = missing[:0]
			for _, w := range wants {
				if code != 200 || !strings.Contains(body, w) {
					missing = append(missing, w)
				}
			}
			if len(missing) == 0 {
				break
			}
		}
		if len(missing) > 0 {
			t.Errorf("/metrics lacks %q", missing)
		}
	})

	t.Run("shutdown drains live streams", func(t *testing.T) {
		requests += 2
		resp := post(ctx, t, s.base+"/v1/chat/completions", demoKey, chatBody)
		draining := make(chan struct{})
		go func() {
			// Once the first event is in, shut down, and check that the
			// relay turns new work away while the stream goes on.
			defer close(draining)
			s.stop()
			for i := 0; ; i++ {
				resp, err := (&http.Client{Timeout: testkit.Timeout}).Get(s.base + "/readyz")
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable {
					break
				}
				if i == 1000 {
					t.Error("/readyz never failed while draining")
					return
				}
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/v1/chat/completions", strings.NewReader(chatBody))
			req.Header.Set("Authorization", "Bearer "+demoKey)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "shutting down") {
				t.Errorf("request while draining: %d %s", resp.StatusCode, body)
			}
		}()
		first := func() {
			select {
			case <-draining:
			case <-ctx.Done():
				t.Fatal("drain checks did not finish")
			}
		}
		text, events := streamChat(ctx, t, g, resp, first)
		if events[len(events)-1].data != "[DONE]" || !strings.HasSuffix(text, "watch it stream.") {
			t.Errorf("the stream was cut by the shutdown: %q, last event %+v", text, events[len(events)-1])
		}
		if err := s.shutdown(t); err != nil {
			t.Errorf("runWith returned %v after a drain, want nil", err)
		}
	})

	// Every request was recorded on stdout before runWith returned, and no
	// record or log line holds the client key.
	lines := strings.Split(strings.TrimSpace(s.stdout.String()), "\n")
	if len(lines) != requests {
		t.Errorf("%d records on stdout, want %d:\n%s", len(lines), requests, s.stdout)
	}
	for _, l := range lines {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec["route"] == nil {
			t.Errorf("record %q: %v", l, err)
		}
		if strings.Contains(l, demoKey) {
			t.Errorf("record holds the client key: %s", l)
		}
	}
	for _, l := range strings.Split(s.stderr.String(), "\n") {
		if strings.HasPrefix(l, "{") && strings.Contains(l, demoKey) {
			t.Errorf("log line holds the client key: %s", l)
		}
	}
}

// A client that goes away mid-stream cancels the demo upstream's response.
func TestDemoClientDisconnectCancelsUpstream(t *testing.T) {
	canceled := make(chan struct{})
	step := func(ctx context.Context) error {
		<-ctx.Done() // hold every event after the first until cancelled
		close(canceled)
		return ctx.Err()
	}
	s := startServer(t, []string{"-demo"}, hooks{demoStep: step})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cctx, disconnect := context.WithCancel(ctx)
	resp := post(cctx, t, s.base+"/v1/chat/completions", demoKey, chatBody)
	if _, err := readEvent(bufio.NewReader(resp.Body)); err != nil {
		t.Fatal(err)
	}
	disconnect()
	resp.Body.Close()
	select {
	case <-canceled:
	case <-ctx.Done():
		t.Fatal("the upstream was not cancelled after the client left")
	}
	if err := s.shutdown(t); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.stdout.String(), `"status":499`) {
		t.Errorf("no 499 record: %s", s.stdout)
	}
}

// A configuration file end to end: an upstream with a credential from the
// environment, per-key limits, records to a file, metrics turned off.
func TestConfigFileServer(t *testing.T) {
	upstream := make(chan string, 4)
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstream <- r.URL.Path + " " + r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	})}
	base := serveLoopback(t, up)
	dir := t.TempDir()
	records := filepath.Join(dir, "records.jsonl")
	cfg := filepath.Join(dir, "relay.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
server: {timeout: 30s}
routes:
  - {name: up, path: /llm, strip_prefix: true, upstream: "%s", auth_header: Authorization, auth_env: UP_KEY, kind: json}
rate_limit: {enabled: true, default: 600}
auth:
  api_keys:
    - {key: "${CLIENT_KEY}", id: tight, limits: {requests_per_minute: 1, burst: 1}}
storage: {jsonl: {path: "%s"}}
observability: {prometheus: {enabled: false}}
`, base, records))
	e := env(map[string]string{"UP_KEY": "upstream-secret", "CLIENT_KEY": "client-secret"})
	s := startServer(t, []string{"-config", cfg}, hooks{getenv: e})
	ctx := testkit.Context(t)

	resp := post(ctx, t, s.base+"/llm/v1/chat/completions", "client-secret", `{"model":"m"}`)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := testkit.Recv(t, upstream, "the request did not reach the upstream"); got != "/v1/chat/completions Bearer upstream-secret" {
		t.Errorf("upstream saw %q", got)
	}
	resp = post(ctx, t, s.base+"/llm/v1/chat/completions", "client-secret", `{"model":"m"}`)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("second request: status %d, want 429 (the key's own limit)", resp.StatusCode)
	}
	if code, _ := get(t, s.base+"/metrics"); code == 200 {
		t.Errorf("/metrics answered %d with prometheus disabled", code)
	}
	if err := s.shutdown(t); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(records)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n != 3 || !strings.Contains(string(b), `"key_id":"tight"`) {
		t.Errorf("records file has %d lines:\n%s", n, b)
	}
	for _, secret := range []string{"upstream-secret", "client-secret"} {
		if strings.Contains(string(b), secret) || strings.Contains(s.stderr.String(), secret) {
			t.Errorf("%s appears in records or logs", secret)
		}
	}
	if s.stdout.String() != "" {
		t.Errorf("stdout is not empty with records going to a file: %q", s.stdout)
	}
}

// serveLoopback serves srv on a random loopback port until the test ends.
func serveLoopback(t *testing.T, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// runMain runs main in a child process.
func runMain(t *testing.T, ctx context.Context, extraEnv []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "RELAY_TEST_RUN_MAIN=1"), extraEnv...)
	return cmd
}

func TestMainExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "server:\n  port: 8080\n  tiemout: 5s\nroutes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [k]}\n")
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, "routes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [k]}\n")
	tests := []struct {
		name   string
		args   []string
		code   int
		output string
	}{
		{"bad config", []string{"-config", bad}, 1, "bad.yaml:3: unknown key \"tiemout\" in server"},
		{"missing config", []string{"-config", filepath.Join(dir, "nope.yaml")}, 1, "no such file"},
		{"no arguments", nil, 2, "give -config FILE, or -demo"},
		{"demo and config", []string{"-demo", "-config", good}, 2, "cannot be combined"},
		{"unknown flag", []string{"-bogus"}, 2, "flag provided but not defined"},
		{"check", []string{"-config", good, "-check"}, 0, "configuration OK"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := runMain(t, ctx, nil, tt.args...).CombinedOutput()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code || !strings.Contains(string(out), tt.output) {
				t.Errorf("exit %d (want %d), output:\n%s\nwant it to contain %q", code, tt.code, out, tt.output)
			}
		})
	}
}

// A real SIGTERM stops the process cleanly, with exit code 0.
func TestMainSIGTERM(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := runMain(t, ctx, nil, "-demo", "-addr", "127.0.0.1:0")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	var addr string
	for addr == "" && sc.Scan() {
		var l struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "relay listening" {
			addr = l.Addr
		}
	}
	if addr == "" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatal("the process never logged that it listens")
	}
	if code, _ := get(t, "http://"+addr+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var rest strings.Builder
	for sc.Scan() {
		rest.WriteString(sc.Text() + "\n")
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after SIGTERM: %v\n%s", err, rest.String())
	}
	if !strings.Contains(rest.String(), `"msg":"stopped"`) {
		t.Errorf("no clean stop in the logs:\n%s", rest.String())
	}
}

// failingListener fails Accept, for good, once fail is closed.
type failingListener struct {
	net.Listener
	fail chan struct{}
}

func (l failingListener) Accept() (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() { c, err := l.Listener.Accept(); ch <- result{c, err} }()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-l.fail:
		l.Listener.Close()
		if r := <-ch; r.c != nil {
			r.c.Close()
		}
		return nil, errors.New("accept failed")
	}
}

// When the listener fails, runWith returns its error within
// shutdown_timeout, cutting a stream that would otherwise hold it.
func TestServeErrorBoundedByShutdownTimeout(t *testing.T) {
	g := make(gate) // never opened: the stream holds after its first event
	mock, err := startDemoUpstream(g.step)
	if err != nil {
		t.Fatal(err)
	}
	defer mock.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "relay.yaml")
	writeFile(t, cfg, fmt.Sprintf("server: {shutdown_timeout: 1s}\nroutes: [{name: chat, path: /v1/chat/completions, upstream: \"%s\", kind: sse}]\nauth: {api_keys: [k1]}\nstorage: {discard: true}\n", mock.url))
	fail := make(chan struct{})
	s := startServer(t, []string{"-config", cfg}, hooks{listener: func(ln net.Listener) net.Listener {
		return failingListener{ln, fail}
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp := post(ctx, t, s.base+"/v1/chat/completions", "k1", chatBody)
	defer resp.Body.Close()
	if _, err := readEvent(bufio.NewReader(resp.Body)); err != nil {
		t.Fatal(err)
	}
	close(fail)
	select {
	case err := <-s.done:
		s.done <- err // for the cleanup
		if err == nil || !strings.Contains(err.Error(), "accept failed") {
			t.Errorf("runWith: %v, want the serve error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("runWith did not return within 10s of the listener failing (shutdown_timeout 1s)")
	}
}
