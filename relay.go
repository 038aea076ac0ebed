// Package relay is a streaming gateway for LLM and TTS APIs that mounts in
// any Go HTTP server.
//
// A Relay is an http.Handler. Each request is authenticated, rate limited,
// resolved to an upstream whose credentials are injected, and its response
// is streamed back byte for byte (server-sent events event by event, audio
// chunk by chunk, JSON whole); then metrics are updated and one Record is
// written. Four small interfaces make it pluggable — Authenticator, Limiter,
// UpstreamResolver and Recorder — each with a Func adapter and a built-in
// default, so that
//
//	relay.New(relay.WithRoutes(...), relay.WithAPIKeys(...))
//
// is a complete gateway.
//
// The relay holds no global state: metrics go to an injected (or its own)
// Prometheus registry, and the clock, logger and transport are options.
//
// # Failures and timeouts
//
// The errors the relay answers itself come in the caller's SDK shape (see
// ErrorShape), classified one way throughout: a request body that cannot
// be read is a 400 and one that comes too slowly a 408; an upstream that
// cannot be reached is a 502 and one that does not answer in time a 504;
// a request that Shutdown cuts before its response is a 503. A stream that
// fails after its first byte ends with an error event (SSE) or is aborted
// (other bodies); an event stream that fails before its first content
// event fails over instead while an attempt is left (Route.NoFirstContentHold).
// Each upstream attempt's waits are bounded in turn by the route's
// Timeouts: Connect, FirstByte, then, for each read of the body, FirstToken
// until an event stream's first content event and Idle after it (time
// spent writing to a slow client does not count), all within Total.
//
// # Zero values
//
// Options follow one rule for zero, nil and negative values. Leaving an
// option out, passing nil to it, and leaving a field of a struct it takes
// (Timeouts, AsyncOptions, Limits) zero all mean the default (for a
// Limits budget the default is no limit). A number
// passed to an option itself is taken at its word, and zero switches off
// what it controls: no time limit (WithClientWriteTimeout,
// WithRequestBodyTimeout), no minimum rate (WithRequestBodyRate), no
// shared observation memory (WithObservationBudget), no output reserve
// (WithDefaultMaxTokens), no refusal memo (WithRefusalMemo), no drain
// after a client leaves (WithDrainOnClientGone) — except
// for the limits that keep request bodies' memory bounded
// (WithMaxBodyBytes, WithRequestBodyBudget, WithRequestBodyTenantBudget),
// where zero is an error. A negative time limit means no limit (Timeouts fields and the
// two timeout options); any other negative number is an error. The one
// exception is AsyncOptions, where negative sizes and durations also mean
// the default, because the record queue is always bounded (and a negative
// MaxRetries means no retry). Options that exclude each other (WithRoutes
// and WithResolver, WithAPIKeys and WithAuthenticator, WithRateLimit and
// WithLimiter) make New fail with ErrConflictingOptions; a nil argument
// counts as not given.
package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/streamrelay/relay/internal/provider"
)

// Relay is the gateway handler. Create it with New; it is safe for
// concurrent use.
type Relay struct {
	cfg       config
	auth      Authenticator
	resolver  UpstreamResolver
	limiter   Limiter
	settler   TokenSettler       // nil when the limiter keeps no token budgets
	pricing   pricing            // prices spend for the budgets (spend.go)
	conc      ConcurrencyLimiter // nil when the limiter caps no concurrency
	recorder  Recorder
	async     *AsyncRecorder // nil when records are discarded
	metrics   *metrics
	gatherer  prometheus.Gatherer
	transport http.RoundTripper
	log       *slog.Logger
	clock     Clock
	sysClock  bool // clock is the system clock: stream timings reuse wall readings
	models    map[string]bool
	prices    *PriceTable  // nil: costs are not priced
	methods   []string     // allowed request methods
	allowHdr  []string     // their Allow header value, shared by every 405
	answers   answers      // the relay's own errors
	constHdr  constHeaders // header values shared by every response
	bufs      sync.Pool    // *[]byte of copyBufSize
	smallBufs sync.Pool    // *[]byte of smallBufSize
	streams   sync.Pool    // *provider.Stream
	decoders  sync.Pool    // *decoder, for compressed bodies
	bodies    byteBudget   // request bodies held in memory
	observed  byteBudget   // observation buffers beyond each response's own
	refused   refusals     // callers refused for their request budget

	perTenant tenantShares // each tenant's share of bodies (a lock of its own)

	// Retries' backoff (retry.go), replaced by tests: a random int64 in
	// [0, n), and the timer of a wait.
	jitter       func(n int64) int64
	backoffTimer func(time.Duration) *time.Timer

	// settleCtx is cancelled by Shutdown (stopSettling) when the
	// settlements' share of its deadline is spent.
	settleCtx    context.Context
	stopSettling context.CancelFunc
	// noDeadlineWarned: the ResponseWriter-without-deadlines warning was logged.
	noDeadlineWarned atomic.Bool
	// keepAliveHook, set by tests before any request, is told of each
	// keep-alive timer's firing (keepalive.go).
	keepAliveHook func(wrote bool)
	// newSessionObserver observes each WebSocket session's messages
	// (wsobserve.go): the provider's realtime observation, replaced by
	// tests; nil: sessions are metered by bytes, frames and duration only.
	newSessionObserver func(provider string) sessionObserver
	realtimes          sync.Pool // *provider.Realtime

	mu       sync.Mutex
	draining bool
	// stopping is draining, read without the lock by requests about to
	// wait for a concurrency slot (see waitable).
	stopping atomic.Bool
	inflight int
	live     *exchange // in-flight exchanges, linked through prev/next
	// settling holds one channel per background settlement, closed when
	// it ends: Flush and Shutdown wait for those present when they look.
	settling map[chan struct{}]struct{}
	// settleClosed: Shutdown waits on settling; later settlements run inline.
	settleClosed bool
	idle         chan struct{} // closed when inflight drops to 0 while draining
}

