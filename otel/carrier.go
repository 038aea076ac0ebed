package relayotel

import (
	"net/http"

	"go.opentelemetry.io/otel/propagation"
)

// headerCarrier is propagation.HeaderCarrier that knows the canonical
// forms of the W3C propagators' keys: http.Header.Set would allocate
// "Traceparent" from "traceparent" on every request.
type headerCarrier http.Header

var _ propagation.TextMapCarrier = headerCarrier(nil)

// Get returns the value of key.
func (h headerCarrier) Get(key string) string { return http.Header(h).Get(key) }

// Set sets key to value, replacing what it held.
func (h headerCarrier) Set(key, value string) {
	switch key {
	case "traceparent":
		h["Traceparent"] = []string{value}
	case "tracestate":
		h["Tracestate"] = []string{value}
	case "baggage":
		h["Baggage"] = []string{value}
	default:
		http.Header(h).Set(key, value)
	}
}

// Keys lists the keys of the header.
func (h headerCarrier) Keys() []string { return propagation.HeaderCarrier(h).Keys() }
