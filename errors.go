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
	bodyTimeout      relayError // 408
	badBody          relayError // 400
	overloaded       relayError // 503: the body budget is spent
	tenantOverloaded relayError // 503: the tenant's share of it is spent
	limiterDown      relayError // 503: the limiter failed, and fails closed
	tooManyRequests  relayError // 429 for the request budget
	tokensExhausted  relayError // 429 for the token budget
	noURL            relayError // 502: a resolver's backend without a URL

	// upstream holds classify's answers, by phase and failure.
	upstream [2][3]relayError
}

// Failure phases, for classify: before the response, or in the middle of it.
const (
	beforeResponse = 0 // no byte of the response was sent yet
	midStream      = 1 // the response had begun
)

// Failures, for classify.
const (
	failedOther    = iota // connect, TLS, protocol, or the stream broke off
	failedTimeout         // a timeout of ours or of the transport's
	failedShutdown        // Shutdown cut the attempt
)

func newAnswers(maxBody int64, allow string) answers {
	unreachable := "The upstream service could not be reached."
	return answers{
		draining:         relayError{http.StatusServiceUnavailable, ErrTypeShuttingDown, "The gateway is shutting down; retry on another instance."},
		unauthorized:     relayError{http.StatusUnauthorized, ErrTypeAuth, "Invalid or missing API key."},
		noRoute:          relayError{http.StatusNotFound, ErrTypeNoRoute, "No route serves this path."},
		methodNotAllowed: relayError{http.StatusMethodNotAllowed, ErrTypeMethodNotAllowed, "This method is not allowed here; use one of " + allow + "."},
		tooLarge: relayError{http.StatusRequestEntityTooLarge, ErrTypeBodyTooLarge,
			"Request body is larger than the gateway accepts (" + strconv.FormatInt(maxBody, 10) + " bytes)."},
		bodyTimeout:      relayError{http.StatusRequestTimeout, ErrTypeBodyTimeout, "The request body was not received in time."},
		badBody:          relayError{http.StatusBadRequest, ErrTypeBadRequest, "The request body could not be read."},
		overloaded:       relayError{http.StatusServiceUnavailable, ErrTypeOverloaded, "The gateway is overloaded; retry shortly."},
		tenantOverloaded: relayError{http.StatusServiceUnavailable, ErrTypeOverloaded, "The gateway is overloaded with this tenant's request bodies; retry shortly."},
		limiterDown:      relayError{http.StatusServiceUnavailable, ErrTypeLimiter, "Rate limiting is unavailable; retry shortly."},
		tooManyRequests:  relayError{http.StatusTooManyRequests, ErrTypeRateLimited, "Rate limit exceeded: too many requests."},
		tokensExhausted:  relayError{http.StatusTooManyRequests, ErrTypeRateLimited, "Rate limit exceeded: token budget exhausted."},
		noURL:            relayError{http.StatusBadGateway, ErrTypeUpstreamConnect, unreachable},
		upstream: [2][3]relayError{
			beforeResponse: {
				failedOther:    {http.StatusBadGateway, ErrTypeUpstreamConnect, unreachable},
				failedTimeout:  {http.StatusGatewayTimeout, ErrTypeUpstreamTimeout, "The upstream service did not answer in time."},
				failedShutdown: {http.StatusServiceUnavailable, ErrTypeShuttingDown, unreachable},
			},
			midStream: {
				failedOther:    {http.StatusBadGateway, ErrTypeStreamInterrupted, "The upstream stream was interrupted."},
				failedTimeout:  {http.StatusGatewayTimeout, ErrTypeUpstreamTimeout, "The upstream stream stalled."},
				failedShutdown: {http.StatusServiceUnavailable, ErrTypeShuttingDown, "The gateway is shutting down; the stream was cut."},
			},
		},
	}
}

// classify is the one classification of an upstream failure, before the
// response (the attempt failed) or in the middle of it (the stream broke
// off): cause is the attempt's context cause (a timeout of ours,
// errShutdown, or nil), err what the transport or the body read returned.
// A client that went away is the caller's to tell first: it says nothing
// about the upstream.
func (an *answers) classify(phase int, cause, err error) *relayError {
	f := failedOther
	switch {
	case cause == errShutdown:
		f = failedShutdown
	case isTimeout(cause, err):
		f = failedTimeout
	}
	return &an.upstream[phase][f]
}

// isTimeout reports whether an attempt failed by a timeout of ours or of
// the transport's.
func isTimeout(cause, err error) bool {
	switch cause {
	case errConnectTimeout, errFirstByteTimeout, errIdleTimeout, errTotalTimeout:
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