// copyBufSize and smallBufSize are the read sizes from upstreams: every
// response starts with the small one. Reads return what has arrived, so a
// small SSE event is relayed as soon as it is read.
const (
	copyBufSize  = 32 << 10
	smallBufSize = 2 << 10
)

// New builds a Relay. It fails when the options are invalid, when no
// authenticator is configured, or when a route names an environment
// variable that is empty.
func New(opts ...Option) (*Relay, error) {
	c := defaultConfig()
	for _, o := range opts {
		if err := o(&c); err != nil {
			return nil, err
		}
	}
	if err := c.checkConflicts(); err != nil {
		return nil, err
	}
	rl := &Relay{cfg: c, clock: c.clock, log: c.logger, transport: c.transport, limiter: c.limiter,
		jitter: rand.Int64N, backoffTimer: time.NewTimer}
	if rl.clock == nil {
		rl.clock = systemClock{}
	}
	_, rl.sysClock = rl.clock.(systemClock)
	if rl.log == nil {
		rl.log = slog.New(slog.DiscardHandler)
	}
	if rl.transport == nil {
		rl.transport = NewTransport()
	}
	if rl.limiter == nil {
		rl.limiter = noLimit{}
	}
	rl.bodies.limit = c.body.budget
	if !c.body.budgetSet {
		rl.bodies.limit = max(defaultBodyBudget, c.maxBody)
	} else if c.body.budget < c.maxBody {
		return nil, fmt.Errorf("relay: request body budget %d is below the body size limit %d", c.body.budget, c.maxBody)
	}
	rl.perTenant.limit = min(max(rl.bodies.limit/4, c.maxBody), rl.bodies.limit)
	if c.body.tenant > 0 {
		if c.body.tenant < c.maxBody {
			return nil, fmt.Errorf("relay: request body tenant budget %d is below the body size limit %d", c.body.tenant, c.maxBody)
		}
		rl.perTenant.limit = min(c.body.tenant, rl.bodies.limit)
	}
	rl.observed.limit = c.observeBudget
	rl.settleCtx, rl.stopSettling = context.WithCancel(context.Background())
	rl.refused.off, rl.refused.life = c.refusalMemo == 0, c.refusalMemo
	rl.settler, _ = rl.limiter.(TokenSettler)
	rl.conc, _ = rl.limiter.(ConcurrencyLimiter)

	switch {
	case c.auth != nil:
		rl.auth = c.auth
	case len(c.keys) > 0:
		a, err := NewStaticKeys(c.keys...)
		if err != nil {
			return nil, err
		}
		rl.auth = a
	default:
		return nil, errors.New("relay: no authenticator: use WithAPIKeys or WithAuthenticator")
	}

	switch {
	case c.resolver != nil:
		rl.resolver = c.resolver
	case len(c.routes) > 0:
		t, err := NewRouteTable(c.routes, rl.clock)
		if err != nil {
			return nil, err
		}
		rl.resolver = t
	default:
		return nil, errors.New("relay: no routes: use WithRoutes or WithResolver")
	}

	reg := c.registerer
	if reg == nil {
		r := prometheus.NewRegistry()
		reg, rl.gatherer = r, r
	} else if g, ok := reg.(prometheus.Gatherer); ok {
		rl.gatherer = g
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	rl.metrics = m
	if t, ok := rl.resolver.(*RouteTable); ok && len(c.routes) > 0 {
		t.instrument(m) // the table New built, and only it: a given one may serve several relays
	}

	switch r := c.recorder.(type) {
	case nil, NopRecorder:
		rl.recorder = NopRecorder{}
	case *AsyncRecorder:
		rl.async, rl.recorder = r, r
	default:
		o := c.asyncOpt
		o.Registerer = nil // registered below, where a refusal is New's error
		if user := o.OnError; user != nil {
			o.OnError = func(err error) { rl.storageError(err); user(err) }
		} else {
			o.OnError = rl.storageError
		}
		rl.async = NewAsyncRecorder(r, o)
		rl.recorder = rl.async
		if err := register(reg, rl.async.collectors()...); err != nil {
			_ = rl.async.Close(context.Background()) // nothing queued yet: returns at once
			for _, c := range m.all {
				reg.Unregister(c)
			}
			return nil, err
		}
	}

	rl.models = make(map[string]bool, len(c.metricsModels))
	for _, m := range c.metricsModels {
		rl.models[m] = true
	}
	rl.prices = c.prices
	rl.pricing = newPricing(c.prices)
	rl.methods = c.methods
	rl.allowHdr = []string{strings.Join(c.methods, ", ")}
	rl.answers = newAnswers(c.maxBody, rl.allowHdr[0])
	rl.bufs.New = func() any { b := make([]byte, copyBufSize); return &b }
	rl.smallBufs.New = func() any { b := make([]byte, smallBufSize); return &b }
	rl.streams.New = func() any { return new(provider.Stream) }
	rl.realtimes.New = func() any { return new(provider.Realtime) }
	rl.newSessionObserver = rl.newRealtimeObserver
	rl.constHdr = newConstHeaders()
	return rl, nil
}

// storageError counts and logs a failed record write.
func (rl *Relay) storageError(err error) {
	rl.metrics.errors.WithLabelValues("", string(ErrTypeStorage)).Inc()
	rl.log.Warn("relay: writing records failed", "error", err)
}

// ServeHTTP implements http.Handler.
func (rl *Relay) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ex := exchange{rl: rl, r: r}
	ex.client.init(w, r, rl.cfg.writeTimeout)
	ex.rec.Start = rl.clock.Now()
	arrived := ex.rec.Start
	if !rl.sysClock {
		arrived = time.Now() // host deadlines are on the system clock
	}
	ex.arrived = arrived.UnixNano()
	ex.rec.RequestID = newRequestID() // the relay's own, unique: see Record.RequestID
	ex.rec.ClientRequestID = clientRequestID(r)
	ex.rec.Method = r.Method
	ex.rec.Path = r.URL.Path
	ex.route = "none"
	ex.idHdr[0] = ex.rec.RequestID // the client's response header; upstream too unless the client sent one
	w.Header()["X-Request-Id"] = ex.idHdr[:]
	ex.serve()
}

