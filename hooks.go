package relay

import (
	"context"
	"net/http"
	"time"
)

// Hooks are told of a request's progress through the relay, at fixed
// points, with the facts the relay knows there: how a host ties the relay
// into its own tracing and metrics (the nested module
// github.com/streamrelay/relay/otel implements them with OpenTelemetry).
// Give them with WithHooks.
//
// Every field is optional: a nil field is not called. Each point takes a
// struct, so that facts and points can be added to later versions without
// breaking anyone's hooks.
//
// # Which requests
//
// A request is hooked from RequestStart, once its caller is authenticated
// and its route found; a request refused before (401, 404, 405, 503 while
// draining) calls no hook (its Record and metrics still tell of it). A
// hooked request always ends with exactly one RequestEnd, whatever
// happens, a panic in the relay included; each AttemptStart is followed
// by exactly one AttemptEnd before the next AttemptStart or RequestEnd.
//
// # Concurrency
//
// The hooks of one request are called one at a time, in order, from the
// goroutine serving it (the handler's); hooks of different requests run
// concurrently, so the functions must be safe for concurrent use. They
// run on the request path: FirstByte, FirstContent and Usage between a
// stream's reads and writes. They must return quickly and must not block
// (hand slow work to a goroutine or a queue of their own). A panic in a
// hook is not recovered by the relay: it ends the request as any panic
// in the handler does.
//
// # Cost
//
// Without hooks (the default) each point costs a nil check and nothing
// else: no allocation, no lock, no clock reading (see
// BenchmarkHooks/unset and TestHooksUnsetAllocateNothing). With hooks, a
// hooked request allocates one small state struct (hookRun) and reads
// the clock at attempt start and end, and an attempt whose AttemptStart
// gave a context of its own two small ones more (the upstream request's
// context: hookedContext); the rest is what the hooks themselves cost. Usage is checked after each observed SSE event by
// comparing one counter.
//
// # Security
//
// No hook is given a credential: not the client's key, not the upstream
// request's credential headers, not a transport error (whose text may
// hold an upstream URL with a key in its query). AttemptStartInfo.Header
// is the upstream request's header, credentials included, so that a hook
// can add to it: a hook must only add headers (such as traceparent), and
// never read it into logs or spans.
type Hooks struct {
	// RequestStart is called once the request is authenticated and
	// routed. ctx is the request's own context (http.Request.Context), so
	// that a span started here is a child of the host's server span. The
	// context it returns (ctx itself, or one derived from it) is the one
	// every later hook of the request gets; returning nil keeps ctx.
	RequestStart func(ctx context.Context, info RequestStartInfo) context.Context
	// AttemptStart is called as each upstream attempt is about to be sent,
	// with its request's header, to which it may add (propagation
	// headers). ctx is RequestStart's context. The context it returns
	// (nil: ctx) is given to the attempt's AttemptEnd, and its values
	// (not its deadline or cancellation, which stay the relay's) are the
	// upstream request's: an instrumented transport (otelhttp's, given
	// with WithTransport) finds the attempt's span there.
	AttemptStart func(ctx context.Context, info AttemptStartInfo) context.Context
	// AttemptEnd is called when an attempt is over: failed over (before
	// any backoff) or, for the attempt whose response was relayed, once
	// the relay is done with it, just before RequestEnd. ctx is what
	// AttemptStart returned.
	AttemptEnd func(ctx context.Context, info AttemptEndInfo)
	// FirstByte is called when the first byte of the response body is
	// about to be sent to the client (Record.TTFB).
	FirstByte func(ctx context.Context, info FirstByteInfo)
	// FirstContent is called when the first event carrying generated
	// content has been read (Record.TTFT): an event stream's first chunk
	// of output. It usually follows FirstByte; it comes first when the
	// relay hides the usage chunk its include_usage edit caused, since
	// each event is then observed before it is written.
	FirstContent func(ctx context.Context, info FirstContentInfo)
	// Usage is called after each observed SSE event that reported usage,
	// with the usage as reported so far (a stream may report it more than
	// once: Anthropic's message_start and message_delta). A JSON body's
	// usage, and a stream's estimated usage, are known only at the end:
	// RequestEndInfo.Usage carries the final count in every case.
	Usage func(ctx context.Context, info UsageInfo)
	// RequestEnd is called once, when the request is over and its Record
	// is complete, just before the Record is handed to the Recorder.
	RequestEnd func(ctx context.Context, info RequestEndInfo)
}

