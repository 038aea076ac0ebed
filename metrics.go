package relay

import (
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the relay's collectors. Every label value is bounded: route
// names from configuration, status classes, the fixed error types, upstream
// names from configuration and models named by WithModels. Tenants, keys
// and raw paths never become labels.
//
// Each vector is reached through a children cache (see children): the
// request path resolves a handful of children per request, and the cache
// saves Prometheus' label hashing, validation and lock on each.
type metrics struct {
	all          []prometheus.Collector         // as registered, for New to undo
	requests     *children[prometheus.Counter]  // route, status
	duration     *children[prometheus.Observer] // route
	errors       *children[prometheus.Counter]  // route, type
	active       *children[prometheus.Gauge]    // route
	ttfb         *children[prometheus.Observer] // route
	tokens       *children[prometheus.Counter]  // route, model, type
	ttft         *children[prometheus.Observer] // route, model
	interChunk   *children[prometheus.Observer] // route, model
	upstreamReqs *children[prometheus.Counter]  // route, upstream, status
	limited      *children[prometheus.Counter]  // route, reason
	// includeUsageRetries: route.
	includeUsageRetries *children[prometheus.Counter]
	// Upstream health (health.go), resolved once per upstream by
	// RouteTable.instrument: route, upstream, reason; route, upstream.
	upstreamRests *prometheus.CounterVec
	upstreamState *prometheus.GaugeVec
	retries       *children[prometheus.Counter] // route, upstream
	// WebSocket sessions (wssession.go).
	sessions   *children[prometheus.Counter] // route, closed_by
	frames     *children[prometheus.Counter] // route, direction
	closeCodes *children[prometheus.Counter] // route, code
	// queueWait: route, queue (tenant, upstream), outcome (admitted,
	// refused, canceled).
	queueWait   *children[prometheus.Observer]
	cost        *children[prometheus.Counter] // route, model
	costUnknown *children[prometheus.Counter] // route, reason
}

// register registers cs with reg, all or none. It is the package's one
// registration policy: a metric already registered (two relays, or two
// record queues, on one registry) is an error, never silently shared,
// since a shared metric would count only the first one's numbers.
func register(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("relay: registering metric %s: %w (two relays or record queues on one registry need "+
				"prometheus.WrapRegistererWith(prometheus.Labels{\"relay\": name}, reg))", metricName(c), err)
		}
	}
	return nil
}

// metricName is the name of c's first metric, for an error message.
func metricName(c prometheus.Collector) string {
	ch := make(chan *prometheus.Desc, 1)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	var name string
	for d := range ch { // drained whole, so that the goroutine ends
		if s := d.String(); name == "" {
			if _, rest, ok := strings.Cut(s, `fqName: "`); ok {
				name, _, _ = strings.Cut(rest, `"`)
			}
		}
	}
	return name
}

