package relayotel_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamrelay/relay"
	relayotel "github.com/streamrelay/relay/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
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
//
//	cd otel && go test -run '^$' -bench BenchmarkHookCalls -benchmem -count 10
func BenchmarkHookCalls(b *testing.B) {
	for _, tc := range []struct {
		name string
		mp   metric.MeterProvider
	}{
		{"traces+metrics", sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))},
		{"traces", noop.NewMeterProvider()},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(nopExporter{}), sdktrace.WithSampler(sdktrace.AlwaysSample()))
			h, err := relayotel.New(relayotel.WithTracerProvider(tp), relayotel.WithMeterProvider(tc.mp),
				relayotel.WithPropagator(propagation.TraceContext{}))
			if err != nil {
				b.Fatal(err)
			}
			hookCalls(b, h)
		})
	}
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
		h.FirstContent(ctx, relay.FirstContentInfo{TTFT: 1e6})
		h.AttemptEnd(actx, relay.AttemptEndInfo{Attempt: 1, Upstream: "u", Host: "api.example.com", Status: 200})
		h.RequestEnd(ctx, relay.RequestEndInfo{Record: rec})
	}
}

// BenchmarkSDKSpanFloor starts and ends one bare span on the same SDK
// setup: the floor BenchmarkHookCalls' two spans stand on, to read its
// numbers on a machine whose speed is unknown (or shared).
func BenchmarkSDKSpanFloor(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(nopExporter{}), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	tr := tp.Tracer("floor")
	b.ReportAllocs()
	for b.Loop() {
		_, s := tr.Start(context.Background(), "span")
		s.End()
	}
}
