package relayotel_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamrelay/relay"
	relayotel "github.com/streamrelay/relay/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// nopExporter drops every span: the benchmark measures the hooks and the
// SDK's own work, not an export.
type nopExporter struct{}

func (nopExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (nopExporter) Shutdown(context.Context) error                             { return nil }

// memTransport answers every request with the same short OpenAI stream.
type memTransport struct{ body []byte }

func (m memTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"text/event-stream"}},
		Body: io.NopCloser(bytes.NewReader(m.body)), ContentLength: -1, Request: req}, nil
}

type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Flush()                      {}

// BenchmarkRequest relays one short stream per op with hooks unset and
// with this package's hooks on the SDK (every span sampled, exported to
// nowhere; metrics aggregated by a reader never collected): the
// difference is what the OpenTelemetry hooks add to a request.
//
//	cd otel && go test -run '^$' -bench BenchmarkRequest -benchmem -count 10
func BenchmarkRequest(b *testing.B) {
	stream := []byte("data: {\"model\":\"m-1\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n" +
		"data: {\"model\":\"m-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n")
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(nopExporter{}), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	hooks, err := relayotel.New(relayotel.WithTracerProvider(tp), relayotel.WithMeterProvider(mp),
		relayotel.WithPropagator(propagation.TraceContext{}))
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		hooks *relay.Hooks
	}{{"unset", nil}, {"otel", hooks}} {
		b.Run(tc.name, func(b *testing.B) {
			rl, err := relay.New(relay.WithRoutes(relay.Route{Name: "r", Prefix: "/", Upstream: "http://upstream.test"}),
				relay.WithAPIKeys(relay.APIKey{Key: clientKey}), relay.WithTransport(memTransport{stream}),
				relay.WithRegisterer(prometheus.NewRegistry()), relay.WithHooks(tc.hooks))
			if err != nil {
				b.Fatal(err)
			}
			w := &discardWriter{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				req := httptest.NewRequest("POST", "/v1/chat/completions",
					strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hello"}]}`))
				req.Header.Set("Authorization", "Bearer "+clientKey)
				req.Header.Set("Content-Type", "application/json")
				rl.ServeHTTP(w, req)
			}
		})
	}
}

// BenchmarkHookCalls makes one request's hook calls directly (request
// start, an attempt with its traceparent, first content, usage, request
// end), on the SDK as BenchmarkRequest sets it up: the hooks' own cost per
// request, free of the relay's (whose noise on a shared machine exceeds it).
// The spans go to an exporter that drops them, through the simple
// (synchronous) span processor, and through the batch one, which a
// production host uses (its export runs on its own goroutine).
//
//	cd otel && go test -run '^$' -bench 'HookCalls|SDKSpanFloor' -benchmem -count 6
func BenchmarkHookCalls(b *testing.B) {
	for _, proc := range []string{"simple", "batch"} {
		for _, tc := range []struct {
			name    string
			metrics bool
		}{{"traces+metrics", true}, {"traces", false}} {
			b.Run(proc+"/"+tc.name, func(b *testing.B) {
				var mp metric.MeterProvider = noop.NewMeterProvider()
				if tc.metrics {
					mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
				}
				h, err := relayotel.New(relayotel.WithTracerProvider(benchTracerProvider(b, proc)),
					relayotel.WithMeterProvider(mp), relayotel.WithPropagator(propagation.TraceContext{}))
				if err != nil {
					b.Fatal(err)
				}
				hookCalls(b, h)
			})
		}
	}
}

// benchTracerProvider samples every span and drops it at export, through
// the span processor proc ("simple" or "batch"); it is shut down when b ends.
func benchTracerProvider(b *testing.B, proc string) *sdktrace.TracerProvider {
	opt := sdktrace.WithSyncer(nopExporter{})
	if proc == "batch" {
		opt = sdktrace.WithBatcher(nopExporter{})
	}
	tp := sdktrace.NewTracerProvider(opt, sdktrace.WithSampler(sdktrace.AlwaysSample()))
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp
}

