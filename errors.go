package relay

import (
	"net/http"
	"strconv"
	"strings"
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

// relayError is an error the relay answers with itself.
type relayError struct {
	status  int
	typ     ErrorType
	message string // safe for clients: no upstream URL, no Go error text
}

// shapeFor resolves ShapeAuto for a request and, when known, its target.
func shapeFor(s ErrorShape, r *http.Request, t *Target) ErrorShape {
	if s != ShapeAuto {
		return s
	}
	if t != nil {
		if t.Provider == ProviderAnthropic {
			return ShapeAnthropic
		}
		return ShapeOpenAI
	}
	if r.Header.Get("Anthropic-Version") != "" || strings.HasSuffix(r.URL.Path, "/messages") {
		return ShapeAnthropic
	}
	return ShapeOpenAI
}

// openAIErrorType and anthropicErrorType map our error types to the
// providers' own vocabularies, which their SDKs turn into typed errors.
func openAIErrorType(t ErrorType) (typ, code string) {
	switch t {
	case ErrTypeAuth:
		return "invalid_request_error", "invalid_api_key"
	case ErrTypeRateLimited:
		return "rate_limit_error", "rate_limit_exceeded"
	case ErrTypeBodyTooLarge:
		return "invalid_request_error", "request_too_large"
	case ErrTypeBadRequest:
		return "invalid_request_error", "invalid_request"
	case ErrTypeBodyTimeout:
		return "invalid_request_error", "request_timeout"
	case ErrTypeNoRoute:
		return "invalid_request_error", "not_found"
	case ErrTypeMethodNotAllowed:
		return "invalid_request_error", "method_not_allowed"
	case ErrTypeUpstreamTimeout:
		return "server_error", "upstream_timeout"
	case ErrTypeShuttingDown, ErrTypeLimiter, ErrTypeOverloaded:
		return "server_error", "service_unavailable"
	case ErrTypeClientCanceled:
		return "invalid_request_error", "client_canceled"
	default:
		return "server_error", "upstream_error"
	}
}

func anthropicErrorType(t ErrorType) string {
	switch t {
	case ErrTypeAuth:
		return "authentication_error"
	case ErrTypeRateLimited:
		return "rate_limit_error"
	case ErrTypeBodyTooLarge:
		return "request_too_large"
	case ErrTypeBadRequest, ErrTypeClientCanceled, ErrTypeMethodNotAllowed, ErrTypeBodyTimeout:
		return "invalid_request_error"
	case ErrTypeNoRoute:
		return "not_found_error"
	case ErrTypeShuttingDown, ErrTypeLimiter, ErrTypeOverloaded:
		return "overloaded_error"
	default:
		return "api_error"
	}
}

// appendErrorJSON appends the error object in the given shape.
func appendErrorJSON(b []byte, shape ErrorShape, e relayError) []byte {
	if shape == ShapeAnthropic {
		b = append(b, `{"type":"error","error":{"type":`...)
		b = strconv.AppendQuote(b, anthropicErrorType(e.typ))
		b = append(b, `,"message":`...)
		b = strconv.AppendQuote(b, e.message)
		return append(b, "}}"...)
	}
	typ, code := openAIErrorType(e.typ)
	b = append(b, `{"error":{"message":`...)
	b = strconv.AppendQuote(b, e.message)
	b = append(b, `,"type":`...)
	b = strconv.AppendQuote(b, typ)
	b = append(b, `,"param":null,"code":`...)
	b = strconv.AppendQuote(b, code)
	return append(b, "}}"...)
}

// appendErrorEvent appends a final SSE error event. Both shapes use
// "event: error"; the OpenAI SDKs raise on any event whose data has an
// "error" member, the Anthropic SDKs on the error event.
func appendErrorEvent(b []byte, shape ErrorShape, e relayError) []byte {
	b = append(b, "event: error\ndata: "...)
	b = appendErrorJSON(b, shape, e)
	return append(b, "\n\n"...)
}

// writeError answers a request with an error before any byte was sent.
func writeError(w http.ResponseWriter, shape ErrorShape, e relayError) {
	body := appendErrorJSON(make([]byte, 0, 160), shape, e)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	h.Del("Content-Encoding")
	w.WriteHeader(e.status)
	_, _ = w.Write(body)
}
