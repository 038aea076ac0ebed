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
	start := relay.RequestStartInfo{RequestID: "id", Method: "POST", Path: "/v1/chat/completions",
		Route: "r", Provider: relay.ProviderOpenAI, Kind: relay.KindAuto, Tenant: "acme", KeyID: "k1"}
	rec := relay.Record{Model: "m", ResponseModel: "m-1", Kind: relay.KindSSE, Status: 200, Attempts: 1,
		TTFT: 1e6, Duration: 2e6, Usage: relay.Usage{InputTokens: 4, OutputTokens: 1}}
	b.ReportAllocs()
	for b.Loop() {
		ctx := h.RequestStart(context.Background(), start)
		hdr := http.Header{}
		actx := h.AttemptStart(ctx, relay.AttemptStartInfo{Attempt: 1, Upstream: "u", Host: "api.example.com",
			URLScheme: "https", Model: "m", Stream: true, Header: hdr})
		if h.FirstContent != nil { // as the relay calls it: a nil hook is not called
			h.FirstContent(ctx, relay.FirstContentInfo{TTFT: 1e6})
		}
		h.AttemptEnd(actx, relay.AttemptEndInfo{Attempt: 1, Upstream: "u", Host: "api.example.com", Status: 200})
		h.RequestEnd(ctx, relay.RequestEndInfo{Record: rec})
	}
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
// else, the SDK calls one request's hooks make: the request span started
// with 3 attributes, its attempt span with 4 and its traceparent
// injected, 1 attribute at the attempt's end and 12 at the request's,
// and the 4 histogram records with attribute sets built beforehand. It
// is what any instrumentation recording these spans and metrics pays;
// BenchmarkHookCalls' excess over it is this package's own cost.
func BenchmarkSDKRequestFloor(b *testing.B) {
	for _, proc := range []string{"simple", "batch"} {
		b.Run(proc, func(b *testing.B) {
			tr := benchTracerProvider(b, proc).Tracer("floor")
			meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader())).Meter("floor")
			dur, _ := meter.Float64Histogram("d")
			tok, _ := meter.Int64Histogram("t")
			ttfc, _ := meter.Float64Histogram("f")
			base := []attribute.KeyValue{attribute.String("gen_ai.operation.name", "chat"),
				attribute.String("gen_ai.provider.name", "openai"), attribute.String("gen_ai.request.model", "m"),
				attribute.String("gen_ai.response.model", "m-1"), attribute.String("server.address", "api.example.com"),
				attribute.Int("server.port", 443)}
			baseSet := []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(base...))}
			in := []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(append(slices.Clone(base), attribute.String("gen_ai.token.type", "input"))...))}
			out := []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(append(slices.Clone(base), attribute.String("gen_ai.token.type", "output"))...))}
			reqStart := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
				attribute.String("gen_ai.operation.name", "chat"), attribute.String("gen_ai.provider.name", "openai"),
				attribute.String("relay.route", "r"))}
			attStart := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
				attribute.String("http.request.method", "POST"), attribute.String("server.address", "api.example.com"),
				attribute.String("relay.upstream", "u"), attribute.Int("server.port", 443))}
			attEnd := []attribute.KeyValue{attribute.Int("http.response.status_code", 200)}
			reqEnd := []attribute.KeyValue{attribute.String("relay.request_id", "id"), attribute.String("relay.tenant", "acme"),
				attribute.String("gen_ai.request.model", "m"), attribute.String("gen_ai.response.model", "m-1"),
				attribute.String("server.address", "api.example.com"), attribute.Int("server.port", 443),
				attribute.Int("http.response.status_code", 200), attribute.Int("relay.attempts", 1),
				attribute.Bool("gen_ai.request.stream", true), attribute.Float64("gen_ai.response.time_to_first_chunk", 0.001),
				attribute.Int64("gen_ai.usage.input_tokens", 4), attribute.Int64("gen_ai.usage.output_tokens", 1)}
			prop := propagation.TraceContext{}
			b.ReportAllocs()
			for b.Loop() {
				ctx, req := tr.Start(context.Background(), "chat", reqStart...)
				req.SetName("chat m")
				actx, att := tr.Start(ctx, "POST", attStart...)
				hdr := http.Header{}
				prop.Inject(actx, propagation.HeaderCarrier(hdr))
				att.SetAttributes(attEnd...)
				att.End()
				req.SetAttributes(reqEnd...)
				req.End()
				dur.Record(ctx, 0.002, baseSet...)
				tok.Record(ctx, 4, in...)
				tok.Record(ctx, 1, out...)
				ttfc.Record(ctx, 0.001, baseSet...)
			}
		})
	}
}
