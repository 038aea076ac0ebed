package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamrelay/relay/internal/testkit"
)

// genMetrics registers what a generation's relay would: a counter, a
// gauge and a histogram, under the same names in each generation.
type genMetrics struct {
	reg     *prometheus.Registry
	reqs    *prometheus.CounterVec
	active  prometheus.Gauge
	latency prometheus.Histogram
}

func newGenMetrics() *genMetrics {
	g := &genMetrics{
		reg:     prometheus.NewRegistry(),
		reqs:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "relay_requests_total", Help: "h"}, []string{"route"}),
		active:  prometheus.NewGauge(prometheus.GaugeOpts{Name: "relay_active_connections", Help: "h"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "relay_duration_ms", Help: "h", Buckets: []float64{10, 100}}),
	}
	g.reg.MustRegister(g.reqs, g.active, g.latency)
	return g
}

// The generations' series are summed while they live, a retired
// generation's counters and histograms stay in the totals, and its gauges
// leave them: counters never go back on a reload.
func TestMetricSetMerges(t *testing.T) {
	m := newMetricSet()
	g1, g2 := newGenMetrics(), newGenMetrics()
	m.add(g1.reg)
	g1.reqs.WithLabelValues("a").Add(3)
	g1.active.Set(2)
	g1.latency.Observe(5)
	m.add(g2.reg)
	g2.reqs.WithLabelValues("a").Add(1)
	g2.reqs.WithLabelValues("b").Add(4)
	g2.active.Set(1)
	g2.latency.Observe(50)

	const want = `
# HELP relay_active_connections h
# TYPE relay_active_connections gauge
relay_active_connections %d
# HELP relay_duration_ms h
# TYPE relay_duration_ms histogram
relay_duration_ms_bucket{le="10"} 1
relay_duration_ms_bucket{le="100"} %d
relay_duration_ms_bucket{le="+Inf"} %d
relay_duration_ms_sum %d
relay_duration_ms_count %d
# HELP relay_requests_total h
# TYPE relay_requests_total counter
relay_requests_total{route="a"} %d
relay_requests_total{route="b"} 4
`
	names := []string{"relay_active_connections", "relay_duration_ms", "relay_requests_total"}
	check := func(active, hist, sum, reqsA int) {
		t.Helper()
		exp := fmt.Sprintf(want, active, hist, hist, sum, hist, reqsA)
		if err := testutil.GatherAndCompare(m, strings.NewReader(exp), names...); err != nil {
			t.Error(err)
		}
	}
	check(3, 2, 55, 4)

	// Generation 1 retires: its counts stay, its gauge goes.
	g1.active.Set(0)
	m.retire(g1.reg)
	check(1, 2, 55, 4)
	g1.reqs.WithLabelValues("a").Add(100) // never gathered again
	check(1, 2, 55, 4)

	// A third generation counts on from the totals.
	g3 := newGenMetrics()
	m.add(g3.reg)
	g3.reqs.WithLabelValues("a").Inc()
	g3.latency.Observe(500)
	if err := testutil.GatherAndCompare(m, strings.NewReader(`
# HELP relay_duration_ms h
# TYPE relay_duration_ms histogram
relay_duration_ms_bucket{le="10"} 1
relay_duration_ms_bucket{le="100"} 2
relay_duration_ms_bucket{le="+Inf"} 3
relay_duration_ms_sum 555
relay_duration_ms_count 3
# HELP relay_requests_total h
# TYPE relay_requests_total counter
relay_requests_total{route="a"} 5
relay_requests_total{route="b"} 4
`), "relay_duration_ms", "relay_requests_total"); err != nil {
		t.Error(err)
	}
	// The process's own metrics come along.
	fams, err := m.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, f := range fams {
		if n := f.GetName(); n == "go_goroutines" || n == "relay_config_reloads_total" {
			found = append(found, n)
		}
	}
	if len(found) != 2 {
		t.Errorf("process metrics: found %v", found)
	}
}

// observability.prometheus.addr moves the metrics to a listener of their
// own, with the health checks; the main port no longer serves them.
func TestMetricsOnTheirOwnListener(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
routes: [{name: up, path: /v1, upstream: "%s", kind: json}]
auth: {api_keys: [k1]}
storage: {discard: true}
observability: {prometheus: {addr: "127.0.0.1:0", path: /internal/metrics}}
`, jsonUpstream(t)))
	maddr := make(chan string, 1)
	s := startServer(t, []string{"-config", cfg}, hooks{metricsListening: func(a string) { maddr <- a }})
	m := "http://" + testkit.Recv(t, maddr, "the metrics listener did not start")
	if code := status(context.Background(), t, s.base+"/v1/x", "k1"); code != 200 {
		t.Fatalf("status %d", code)
	}
	if !metricValue(t, m+"/internal/metrics", `relay_requests_total{route="up",status="2xx"} 1`) {
		t.Error("the metrics listener does not count the request")
	}
	for _, u := range []string{m + "/healthz", m + "/readyz", s.base + "/healthz", s.base + "/readyz"} {
		if code, _ := get(t, u); code != 200 {
			t.Errorf("%s = %d", u, code)
		}
	}
	if code, body := get(t, s.base+"/internal/metrics"); code == 200 || strings.Contains(body, "relay_requests_total") {
		t.Errorf("the main port serves the metrics: %d", code)
	}
	if code, _ := get(t, m+"/v1/x"); code != 404 {
		t.Errorf("the metrics listener serves %d for a relay path, want 404", code)
	}
	if !strings.Contains(s.stderr.String(), `"metrics_addr":"`+strings.TrimPrefix(m, "http://")+`"`) {
		t.Errorf("the startup log does not name the metrics address:\n%s", s.stderr)
	}
}
