package relayotel_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
	relayotel "github.com/streamrelay/relay/otel"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

const (
	clientKey   = "sk-client-secret-key"
	upstreamKey = "sk-upstream-secret"
	// incoming is the client's traceparent: the host's server span, and so
	// the relay's, belong to its trace.
	incomingTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	incomingParent = "00f067aa0ba902b7"
	incoming       = "00-" + incomingTrace + "-" + incomingParent + "-01"
)

// fixturesDir finds ../shared/fixtures beside the repository root (the
// directory holding go.work); a missing folder fails in CI.
func fixturesDir(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for range 10 {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			break
		}
		dir = filepath.Dir(dir)
	}
	fixtures := filepath.Join(dir, "..", "shared", "fixtures")
	if _, err := os.Stat(fixtures); err != nil {
		testkit.Missing(t, "shared fixtures not available: %v", err)
	}
	return fixtures
}

// replay serves a recorded stream in small writes, each flushed.
func replay(stream []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < len(stream); i += 64 {
			_, _ = w.Write(stream[i:min(len(stream), i+64)])
			w.(http.Flusher).Flush()
		}
	}
}

// env is a host server that starts its own server span from the incoming
// traceparent (as otelhttp does) and serves the relay inside it, with
// the OpenTelemetry SDK recording spans and metrics in memory.
type env struct {
	spans   *tracetest.SpanRecorder
	reader  *sdkmetric.ManualReader
	front   *httptest.Server
	mu      sync.Mutex
	parents []string // the traceparent each upstream request carried
	served  chan struct{}
	up      *httptest.Server
}

func newEnv(t *testing.T, route relay.Route, upstream http.HandlerFunc) *env {
	t.Helper()
	e := &env{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader(), served: make(chan struct{}, 16)}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(e.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(e.reader))
	prop := propagation.TraceContext{}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		e.parents = append(e.parents, r.Header.Get("Traceparent"))
		e.mu.Unlock()
		upstream(w, r)
	}))
	t.Cleanup(up.Close)
	e.up = up
	if route.Upstream == "" && len(route.Upstreams) == 0 {
		route.Upstream = up.URL
	}
	for i := range route.Upstreams {
		route.Upstreams[i].URL = up.URL + route.Upstreams[i].URL
	}
	route.Name, route.AuthHeader, route.AuthValue = "r", "Authorization", upstreamKey
	hooks, err := relayotel.New(relayotel.WithTracerProvider(tp), relayotel.WithMeterProvider(mp), relayotel.WithPropagator(prop))
	require.NoError(t, err)
	rl, err := relay.New(relay.WithRoutes(route), relay.WithAPIKeys(relay.APIKey{Key: clientKey, ID: "k1", Tenant: "acme"}),
		relay.WithRegisterer(prometheus.NewRegistry()), relay.WithHooks(hooks))
	require.NoError(t, err)
	host := tp.Tracer("host")
	e.front = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { e.served <- struct{}{} }()
		ctx := prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := host.Start(ctx, "host "+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		rl.ServeHTTP(w, r.WithContext(ctx))
	}))
	t.Cleanup(e.front.Close)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rl.Shutdown(ctx)
	})
	return e
}

// do sends one request with the incoming traceparent, reads the whole
// response and waits for the host's handler to return.
func (e *env) do(t *testing.T, path, body string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", e.front.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+clientKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Traceparent", incoming)
	resp, err := e.front.Client().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	testkit.Recv(t, e.served, "the host's handler did not return")
	return resp.StatusCode, string(b)
}

