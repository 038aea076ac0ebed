package relay

import (
	"context"
	"net/http"
	"time"
)

// Retries of one backend (Route.MaxAttempts beyond the backends, spaced by
// Route.Backoff): the attempt loop's second chance when no other backend
// is left, before any byte reached the client.

// Backoff defaults.
const (
	defaultBackoffBase = 500 * time.Millisecond
	defaultBackoffMax  = 10 * time.Second
)

// retryableStatus reports the answers worth sending again to the same
// backend: rate limited, or a server error that is commonly a blip.
// Other 5xx (501, 505, ...) fail over to another backend but are not
// retried on the same one.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout, 529: // 529: Anthropic's overloaded
		return true
	}
	return false
}

// planRetry decides whether the failed attempt is retried as the nth
// retry of the same backend (n from 1), and if so sets the attempt's wait to the
// backoff before it: the upstream's Retry-After when it sent one no
// longer than the backoff's Max, else a jittered exponential backoff. A
// status of 0 is a transport failure; one that waited out the FirstByte
// timeout is not retried (the upstream had the request: a retry would
// double the wait).
func (ex *exchange) planRetry(res AttemptResult, cause error, n int) bool {
	if res.Err != nil && cause == errFirstByteTimeout {
		return false
	}
	if res.Err == nil && !retryableStatus(res.Status) {
		return false
	}
	bo := ex.target.Backoff
	base, ceil := bo.Base, bo.Max
	if base <= 0 {
		base = defaultBackoffBase
	}
	if ceil <= 0 {
		ceil = defaultBackoffMax
	}
	if res.RetryAfter > 0 {
		if res.RetryAfter > ceil {
			return false // the upstream asks for longer than the route waits: relay its answer
		}
		ex.up.a.wait = res.RetryAfter
		return true
	}
	d := ceil
	if n <= 30 && base<<(n-1) < ceil && base<<(n-1) > 0 {
		d = base << (n - 1)
	}
	half := d / 2
	ex.up.a.wait = half + time.Duration(ex.rl.jitter(int64(d-half)+1))
	return true
}

// backoff waits the last attempt's wait before retrying backend b. The wait ends at
// once, failing the exchange, when the client leaves, Shutdown cuts the
// exchange or its Total timeout runs out (base carries both).
func (ex *exchange) backoff(base context.Context, b Backend) error {
	t := ex.rl.backoffTimer(ex.up.a.wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-base.Done():
		return ex.failed(beforeResponse, context.Cause(base), base.Err())
	case <-ex.r.Context().Done(): // with WithDrainOnClientGone base outlives the client
		return ex.clientGone()
	}
	ex.rl.metrics.retries.WithLabelValues(ex.route, b.Name).Inc()
	return nil
}