// hookCalls makes one request's hook calls per op.
func hookCalls(b *testing.B, h *relay.Hooks) {
	b.ReportAllocs()
	for b.Loop() {
		hookRequest(h)
	}
}

// hookRequest makes one request's hook calls: a stream through one
// attempt, with usage, as the relay makes them.
func hookRequest(h *relay.Hooks) {
	ctx := h.RequestStart(context.Background(), relay.RequestStartInfo{RequestID: "id", Method: "POST",
		Path: "/v1/chat/completions", Route: "r", Provider: relay.ProviderOpenAI, Kind: relay.KindAuto,
		Tenant: "acme", KeyID: "k1"})
	actx := h.AttemptStart(ctx, relay.AttemptStartInfo{Attempt: 1, Upstream: "u", Host: "api.example.com",
		URLScheme: "https", Model: "m", Stream: true, Header: http.Header{}})
	if h.FirstContent != nil { // as the relay calls it: a nil hook is not called
		h.FirstContent(ctx, relay.FirstContentInfo{TTFT: 1e6})
	}
	h.AttemptEnd(actx, relay.AttemptEndInfo{Attempt: 1, Upstream: "u", Host: "api.example.com", Status: 200})
	h.RequestEnd(ctx, relay.RequestEndInfo{Record: relay.Record{Model: "m", ResponseModel: "m-1",
		Kind: relay.KindSSE, Status: 200, Attempts: 1, TTFT: 1e6, Duration: 2e6,
		Usage: relay.Usage{InputTokens: 4, OutputTokens: 1}}})
}

// BenchmarkSDKSpanFloor starts and ends one bare span on the same SDK
// setups: the floor BenchmarkHookCalls' two spans stand on, to read its
// numbers on a machine whose speed is unknown (or shared).
func BenchmarkSDKSpanFloor(b *testing.B) {
	for _, proc := range []string{"simple", "batch"} {
		b.Run(proc, func(b *testing.B) {
			tr := benchTracerProvider(b, proc).Tracer("floor")
			b.ReportAllocs()
			for b.Loop() {
				_, s := tr.Start(context.Background(), "span")
				s.End()
			}
		})
	}
}

// BenchmarkSDKRequestFloor makes, with literal attributes and nothing
// else, the SDK calls one request's hooks make (sdkRequest): what any
// instrumentation recording these spans and metrics pays.
// BenchmarkHookCalls' excess over it is this package's own cost.
func BenchmarkSDKRequestFloor(b *testing.B) {
	for _, proc := range []string{"simple", "batch"} {
		b.Run(proc, func(b *testing.B) {
			f := newSDKRequest(benchTracerProvider(b, proc),
				sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())))
			b.ReportAllocs()
			for b.Loop() {
				f.run()
			}
		})
	}
}

// sdkRequest makes the SDK calls of hookRequest's hooks, with literal
// attributes: the request span started with 3 attributes, its attempt
// span with 4 and its traceparent injected, 1 attribute at the attempt's
// end and 12 at the request's, and the 4 histogram records with
// attribute sets built beforehand.
type sdkRequest struct {
	tr                 trace.Tracer
	dur, ttfc          metric.Float64Histogram
	tok                metric.Int64Histogram
	baseSet, in, out   []metric.RecordOption
	reqStart, attStart []trace.SpanStartOption
	attEnd, reqEnd     []attribute.KeyValue
	prop               propagation.TextMapPropagator
}