// ended returns the spans ended so far.
func (e *env) ended() []sdktrace.ReadOnlySpan { return e.spans.Ended() }

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// tree checks the spans' structure: the host's server span in the
// incoming trace, the relay's request span its child, and the attempt
// spans children of that; it returns the request span and the attempts.
func tree(t *testing.T, spans []sdktrace.ReadOnlySpan, wantAttempts int) (sdktrace.ReadOnlySpan, []sdktrace.ReadOnlySpan) {
	t.Helper()
	require.Len(t, spans, 2+wantAttempts, "spans: host, request, attempts")
	var hostSpan, req sdktrace.ReadOnlySpan
	var attempts []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if strings.HasPrefix(s.Name(), "host ") {
			hostSpan = s
		}
	}
	require.NotNil(t, hostSpan)
	// The request span is the host's child; the attempts are the others
	// (a request that is no GenAI operation is named by its method too).
	for _, s := range spans {
		switch {
		case s == hostSpan:
		case s.Parent().SpanID() == hostSpan.SpanContext().SpanID():
			req = s
		default:
			assert.Equal(t, "POST", s.Name(), "an attempt span is named by its method")
			attempts = append(attempts, s)
		}
	}
	require.NotNil(t, req)
	assert.Equal(t, incomingTrace, hostSpan.SpanContext().TraceID().String())
	assert.Equal(t, incomingParent, hostSpan.Parent().SpanID().String(), "the host span continues the incoming trace")
	assert.Equal(t, hostSpan.SpanContext().SpanID(), req.Parent().SpanID(), "the relay's span is a child of the host's")
	assert.Equal(t, incomingTrace, req.SpanContext().TraceID().String())
	assert.Equal(t, trace.SpanKindClient, req.SpanKind())
	require.Len(t, attempts, wantAttempts)
	for _, a := range attempts {
		assert.Equal(t, req.SpanContext().SpanID(), a.Parent().SpanID(), "an attempt span is a child of the request's")
		assert.Equal(t, trace.SpanKindClient, a.SpanKind())
	}
	// In the order they started.
	if len(attempts) == 2 && attempts[1].StartTime().Before(attempts[0].StartTime()) {
		attempts[0], attempts[1] = attempts[1], attempts[0]
	}
	return req, attempts
}

// collect reads the metrics, by name.
func (e *env) collect(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, e.reader.Collect(context.Background(), &rm))
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// contentKeys are the conventions' attributes that carry content: none
// is ever set.
var contentKeys = []string{"gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
	"gen_ai.prompt", "gen_ai.completion", "gen_ai.tool.call.arguments", "gen_ai.tool.call.result",
	"gen_ai.tool.definitions", "url.full", "url.query"}

// noContent checks that no span carries a content attribute, the
// prompt, a piece of the completion or a credential.
func noContent(t *testing.T, spans []sdktrace.ReadOnlySpan, secrets ...string) {
	t.Helper()
	secrets = append(secrets, clientKey, upstreamKey)
	for _, s := range spans {
		for _, kv := range s.Attributes() {
			for _, k := range contentKeys {
				assert.NotEqual(t, k, string(kv.Key), "span %q carries content", s.Name())
			}
			for _, sec := range secrets {
				assert.NotContains(t, kv.Value.String(), sec, "span %q attribute %s", s.Name(), kv.Key)
			}
		}
		for _, ev := range s.Events() {
			for _, kv := range ev.Attributes {
				for _, sec := range secrets {
					assert.NotContains(t, kv.Value.String(), sec)
				}
			}
		}
	}
}

// traceparentOf checks that the upstream got the attempt span's context.
func traceparentOf(a sdktrace.ReadOnlySpan) string {
	return "00-" + a.SpanContext().TraceID().String() + "-" + a.SpanContext().SpanID().String() + "-01"
}

