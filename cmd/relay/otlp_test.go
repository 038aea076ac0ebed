package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamrelay/relay/internal/testkit"
)

// OTLP is off unless enabled: neither the shipped example nor a config
// without the key starts an export or wraps the handler.
func TestOTLPOffByDefault(t *testing.T) {
	for _, tc := range []struct{ name, file, src string }{
		{"no otlp key", "good.yaml", goodConfig},
		{"the example", "relay.example.yaml", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := []byte(tc.src)
			if tc.src == "" {
				var err error
				if src, err = os.ReadFile(tc.file); err != nil {
					t.Fatal(err)
				}
			}
			e := goodEnv()
			e["OPENAI_API_KEY"], e["ANTHROPIC_API_KEY"], e["RELAY_CLIENT_KEY"] = "x", "y", "z"
			c, err := parseConfig(src, tc.file, func(k string) (string, bool) {
				if v, ok := e[k]; ok {
					return v, true
				}
				return "set", true // the example names more variables: any value will do
			})
			if err != nil {
				t.Fatal(err)
			}
			if c.Observability.OTLP.Enabled {
				t.Fatal("otlp is enabled by default")
			}
			tel, err := newTelemetry(testkit.Context(t), c.Observability.OTLP)
			if err != nil || tel != nil {
				t.Fatalf("newTelemetry = %v, %v; want nil, nil", tel, err)
			}
			if tel.options() != nil {
				t.Error("relay options without OTLP")
			}
			h := http.NotFoundHandler()
			if fmt.Sprintf("%p", tel.handler(h)) != fmt.Sprintf("%p", h) {
				t.Error("the handler is wrapped without OTLP")
			}
		})
	}
}

func TestOTLPConfig(t *testing.T) {
	const base = "routes: [{name: r, path: /v1, upstream: https://api.example.com}]\nauth: {api_keys: [k]}\n"
	c, err := parseConfig([]byte(base+`observability:
  otlp:
    enabled: true
    endpoint: collector:4318
    protocol: http
    headers: {x-api-key: "${OTLP_KEY}"}
    sampling_ratio: 0.25
    service_name: edge
    interval: 10s
`), "t.yaml", env(map[string]string{"OTLP_KEY": "otlp-secret"}))
	if err != nil {
		t.Fatal(err)
	}
	o := c.Observability.OTLP
	if !o.Enabled || o.Endpoint != "collector:4318" || o.Protocol != "http" || o.Headers["x-api-key"] != "otlp-secret" ||
		o.SamplingRatio == nil || *o.SamplingRatio != 0.25 || o.ServiceName != "edge" || time.Duration(o.Interval) != 10*time.Second {
		t.Errorf("parsed %+v", o)
	}
	for _, tc := range []struct{ otlp, want string }{
		{"{enabled: true}", "t.yaml:4: observability.otlp.endpoint: is required"},
		{"{enabled: true, endpoint: c:4317, protocol: thrift}", `t.yaml:4: observability.otlp.protocol: want grpc or http, not "thrift"`},
		{"{enabled: true, endpoint: c:4317, sampling_ratio: 2}", "t.yaml:4: observability.otlp.sampling_ratio: want a number from 0 to 1"},
		{"{enabled: true, endpoint: c:4317, sampling_ratio: -0.5}", "observability.otlp.sampling_ratio: want a number from 0 to 1"},
		{"{enabled: true, endpoint: c:4317, sampling_ratio: .nan}", "observability.otlp.sampling_ratio: want a number"},
		{"{enabled: true, endpoint: c:4317, unknown: 1}", "unknown"},
	} {
		_, err := parseConfig([]byte(base+"observability:\n  otlp: "+tc.otlp+"\n"), "t.yaml", env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("otlp %s: error %v, want %q", tc.otlp, err, tc.want)
		}
	}
	// Off, nothing is checked: an operator may keep a half-written block.
	if _, err := parseConfig([]byte(base+"observability: {otlp: {enabled: false, protocol: thrift}}\n"), "t.yaml", env(nil)); err != nil {
		t.Errorf("disabled otlp block refused: %v", err)
	}
}

// collector is an OTLP/HTTP endpoint that notes what it is sent.
type collector struct {
	mu    sync.Mutex
	paths []string
	keys  []string
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	c.mu.Lock()
	c.paths = append(c.paths, r.URL.Path)
	c.keys = append(c.keys, r.Header.Get("X-Api-Key"))
	c.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-protobuf")
}

func (c *collector) seen() (paths, keys []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.paths...), append([]string(nil), c.keys...)
}

// With OTLP on, a request's spans join the client's trace (the upstream
// gets a traceparent of the client's trace id), and shutdown flushes the
// spans and metrics to the collector: the batch's delay and the metrics'
// interval (an hour) are far off, so only the flush can have sent them.
func TestOTLPExportsAndFlushesOnShutdown(t *testing.T) {
	col := &collector{}
	colURL := serveLoopback(t, &http.Server{Handler: col})
	parents := make(chan string, 4)
	up := serveLoopback(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parents <- r.Header.Get("Traceparent")
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}`)
	})})
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
routes: [{name: up, path: /v1, upstream: "%s", kind: json}]
auth: {api_keys: [client-secret]}
observability:
  prometheus: {enabled: false}
  otlp: {enabled: true, endpoint: "%s", protocol: http, headers: {x-api-key: "${OTLP_KEY}"}, interval: 1h}
`, up, colURL))
	s := startServer(t, []string{"-config", cfg}, hooks{getenv: env(map[string]string{"OTLP_KEY": "otlp-secret"})})
	ctx := testkit.Context(t)
	const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.base+"/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer client-secret")
	req.Header.Set("Traceparent", "00-"+trace+"-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := testkit.Recv(t, parents, "the request did not reach the upstream")
	if !strings.HasPrefix(got, "00-"+trace+"-") || strings.Contains(got, "00f067aa0ba902b7") {
		t.Errorf("upstream traceparent %q: want the client's trace, from the relay's attempt span", got)
	}
	if paths, _ := col.seen(); len(paths) != 0 {
		t.Fatalf("exported before shutdown: %v (the flush would prove nothing)", paths)
	}
	if err := s.shutdown(t); err != nil {
		t.Fatal(err)
	}
	paths, keys := col.seen()
	joined := strings.Join(paths, " ")
	if !strings.Contains(joined, "/v1/traces") || !strings.Contains(joined, "/v1/metrics") {
		t.Errorf("the collector got %v; want /v1/traces and /v1/metrics, flushed by shutdown", paths)
	}
	for _, k := range keys {
		if k != "otlp-secret" {
			t.Errorf("an export carried x-api-key %q", k)
		}
	}
	if strings.Contains(s.stderr.String(), "otlp-secret") {
		t.Error("the OTLP header's value appears in the logs")
	}
}
