package relayotel_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamrelay/relay"
	relayotel "github.com/streamrelay/relay/otel"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// A host that serves the relay behind otelhttp gets the relay's spans
// inside its own server span: the request's span ("chat gpt-4o-mini"),
// and one span per upstream attempt, whose context the upstream receives
// as its traceparent. Here the spans are kept in memory and printed as a
// tree; a real host gives its own TracerProvider (an OTLP exporter) and
// MeterProvider.
func Example_otelhttp() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	hooks, err := relayotel.New(relayotel.WithTracerProvider(tp),
		relayotel.WithMeterProvider(noop.NewMeterProvider()), relayotel.WithPropagator(propagation.TraceContext{}))
	if err != nil {
		panic(err)
	}

	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("upstream got a traceparent:", r.Header.Get("Traceparent") != "")
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, `data: {"model":"gpt-4o-mini-2024-07-18","choices":[{"delta":{"content":"Hi"}}]}`+"\n\n"+
			`data: {"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":1}}`+"\n\ndata: [DONE]\n\n")
	}))
	defer upstream.Close()

	rl, err := relay.New(
		relay.WithRoutes(relay.Route{Name: "openai", Prefix: "/v1", Upstream: upstream.URL}),
		relay.WithAPIKeys(relay.APIKey{Key: "client-key"}),
		relay.WithRegisterer(prometheus.NewRegistry()),
		relay.WithHooks(hooks),
	)
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", rl)
	// The host's own instrumentation: a server span per request.
	front := httptest.NewServer(otelhttp.NewHandler(mux, "host", otelhttp.WithTracerProvider(tp)))

	req, _ := http.NewRequest("POST", front.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hello"}]}`))
	req.Header.Set("Authorization", "Bearer client-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	front.Close() // waits for the handler, and so for its spans to end
	_ = rl.Shutdown(context.Background())

	// Print the spans as a tree, each under its parent.
	ended := spans.Ended()
	var print func(parent trace.SpanID, depth int)
	print = func(parent trace.SpanID, depth int) {
		for _, s := range ended {
			if s.Parent().SpanID() == parent {
				fmt.Printf("%s%s (%s)\n", strings.Repeat("  ", depth), s.Name(), s.SpanKind())
				print(s.SpanContext().SpanID(), depth+1)
			}
		}
	}
	print(trace.SpanID{}, 0)
	// Output:
	// upstream got a traceparent: true
	// POST /v1/ (server)
	//   chat gpt-4o-mini (client)
	//     POST (client)
}