func TestStreams(t *testing.T) {
	dir := fixturesDir(t)
	for _, tc := range []struct {
		name, file, path, body  string
		provider                relay.Provider
		wantName, wantProvider  string
		wantModel, wantResponse string
		input, output           int64
		secrets                 []string // prompt and completion text that must appear nowhere
	}{
		{"openai", "openai_chat_stream_text_include_usage.sse", "/v1/chat/completions",
			`{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"What is the capital of the United Kingdom?"}]}`,
			relay.ProviderOpenAI, "chat gpt-4o-mini", "openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 78, 9,
			[]string{"capital of the United Kingdom", "London"}},
		{"anthropic", "anthropic_messages_stream_text.sse", "/v1/messages",
			`{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"What is 1+1? Answer with one digit."}]}`,
			relay.ProviderAnthropic, "chat claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", 20, 5,
			[]string{"Answer with one digit"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream, err := os.ReadFile(filepath.Join(dir, tc.file))
			require.NoError(t, err)
			e := newEnv(t, relay.Route{Prefix: "/v1", Provider: tc.provider}, replay(stream))
			status, _ := e.do(t, tc.path, tc.body)
			require.Equal(t, 200, status)
			req, attempts := tree(t, e.ended(), 1)
			assert.Equal(t, tc.wantName, req.Name())
			a := attrs(req)
			host, port := hostPort(t, e)
			want := map[string]any{
				"gen_ai.operation.name":     "chat",
				"gen_ai.provider.name":      tc.wantProvider,
				"gen_ai.request.model":      tc.wantModel,
				"gen_ai.response.model":     tc.wantResponse,
				"gen_ai.request.stream":     true,
				"gen_ai.usage.input_tokens": tc.input, "gen_ai.usage.output_tokens": tc.output,
				"server.address": host, "server.port": port,
				"http.response.status_code": int64(200),
				"relay.route":               "r", "relay.tenant": "acme", "relay.attempts": int64(1),
			}
			for k, v := range want {
				assert.Equal(t, v, a[attribute.Key(k)].AsInterface(), k)
			}
			assert.Greater(t, a["gen_ai.response.time_to_first_chunk"].AsFloat64(), 0.0)
			assert.NotContains(t, a, attribute.Key("error.type"))
			assert.NotContains(t, a, attribute.Key("relay.usage.estimated"))
			assert.Equal(t, codes.Unset, req.Status().Code)

			at := attrs(attempts[0])
			assert.Equal(t, int64(200), at["http.response.status_code"].AsInt64())
			assert.Equal(t, host, at["server.address"].AsString())
			assert.NotContains(t, at, attribute.Key("error.type"))
			assert.Equal(t, []string{traceparentOf(attempts[0])}, e.parents, "the upstream got the attempt span's context")
			noContent(t, e.ended(), tc.secrets...)

			m := e.collect(t)
			dur := m["gen_ai.client.operation.duration"].Data.(metricdata.Histogram[float64])
			require.Len(t, dur.DataPoints, 1)
			assert.Equal(t, uint64(1), dur.DataPoints[0].Count)
			assert.Equal(t, relayotel.DurationBuckets(), dur.DataPoints[0].Bounds)
			assert.Equal(t, "s", m["gen_ai.client.operation.duration"].Unit)
			dp := dur.DataPoints[0].Attributes
			for _, k := range []string{"gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model", "server.address", "server.port"} {
				v, ok := dp.Value(attribute.Key(k))
				assert.True(t, ok, k)
				assert.Equal(t, want[k], v.AsInterface(), k)
			}
			tokens := m["gen_ai.client.token.usage"].Data.(metricdata.Histogram[int64])
			got := map[string]int64{}
			for _, p := range tokens.DataPoints {
				typ, _ := p.Attributes.Value("gen_ai.token.type")
				got[typ.AsString()] = p.Sum
				assert.Equal(t, relayotel.TokenBuckets(), p.Bounds)
			}
			assert.Equal(t, map[string]int64{"input": tc.input, "output": tc.output}, got)
			ttfc := m["gen_ai.client.operation.time_to_first_chunk"].Data.(metricdata.Histogram[float64])
			require.Len(t, ttfc.DataPoints, 1)
			assert.Equal(t, uint64(1), ttfc.DataPoints[0].Count)
		})
	}
}

// hostPort is the upstream test server's address, as the spans give it.
func hostPort(t *testing.T, e *env) (string, int64) {
	t.Helper()
	a := e.up.Listener.Addr().(*net.TCPAddr)
	return a.IP.String(), int64(a.Port)
}