// serve runs the request path, one step a line. Each step returns nil to
// go on, or ends the exchange with an error:
//
//   - a *relayError (one of the relay's answers): the relay answers it
//     here, and only here (fail), in the caller's error shape;
//   - errEnded: the step ended the exchange itself and nothing is left to
//     answer: the client went away (recorded as 499 by clientGone) or the
//     response had begun (relayResponse ended it, with an error event or
//     an abort when the upstream broke off).
//
// A step answers nothing itself; it only sets the headers its answer
// carries (Allow, Retry-After, quota headers). finish records the exchange
// whatever happens, a panic included.
func (ex *exchange) serve() {
	defer ex.finish()
	defer ex.up.end() // the last attempt and the total timeout, on every exit
	if wantsWebSocket(ex.r) {
		ex.serveSession() // websocket.go
		return
	}
	for _, step := range [...]func(*exchange) error{
		(*exchange).enter,          // 503 while draining
		(*exchange).resolve,        // the route, labelling even a 401; its 404 waits for routed
		(*exchange).checkMethod,    // 405, before any key is looked at
		(*exchange).authenticate,   // 401
		(*exchange).routed,         // 404
		(*exchange).hookStart,      // Hooks.RequestStart (hooks.go), for authenticated, routed requests
		(*exchange).admitEarly,     // 429 for a caller still refused, before its body is read
		(*exchange).readBody,       // 413, 408, 400, 503 over the body budget
		(*exchange).ownDeadlines,   // the host's read and write timeouts give way to the relay's
		(*exchange).inspectRequest, // model, stream flag, token estimate, include_usage
		(*exchange).admit,          // 429, 503 when the limiter fails closed
		(*exchange).roundTrip,      // with failover: 502, 503, 504
		(*exchange).relayResponse,  // the upstream's response, byte for byte
	} {
		if err := step(ex); err != nil {
			if e, ok := err.(*relayError); ok {
				ex.fail(e)
			}
			return
		}
	}
}

// enter counts the exchange in, unless the relay is draining.
func (ex *exchange) enter() error {
	rl, r := ex.rl, ex.r
	// One cancellable context per exchange: the upstream request runs in
	// it, and Shutdown cancels it through the live list. It ends when the
	// client leaves, unless the upstream is drained then (drain.go).
	parent := r.Context()
	if rl.cfg.drain > 0 {
		parent = context.WithoutCancel(parent)
	}
	ex.ctx, ex.cancel = context.WithCancelCause(parent)
	if !rl.enter(ex) {
		ex.shape = ex.shapeFor(rl.cfg.shape)
		return &rl.answers.draining
	}
	ex.entered = true
	if rl.cfg.drain > 0 {
		ex.drainOnLeave(rl.cfg.drain)
	}
	return nil
}

// resolve finds the request's route, so that even a 401 is labelled with
// it and answered in its error shape. A request without one is answered
// (routed) only once its caller is authenticated.
func (ex *exchange) resolve() error {
	rl, r := ex.rl, ex.r
	target, err := rl.resolver.Resolve(r)
	if err == nil && (target == nil || len(target.Backends) == 0) {
		err = fmt.Errorf("%w: resolver returned no backend", ErrNoRoute)
	}
	if err == nil {
		ex.target = target
		ex.family, _ = provider.Lookup(string(target.Provider)) // unknown: OpenAI-compatible
		ex.route = target.Route
		ex.rec.Route = target.Route
		ex.rec.Provider = target.Provider
		ex.rec.Kind = target.Kind
	}
	ex.unrouted = err
	ex.shape = ex.shapeFor(rl.cfg.shape)
	rl.metrics.active.WithLabelValues(ex.route).Inc()
	ex.counted = true
	return nil
}

// authenticate maps the request to its caller's Identity.
func (ex *exchange) authenticate() error {
	rl := ex.rl
	id, err := rl.auth.Authenticate(ex.r)
	if err != nil {
		if !isUnauthenticated(err) {
			rl.log.Warn("relay: authenticator failed", "request_id", ex.rec.RequestID, "error", err)
		}
		return &rl.answers.unauthorized
	}
	ex.ident = id // the one copy: admit asks the limiter for it
	ex.rec.Tenant, ex.rec.KeyID, ex.rec.Labels = id.Tenant, id.KeyID, id.Labels
	return nil
}

// routed refuses (404) an authenticated request that resolve found no
// route for.
func (ex *exchange) routed() error {
	err := ex.unrouted
	if err == nil {
		return nil
	}
	if !errors.Is(err, ErrNoRoute) {
		ex.rl.log.Warn("relay: resolver failed", "request_id", ex.rec.RequestID, "error", err)
	}
	return &ex.rl.answers.noRoute
}

