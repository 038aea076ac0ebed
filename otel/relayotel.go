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
// HTTP client spans are; "HTTP" for a method the HTTP conventions do not
// know, whose http.request.method is "_OTHER") carries http.request.method, server.address,
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
//
// # Cost
//
// A request costs two SDK spans (start, attributes, end) and four
// histogram records; what this package adds to them is one allocation
// (its request state, which is also the context the later hooks get) and
// the traceparent header the propagator writes. What repeats from one
// request to the next is built once and kept: each route's span start
// options, each backend's attempt span start options, the "chat {model}"
// span names, and the metric attribute sets of each (operation,
// provider, model, response model, server, error type). These caches are
// bounded, since models come from clients and upstreams: at most 512
// entries each, none with a key over 256 bytes of such names; past the
// bound a request builds what it needs and keeps nothing. The spans'
// end attributes are set in one call each, from a pooled buffer.
//
// The attributes a sampler may use (gen_ai.operation.name,
// gen_ai.provider.name, and the attempt's http.request.method,
// server.address and server.port) are given when each span starts, as
// the conventions ask; that costs the SDK two allocations per span more
// than giving every attribute at the end would.
// BenchmarkHookCalls and BenchmarkSDKSpanFloor measure it.
package relayotel

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync"

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
// request's state in its context: between requests they share the tracer,
// the instruments and bounded caches of what repeats from one request to
// the next (span names, start options, metric attribute sets; see
// "Cost"). New fails only when an instrument cannot be created.
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
	o := &observer{tracer: c.tp.Tracer(ScopeName), props: c.props,
		kv: sync.Pool{New: func() any { return new([kvCap]attribute.KeyValue) }}}
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
	// No FirstContent hook: the time to first chunk is the Record's TTFT,
	// given at the end with the rest (one call fewer into the span).
	return &relay.Hooks{
		RequestStart: o.requestStart,
		AttemptStart: o.attemptStart,
		AttemptEnd:   o.attemptEnd,
		RequestEnd:   o.requestEnd,
	}, nil
}

// kvCap bounds the attributes a request span is given at its end.
const kvCap = 24

// observer holds what the hooks share: safe for concurrent use, since
// its fields are only read after New and the caches and pool are
// concurrency-safe.
type observer struct {
	tracer   trace.Tracer
	props    propagation.TextMapPropagator
	duration metric.Float64Histogram
	tokens   metric.Int64Histogram
	ttfc     metric.Float64Histogram

	kv       sync.Pool                                // *[kvCap]attribute.KeyValue, a request span's end attributes
	starts   cache[startKey, []trace.SpanStartOption] // a request span's start options
	attempts cache[attemptKey, *attemptStart]         // an attempt span's
	names    cache[nameKey, string]                   // span names
	sets     cache[setKey, *metricSets]               // metric attribute sets
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
	method          string // http.request.method of its attempts
	id, tenant      string // relay.request_id and relay.tenant, given at the end
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

// startKey is what a request span's start options depend on.
type startKey struct{ op, provider, route string }

func (o *observer) requestStart(ctx context.Context, info relay.RequestStartInfo) context.Context {
	r := &request{op: operation(info.Path, info.Kind), provider: providerName(info.Provider, info.Path),
		method: method(info.Method), id: info.RequestID, tenant: info.Tenant}
	// The attributes a sampler may want are given at the start; those
	// that differ per request (id, tenant) wait for the end's single call,
	// so that the options repeat and are built once per route.
	k := startKey{r.op, r.provider, info.Route}
	opts, ok := o.starts.get(k)
	if !ok {
		opts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
			keyOperation.String(r.op), keyProvider.String(r.provider), keyRoute.String(info.Route))}
		if r.op == "" {
			// Not a GenAI operation: an HTTP client span, with no gen_ai
			// attribute and no gen_ai metric.
			opts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient),
				trace.WithAttributes(keyRoute.String(info.Route))}
		}
		o.starts.put(k, opts, len(info.Route))
	}
	name := r.op
	if name == "" {
		name = spanMethodName(r.method)
	}
	r.Context, r.span = o.tracer.Start(ctx, name, opts...)
	return r
}