// msBuckets are the latency buckets of the original project, in ms.
func msBuckets() []float64 { return []float64{100, 500, 1000, 2000, 5000, 10000, 30000, 60000} }

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_requests_total",
		Help: "Requests handled, by route and the status class the client got (2xx..5xx; 499 client disconnects count as 4xx).",
	}, []string{"route", "status"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "relay_duration_ms",
		Help:    "Request duration from arrival to the last byte, in milliseconds.",
		Buckets: msBuckets(),
	}, []string{"route"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_errors_total",
		Help: "Errors by route and type (see the README's error-type table).",
	}, []string{"route", "type"})
	active := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "relay_active_connections",
		Help: "Requests in flight, streams included.",
	}, []string{"route"})
	ttfb := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "relay_ttfb_ms",
		Help:    "Time from a request's arrival to the first body byte sent to the client, in milliseconds.",
		Buckets: []float64{5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000},
	}, []string{"route"})
	tokens := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_tokens_total",
		Help: "LLM tokens of finished requests, by type: input and output are the totals; cached_input, cache_creation_input and audio_input are parts of input, reasoning and audio_output parts of output; estimated is the input plus output of requests whose usage the relay estimated (a stream cut short), already counted in input and output.",
	}, []string{"route", "model", "type"})
	ttft := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "relay_ttft_ms",
		Help:    "Time from a request's arrival to the first event carrying generated content, in milliseconds.",
		Buckets: []float64{50, 100, 250, 500, 1000, 2000, 5000, 10000, 30000},
	}, []string{"route", "model"})
	interChunk := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "relay_inter_chunk_ms",
		Help:    "Time between two consecutive content events of a stream, in milliseconds.",
		Buckets: []float64{1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000},
	}, []string{"route", "model"})
	upstreamReqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_upstream_requests_total",
		Help: "Attempts sent to upstreams, by the status they answered (\"error\" when none).",
	}, []string{"route", "upstream", "status"})
	limited := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_rate_limited_total",
		Help: "Requests refused by the limiter, by the exhausted budget (requests or tokens) or cap (concurrency, sessions, upstream_concurrency).",
	}, []string{"route", "reason"})
	includeUsageRetries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_include_usage_retries_total",
		Help: "Requests sent again without the stream_options.include_usage the relay added, after the upstream answered 400 naming it.",
	}, []string{"route"})
	upstreamRests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_upstream_rests_total",
		Help: "Rests of upstream keys (reason retry_after or failures) and of whole upstreams (all_keys: every key rests; breaker: failures in a row; reopened: a failure while resting or probing). Built-in route table only.",
	}, []string{"route", "upstream", "reason"})
	upstreamState := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "relay_upstream_state",
		Help: "An upstream's health: 0 available, 1 half open (one probe request sent), 2 resting (tried only as a last resort). Built-in route table only.",
	}, []string{"route", "upstream"})
	retries := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_upstream_retries_total",
		Help: "Attempts sent again to the same upstream after a backoff (Route.MaxAttempts beyond the backends).",
	}, []string{"route", "upstream"})
	sessions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_websocket_sessions_total",
		Help: "WebSocket sessions relayed (past the 101), by route and the side that closed first (client, upstream, relay).",
	}, []string{"route", "closed_by"})
	frames := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_websocket_frames_total",
		Help: "WebSocket frames relayed, by route and direction (in: client to upstream; out: upstream to client), counted when a session ends.",
	}, []string{"route", "direction"})
	closeCodes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_websocket_close_codes_total",
		Help: "WebSocket sessions by the close code that ended them: 1000-1015 by number, 3xxx and 4xxx by range, other.",
	}, []string{"route", "code"})
	queueWait := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "relay_queue_wait_seconds",
		Help:    "Waits for a concurrency slot: queue tenant (Limits.MaxConcurrent, MaxSessions) or upstream (Upstream.MaxInFlight), by outcome (admitted, refused after the queue timeout, canceled by the client or a shutdown).",
		Buckets: []float64{0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"route", "queue", "outcome"})
	cost := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_cost_total",
		Help: "Cost of finished requests at the configured prices (WithPrices), in units of the price table's currency; models not named by WithModels are \"other\". Requests whose cost is unknown are not in it: see relay_cost_unknown_total.",
	}, []string{"route", "model"})
	costUnknown := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relay_cost_unknown_total",
		Help: "Finished requests whose cost could not be priced, by reason: model (not in the price table) or usage (answered but no usage reported to price).",
	}, []string{"route", "reason"})
	all := []prometheus.Collector{requests, duration, errs, active, ttfb,
		tokens, ttft, interChunk, upstreamReqs, limited, includeUsageRetries,
		upstreamRests, upstreamState, retries, queueWait, cost, costUnknown, sessions, frames, closeCodes}
	if err := register(reg, all...); err != nil {
		return nil, err
	}
	return &metrics{
		all:          all,
		requests:     newChildren(requests.WithLabelValues),
		duration:     newChildren(duration.WithLabelValues),
		errors:       newChildren(errs.WithLabelValues),
		active:       newChildren(active.WithLabelValues),
		ttfb:         newChildren(ttfb.WithLabelValues),
		tokens:       newChildren(tokens.WithLabelValues),
		ttft:         newChildren(ttft.WithLabelValues),
		interChunk:   newChildren(interChunk.WithLabelValues),
		upstreamReqs: newChildren(upstreamReqs.WithLabelValues),
		limited:      newChildren(limited.WithLabelValues),

		includeUsageRetries: newChildren(includeUsageRetries.WithLabelValues),
		upstreamRests:       upstreamRests,
		upstreamState:       upstreamState,
		retries:             newChildren(retries.WithLabelValues),
		sessions:            newChildren(sessions.WithLabelValues),
		frames:              newChildren(frames.WithLabelValues),
		closeCodes:          newChildren(closeCodes.WithLabelValues),
		queueWait:           newChildren(queueWait.WithLabelValues),
		cost:                newChildren(cost.WithLabelValues),
		costUnknown:         newChildren(costUnknown.WithLabelValues),
	}, nil
}