// ownDeadlines clears the host server's deadlines once the body is read.
// A host server's ReadTimeout would otherwise fire in net/http's
// background read during a long stream and cancel the request, and its
// WriteTimeout would cut the wait for the upstream's headers; the relay
// sets write deadlines of its own before each write instead.
func (ex *exchange) ownDeadlines() error {
	if srv, ok := ex.r.Context().Value(http.ServerContextKey).(*http.Server); !ok ||
		srv.ReadTimeout > 0 || srv.WriteTimeout > 0 {
		if !ex.readCleared {
			_ = ex.client.rc.SetReadDeadline(time.Time{})
		}
		if ex.rl.cfg.writeTimeout > 0 {
			_ = ex.client.rc.SetWriteDeadline(time.Time{})
		}
	}
	return nil
}

// exchange is the state of one request as it moves through the pipeline.
// What only one concern needs lives in that concern's part, held by value
// so that it costs no allocation of its own: the client writer
// (clientwriter.go), the attempt loop's upstream (attempt.go; each attempt
// is allocated as it starts) and the response's observer (observer.go).
type exchange struct {
	rl     *Relay
	r      *http.Request
	client clientWriter // the response to the client

	idHdr      [1]string       // the X-Request-Id response header value: the relay's id (an array: 8 bytes less than a slice)
	ctx        context.Context // r's context, also cancelled by Shutdown
	cancel     context.CancelCauseFunc
	prev, next *exchange // in rl.live while entered

	rec    Record
	route  string // metric label: the route name, "none" before one is known
	target *Target
	// unrouted is why resolve found no route: answered (404) by routed,
	// once the caller is authenticated.
	unrouted error
	src      bodySrc // the request body (readBody), which the attempts read

	arrived  int64        // when the handler started, by the system clock, in Unix ns (a time.Time is 24 bytes)
	bodyHeld atomic.Int64 // bytes of rl.bodies held by the body
	// waiting is what the exchange waits for that Shutdown must end:
	// waitBody, the request body (its read is cut); waitSlot, a
	// concurrency slot (concurrency.go: its wait is cancelled).
	waiting atomic.Uint32
	left    atomic.Bool // the client left while the upstream drains (drain.go)

	// ident is the caller's Identity, from authentication on: the
	// exchange keeps no other copy (48 bytes, see
	// TestExchangeFitsSizeClass). cost is what admit asks the limiter for
	// (inspectRequest sets its token and spend estimates), and what was
	// reserved, for settlement. A LimitRequest is built from them when
	// the limiter is asked (limitRequest), not kept: its Route and Now
	// would cost 40 bytes the exchange has no room for.
	ident Identity
	cost  Cost
	up    upstream // the response roundTrip got, for relayResponse
	// lease is the tenant's concurrency slot (concurrency.go), held from
	// admit to finish; nil when none is held. 16 bytes: the exchange had
	// room for it in its size class (TestExchangeFitsSizeClass).
	lease Lease

	stream observer // what the response tells as it passes
	hk     *hookRun // the request's hook state (hooks.go); nil without hooks, or before hookStart

	// One-byte fields, together: padding would push the exchange out of
	// its allocation size class (see TestExchangeFitsSizeClass).
	shape       provider.Shape  // of the errors the relay answers
	family      provider.Family // the route's provider family; OpenAI-compatible until resolve
	entered     bool            // counted in rl.inflight
	counted     bool            // counted in relay_active_connections
	reserved    bool            // cost's tokens or spend were reserved: finish settles them
	bodyRead    bool            // the request body was read to its end, or there is none
	readCleared bool            // readBody cleared the read deadline it set
	scratch     [1]byte         // the read that proves a full buffer was the whole body
}

// fail answers with a relay error before any byte of a response was sent:
// serve calls it, for the error a step returned. An answer sent before the
// body was read ends the connection (HTTP/1).
func (ex *exchange) fail(e *relayError) {
	ex.rec.Status = e.status
	ex.rec.ErrorType = e.typ
	unread := ex.closeUnread()
	ex.client.writeError(ex.shape, e)
	if unread {
		ex.lingerUnread(e)
	}
}

// clientGone marks the exchange as abandoned by the client; the step
// that found it returns what it returns, errEnded.
func (ex *exchange) clientGone() error {
	ex.stream.cut = true
	ex.rec.ClientGone = true
	ex.rec.Status = StatusClientClosedRequest
	ex.rec.ErrorType = ErrTypeClientCanceled
	return errEnded
}

// StatusClientClosedRequest is the status recorded when the client went
// away before the response was complete (nginx's convention).
const StatusClientClosedRequest = 499

// admitEarly refuses, before its body is read, a request of a caller the
// limiter refused for its request budget until a time still to come:
// cheap checks first.
func (ex *exchange) admitEarly() error {
	if d, refused := ex.rl.refused.check(ex.ident, ex.route, ex.rl.clock); refused {
		return ex.refuse(d)
	}
	return nil
}

// admit asks the limiter.
func (ex *exchange) admit() error { return ex.admitAs(false) }

