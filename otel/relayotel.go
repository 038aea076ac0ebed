// Package relayotel reports a Stream Relay's requests to OpenTelemetry,
// following the GenAI semantic conventions for clients: one span per
// request, a child of the request's incoming context (so a host using
// otelhttp sees the relay's span inside its own server span), one child
// span per upstream attempt, W3C trace context propagated to the
// upstream from the attempt's span, and the gen_ai.client.* metrics.
//
//	hooks, err := relayotel.New(relayotel.WithTracerProvider(tp), relayotel.WithMeterProvider(mp))
//	rl, err := relay.New(relay.WithHooks(hooks), ...)
//
// It implements relay.Hooks; the root module depends on no part of
// OpenTelemetry.
//
// # What is recorded
//
// The conventions followed are the GenAI client spans and metrics
// (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/ and
// .../gen-ai-metrics/, the semantic-conventions-genai repository's
// docs/gen-ai/gen-ai-spans.md and gen-ai-metrics.md, status
// Development). The request's span (SpanKind client) is named
// "{gen_ai.operation.name} {gen_ai.request.model}" ("chat gpt-4o") and
// carries gen_ai.operation.name, gen_ai.provider.name,
// gen_ai.request.model, gen_ai.request.stream, gen_ai.response.model
// (when the upstream named a model other than the one requested),
// gen_ai.usage.input_tokens, gen_ai.usage.output_tokens,
// gen_ai.usage.cache_read.input_tokens,
// gen_ai.usage.cache_creation.input_tokens,
// gen_ai.usage.reasoning.output_tokens (each when reported),
// gen_ai.response.time_to_first_chunk (seconds, for an event stream),
// server.address and server.port (the upstream of the last attempt),
// http.response.status_code (what the client got), error.type (the
// relay's ErrorType, a fixed low-cardinality set) with status Error, and
// relay.route, relay.request_id, relay.tenant, relay.attempts and
// relay.usage.estimated (usage that is partly the relay's estimate).
//
// Each attempt's span (SpanKind client, named by its method, "POST", as
// HTTP client spans are) carries http.request.method, server.address,
// server.port, relay.upstream (the backend's name), http.response.status_code,
// http.request.resend_count (from the second attempt on) and, when the
// attempt failed or was failed over, error.type and status Error.
//
// Metrics: gen_ai.client.operation.duration (s) and
// gen_ai.client.token.usage ({token}, gen_ai.token.type input and
// output, only counts the provider reported: an estimate is not
// recorded), and gen_ai.client.operation.time_to_first_chunk (s, event
// streams only), each with the conventions' explicit bucket boundaries
// and attributes (gen_ai.operation.name, gen_ai.provider.name,
// gen_ai.request.model, gen_ai.response.model, server.address,
// server.port, error.type). gen_ai.client.operation.time_per_output_chunk
// is not recorded (it would need a hook per event).
//
// # What is not recorded
//
// No prompt or completion content, no tool arguments, and there is no
// opt-in to record them: the relay never hands content to its hooks. No
// credential: not the client's key (only the key's id is in the Record,
// and it is not put on spans), not the upstream's, and no URL (url.full
// is left out because a Gemini URL carries its key in the query). The
// finish reasons (gen_ai.response.finish_reasons) are not observed.
//
// # Which requests
//
// Requests the relay refuses before it knows the caller and the route
// (401, 404, 405, 503 while draining) get no span; every later one does,
// a 429 or a failed request included.
package relayotel

import (
	"context"
	"net"
	"strconv"
	"strings"

	"github.com/streamrelay/relay"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the tracer and meter.
const ScopeName = "github.com/streamrelay/relay/otel"

// DurationBuckets are the explicit bucket boundaries, in seconds, the
// GenAI conventions give gen_ai.client.operation.duration and
// gen_ai.client.operation.time_to_first_chunk; a fresh slice each call.
func DurationBuckets() []float64 {
	return []float64{0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92}
}

// TokenBuckets are the explicit bucket boundaries, in tokens, the GenAI
// conventions give gen_ai.client.token.usage; a fresh slice each call.
func TokenBuckets() []float64 {
	return []float64{1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864}
}

// Option configures New.
type Option func(*config)

type config struct {
	tp    trace.TracerProvider
	mp    metric.MeterProvider
	props propagation.TextMapPropagator
}

// WithTracerProvider sets the tracer provider; nil or left out: the
// global one (otel.GetTracerProvider), a no-op until the host sets one.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithMeterProvider sets the meter provider; nil or left out: the global
// one (otel.GetMeterProvider).
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithPropagator sets the propagator that writes the attempt span's
// context into each upstream request's headers (traceparent and
// tracestate with propagation.TraceContext); nil or left out: the global
// one (otel.GetTextMapPropagator), which propagates nothing until the
// host sets one.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return func(c *config) { c.props = p }
}