// attemptKey is what an attempt span's start options depend on (the
// first attempt's: a resend's carry its count too).
type attemptKey struct{ upstream, host, scheme, method string }

// attemptStart is what attempts to one backend share.
type attemptStart struct {
	name string // the span's: its method, "HTTP" for another
	host string // server.address
	port int    // server.port, 0 when unknown
	opts []trace.SpanStartOption
}

func (o *observer) attemptStart(ctx context.Context, info relay.AttemptStartInfo) context.Context {
	r := requestOf(ctx)
	if r == nil {
		return ctx
	}
	k := attemptKey{info.Upstream, info.Host, info.URLScheme, r.method}
	as, ok := o.attempts.get(k)
	if !ok || info.Attempt > 1 {
		as = newAttemptStart(info, r.method)
		if !ok && info.Attempt <= 1 {
			o.attempts.put(k, as, len(info.Upstream)+len(info.Host)+len(info.URLScheme))
		}
	}
	r.host, r.port = as.host, as.port
	if !r.named {
		r.named, r.model, r.stream = true, info.Model, info.Stream
		if info.Model != "" && r.op != "" {
			r.span.SetName(o.name(r.op, info.Model))
		}
	}
	actx, _ := o.tracer.Start(r, as.name, as.opts...)
	o.props.Inject(actx, headerCarrier(info.Header))
	return actx
}

// newAttemptStart builds the start options of an attempt span of a
// request with the given http.request.method.
func newAttemptStart(info relay.AttemptStartInfo, method string) *attemptStart {
	as := &attemptStart{name: spanMethodName(method)}
	as.host, as.port = hostPort(info.Host, info.URLScheme)
	attrs := make([]attribute.KeyValue, 0, 5)
	attrs = append(attrs, keyMethod.String(method), keyServerAddress.String(as.host), keyUpstream.String(info.Upstream))
	if as.port > 0 {
		attrs = append(attrs, keyServerPort.Int(as.port))
	}
	if info.Attempt > 1 {
		attrs = append(attrs, keyResend.Int(info.Attempt-1))
	}
	as.opts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...)}
	return as
}

func (o *observer) attemptEnd(ctx context.Context, info relay.AttemptEndInfo) {
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() && (info.Status > 0 || info.ErrorType != relay.ErrTypeNone) {
		// The pool's buffer, since a variadic call on an interface
		// allocates its arguments.
		buf := o.kv.Get().(*[kvCap]attribute.KeyValue)
		kv := append(buf[:0], keyStatus.Int(info.Status))
		if info.ErrorType != relay.ErrTypeNone {
			kv = append(kv, keyErrorType.String(string(info.ErrorType)))
			span.SetStatus(codes.Error, string(info.ErrorType))
		}
		span.SetAttributes(kv...)
		clear(kv)
		o.kv.Put(buf)
	}
	span.End()
}

// nameKey is what a request span's name depends on.
type nameKey struct{ op, model string }

// name is the span name "{op} {model}".
func (o *observer) name(op, model string) string {
	k := nameKey{op, model}
	n, ok := o.names.get(k)
	if !ok {
		n = op + " " + model
		o.names.put(k, n, len(model))
	}
	return n
}

