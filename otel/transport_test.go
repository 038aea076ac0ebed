package relayotel_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
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
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// TestInstrumentedTransportRunsInTheAttemptSpan: a host whose transport
// is instrumented too (otelhttp.NewTransport, given with WithTransport)
// gets its HTTP client span inside the relay's attempt span, and the
// upstream a traceparent of that trace; the transport's context keeps
// the attempt's cancellation.
func TestInstrumentedTransportRunsInTheAttemptSpan(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	prop := propagation.TraceContext{}
	var mu sync.Mutex
	var parents []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		parents = append(parents, r.Header.Get("Traceparent"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`)
	}))
	defer up.Close()
	base := &http.Transport{}
	defer base.CloseIdleConnections()
	var inner []trace.SpanContext // the span in the context the wrapped transport got
	hooks, err := relayotel.New(relayotel.WithTracerProvider(tp), relayotel.WithMeterProvider(noop.NewMeterProvider()),
		relayotel.WithPropagator(prop))
	require.NoError(t, err)
	tr := otelhttp.NewTransport(roundTripper(func(r *http.Request) (*http.Response, error) {
		mu.Lock()
		inner = append(inner, trace.SpanContextFromContext(r.Context()))
		mu.Unlock()
		return base.RoundTrip(r)
	}), otelhttp.WithTracerProvider(tp), otelhttp.WithPropagators(prop))
	rl, err := relay.New(relay.WithRoutes(relay.Route{Name: "r", Prefix: "/v1", Upstream: up.URL}),
		relay.WithAPIKeys(relay.APIKey{Key: clientKey}), relay.WithRegisterer(prometheus.NewRegistry()),
		relay.WithHooks(hooks), relay.WithTransport(tr))
	require.NoError(t, err)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = rl.Shutdown(ctx)
	}()

	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	defer cancel()
	req := httptest.NewRequestWithContext(ctx, "POST", "/v1/chat/completions", strings.NewReader(`{"model":"m","messages":[]}`))
	req.Header.Set("Authorization", "Bearer "+clientKey)
	w := httptest.NewRecorder()
	rl.ServeHTTP(w, req) // returns once the request's spans have ended
	require.Equal(t, 200, w.Code)

	var attempt, client sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		switch {
		case s.Name() == "POST" && s.InstrumentationScope().Name == relayotel.ScopeName:
			attempt = s
		case s.SpanKind() == trace.SpanKindClient && s.InstrumentationScope().Name != relayotel.ScopeName:
			client = s
		}
	}
	require.NotNil(t, attempt, "no attempt span")
	require.NotNil(t, client, "no otelhttp client span")
	assert.Equal(t, attempt.SpanContext().SpanID(), client.Parent().SpanID(),
		"the transport's span is not a child of the attempt's")
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, parents, 1)
	assert.Equal(t, traceparentOf(client), parents[0], "the upstream's parent is the transport's span")
	require.Len(t, inner, 1)
	assert.Equal(t, attempt.SpanContext().TraceID(), inner[0].TraceID())
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestAttemptSpanNamesItsMethod: a GET relayed (the default methods
// include GET, HEAD, PUT, PATCH and DELETE: models, files) gets an
// attempt span named and attributed by its own method, not POST.
func TestAttemptSpanNamesItsMethod(t *testing.T) {
	e := newEnv(t, relay.Route{Prefix: "/v1"}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"object":"list","data":[]}`)
	})
	for _, method := range []string{"GET", "DELETE", "POST"} {
		ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
		req, err := http.NewRequestWithContext(ctx, method, e.front.URL+"/v1/models", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+clientKey)
		resp, err := e.front.Client().Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		cancel()
		testkit.Recv(t, e.served, "the host's handler did not return")
	}
	var names, methods []string
	for _, s := range e.ended() {
		if s.InstrumentationScope().Name == relayotel.ScopeName && s.Parent().SpanID() != (trace.SpanID{}) {
			if v, ok := attrs(s)["http.request.method"]; ok {
				names, methods = append(names, s.Name()), append(methods, v.AsString())
			}
		}
	}
	assert.Equal(t, []string{"GET", "DELETE", "POST"}, names)
	assert.Equal(t, []string{"GET", "DELETE", "POST"}, methods)
}