// RequestStartInfo is what is known when a request starts being hooked.
type RequestStartInfo struct {
	// RequestID is the relay's id of the request (Record.RequestID).
	RequestID string
	// Start is when the request arrived, by the relay's clock.
	Start time.Time
	// Method and Path are the client's (Path without the query string).
	Method, Path string
	// Route, Provider and Kind are the route's (Target).
	Route    string
	Provider Provider
	Kind     StreamKind
	// Tenant and KeyID are the caller's Identity's.
	Tenant, KeyID string
}

// AttemptStartInfo is one upstream attempt about to be sent.
type AttemptStartInfo struct {
	// Attempt counts the request's round trips, from 1 (Record.Attempts).
	Attempt int
	// Upstream is the backend's Name; Host its URL's host (with the port
	// when the URL names one).
	Upstream, Host string
	// URLScheme is the backend URL's scheme, for a default port.
	URLScheme string
	// Model is the model the request body named (Record.Model), "" when
	// none.
	Model string
	// Stream reports whether the request asked for a streamed response.
	Stream bool
	// Time is when the attempt starts, by the relay's clock.
	Time time.Time
	// Header is the upstream request's header: add to it, never remove
	// or read from it (it holds the upstream credential); do not keep it
	// after the hook returns. When AttemptStart is set, the client's
	// Traceparent and Tracestate are removed from it first: the hook's
	// propagator writes the attempt's own (continuing the client's trace
	// when the host extracted it).
	Header http.Header
}

// AttemptEndInfo is how an upstream attempt went.
type AttemptEndInfo struct {
	// Attempt, Upstream and Host are as in AttemptStartInfo.
	Attempt        int
	Upstream, Host string
	// Status is the upstream's HTTP status; 0 when no answer came.
	Status int
	// ErrorType is why the attempt was not relayed, or how the relayed
	// one ended; ErrTypeNone for a success (see AttemptInfo.ErrorType).
	ErrorType ErrorType
	// Failover reports that another attempt follows.
	Failover bool
	// Duration is the attempt's time, from its start to its end.
	Duration time.Duration
}

// FirstByteInfo is the first byte of the response body.
type FirstByteInfo struct {
	// Status is the response's status; TTFB the time since the request
	// arrived (Record.TTFB).
	Status int
	TTFB   time.Duration
}

// FirstContentInfo is the first generated content of an event stream.
type FirstContentInfo struct {
	// TTFT is the time since the request arrived (Record.TTFT).
	TTFT time.Duration
}

// UsageInfo is the usage a stream reported so far.
type UsageInfo struct {
	Usage Usage
}

// RequestEndInfo is the request's outcome: its complete Record (usage
// final, possibly estimated; see Usage.Estimated). Record.Labels is the
// Identity's map: read it, never change it.
type RequestEndInfo struct {
	Record Record
}

// WithHooks sets the hooks told of each request's progress (see Hooks).
// nil, the default, means none, at no cost. The hooks are read when New
// runs; changing the struct afterwards has no effect.
func WithHooks(h *Hooks) Option {
	return func(c *config) error {
		if h != nil {
			cp := *h
			c.hooks = &cp
		} else {
			c.hooks = nil
		}
		return nil
	}
}

// hookRun is a hooked request's hook state. It lives apart from the
// exchange, which is at the limit of its size class
// (TestExchangeFitsSizeClass): an unhooked request pays one nil pointer.
type hookRun struct {
	h       *Hooks
	ctx     context.Context // RequestStart's
	actx    context.Context // the open attempt's, AttemptStart's
	aStart  time.Time       // when the open attempt started
	aHost   string          // its host
	open    bool            // an attempt started and has not ended
	reports uint32          // usage reports already told (provider.Stream.Reports)
}

// hookStart is the step that starts hooking a request, once it is
// authenticated and routed (serve).
func (ex *exchange) hookStart() error {
	h := ex.rl.cfg.hooks
	if h == nil {
		return nil
	}
	hr := &hookRun{h: h, ctx: ex.r.Context()}
	ex.hk = hr
	if h.RequestStart != nil {
		t := ex.target
		if ctx := h.RequestStart(hr.ctx, RequestStartInfo{
			RequestID: ex.rec.RequestID, Start: ex.rec.Start, Method: ex.rec.Method, Path: ex.rec.Path,
			Route: t.Route, Provider: t.Provider, Kind: t.Kind, Tenant: ex.rec.Tenant, KeyID: ex.rec.KeyID,
		}); ctx != nil {
			hr.ctx = ctx
		}
	}
	return nil
}

