package relay

import (
	"errors"
	"net"
	"net/http"
	"strconv"

	"github.com/streamrelay/relay/internal/provider"
)

// ErrorShape selects the JSON shape of errors the relay itself emits.
// Errors from upstreams pass through unchanged.
type ErrorShape int

const (
	// ShapeAuto picks by route provider, or by request before a route is
	// known: Anthropic style when the request carries anthropic-version or
	// targets a /messages path, OpenAI style otherwise.
	ShapeAuto ErrorShape = iota
	// ShapeOpenAI is {"error":{"message","type","param","code"}}; in a stream,
	// "event: error" with a data line holding that object.
	ShapeOpenAI
	// ShapeAnthropic is {"type":"error","error":{"type","message"}}; in a
	// stream, "event: error" with that object.
	ShapeAnthropic
)

// relayError is an error the relay answers with itself: a pipeline step
// returns one of its relay's answers (see exchange.serve), and serve
// answers it in the caller's shape. Its fields are what the client and the
// record get.
type relayError struct {
	status  int
	typ     ErrorType
	message string // safe for clients: no upstream URL, no Go error text
}

// Error returns the status, type and client-safe message.
func (e *relayError) Error() string {
	return "relay: " + strconv.Itoa(e.status) + " " + string(e.typ) + ": " + e.message
}

// errEnded is what a step returns when it ended the exchange itself and
// nothing is left to answer: the client went away (recorded as 499 by
// clientGone), or the response had begun.
const errEnded = Error("relay: exchange ended")

// answers are the errors the relay answers with itself: every message a
// client can get from the relay is here. They are made once per relay
// (two name its limits) and only read after, so that a step returns one
// without allocating, and any goroutine may.
type answers struct {
	draining         relayError // 503: Shutdown has begun, or cut a body read
	unauthorized     relayError // 401
	noRoute          relayError // 404
	methodNotAllowed relayError // 405, naming the allowed methods
	tooLarge         relayError // 413, naming the size limit
	overloaded       relayError // 503: the body budget is spent
	tenantOverloaded relayError // 503: the tenant's share of it is spent
	limiterDown      relayError // 503: the limiter failed, and fails closed
	tooManyRequests  relayError // 429 for the request budget
	tokensExhausted  relayError // 429 for the token budget
	budgetExhausted  relayError // 429 for a spend budget
	tooConcurrent    relayError // 429 for Limits.MaxConcurrent
	tooManySessions  relayError // 429 for Limits.MaxSessions
	upstreamBusy     relayError // 429: every key of the route is at Upstream.MaxInFlight
	noURL            relayError // 502: a resolver's backend without a URL
	noWebSocket      relayError // 404: a WebSocket session on a route with NoWebSocket
	noHijack         relayError // 501: a WebSocket session the host's ResponseWriter cannot hand over

	// failures holds classify's answers, by phase and failure.
	failures [3][3]relayError
}

// Failure phases, for classify.
const (
	readingBody    = iota // reading the request body
	beforeResponse        // an upstream attempt: no byte of the response was sent yet
	midStream             // the response had begun
)

// Failures, for classify.
const (
	failedOther    = iota // a read, connect, TLS or protocol error, or the stream broke off
	failedTimeout         // a timeout of ours, a read deadline, or the transport's timeout
	failedShutdown        // Shutdown cut the exchange
)