func TestFailover(t *testing.T) {
	stream := "data: {\"model\":\"m-1\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n" +
		"data: {\"model\":\"m-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n"
	e := newEnv(t, relay.Route{Prefix: "/v1", Upstreams: []relay.Upstream{{Name: "down", URL: "/down"}, {Name: "up", URL: "/up"}}},
		func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/down") {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			replay([]byte(stream))(w, r)
		})
	status, _ := e.do(t, "/v1/chat/completions", `{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}`)
	require.Equal(t, 200, status)
	req, attempts := tree(t, e.ended(), 2)
	first, second := attrs(attempts[0]), attrs(attempts[1])
	assert.Equal(t, "down", first["relay.upstream"].AsString())
	assert.Equal(t, "upstream_status", first["error.type"].AsString())
	assert.Equal(t, int64(503), first["http.response.status_code"].AsInt64())
	assert.Equal(t, codes.Error, attempts[0].Status().Code)
	assert.NotContains(t, first, attribute.Key("http.request.resend_count"))
	assert.Equal(t, "up", second["relay.upstream"].AsString())
	assert.NotContains(t, second, attribute.Key("error.type"))
	assert.Equal(t, int64(1), second["http.request.resend_count"].AsInt64())
	assert.Equal(t, codes.Unset, attempts[1].Status().Code)
	assert.Equal(t, []string{traceparentOf(attempts[0]), traceparentOf(attempts[1])}, e.parents,
		"each upstream request carries its own attempt's span")
	a := attrs(req)
	assert.Equal(t, int64(2), a["relay.attempts"].AsInt64())
	assert.NotContains(t, a, attribute.Key("error.type"), "the request succeeded")
	noContent(t, e.ended())
}

func TestFailedRequestHasErrorType(t *testing.T) {
	e := newEnv(t, relay.Route{Prefix: "/v1"}, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	})
	status, _ := e.do(t, "/v1/chat/completions", `{"model":"m","messages":[]}`)
	require.Equal(t, 502, status)
	req, attempts := tree(t, e.ended(), 1)
	assert.Equal(t, "upstream_status", attrs(req)["error.type"].AsString())
	assert.Equal(t, codes.Error, req.Status().Code)
	assert.Equal(t, "upstream_status", attrs(attempts[0])["error.type"].AsString())
	m := e.collect(t)
	dur := m["gen_ai.client.operation.duration"].Data.(metricdata.Histogram[float64])
	require.Len(t, dur.DataPoints, 1)
	v, _ := dur.DataPoints[0].Attributes.Value("error.type")
	assert.Equal(t, "upstream_status", v.AsString())
	assert.NotContains(t, m, "gen_ai.client.operation.time_to_first_chunk", "not a stream")
}

// TestRootModuleGainsNoDependency: the root go.mod requires only what the
// project allows, and nothing of OpenTelemetry, directly or indirectly.
func TestRootModuleGainsNoDependency(t *testing.T) {
	f, err := os.Open(filepath.Join("..", "go.mod"))
	require.NoError(t, err)
	defer f.Close()
	allowed := map[string]bool{"github.com/prometheus/client_golang": true, "golang.org/x/time": true,
		"github.com/stretchr/testify": true, "go.uber.org/goleak": true}
	var direct []string
	inBlock := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		assert.NotContains(t, line, "opentelemetry", "the root go.mod names OpenTelemetry")
		switch {
		case strings.HasPrefix(line, "module "):
			assert.Equal(t, "module github.com/streamrelay/relay", line)
		case line == "require (":
			inBlock = true
		case inBlock && line == ")":
			inBlock = false
		case inBlock && line != "" && !strings.Contains(line, "// indirect"):
			direct = append(direct, strings.Fields(line)[0])
		case strings.HasPrefix(line, "require ") && !strings.Contains(line, "// indirect"):
			direct = append(direct, strings.Fields(line)[1])
		}
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, direct, "no requirement parsed: has the go.mod's layout changed?")
	for _, p := range direct {
		assert.True(t, allowed[p], "the root module requires %s directly", p)
	}
}