func newSDKRequest(tp trace.TracerProvider, mp metric.MeterProvider) *sdkRequest {
	meter := mp.Meter("floor")
	f := &sdkRequest{tr: tp.Tracer("floor"), prop: propagation.TraceContext{}}
	f.dur, _ = meter.Float64Histogram("d")
	f.tok, _ = meter.Int64Histogram("t")
	f.ttfc, _ = meter.Float64Histogram("f")
	base := []attribute.KeyValue{attribute.String("gen_ai.operation.name", "chat"),
		attribute.String("gen_ai.provider.name", "openai"), attribute.String("gen_ai.request.model", "m"),
		attribute.String("gen_ai.response.model", "m-1"), attribute.String("server.address", "api.example.com"),
		attribute.Int("server.port", 443)}
	f.baseSet = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(base...))}
	f.in = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(append(slices.Clone(base), attribute.String("gen_ai.token.type", "input"))...))}
	f.out = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(append(slices.Clone(base), attribute.String("gen_ai.token.type", "output"))...))}
	f.reqStart = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("gen_ai.operation.name", "chat"), attribute.String("gen_ai.provider.name", "openai"),
		attribute.String("relay.route", "r"))}
	f.attStart = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("http.request.method", "POST"), attribute.String("server.address", "api.example.com"),
		attribute.String("relay.upstream", "u"), attribute.Int("server.port", 443))}
	f.attEnd = []attribute.KeyValue{attribute.Int("http.response.status_code", 200)}
	f.reqEnd = []attribute.KeyValue{attribute.String("relay.request_id", "id"), attribute.String("relay.tenant", "acme"),
		attribute.String("gen_ai.request.model", "m"), attribute.String("gen_ai.response.model", "m-1"),
		attribute.String("server.address", "api.example.com"), attribute.Int("server.port", 443),
		attribute.Int("http.response.status_code", 200), attribute.Int("relay.attempts", 1),
		attribute.Bool("gen_ai.request.stream", true), attribute.Float64("gen_ai.response.time_to_first_chunk", 0.001),
		attribute.Int64("gen_ai.usage.input_tokens", 4), attribute.Int64("gen_ai.usage.output_tokens", 1)}
	return f
}

// run makes one request's SDK calls.
func (f *sdkRequest) run() {
	ctx, req := f.tr.Start(context.Background(), "chat", f.reqStart...)
	req.SetName("chat m")
	actx, att := f.tr.Start(ctx, "POST", f.attStart...)
	f.prop.Inject(actx, propagation.HeaderCarrier(http.Header{}))
	att.SetAttributes(f.attEnd...)
	att.End()
	req.SetAttributes(f.reqEnd...)
	req.End()
	f.dur.Record(ctx, 0.002, f.baseSet...)
	f.tok.Record(ctx, 4, f.in...)
	f.tok.Record(ctx, 1, f.out...)
	f.ttfc.Record(ctx, 0.001, f.baseSet...)
}

// TestHooksAllocateAsTheSDKCalls: a request's hook calls allocate no more
// than the SDK calls they make do with literal attributes, so that what
// the package adds of its own (its request state) stays paid for by what
// it saves (a canonical header key); a regression in the caches, pools
// or carrier fails here. Allocations are counted, not timed.
func TestHooksAllocateAsTheSDKCalls(t *testing.T) {
	newTP := func() *sdktrace.TracerProvider {
		return sdktrace.NewTracerProvider(sdktrace.WithSyncer(nopExporter{}), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	}
	newMP := func() metric.MeterProvider {
		return sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	}
	h, err := relayotel.New(relayotel.WithTracerProvider(newTP()), relayotel.WithMeterProvider(newMP()),
		relayotel.WithPropagator(propagation.TraceContext{}))
	if err != nil {
		t.Fatal(err)
	}
	f := newSDKRequest(newTP(), newMP())
	hooks := testing.AllocsPerRun(200, func() { hookRequest(h) })
	sdk := testing.AllocsPerRun(200, f.run)
	t.Logf("allocations per request: hooks %.0f, the SDK calls alone %.0f", hooks, sdk)
	slack := 0.0
	if raceEnabled {
		slack = 1 // two pooled buffers per request, each lost to a quarter of the pool's puts
	}
	if hooks > sdk+slack {
		t.Errorf("the hooks allocate %.0f times per request, the SDK calls they make %.0f", hooks, sdk)
	}
	if sdk == 0 {
		t.Error("the SDK calls allocated nothing: the comparison measures nothing")
	}
}
