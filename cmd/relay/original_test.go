package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
	"go.yaml.in/yaml/v3"
)

// originalConfig is the original project's shipped configuration, read
// where CI puts it (../shared/reference beside the repository), never
// copied into the repository.
const originalConfig = "../../../shared/reference/stream-relay-go.config.yaml"

// readOriginal returns the original configuration, skipping the test when
// it is missing outside CI and failing it under CI.
func readOriginal(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(originalConfig)
	if errors.Is(err, os.ErrNotExist) {
		testkit.Missing(t, "%s is missing: the original project's configuration lives in ../shared/reference beside the repository", originalConfig)
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// originalEnv holds the variables the original configuration names.
func originalEnv() map[string]string {
	return map[string]string{"SILICONFLOW_API_KEY": "sf-upstream-secret", "OPENAI_API_KEY": "oa-upstream-secret",
		"ANTHROPIC_API_KEY": "an-upstream-secret", "AZURE_SPEECH_KEY": "az-upstream-secret"}
}

// redirect sends every upstream request to one test server, keeping the
// path and telling the test which host it was meant for.
type redirect struct {
	to   *url.URL
	mu   sync.Mutex
	seen []string // "host path header-value" of each request
}

func (r *redirect) RoundTrip(req *http.Request) (*http.Response, error) {
	cred := req.Header.Get("Authorization") + req.Header.Get("x-api-key") + req.Header.Get("Ocp-Apim-Subscription-Key")
	r.mu.Lock()
	r.seen = append(r.seen, req.URL.Host+" "+req.URL.Path+" "+cred)
	r.mu.Unlock()
	out := req.Clone(req.Context())
	out.URL.Scheme, out.URL.Host, out.Host = r.to.Scheme, r.to.Host, ""
	return http.DefaultTransport.RoundTrip(out)
}

func (r *redirect) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

// originalUpstream answers as the original's upstreams would: SSE for chat
// completions, audio chunks for Azure's speech endpoint.
func originalUpstream(t *testing.T) *redirect {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range []string{
			`{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"Hel"}}]}`,
			`{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":"lo"}}]}`,
			`{"id":"c1","object":"chat.completion.chunk","model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`,
			`[DONE]`,
		} {
			_, _ = io.WriteString(w, "data: "+ev+"\n\n")
			http.NewResponseController(w).Flush()
		}
	})
	mux.HandleFunc("/cognitiveservices/v1", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "audio/mpeg")
		for range 3 {
			_, _ = w.Write(silentMP3(2))
			http.NewResponseController(w).Flush()
		}
	})
	u, err := url.Parse(serveLoopback(t, &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}))
	if err != nil {
		t.Fatal(err)
	}
	return &redirect{to: u}
}

// portOpen reports whether something accepts connections at addr.
func portOpen(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// The original project's configuration file, verbatim, starts and serves:
// with its variables set and no Redis or ClickHouse at its addresses, the
// relay fails open (requests are admitted, records retried and dropped),
// /readyz names both stores, the SSE routes stream, and the kind: raw route
// relays audio chunk by chunk.
func TestOriginalConfigVerbatim(t *testing.T) {
	src := readOriginal(t)
	path := filepath.Join(t.TempDir(), "config.yaml")
	writeFile(t, path, string(src))
	up := originalUpstream(t)
	s := startServer(t, []string{"-config", path}, hooks{getenv: env(originalEnv()), transport: up})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if code, body := get(t, s.base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	redisUp, chUp := portOpen("localhost:6379"), portOpen("localhost:9000")
	code, body := get(t, s.base+"/readyz")
	switch {
	case !redisUp && !chUp:
		if code != 503 || body != "not ready: redis, clickhouse\n" {
			t.Errorf("/readyz = %d %q, want 503 naming redis and clickhouse", code, body)
		}
	default:
		t.Logf("something listens at localhost:6379 (%v) or :9000 (%v): /readyz = %d %q", redisUp, chUp, code, body)
	}

	tests := []struct {
		route, path, key, wantUpstream string
	}{
		{"siliconflow", "/v1/chat/completions", "sk-relay-test-key-123",
			"api.siliconflow.cn /v1/chat/completions Bearer sf-upstream-secret"},
		{"openai", "/openai/v1/chat/completions", "sk-relay-prod-key-456",
			"api.openai.com /openai/v1/chat/completions Bearer oa-upstream-secret"},
	}
	for _, tt := range tests {
		resp := post(ctx, t, s.base+tt.path, tt.key, `{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`)
		r := bufio.NewReader(resp.Body)
		var events []string
		for {
			ev, err := readEvent(r)
			if err != nil {
				break
			}
			events = append(events, ev.data)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || len(events) != 4 || events[3] != "[DONE]" {
			t.Errorf("%s: status %d, events %q", tt.route, resp.StatusCode, events)
		}
		if got := up.requests(); !slices.Contains(got, tt.wantUpstream) {
			t.Errorf("%s: upstream requests %q lack %q", tt.route, got, tt.wantUpstream)
		}
	}

	// kind: raw is audio: binary chunks, the credential in the route's own
	// header without "Bearer ".
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/cognitiveservices/v1",
		strings.NewReader(`<speak version="1.0"><voice name="en-US-AvaNeural">Hi</voice></speak>`))
	req.Header.Set("Content-Type", "application/ssml+xml")
	req.Header.Set("Authorization", "Bearer sk-relay-test-key-123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	audio, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "audio/mpeg" || len(audio) != 3*len(silentMP3(2)) {
		t.Errorf("raw route: %v, status %d, %s, %d bytes", err, resp.StatusCode, resp.Header.Get("Content-Type"), len(audio))
	}
	if got := up.requests(); !slices.Contains(got, "eastus.tts.speech.microsoft.com /cognitiveservices/v1 az-upstream-secret") {
		t.Errorf("upstream requests %q lack the Azure speech call", got)
	}

	resp = post(ctx, t, s.base+"/v1/messages", "not-a-key", `{}`)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a wrong key: status %d, want 401", resp.StatusCode)
	}
	if code, body := get(t, s.base+"/metrics"); code != 200 || !strings.Contains(body, `relay_requests_total{route="siliconflow",status="2xx"} 1`) {
		t.Errorf("/metrics = %d, lacks the siliconflow request:\n%s", code, body)
	}
	if err := s.shutdown(t); err != nil {
		t.Fatal(err)
	}
	logs := s.stderr.String()
	for _, want := range []string{`"rate_limit":"redis"`, `redis:relay:records(ttl 1h0m0s)`, `clickhouse:relay_requests`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the startup log lacks %s:\n%s", want, logs)
		}
	}
	for _, secret := range originalEnv() {
		if strings.Contains(logs, secret) {
			t.Errorf("the logs hold an upstream credential")
		}
	}
}