// admitAs asks the limiter for a request, or a WebSocket session.
func (ex *exchange) admitAs(session bool) error {
	rl := ex.rl
	// The token estimate is inspectRequest's; 0 when not an LLM call.
	ex.cost.Requests = 1
	req := ex.limitRequest(rl.clock.Now())
	d, err := rl.limiter.Allow(ex.ctx, req)
	if err != nil {
		rl.log.Warn("relay: limiter failed", "request_id", ex.rec.RequestID, "fail_open", rl.cfg.failOpen, "error", err)
		if rl.cfg.failOpen {
			// Counted here: the request itself goes on to succeed or fail
			// on its own account. A refusal is counted by finish. No
			// concurrency lease is asked for: the limiter's store is down,
			// and a second wait for it would only delay the request.
			rl.metrics.errors.WithLabelValues(ex.route, string(ErrTypeLimiter)).Inc()
			return nil
		}
		return &rl.answers.limiterDown
	}
	if !d.Allowed {
		rl.refused.note(ex.ident, ex.route, req.Now, d)
		return ex.refuse(d)
	}
	setQuotaHeaders(ex.client.header(), d)
	c := ex.cost
	ex.reserved = rl.settler != nil && (c.Tokens > 0 || c.Spend > 0 || rl.pricing.cost != nil)
	return ex.acquireLease(session)
}

// limitRequest is what the limiter is asked, or settles, at now.
func (ex *exchange) limitRequest(now time.Time) LimitRequest {
	return LimitRequest{Identity: ex.ident, Route: ex.route, Cost: ex.cost, Now: now}
}

