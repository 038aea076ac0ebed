package relay

import (
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the relay's collectors. Every label value is bounded: route
// names from configuration, status classes, the fixed error types, upstream
// names from configuration and models named by WithModels. Tenants, keys
// and raw paths never become labels.
type metrics struct {
	requests     *prometheus.CounterVec   // route, status
	duration     *prometheus.HistogramVec // route
	errors       *prometheus.CounterVec   // route, type
	active       *prometheus.GaugeVec     // route
	ttfb         *prometheus.HistogramVec // route
	tokens       *prometheus.CounterVec   // route, model, type
	ttft         *prometheus.HistogramVec // route, model
	interChunk   *prometheus.HistogramVec // route, model
	upstreamReqs *prometheus.CounterVec   // route, upstream, status
	limited      *prometheus.CounterVec   // route, reason
}

// msBuckets are the latency buckets of the original project, in ms.
func msBuckets() []float64 { return []float64{100, 500, 1000, 2000, 5000, 10000, 30000, 60000} }

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_requests_total",
			Help: "Requests handled, by route and the status class the client got (2xx..5xx; 499 client disconnects count as 4xx).",
		}, []string{"route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "relay_duration_ms",
			Help:    "Request duration from arrival to the last byte, in milliseconds.",
			Buckets: msBuckets(),
		}, []string{"route"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_errors_total",
			Help: "Errors by route and type (see the README's error-type table).",
		}, []string{"route", "type"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "relay_active_connections",
			Help: "Requests in flight, streams included.",
		}, []string{"route"}),
		ttfb: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "relay_ttfb_ms",
			Help:    "Time from a request's arrival to the first body byte sent to the client, in milliseconds.",
			Buckets: []float64{5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000},
		}, []string{"route"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_tokens_total",
			Help: "LLM tokens of finished requests, by type: input and output are the totals; cached_input, cache_creation_input and audio_input are parts of input, reasoning and audio_output parts of output; estimated is the input plus output of requests whose usage the relay estimated (a stream cut short), already counted in input and output.",
		}, []string{"route", "model", "type"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "relay_ttft_ms",
			Help:    "Time from a request's arrival to the first event carrying generated content, in milliseconds.",
			Buckets: []float64{50, 100, 250, 500, 1000, 2000, 5000, 10000, 30000},
		}, []string{"route", "model"}),
		interChunk: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "relay_inter_chunk_ms",
			Help:    "Time between two consecutive content events of a stream, in milliseconds.",
			Buckets: []float64{1, 5, 10, 25, 50, 100, 250, 500, 1000, 5000},
		}, []string{"route", "model"}),
		upstreamReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_upstream_requests_total",
			Help: "Attempts sent to upstreams, by the status they answered (\"error\" when none).",
		}, []string{"route", "upstream", "status"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_rate_limited_total",
			Help: "Requests refused by the limiter, by the exhausted budget (requests or tokens).",
		}, []string{"route", "reason"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.errors, m.active, m.ttfb,
		m.tokens, m.ttft, m.interChunk, m.upstreamReqs, m.limited} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("relay: registering metrics: %w (two relays on one registry need "+
				"prometheus.WrapRegistererWith(prometheus.Labels{\"relay\": name}, reg))", err)
		}
	}
	return m, nil
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
	return strconv.Itoa(code)
}