// keyPaths lists the key paths of a YAML document ("routes[].kind").
func keyPaths(t *testing.T, src []byte) []string {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := join(path, n.Content[i].Value)
				out = append(out, p)
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c, path+"[]")
			}
		}
	}
	walk(&doc, "")
	slices.Sort(out)
	return slices.Compact(out)
}

// testdata/original-format.yaml sets every key of the original format to a
// value of its own; each has the effect a user of the original expects.
func TestOriginalFormatEveryKey(t *testing.T) {
	const path = "testdata/original-format.yaml"
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if ref, err := os.ReadFile(originalConfig); err == nil {
		// The testdata covers every key of the shipped file.
		mine := keyPaths(t, src)
		for _, k := range keyPaths(t, ref) {
			if !slices.Contains(mine, k) {
				t.Errorf("%s does not exercise %s, a key of the original configuration", path, k)
			}
		}
	}
	e := map[string]string{"ORIG_LLM_KEY": "llm-secret", "ORIG_TTS_KEY": "tts-secret",
		"ORIG_REDIS_PASSWORD": "redis-pw", "ORIG_CH_PASSWORD": "ch-pw"}
	c, err := parseConfig(src, path, env(e))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Server
	if c.listenAddr() != ":9099" || time.Duration(s.Timeout) != 120*time.Second || s.MaxBodySize != 2<<20 {
		t.Errorf("server: listen %q, %+v", c.listenAddr(), s)
	}
	chat, speech := c.Routes[0].route(env(e)), c.Routes[1].route(env(e))
	if chat.Kind != relay.KindSSE || chat.Prefix != "/v1/chat/completions" || chat.Upstream != "https://llm.example.com" ||
		chat.AuthHeader != "Authorization" || chat.AuthValue != "llm-secret" {
		t.Errorf("sse route = %+v", chat)
	}
	if speech.Kind != relay.KindAudio || speech.AuthHeader != "Ocp-Apim-Subscription-Key" || speech.AuthValue != "tts-secret" {
		t.Errorf("kind: raw route = %+v, want kind audio", speech)
	}
	r := c.Storage.Redis
	if r == nil || r.Addr != "redis.example.com:6380" || r.Password != "redis-pw" || r.DB != 3 ||
		time.Duration(r.TTL) != 2*time.Hour || !r.Records {
		t.Errorf("storage.redis = %+v", r)
	}
	ch := c.Storage.ClickHouse
	if ch == nil || ch.Addr != "clickhouse.example.com:9440" || ch.Database != "relay_orig" || ch.Username != "relay_writer" ||
		ch.Password != "ch-pw" || !ch.Async || ch.Table != "relay_requests" {
		t.Errorf("storage.clickhouse = %+v", ch)
	}
	if l := c.RateLimit.limits(); !c.RateLimit.Enabled || l.RequestsPerMinute != 42 || l.Burst != 7 {
		t.Errorf("rate_limit = %+v", c.RateLimit)
	}
	if p := c.Observability.Prometheus; !p.Enabled || p.Path != "/internal/metrics" {
		t.Errorf("observability.prometheus = %+v", p)
	}
	if c.Log.Level != "debug" || c.Log.Format != "text" || !c.Observability.DetailedLogs {
		t.Errorf("observability.logging = %+v, detailed_logs %v", c.Log, c.Observability.DetailedLogs)
	}
	if k := c.Auth.APIKeys; len(k) != 2 || k[0].Key != "orig-client-key-1" || k[1].Key != "orig-client-key-2" {
		t.Errorf("auth.api_keys = %+v", k)
	}
}

// The README's migration section names every key of the original format.
func TestMigrationTableListsEveryOriginalKey(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "## Migrating from stream-relay-go")
	if !ok {
		t.Fatal("README.md has no section \"Migrating from stream-relay-go\"")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	src, err := os.ReadFile("testdata/original-format.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keyPaths(t, src) {
		if !strings.Contains(section, "`"+k+"`") {
			t.Errorf("the migration section does not list `%s`", k)
		}
	}
}