// refuse sets the headers of the answer to a request the limiter refused
// and returns the error to answer.
func (ex *exchange) refuse(d Decision) error {
	setQuotaHeaders(ex.client.header(), d)
	ex.rl.metrics.limited.WithLabelValues(ex.route, d.Reason).Inc()
	if d.RetryAfter > 0 {
		secs := int64((d.RetryAfter + time.Second - 1) / time.Second)
		ex.client.header().Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	switch d.Reason {
	case "tokens":
		return &ex.rl.answers.tokensExhausted
	case "budget":
		return &ex.rl.answers.budgetExhausted
	case ReasonConcurrency:
		return &ex.rl.answers.tooConcurrent
	case ReasonSessions:
		return &ex.rl.answers.tooManySessions
	case ReasonUpstreamConcurrency:
		return &ex.rl.answers.upstreamBusy
	}
	return &ex.rl.answers.tooManyRequests
}

// setQuotaHeaders sets OpenAI-style x-ratelimit-* headers for the budgets
// the decision reports, and their -spend kin for a spend budget (amounts
// in currency units, as exact decimals of the micro-units). The keys are
// canonical constants, and the values are cut from one string into one
// backing slice, so that the nine headers cost two allocations, not
// eighteen: they are on every response.
func setQuotaHeaders(h http.Header, d Decision) {
	qs := [3]Quota{d.Requests, d.Tokens, d.Spend}
	if qs[0].Limit <= 0 && qs[1].Limit <= 0 && qs[2].Limit <= 0 {
		return
	}
	var buf [192]byte
	var ends [9]int
	b := buf[:0]
	for i, q := range qs {
		if q.Limit <= 0 {
			continue
		}
		if i < 2 {
			b = strconv.AppendInt(b, q.Limit, 10)
			ends[3*i] = len(b)
			b = strconv.AppendInt(b, q.Remaining, 10)
		} else {
			b = appendMicros(b, q.Limit)
			ends[3*i] = len(b)
			b = appendMicros(b, q.Remaining)
		}
		ends[3*i+1] = len(b)
		b = appendReset(b, q.Reset)
		ends[3*i+2] = len(b)
	}
	s := string(b)
	vals := make([]string, 9)
	start := 0
	for i, q := range qs {
		if q.Limit <= 0 {
			continue
		}
		for j := range 3 {
			k := 3*i + j
			vals[k] = s[start:ends[k]]
			start = ends[k]
		}
	}
	if qs[0].Limit > 0 {
		h["X-Ratelimit-Limit-Requests"] = vals[0:1:1]
		h["X-Ratelimit-Remaining-Requests"] = vals[1:2:2]
		h["X-Ratelimit-Reset-Requests"] = vals[2:3:3]
	}
	if qs[1].Limit > 0 {
		h["X-Ratelimit-Limit-Tokens"] = vals[3:4:4]
		h["X-Ratelimit-Remaining-Tokens"] = vals[4:5:5]
		h["X-Ratelimit-Reset-Tokens"] = vals[5:6:6]
	}
	if qs[2].Limit > 0 {
		h["X-Ratelimit-Limit-Spend"] = vals[6:7:7]
		h["X-Ratelimit-Remaining-Spend"] = vals[7:8:8]
		h["X-Ratelimit-Reset-Spend"] = vals[8:9:9]
	}
}

// appendMicros appends micro-units v as an exact decimal of currency
// units, without trailing zeros: 8200 is "0.0082", 10000000 is "10".
func appendMicros(b []byte, v int64) []byte {
	if v < 0 {
		b, v = append(b, '-'), -v
	}
	b = strconv.AppendInt(b, v/1_000_000, 10)
	frac := v % 1_000_000
	if frac == 0 {
		return b
	}
	b = append(b, '.')
	for div := int64(100_000); frac > 0; div /= 10 {
		b = append(b, byte('0'+frac/div))
		frac %= div
	}
	return b
}

// formatReset renders a duration as OpenAI does ("1s", "6m0s", "20ms").
func formatReset(d time.Duration) string {
	var buf [24]byte
	return string(appendReset(buf[:0], d))
}

// appendReset appends formatReset's rendering: milliseconds under a
// second, else whole seconds as time.Duration.String writes them.
func appendReset(b []byte, d time.Duration) []byte {
	if d < time.Second {
		return append(strconv.AppendInt(b, d.Milliseconds(), 10), "ms"...)
	}
	secs := int64(d.Round(time.Second) / time.Second)
	if h := secs / 3600; h > 0 {
		b = append(strconv.AppendInt(b, h, 10), 'h')
		b = append(strconv.AppendInt(b, secs%3600/60, 10), 'm')
	} else if m := secs / 60; m > 0 {
		b = append(strconv.AppendInt(b, m, 10), 'm')
	}
	return append(strconv.AppendInt(b, secs%60, 10), 's')
}

// finish records the exchange. It runs deferred, so a panic (such as
// http.ErrAbortHandler for an interrupted binary stream) still records.
func (ex *exchange) finish() {
	rl := ex.rl
	ex.dropBody(true)
	ex.releaseBody() // a body refused while it was read
	now := rl.clock.Now()
	ex.rec.Duration = now.Sub(ex.rec.Start)
	if ex.rec.Status == 0 {
		// The handler ended without a status: only a panic gets here.
		ex.rec.Status = http.StatusInternalServerError
	}
	if ex.entered {
		defer rl.leave(ex)
	}
	if ex.lease != nil {
		ex.lease.Release()
		ex.lease = nil
	}
	if ex.cancel != nil {
		defer ex.cancel(nil)
	}
	if ex.counted {
		rl.metrics.active.WithLabelValues(ex.route).Dec()
	}
	ex.priceRecord(ex.observeUsage())
	m := rl.metrics
	class := statusClass(ex.rec.Status)
	if ex.rec.Status == http.StatusSwitchingProtocols && ex.session() {
		class = "1xx" // a WebSocket session, relayed (statusClass counts other 1xx as no answer)
	}
	m.requests.WithLabelValues(ex.route, class).Inc()
	m.duration.WithLabelValues(ex.route).Observe(ms(ex.rec.Duration))
	if ex.rec.ErrorType != ErrTypeNone {
		m.errors.WithLabelValues(ex.route, string(ex.rec.ErrorType)).Inc()
	}
	if ex.reserved {
		req := ex.limitRequest(now)
		var used int64
		used, req.UsedSpend = ex.used()
		if ex.session() {
			// A session's tokens were settled response by response
			// (wsobserve.go); its spend is settled here.
			used = req.Cost.Tokens
		}
		rl.settle(ex.r.Context(), req, used, ex.rec.RequestID)
	}
	capRecord(&ex.rec, ex.r)
	if ex.hk != nil {
		ex.hookEnd()
	}
	_ = rl.recorder.Record(ex.r.Context(), ex.rec)
}

// used is what a request's token and spend reservations settle at, once
// its usage is recorded (observeUsage): the one place the settlement
// rules live, for both.
//
//   - Usage reported, or estimated for a stream cut short: its total,
//     and its cost (the reservation when the cost is unknown).
//   - An upstream 4xx or 5xx whose body reports no usage: nothing. The
//     provider generated nothing, and a failing provider must not spend
//     its tenants' budgets; the whole reservation comes back.
//   - A request that ended before any of its response body was sent (the
//     relay's own refusal or failure, a client that left first): nothing,
//     likewise. A stream whose headers had come is estimated instead.
//   - Any other response whose usage went unreported (a stream without
//     usage, a body the relay did not observe): the reservation, kept
//     whole as the estimate; but a response billed otherwise than by
//     tokens (speech by characters) is charged its cost when priced.
func (ex *exchange) used() (tokens, spend int64) {
	u, c := &ex.rec.Usage, ex.cost
	switch {
	case u.Total() > 0 || u.Estimated:
		return u.Total(), ex.usedSpendOr(c.Spend)
	case ex.up.resp != nil && ex.up.resp.StatusCode >= 400:
		return 0, 0
	case ex.rec.Status >= 400 && ex.rec.BytesOut == 0:
		return 0, 0
	case c.Tokens == 0:
		return 0, ex.usedSpendOr(c.Spend)
	}
	return c.Tokens, c.Spend
}

// usedSpendOr is the request's cost, or reserved when it is unknown.
func (ex *exchange) usedSpendOr(reserved int64) int64 {
	if micros, ok := ex.usedSpend(); ok {
		return max(0, micros)
	}
	return reserved
}

// settleTimeout bounds one settlement with a remote limiter.
const settleTimeout = 5 * time.Second

// settle gives back or charges the differences between reserved and used
// tokens and spend. The in-memory limiter settles inline; any other
// limiter may be remote, so it settles in the background, bounded in time
// and awaited by Shutdown, and never delays the end of a stream.
func (rl *Relay) settle(ctx context.Context, req LimitRequest, used int64, requestID string) {
	if ml, ok := rl.settler.(*MemoryLimiter); ok {
		ml.SettleAt(req.Now, req, used)
		return
	}
	run := func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), settleTimeout)
		defer cancel()
		defer context.AfterFunc(rl.settleCtx, cancel)() // Shutdown's cancellation
		if err := rl.settler.Settle(ctx, req, used); err != nil {
			rl.metrics.errors.WithLabelValues(req.Route, string(ErrTypeLimiter)).Inc()
			rl.log.Warn("relay: settling tokens failed", "request_id", requestID, "error", err)
		}
	}
	rl.mu.Lock()
	if rl.settleClosed {
		// Shutdown is already waiting for settlements (a handler outlived
		// its grace): settle here rather than start one it would miss.
		rl.mu.Unlock()
		run()
		return
	}
	done := make(chan struct{})
	if rl.settling == nil {
		rl.settling = make(map[chan struct{}]struct{})
	}
	rl.settling[done] = struct{}{}
	rl.mu.Unlock()
	go func() {
		defer func() {
			rl.mu.Lock()
			delete(rl.settling, done)
			rl.mu.Unlock()
			close(done)
		}()
		run()
	}()
}