// New returns hooks that report each request's spans and metrics. They
// are safe for concurrent use, as relay.Hooks must be, and keep each
// request's state in its context: they share nothing between requests
// but the tracer and the instruments. New fails only when an instrument
// cannot be created.
func New(opts ...Option) (*relay.Hooks, error) {
	var c config
	for _, o := range opts {
		o(&c)
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.props == nil {
		c.props = otel.GetTextMapPropagator()
	}
	meter := c.mp.Meter(ScopeName)
	o := &observer{tracer: c.tp.Tracer(ScopeName), props: c.props}
	var err error
	if o.duration, err = meter.Float64Histogram("gen_ai.client.operation.duration",
		metric.WithDescription("GenAI operation duration."), metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(DurationBuckets()...)); err != nil {
		return nil, err
	}
	if o.tokens, err = meter.Int64Histogram("gen_ai.client.token.usage",
		metric.WithDescription("Number of input and output tokens used."), metric.WithUnit("{token}"),
		metric.WithExplicitBucketBoundaries(TokenBuckets()...)); err != nil {
		return nil, err
	}
	if o.ttfc, err = meter.Float64Histogram("gen_ai.client.operation.time_to_first_chunk",
		metric.WithDescription("Time to receive the first chunk, measured from when the client issues the generation request to when the first chunk is received in the response stream."),
		metric.WithUnit("s"), metric.WithExplicitBucketBoundaries(DurationBuckets()...)); err != nil {
		return nil, err
	}
	return &relay.Hooks{
		RequestStart: o.requestStart,
		AttemptStart: o.attemptStart,
		AttemptEnd:   o.attemptEnd,
		FirstContent: o.firstContent,
		RequestEnd:   o.requestEnd,
	}, nil
}

// observer holds what the hooks share: safe for concurrent use, since
// it is only read after New.
type observer struct {
	tracer   trace.Tracer
	props    propagation.TextMapPropagator
	duration metric.Float64Histogram
	tokens   metric.Int64Histogram
	ttfc     metric.Float64Histogram
}

// Attribute keys of the GenAI conventions, and the relay's own.
const (
	keyOperation     = attribute.Key("gen_ai.operation.name")
	keyProvider      = attribute.Key("gen_ai.provider.name")
	keyRequestModel  = attribute.Key("gen_ai.request.model")
	keyResponseModel = attribute.Key("gen_ai.response.model")
	keyStream        = attribute.Key("gen_ai.request.stream")
	keyInput         = attribute.Key("gen_ai.usage.input_tokens")
	keyOutput        = attribute.Key("gen_ai.usage.output_tokens")
	keyCacheRead     = attribute.Key("gen_ai.usage.cache_read.input_tokens")
	keyCacheCreation = attribute.Key("gen_ai.usage.cache_creation.input_tokens")
	keyReasoning     = attribute.Key("gen_ai.usage.reasoning.output_tokens")
	keyTTFC          = attribute.Key("gen_ai.response.time_to_first_chunk")
	keyTokenType     = attribute.Key("gen_ai.token.type")
	keyServerAddress = attribute.Key("server.address")
	keyServerPort    = attribute.Key("server.port")
	keyErrorType     = attribute.Key("error.type")
	keyStatus        = attribute.Key("http.response.status_code")
	keyMethod        = attribute.Key("http.request.method")
	keyResend        = attribute.Key("http.request.resend_count")
	keyRoute         = attribute.Key("relay.route")
	keyRequestID     = attribute.Key("relay.request_id")
	keyTenant        = attribute.Key("relay.tenant")
	keyAttempts      = attribute.Key("relay.attempts")
	keyUpstream      = attribute.Key("relay.upstream")
	keyEstimated     = attribute.Key("relay.usage.estimated")
)

// request is one request's state, kept in its context: the context the
// request's later hooks get is the request itself, so that the state
// costs one allocation and finding it none.
type request struct {
	context.Context // with the request's span
	span            trace.Span
	op, provider    string
	model           string // requested, once an attempt told it
	host            string // the last attempt's server.address
	port            int    // its server.port, 0 when unknown
	stream          bool
	named           bool // the span has its model in its name
}

type requestKey struct{}

// Value finds the request itself, and the rest in its parent.
func (r *request) Value(k any) any {
	if _, ok := k.(requestKey); ok {
		return r
	}
	return r.Context.Value(k)
}

func requestOf(ctx context.Context) *request {
	r, _ := ctx.Value(requestKey{}).(*request)
	return r
}

func (o *observer) requestStart(ctx context.Context, info relay.RequestStartInfo) context.Context {
	r := &request{op: operation(info.Path, info.Kind), provider: providerName(info.Provider, info.Path)}
	r.Context, r.span = o.tracer.Start(ctx, r.op, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			keyOperation.String(r.op),
			keyProvider.String(r.provider),
			keyRoute.String(info.Route),
			keyRequestID.String(info.RequestID),
			keyTenant.String(info.Tenant),
		))
	return r
}