// maxCachedChildren bounds the children a cache holds per vector. Label
// values are bounded by configuration, so a relay stays far below it;
// past it, lookups go to the vector itself, uncached but still correct.
// maxChildKey bounds a cache key (the label values, each followed by a
// separator): longer values, which the relay's are not, also go to the
// vector.
const (
	maxCachedChildren = 4096
	maxChildKey       = 128
)

// children caches the children of one metric vector by label values.
// Prometheus' WithLabelValues hashes and validates every value and takes
// the vector's lock on each call; the request path resolves a handful per
// request, so a read-mostly map saves that: a lookup is one atomic load
// and one map access, lock-free, with a key built on the stack. The map is
// copied on write (a miss adds a child), which happens once per label
// combination. Children are never deleted from the relay's vectors, so a
// cached child stays the vector's.
//
// It is safe for concurrent use.
type children[T any] struct {
	with   func(...string) T // the vector's WithLabelValues
	cached atomic.Pointer[map[string]T]
	mu     sync.Mutex // serialises misses
}

func newChildren[T any](with func(...string) T) *children[T] {
	c := &children[T]{with: with}
	m := map[string]T{}
	c.cached.Store(&m)
	return c
}

// WithLabelValues returns the child for the label values, as the vector's
// own WithLabelValues does (it panics on a wrong number of values).
func (c *children[T]) WithLabelValues(lvs ...string) T {
	var buf [maxChildKey]byte
	k := buf[:0]
	for _, v := range lvs {
		if len(k)+len(v) >= len(buf) {
			return c.with(append([]string(nil), lvs...)...)
		}
		// 0xff never occurs in UTF-8, which Prometheus requires of label
		// values: distinct value lists make distinct keys.
		k = append(append(k, v...), 0xff)
	}
	if v, ok := (*c.cached.Load())[string(k)]; ok {
		return v
	}
	// Copied so that lvs, usually on the caller's stack, does not escape.
	v := c.with(append([]string(nil), lvs...)...)
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.cached.Load()
	if _, ok := old[string(k)]; ok || len(old) >= maxCachedChildren {
		return v
	}
	m := make(map[string]T, len(old)+1)
	maps.Copy(m, old)
	m[string(k)] = v
	c.cached.Store(&m)
	return v
}

// statusClass maps a status to its label value.
func statusClass(code int) string {
	switch {
	case code >= 500:
		return "5xx"
	case code >= 400:
		return "4xx"
	case code >= 300:
		return "3xx"
	case code >= 200:
		return "2xx"
	default:
		return "5xx" // no status at all: the connection failed
	}
}

// upstreamStatus is the status label of relay_upstream_requests_total.
func upstreamStatus(code int, err error) string {
	if err != nil || code == 0 {
		return "error"
	}
	// The usual answers as constants: strconv allocates for codes >= 100.
	switch code {
	case http.StatusOK:
		return "200"
	case http.StatusBadRequest:
		return "400"
	case http.StatusUnauthorized:
		return "401"
	case http.StatusForbidden:
		return "403"
	case http.StatusNotFound:
		return "404"
	case http.StatusTooManyRequests:
		return "429"
	case http.StatusInternalServerError:
		return "500"
	case http.StatusBadGateway:
		return "502"
	case http.StatusServiceUnavailable:
		return "503"
	case http.StatusGatewayTimeout:
		return "504"
	}
	return strconv.Itoa(code)
}
