package relay

import "net/http"

// usageOptions configure what the relay reads from requests and responses.
type usageOptions struct {
	includeUsage     bool
	defaultMaxTokens int64
}

// requestFacts is what the relay learned from the request body.
type requestFacts struct {
	tokenEstimate int64
}

// streamFacts is what the relay learned from the response.
type streamFacts struct{}

func (ex *exchange) inspectRequest()                                {}
func (ex *exchange) beginBody(kind StreamKind, resp *http.Response) {}
func (ex *exchange) onEvent(name, data []byte, truncated bool)      {}
func (ex *exchange) observeChunk(b []byte)                          {}
func (ex *exchange) observeUsage() {
	if ex.rec.TTFB > 0 {
		ex.rl.metrics.ttfb.WithLabelValues(ex.route).Observe(ms(ex.rec.TTFB))
	}
}