// waitSettled waits for the background settlements under way when it is
// called (each is bounded by settleTimeout), or until ctx ends.
func (rl *Relay) waitSettled(ctx context.Context) error {
	rl.mu.Lock()
	pending := make([]chan struct{}, 0, len(rl.settling))
	for ch := range rl.settling {
		pending = append(pending, ch)
	}
	rl.mu.Unlock()
	for _, ch := range pending {
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Flush waits until every request whose handler has returned is fully
// accounted for: its token settlement with the limiter is done and its
// record is written by the recorder (or counted as dropped). It returns
// ctx's error if ctx ends first. Requests still in flight are not waited
// for; a client may read a whole response just before the handler returns.
//
// Settlements with a remote limiter (such as Redis) and record writes run
// in the background so that they never delay a stream; Flush is how tests,
// batch jobs and hosts read the limiter's or the store's state after a
// request without racing them. It is safe for concurrent use, also during
// and after Shutdown.
func (rl *Relay) Flush(ctx context.Context) error {
	if err := rl.waitSettled(ctx); err != nil {
		return err
	}
	if rl.async != nil {
		return rl.async.Flush(ctx)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// enter admits a request unless the relay is draining.
func (rl *Relay) enter(ex *exchange) bool {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if rl.draining {
		return false
	}
	rl.inflight++
	ex.next = rl.live
	if rl.live != nil {
		rl.live.prev = ex
	}
	rl.live = ex
	return true
}

func (rl *Relay) leave(ex *exchange) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if ex.prev != nil {
		ex.prev.next = ex.next
	} else {
		rl.live = ex.next
	}
	if ex.next != nil {
		ex.next.prev = ex.prev
	}
	ex.prev, ex.next = nil, nil
	rl.inflight--
	if rl.inflight == 0 && rl.idle != nil {
		close(rl.idle)
		rl.idle = nil
	}
}

// cut ends every in-flight exchange with errShutdown. A body read does
// not watch the context: a read deadline in the past ends it.
func (rl *Relay) cut() {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	for ex := rl.live; ex != nil; ex = ex.next {
		ex.cancel(errShutdown)
		if ex.waiting.Load() == waitBody {
			_ = ex.client.rc.SetReadDeadline(aLongTimeAgo())
		}
	}
}

// abort ends what a cut left running: handlers blocked writing to clients
// that do not read, whose write deadline is set in the past for good.
func (rl *Relay) abort() {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	for ex := rl.live; ex != nil; ex = ex.next {
		ex.client.abort()
		_ = ex.client.rc.SetReadDeadline(aLongTimeAgo())
	}
}

// shutdownGrace is how long Shutdown waits, once a ctx without a deadline
// is done, for cut exchanges to end, and again for aborted ones.
const shutdownGrace = time.Second

// When ctx has a deadline, Shutdown keeps a reserve of it to end cut
// exchanges and write records: it cuts live exchanges that long before the
// deadline. The reserve is a quarter of the time left, between
// shutdownMinReserve and shutdownMaxReserve; a deadline that leaves less
// than the minimum (or has passed) is extended to it, so that cut
// requests are still recorded.
const (
	shutdownMaxReserve = 2 * time.Second
	shutdownMinReserve = 250 * time.Millisecond
)

// waitFor waits for ch to close, at most d; it reports whether it did.
func waitFor(ch <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
		return false
	}
}

// ErrDraining is returned by Ready once Shutdown has begun.
const ErrDraining = Error("relay: shutting down")

// errShutdown is the cause given to streams cut by Shutdown.
const errShutdown = Error("relay: shutdown deadline reached")

// Shutdown stops the relay gracefully: new requests get 503 at once; live
// streams run on until they finish or Shutdown cuts them, when they are
// ended with an error event (or aborted, for binary streams), and
// requests whose body is still arriving get 503; then queued records are
// written, theirs included. It returns ctx's error (or
// context.DeadlineExceeded) if requests had to be cut, or the record
// queue's error if records could not be written.
//
// When ctx has a deadline, Shutdown returns by it: it cuts live requests
// ahead of the deadline by a reserve (a quarter of the time left, between
// 250ms and 2s), gives the first two fifths of the reserve to cut requests
// to end, the next two to those blocked writing to a client that does not
// read (whose writes are then cut), and shares what is left between
// settling token reservations with a remote limiter (cancelled when their
// share is spent) and writing the queued records. A deadline less than
// 250ms away is extended to 250ms. When ctx is cancelled earlier, the cut
// happens then, with the same reserve.
//
// Without a deadline, it waits until every request has ended or ctx is
// cancelled; then it cuts, and returns within about two seconds (a second
// for cut requests to end, another for stuck writes), plus the time to
// settle tokens with a remote limiter (at most 5s) and to write the
// queued records (at most 5s more).
//
// Call it before the host server's own Shutdown, which would otherwise
// wait on the streams.
func (rl *Relay) Shutdown(ctx context.Context) error {
	rl.mu.Lock()
	rl.draining = true
	rl.stopping.Store(true)
	rl.endWaits()
	var idle chan struct{}
	if rl.inflight > 0 {
		if rl.idle == nil {
			rl.idle = make(chan struct{})
		}
		idle = rl.idle
	}
	rl.mu.Unlock()

	end, bounded := ctx.Deadline()
	var err error
	if bounded {
		now := time.Now()
		reserve := min(max(end.Sub(now)/4, shutdownMinReserve), shutdownMaxReserve)
		if end.Before(now.Add(reserve)) {
			end = now.Add(reserve)
		}
		if idle != nil {
			err = rl.drainBy(ctx, idle, end, reserve)
		}
		// Settling and flushing share what is left.
		rl.settleAll(time.Now().Add(time.Until(end) / 2))
		rl.closeTransport()
		if rl.async != nil {
			fctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), end)
			defer cancel()
			if cerr := rl.async.Close(fctx); err == nil {
				err = cerr
			}
		}
		return err
	}

	if idle != nil {
		select {
		case <-idle:
		case <-ctx.Done():
			err = ctx.Err()
			rl.cut()
			// Cut streams end at their next read and cut body reads at
			// once; a handler still blocked on a client write then has
			// its write cut.
			if !waitFor(idle, shutdownGrace) {
				rl.abort()
				waitFor(idle, shutdownGrace)
			}
		}
	}
	rl.settleAll(time.Time{}) // each bounded by settleTimeout
	rl.closeTransport()
	if rl.async != nil {
		fctx := ctx
		if ctx.Err() != nil {
			var cancel context.CancelFunc
			fctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
		}
		if cerr := rl.async.Close(fctx); err == nil {
			err = cerr
		}
	}
	return err
}