func (o *observer) requestEnd(ctx context.Context, info relay.RequestEndInfo) {
	r := requestOf(ctx)
	if r == nil {
		return
	}
	rec := &info.Record
	if r.model == "" && rec.Model != "" && r.op != "" { // no attempt was made: the body still named it
		r.model = rec.Model
		r.span.SetName(o.name(r.op, rec.Model))
	}
	if rec.ErrorType != relay.ErrTypeNone {
		r.span.SetStatus(codes.Error, string(rec.ErrorType))
	}
	// One call, once: each call grows the span's attribute slice. An
	// unsampled span records nothing, and is not given any.
	if r.span.IsRecording() {
		buf := o.kv.Get().(*[kvCap]attribute.KeyValue)
		kv := append(buf[:0], keyRequestID.String(r.id), keyTenant.String(r.tenant))
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
		if rec.ErrorType != relay.ErrTypeNone {
			kv = append(kv, keyErrorType.String(string(rec.ErrorType)))
		}
		kv = append(kv, keyStatus.Int(rec.Status), keyAttempts.Int(rec.Attempts))
		if r.op != "" {
			kv = append(kv, keyStream.Bool(r.stream))
		}
		if rec.Kind == relay.KindSSE && rec.TTFT > 0 {
			kv = append(kv, keyTTFC.Float64(rec.TTFT.Seconds()))
		}
		if u := &rec.Usage; u.InputTokens > 0 || u.OutputTokens > 0 {
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
		r.span.SetAttributes(kv...) // the span copies them
		clear(kv)                   // keep no strings alive from the pool
		o.kv.Put(buf)
	}
	r.span.End()

	// Metrics, in the request's context (exemplars link to its span);
	// none when the meter provider records nothing (a no-op).
	if r.op == "" || !o.duration.Enabled(r) {
		return // the gen_ai metrics count GenAI operations only
	}
	sets := o.metricSets(r, rec)
	o.duration.Record(r, rec.Duration.Seconds(), sets.duration...)
	if u := &rec.Usage; !u.Estimated {
		if u.InputTokens > 0 {
			o.tokens.Record(r, u.InputTokens, sets.input...)
		}
		if u.OutputTokens > 0 {
			o.tokens.Record(r, u.OutputTokens, sets.output...)
		}
	}
	if rec.Kind == relay.KindSSE && rec.TTFT > 0 {
		o.ttfc.Record(r, rec.TTFT.Seconds(), sets.base...)
	}
}

// setKey is what a request's metric attributes depend on.
type setKey struct {
	op, provider, model, responseModel, host string
	port                                     int
	errType                                  relay.ErrorType
}

// metricSets are the record options, each one attribute set, of the
// metrics of requests alike: the duration's (with error.type), the
// time to first chunk's (base), the tokens' (base and gen_ai.token.type).
type metricSets struct {
	duration, base, input, output []metric.RecordOption
}

// metricSets finds or builds the request's metric attribute sets.
func (o *observer) metricSets(r *request, rec *relay.Record) *metricSets {
	k := setKey{r.op, r.provider, r.model, rec.ResponseModel, r.host, r.port, rec.ErrorType}
	if s, ok := o.sets.get(k); ok {
		return s
	}
	kv := make([]attribute.KeyValue, 0, 8)
	kv = append(kv, keyOperation.String(k.op), keyProvider.String(k.provider))
	if k.model != "" {
		kv = append(kv, keyRequestModel.String(k.model))
	}
	if k.responseModel != "" {
		kv = append(kv, keyResponseModel.String(k.responseModel))
	}
	if k.host != "" {
		kv = append(kv, keyServerAddress.String(k.host))
		if k.port > 0 {
			kv = append(kv, keyServerPort.Int(k.port))
		}
	}
	base := newSet(kv)
	s := &metricSets{base: []metric.RecordOption{metric.WithAttributeSet(base)},
		input:  []metric.RecordOption{metric.WithAttributeSet(newSet(kv, keyTokenType.String("input")))},
		output: []metric.RecordOption{metric.WithAttributeSet(newSet(kv, keyTokenType.String("output")))}}
	s.duration = s.base
	if k.errType != relay.ErrTypeNone {
		s.duration = []metric.RecordOption{metric.WithAttributeSet(newSet(kv, keyErrorType.String(string(k.errType))))}
	}
	o.sets.put(k, s, len(k.model)+len(k.responseModel)+len(k.host)+len(k.errType))
	return s
}

// newSet is the set of kv and more, built from a copy (attribute.NewSet
// sorts its argument).
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
	return "" // not a GenAI operation: models, files, batches...
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

// methodOther is http.request.method for a method the HTTP conventions
// do not know (one WithAllowedMethods added).
const methodOther = "_OTHER"

// method is a request method as http.request.method gives it: the
// relay forwards the client's (GET for models and files, not only POST).
func method(m string) string {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "QUERY":
		return m
	}
	return methodOther
}

// spanMethodName is an HTTP client span's name for an
// http.request.method value: the method, "HTTP" for one the conventions
// do not know.
func spanMethodName(method string) string {
	if method == methodOther {
		return "HTTP"
	}
	return method
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