func newAnswers(maxBody int64, allow string) answers {
	unreachable := "The upstream service could not be reached."
	shuttingDown := relayError{http.StatusServiceUnavailable, ErrTypeShuttingDown, "The gateway is shutting down; retry on another instance."}
	return answers{
		draining:         shuttingDown,
		unauthorized:     relayError{http.StatusUnauthorized, ErrTypeAuth, "Invalid or missing API key."},
		noRoute:          relayError{http.StatusNotFound, ErrTypeNoRoute, "No route serves this path."},
		methodNotAllowed: relayError{http.StatusMethodNotAllowed, ErrTypeMethodNotAllowed, "This method is not allowed here; use one of " + allow + "."},
		tooLarge: relayError{http.StatusRequestEntityTooLarge, ErrTypeBodyTooLarge,
			"Request body is larger than the gateway accepts (" + strconv.FormatInt(maxBody, 10) + " bytes)."},
		overloaded:       relayError{http.StatusServiceUnavailable, ErrTypeOverloaded, "The gateway is overloaded; retry shortly."},
		tenantOverloaded: relayError{http.StatusServiceUnavailable, ErrTypeOverloaded, "The gateway is overloaded with this tenant's request bodies; retry shortly."},
		limiterDown:      relayError{http.StatusServiceUnavailable, ErrTypeLimiter, "Rate limiting is unavailable; retry shortly."},
		tooManyRequests:  relayError{http.StatusTooManyRequests, ErrTypeRateLimited, "Rate limit exceeded: too many requests."},
		tokensExhausted:  relayError{http.StatusTooManyRequests, ErrTypeRateLimited, "Rate limit exceeded: token budget exhausted."},
		budgetExhausted:  relayError{http.StatusTooManyRequests, ErrTypeRateLimited, "Rate limit exceeded: spend budget exhausted."},
		tooConcurrent:    relayError{http.StatusTooManyRequests, ErrTypeRateLimited, "Rate limit exceeded: too many concurrent requests."},
		tooManySessions:  relayError{http.StatusTooManyRequests, ErrTypeRateLimited, "Rate limit exceeded: too many concurrent sessions."},
		upstreamBusy:     relayError{http.StatusTooManyRequests, ErrTypeRateLimited, "The upstream's concurrency limit is reached; retry shortly."},
		noURL:            relayError{http.StatusBadGateway, ErrTypeUpstreamConnect, unreachable},
		noWebSocket:      relayError{http.StatusNotFound, ErrTypeNoRoute, "This route does not serve WebSocket sessions."},
		noHijack: relayError{http.StatusNotImplemented, ErrTypeNoRoute,
			"WebSocket sessions are not available on this server: its handler cannot take over the connection (HTTP/2, or a ResponseWriter without Hijack)."},
		failures: [3][3]relayError{
			readingBody: {
				failedOther:    {http.StatusBadRequest, ErrTypeBadRequest, "The request body could not be read."},
				failedTimeout:  {http.StatusRequestTimeout, ErrTypeBodyTimeout, "The request body was not received in time."},
				failedShutdown: shuttingDown,
			},
			beforeResponse: {
				failedOther:    {http.StatusBadGateway, ErrTypeUpstreamConnect, unreachable},
				failedTimeout:  {http.StatusGatewayTimeout, ErrTypeUpstreamTimeout, "The upstream service did not answer in time."},
				failedShutdown: shuttingDown,
			},
			midStream: {
				failedOther:    {http.StatusBadGateway, ErrTypeStreamInterrupted, "The upstream stream was interrupted."},
				failedTimeout:  {http.StatusGatewayTimeout, ErrTypeUpstreamTimeout, "The upstream stream stalled."},
				failedShutdown: {http.StatusServiceUnavailable, ErrTypeShuttingDown, "The gateway is shutting down; the stream was cut."},
			},
		},
	}
}

// classify is the one classification of a failure: of the request body's
// read (readingBody), of an upstream attempt (beforeResponse), or of the
// response's body (midStream). cause is the context's cause (errShutdown,
// a timeout of ours, or nil), err what the read or the transport
// returned, and gone whether the client's own context is done. It returns
// the answer, or nil when the client went away: the caller records that
// (clientGone).
//
// A client that went away says nothing about the upstream, so it is told
// first; but a body read's deadline also ends the request's context on
// HTTP/1, so there the relay's own reasons are told first.
func (an *answers) classify(phase int, cause, err error, gone bool) *relayError {
	if gone && phase != readingBody {
		return nil
	}
	f := failedOther
	switch {
	case cause == errShutdown:
		f = failedShutdown
	case isTimeout(cause, err):
		f = failedTimeout
	case gone:
		return nil
	}
	return &an.failures[phase][f]
}

// failed is a step's error for a failure: classify's answer, or errEnded
// when the client went away (recorded by clientGone).
func (ex *exchange) failed(phase int, cause, err error) error {
	if e := ex.rl.answers.classify(phase, cause, err, ex.r.Context().Err() != nil); e != nil {
		return e
	}
	return ex.clientGone()
}

// isTimeout reports whether a failure was a timeout of ours, a read
// deadline, or the transport's timeout.
func isTimeout(cause, err error) bool {
	switch cause {
	case errConnectTimeout, errFirstByteTimeout, errFirstTokenTimeout, errIdleTimeout, errTotalTimeout:
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// shapeFor resolves the configured error shape for the exchange:
// ShapeAuto takes the shape of the route's provider family once the route
// is known, and before that the shape the request looks like (see
// ShapeAuto); the families' files hold both rules.
func (ex *exchange) shapeFor(s ErrorShape) provider.Shape {
	switch {
	case s == ShapeOpenAI:
		return provider.ShapeOpenAI
	case s == ShapeAnthropic:
		return provider.ShapeAnthropic
	case ex.target != nil:
		return ex.family.Shape()
	}
	return provider.RequestShape(ex.r.Header, ex.r.URL.Path)
}

// appendErrorJSON appends the error object in the given shape, in the
// vocabulary of the family that defines it.
func appendErrorJSON(b []byte, shape provider.Shape, e *relayError) []byte {
	return shape.AppendJSON(b, string(e.typ), e.message)
}

// appendErrorEvent appends a final SSE error event in the given shape.
func appendErrorEvent(b []byte, shape provider.Shape, e *relayError) []byte {
	return shape.AppendEvent(b, string(e.typ), e.message)
}

// writeError answers a request with an error before any byte was sent.
func writeError(w http.ResponseWriter, shape provider.Shape, e *relayError) {
	body := appendErrorJSON(make([]byte, 0, 160), shape, e)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Encoding")
	w.WriteHeader(e.status)
	_, _ = w.Write(body)
}