// drainBy waits for the live exchanges to end, cutting them reserve
// before end (or when ctx is cancelled first), then aborting what is
// left; see Shutdown.
func (rl *Relay) drainBy(ctx context.Context, idle <-chan struct{}, end time.Time, reserve time.Duration) error {
	cutAt := end.Add(-reserve)
	t := time.NewTimer(time.Until(cutAt))
	defer t.Stop()
	var err error
	select {
	case <-idle:
		return nil
	case <-t.C:
		err = context.DeadlineExceeded
	case <-ctx.Done():
		err = ctx.Err()
		cutAt = time.Now()
	}
	rl.cut()
	if !waitFor(idle, time.Until(cutAt.Add(reserve*2/5))) {
		rl.abort()
		waitFor(idle, time.Until(cutAt.Add(reserve*4/5)))
	}
	return err
}

// settleAll waits for the background settlements, until by when it is not
// zero: then those still running are cancelled (and counted and logged
// as failed). Settlements that start later run inline.
func (rl *Relay) settleAll(by time.Time) {
	rl.mu.Lock()
	rl.settleClosed = true
	rl.mu.Unlock()
	if by.IsZero() {
		_ = rl.waitSettled(context.Background())
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), by)
	defer cancel()
	if rl.waitSettled(ctx) != nil {
		rl.stopSettling()
		// Cancelled settlements return at once if the settler honours
		// its context; one that does not is left to its settleTimeout.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		_ = rl.waitSettled(ctx)
	}
}

// closeTransport closes the idle connections of the relay's own
// transport (never of one given to WithTransport).
func (rl *Relay) closeTransport() {
	if t, ok := rl.transport.(interface{ CloseIdleConnections() }); ok && rl.cfg.transport == nil {
		t.CloseIdleConnections()
	}
}

// Ready reports whether the relay should receive traffic: it is not
// draining, and its limiter and recorder (when they implement
// HealthChecker) are healthy.
func (rl *Relay) Ready(ctx context.Context) error {
	rl.mu.Lock()
	draining := rl.draining
	rl.mu.Unlock()
	if draining {
		return ErrDraining
	}
	if hc, ok := rl.limiter.(HealthChecker); ok {
		if err := hc.Healthy(ctx); err != nil {
			return &NotReadyError{Component: "limiter", Err: err}
		}
	}
	if hc, ok := rl.recorder.(HealthChecker); ok {
		if err := hc.Healthy(ctx); err != nil {
			return &NotReadyError{Component: "recorder", Err: err}
		}
	}
	return nil
}

// NotReadyError says which component failed a readiness check.
type NotReadyError struct {
	Component string // "limiter" or "recorder"
	Err       error
}

func (e *NotReadyError) Error() string { return e.Component + ": " + e.Err.Error() }

func (e *NotReadyError) Unwrap() error { return e.Err }

// HealthzHandler answers 200 "ok" while the process is alive.
func (rl *Relay) HealthzHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
}

// ReadyzHandler answers 200 "ready" when Ready returns nil and 503
// otherwise. The body names only the failing component ("draining",
// "limiter", "recorder"); the error itself, which may name internal
// addresses, goes to the log.
func (rl *Relay) ReadyzHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := rl.Ready(ctx); err != nil {
			reason := "draining"
			var nr *NotReadyError
			if errors.As(err, &nr) {
				reason = nr.Component
				rl.log.Warn("relay: not ready", "component", nr.Component, "error", nr.Err)
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "not ready: "+reason+"\n")
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
}

// MetricsHandler serves the relay's metrics in the Prometheus format. It
// serves the relay's own registry, or the Registerer given to
// WithRegisterer when that is also a Gatherer (a *prometheus.Registry is);
// otherwise it answers 404, and the host serves its registry itself.
func (rl *Relay) MetricsHandler() http.Handler {
	if rl.gatherer == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(rl.gatherer, promhttp.HandlerOpts{})
}

// Recorder returns the queue records go through, so that hosts can Flush
// it; nil when records are discarded.
func (rl *Relay) Recorder() *AsyncRecorder { return rl.async }

// constHeaders are header values set on many requests. They are built once
// per relay and shared: a header map's value slice is only read by
// net/http, and with its capacity equal to its length any append copies it.
type constHeaders struct {
	noCache, no, http, https, empty, close, one, identity []string
}

func newConstHeaders() constHeaders {
	return constHeaders{
		noCache: []string{"no-cache"},
		no:      []string{"no"},
		http:    []string{"http"},
		https:   []string{"https"},
		empty:   []string{""},
		close:   []string{"close"},
		one:     []string{"1"},
		// identity: the Accept-Encoding sent upstream when nothing the
		// relay can observe is left (see acceptEncoding)
		identity: []string{"identity"},
	}
}