// An unsampled trace (the host's sampler said no) records no span, yet
// the upstream still gets the trace's context, marked unsampled, and the
// metrics are still recorded.
func TestUnsampled(t *testing.T) {
	spans, reader := tracetest.NewSpanRecorder(), sdkmetric.NewManualReader()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans), sdktrace.WithSampler(sdktrace.NeverSample()))
	hooks, err := relayotel.New(relayotel.WithTracerProvider(tp),
		relayotel.WithMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))),
		relayotel.WithPropagator(propagation.TraceContext{}))
	require.NoError(t, err)
	parents := make(chan string, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parents <- r.Header.Get("Traceparent")
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"model":"m","usage":{"prompt_tokens":2,"completion_tokens":1}}`)
	}))
	defer up.Close()
	rl, err := relay.New(relay.WithRoutes(relay.Route{Name: "r", Prefix: "/v1", Upstream: up.URL}),
		relay.WithAPIKeys(relay.APIKey{Key: clientKey}), relay.WithRegisterer(prometheus.NewRegistry()), relay.WithHooks(hooks))
	require.NoError(t, err)
	// A new trace: no incoming traceparent, so the sampler decides.
	req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
	req.Header.Set("Authorization", "Bearer "+clientKey)
	w := httptest.NewRecorder()
	rl.ServeHTTP(w, req)
	require.Equal(t, 200, w.Code)
	got := testkit.Recv(t, parents, "the request did not reach the upstream")
	assert.Regexp(t, `^00-[0-9a-f]{32}-[0-9a-f]{16}-00$`, got, "an unsampled context is still propagated")
	assert.Empty(t, spans.Ended())
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	require.NotEmpty(t, rm.ScopeMetrics)
	names := []string{}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		names = append(names, m.Name)
	}
	assert.ElementsMatch(t, []string{"gen_ai.client.operation.duration", "gen_ai.client.token.usage"}, names)
}

// TestCachesKeepRequestsApart: requests naming different models, through
// the same hooks (whose caches keep span names and metric attribute sets
// between requests), each get their own name, attributes and data point;
// a repeated one finds its own again.
func TestCachesKeepRequestsApart(t *testing.T) {
	stream := "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n" +
		"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n"
	e := newEnv(t, relay.Route{Prefix: "/v1"}, replay([]byte(stream)))
	models := []string{"m-a", "m-b", "m-a"}
	for _, m := range models {
		status, _ := e.do(t, "/v1/chat/completions", `{"model":"`+m+`","stream":true,"messages":[{"role":"user","content":"x"}]}`)
		require.Equal(t, 200, status)
	}
	var names []string
	ids := map[string]bool{}
	for _, s := range e.ended() {
		if s.Parent().IsValid() && strings.HasPrefix(s.Name(), "chat ") {
			names = append(names, s.Name())
			a := attrs(s)
			assert.Equal(t, strings.TrimPrefix(s.Name(), "chat "), a["gen_ai.request.model"].AsString())
			assert.Equal(t, "r", a["relay.route"].AsString())
			assert.Equal(t, "acme", a["relay.tenant"].AsString())
			ids[a["relay.request_id"].AsString()] = true
		}
	}
	assert.Equal(t, []string{"chat m-a", "chat m-b", "chat m-a"}, names)
	assert.Len(t, ids, 3, "each span its own request id")
	dur := e.collect(t)["gen_ai.client.operation.duration"].Data.(metricdata.Histogram[float64])
	counts := map[string]uint64{}
	for _, p := range dur.DataPoints {
		v, _ := p.Attributes.Value("gen_ai.request.model")
		counts[v.AsString()] += p.Count
	}
	assert.Equal(t, map[string]uint64{"m-a": 2, "m-b": 1}, counts)
}

// TestNotGenAIRequest: a request that is no GenAI operation (a file
// upload, the models list) gets an HTTP client span named by its method,
// with no gen_ai attribute, and no gen_ai metric.
func TestNotGenAIRequest(t *testing.T) {
	e := newEnv(t, relay.Route{Prefix: "/v1"}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"file-1"}`)
	})
	status, _ := e.do(t, "/v1/files", `{"purpose":"batch"}`)
	require.Equal(t, 200, status)
	req, attempts := tree(t, e.ended(), 1)
	assert.Equal(t, "POST", req.Name())
	assert.Equal(t, "POST", attempts[0].Name())
	for k := range attrs(req) {
		assert.NotContains(t, string(k), "gen_ai.", "a gen_ai attribute on a request that is no GenAI operation")
	}
	m := e.collect(t)
	assert.NotContains(t, m, "gen_ai.client.operation.duration")
	assert.NotContains(t, m, "gen_ai.client.token.usage")
}