func (o *observer) attemptStart(ctx context.Context, info relay.AttemptStartInfo) context.Context {
	r := requestOf(ctx)
	if r == nil {
		return ctx
	}
	r.host, r.port = hostPort(info.Host, info.URLScheme)
	if !r.named {
		r.named, r.model, r.stream = true, info.Model, info.Stream
		if info.Model != "" {
			r.span.SetName(r.op + " " + info.Model)
		}
	}
	attrs := make([]attribute.KeyValue, 0, 5)
	attrs = append(attrs, keyMethod.String("POST"), keyServerAddress.String(r.host), keyUpstream.String(info.Upstream))
	if r.port > 0 {
		attrs = append(attrs, keyServerPort.Int(r.port))
	}
	if info.Attempt > 1 {
		attrs = append(attrs, keyResend.Int(info.Attempt-1))
	}
	actx, _ := o.tracer.Start(r, "POST", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	o.props.Inject(actx, propagation.HeaderCarrier(info.Header))
	return actx
}

func (o *observer) attemptEnd(ctx context.Context, info relay.AttemptEndInfo) {
	span := trace.SpanFromContext(ctx)
	switch {
	case !span.IsRecording():
	case info.ErrorType != relay.ErrTypeNone:
		span.SetAttributes(keyStatus.Int(info.Status), keyErrorType.String(string(info.ErrorType)))
		span.SetStatus(codes.Error, string(info.ErrorType))
	case info.Status > 0:
		span.SetAttributes(keyStatus.Int(info.Status))
	}
	span.End()
}

func (o *observer) firstContent(ctx context.Context, info relay.FirstContentInfo) {
	if r := requestOf(ctx); r != nil {
		r.span.SetAttributes(keyTTFC.Float64(info.TTFT.Seconds()))
	}
}

func (o *observer) requestEnd(ctx context.Context, info relay.RequestEndInfo) {
	r := requestOf(ctx)
	if r == nil {
		return
	}
	rec := &info.Record
	if r.model == "" && rec.Model != "" { // no attempt was made: the body still named it
		r.model = rec.Model
		r.span.SetName(r.op + " " + rec.Model)
	}
	// One slice: the attributes every metric carries first, then
	// error.type (the duration's too), then the span's own. The span gets
	// them in one call; the metrics get attribute sets built once.
	kv := make([]attribute.KeyValue, 0, 20)
	kv = append(kv, keyOperation.String(r.op), keyProvider.String(r.provider))
	if r.model != "" {
		kv = append(kv, keyRequestModel.String(r.model))
	}
	if rec.ResponseModel != "" {
		kv = append(kv, keyResponseModel.String(rec.ResponseModel))
	}
	if r.host != "" {
		kv = append(kv, keyServerAddress.String(r.host))
		if r.port > 0 {
			kv = append(kv, keyServerPort.Int(r.port))
		}
	}
	nBase := len(kv)
	if rec.ErrorType != relay.ErrTypeNone {
		kv = append(kv, keyErrorType.String(string(rec.ErrorType)))
		r.span.SetStatus(codes.Error, string(rec.ErrorType))
	}
	nDuration := len(kv)
	kv = append(kv, keyStatus.Int(rec.Status), keyAttempts.Int(rec.Attempts), keyStream.Bool(r.stream))
	u := rec.Usage
	reported := u.InputTokens > 0 || u.OutputTokens > 0
	if reported {
		kv = append(kv, keyInput.Int64(u.InputTokens), keyOutput.Int64(u.OutputTokens))
		if u.CachedInputTokens > 0 {
			kv = append(kv, keyCacheRead.Int64(u.CachedInputTokens))
		}
		if u.CacheCreationInputTokens > 0 {
			kv = append(kv, keyCacheCreation.Int64(u.CacheCreationInputTokens))
		}
		if u.ReasoningTokens > 0 {
			kv = append(kv, keyReasoning.Int64(u.ReasoningTokens))
		}
		if u.Estimated {
			kv = append(kv, keyEstimated.Bool(true))
		}
	}
	// One call, once: each call may grow the span's attribute slice. An
	// unsampled span records nothing, and is not given any.
	if r.span.IsRecording() {
		r.span.SetAttributes(kv[2:]...) // the operation and provider are the span's from its start
	}
	r.span.End()

	// Metrics, in the request's context (exemplars link to its span);
	// none when the meter provider records nothing (a no-op).
	if !o.duration.Enabled(r) {
		return
	}
	// attribute.NewSet sorts its argument: each gets a copy.
	base := newSet(kv[:nBase])
	dur := base
	if nDuration > nBase {
		dur = newSet(kv[:nDuration])
	}
	o.duration.Record(r, rec.Duration.Seconds(), metric.WithAttributeSet(dur))
	if reported && !u.Estimated {
		if u.InputTokens > 0 {
			o.tokens.Record(r, u.InputTokens, metric.WithAttributeSet(newSet(kv[:nBase], keyTokenType.String("input"))))
		}
		if u.OutputTokens > 0 {
			o.tokens.Record(r, u.OutputTokens, metric.WithAttributeSet(newSet(kv[:nBase], keyTokenType.String("output"))))
		}
	}
	if rec.Kind == relay.KindSSE && rec.TTFT > 0 {
		o.ttfc.Record(r, rec.TTFT.Seconds(), metric.WithAttributeSet(base))
	}
}

// newSet is the set of kv and more, built from a copy.
func newSet(kv []attribute.KeyValue, more ...attribute.KeyValue) attribute.Set {
	cp := make([]attribute.KeyValue, 0, len(kv)+len(more))
	return attribute.NewSet(append(append(cp, kv...), more...)...)
}

// operation names a request's GenAI operation from its path, as the
// conventions' well-known values do; a route's audio speaks
// text_to_speech, a name of the relay's own (custom values are allowed).
func operation(path string, kind relay.StreamKind) string {
	switch {
	case strings.HasSuffix(path, "/chat/completions"), strings.HasSuffix(path, "/messages"),
		strings.HasSuffix(path, "/responses"):
		return "chat"
	case strings.HasSuffix(path, "/completions"):
		return "text_completion"
	case strings.HasSuffix(path, "/embeddings"):
		return "embeddings"
	case strings.Contains(path, ":generateContent"), strings.Contains(path, ":streamGenerateContent"):
		return "generate_content"
	case strings.HasSuffix(path, "/audio/speech"), kind == relay.KindAudio:
		return "text_to_speech"
	case strings.HasSuffix(path, "/audio/transcriptions"), strings.HasSuffix(path, "/audio/translations"):
		return "speech_to_text"
	}
	return "chat"
}

// providerName maps a route's provider to the conventions' well-known
// gen_ai.provider.name values (Gemini's native API, behind an OpenAI
// route, is "gcp.gemini").
func providerName(p relay.Provider, path string) string {
	switch p {
	case relay.ProviderAzure:
		return "azure.ai.openai"
	case relay.ProviderAnthropic:
		return "anthropic"
	case relay.ProviderAzureTTS:
		return "azure.ai.speech"
	case "", relay.ProviderOpenAI:
		if strings.Contains(path, ":generateContent") || strings.Contains(path, ":streamGenerateContent") {
			return "gcp.gemini"
		}
		return "openai"
	}
	return string(p)
}

// hostPort splits an upstream host into server.address and server.port,
// the scheme's default port when the URL names none.
func hostPort(host, scheme string) (string, int) {
	h, p, err := net.SplitHostPort(host)
	if err != nil {
		switch scheme {
		case "https":
			return host, 443
		case "http":
			return host, 80
		}
		return host, 0
	}
	port, _ := strconv.Atoi(p)
	return h, port
}