// hookAttemptStart tells of the attempt about to be sent to b with
// header h, and returns the context to send it in: ctx, the attempt's,
// with the values of the hooks' context when they gave one.
func (ex *exchange) hookAttemptStart(ctx context.Context, b Backend, h http.Header) context.Context {
	hr := ex.hk
	hr.open, hr.aStart, hr.aHost, hr.actx = true, ex.rl.clock.Now(), b.URL.Host, hr.ctx
	if f := hr.h.AttemptStart; f != nil {
		// The hook propagates the attempt's trace context: the client's
		// own W3C headers would contradict it (a tracestate of another
		// trace, when the host did not continue the client's).
		delete(h, "Traceparent")
		delete(h, "Tracestate")
		if c := f(hr.ctx, AttemptStartInfo{
			Attempt: ex.rec.Attempts, Upstream: b.Name, Host: b.URL.Host, URLScheme: b.URL.Scheme,
			Model: ex.rec.Model, Stream: ex.rec.Stream, Time: hr.aStart, Header: h,
		}); c != nil {
			hr.actx = c
		}
	}
	if hr.actx == ex.r.Context() { // the hooks added no value
		return ctx
	}
	return &hookedContext{Context: ctx, vals: context.WithoutCancel(hr.actx)}
}

// hookedContext is an upstream request's context when the hooks gave
// one: the attempt's deadline, cancellation and client trace, with the
// values of the hooks' context first, so that an instrumented transport
// (otelhttp's) finds the attempt's span in it. Its values are read
// through context.WithoutCancel, which hides its cancellation: the
// context package, looking for the nearest cancelCtx by Value, finds the
// attempt's, so that a context derived from this one (the transport's)
// is cancelled with the attempt, its cause included, without a goroutine.
type hookedContext struct {
	context.Context                 // the attempt's
	vals            context.Context // AttemptStart's, without its cancellation
}

// Value finds key in the hooks' context, else in the attempt's.
func (c *hookedContext) Value(key any) any {
	if v := c.vals.Value(key); v != nil {
		return v
	}
	return c.Context.Value(key)
}

// hookAttemptEnd tells of the end of the open attempt (ex.up.a), if
// any; failover says another follows. The attempt's error type is its
// own, else, for the last, the record's.
func (ex *exchange) hookAttemptEnd(failover bool) {
	hr := ex.hk
	if !hr.open {
		return
	}
	hr.open = false
	if hr.h.AttemptEnd == nil {
		return
	}
	info := AttemptEndInfo{Attempt: ex.rec.Attempts, Upstream: ex.rec.Upstream, Host: hr.aHost,
		Failover: failover, Duration: ex.rl.clock.Now().Sub(hr.aStart)}
	if a := ex.up.a; a != nil {
		info.Status, info.ErrorType = int(a.status), a.errType
	}
	if info.ErrorType == ErrTypeNone && !failover {
		info.ErrorType = ex.rec.ErrorType
	}
	hr.h.AttemptEnd(hr.actx, info)
}

// hookFirstByte tells of the first byte of the response body.
func (ex *exchange) hookFirstByte() {
	if f := ex.hk.h.FirstByte; f != nil {
		f(ex.hk.ctx, FirstByteInfo{Status: ex.rec.Status, TTFB: ex.rec.TTFB})
	}
}

// hookFirstContent tells of the first generated content.
func (ex *exchange) hookFirstContent() {
	if f := ex.hk.h.FirstContent; f != nil {
		f(ex.hk.ctx, FirstContentInfo{TTFT: ex.rec.TTFT})
	}
}

// hookUsage tells of usage reported by the event just observed, if any.
func (ex *exchange) hookUsage() {
	hr, obs := ex.hk, ex.stream.obs
	if hr.h.Usage == nil || obs == nil || obs.Reports() == hr.reports {
		return
	}
	hr.reports = obs.Reports()
	u := obs.Usage()
	hr.h.Usage(hr.ctx, UsageInfo{Usage: Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens,
		CachedInputTokens: u.CachedInputTokens, CacheCreationInputTokens: u.CacheCreationInputTokens,
		ReasoningTokens: u.ReasoningTokens, AudioInputTokens: u.AudioInputTokens,
		AudioOutputTokens: u.AudioOutputTokens}})
}

// hookEnd ends a hooked request: its last attempt, then the request
// (finish, once the record is complete).
func (ex *exchange) hookEnd() {
	ex.hookAttemptEnd(false)
	if f := ex.hk.h.RequestEnd; f != nil {
		f(ex.hk.ctx, RequestEndInfo{Record: ex.rec})
	}
}
