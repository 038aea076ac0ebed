package main

import (
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// metricSet is what /metrics serves: the process's own registry (the Go
// runtime's and the process's metrics, and the reloads') and the relay
// metrics of every configuration generation, merged into one set.
//
// relay.New registers its metrics in a registry of its own and refuses a
// registry that has them already, so each generation gets a registry; a
// generation still draining streams after a reload keeps counting in its
// own. Gather sums the generations' series with the same labels (counters,
// gauges and histograms alike: requests in flight on the old settings plus
// those on the new), and a generation that has finished is folded into
// the running totals (its counters and histograms; its gauges are zero by
// then). So counters never go back on a reload, and nothing counted by a
// draining generation is lost. Nothing is global: no default registry.
type metricSet struct {
	proc    *prometheus.Registry
	reloads *prometheus.CounterVec
	pending prometheus.Gauge

	mu      sync.Mutex
	live    []*prometheus.Registry
	retired []*dto.MetricFamily // folded counters and histograms
}

func newMetricSet() *metricSet {
	m := &metricSet{
		proc: prometheus.NewRegistry(),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_config_reloads_total",
			Help: "Configuration reloads (SIGHUP or a changed file), by result: success or rejected.",
		}, []string{"result"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "relay_config_restart_required",
			Help: "1 when the configuration file has changes that only a restart applies (listen addresses, TLS on or off, storage, log format), else 0.",
		}),
	}
	m.proc.MustRegister(collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), m.reloads, m.pending)
	// Both results are shown from the start, at zero.
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("rejected")
	return m
}

// add starts gathering a generation's registry.
func (m *metricSet) add(reg *prometheus.Registry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.live = append(m.live, reg)
}

// retire folds a finished generation's counters and histograms into the
// totals and stops gathering its registry.
func (m *metricSet) retire(reg *prometheus.Registry) {
	fams, _ := reg.Gather() // what it could gather; errors are programming errors
	m.mu.Lock()
	defer m.mu.Unlock()
	var mg merger
	mg.add(m.retired, false)
	mg.add(fams, false)
	m.retired = mg.families()
	m.live = slices.DeleteFunc(m.live, func(r *prometheus.Registry) bool { return r == reg })
}

// Gather implements prometheus.Gatherer.
func (m *metricSet) Gather() ([]*dto.MetricFamily, error) {
	fams, err := m.proc.Gather()
	m.mu.Lock()
	defer m.mu.Unlock()
	var mg merger
	mg.add(m.retired, false)
	for _, reg := range m.live {
		gfs, gerr := reg.Gather()
		if gerr != nil && err == nil {
			err = gerr
		}
		mg.add(gfs, true)
	}
	fams = append(fams, mg.families()...)
	slices.SortFunc(fams, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return fams, err
}

// merger sums metric families series by series. It builds new values and
// never changes the families it is given.
type merger struct {
	fams map[string]*famSum
}

type famSum struct {
	fam    *dto.MetricFamily // name, help and type; Metric is filled by families
	series map[string]*dto.Metric
}

// add sums fams in; gauges (and untyped values, which may be gauges) only
// when withGauges, since a finished generation's gauges mean nothing.
func (mg *merger) add(fams []*dto.MetricFamily, withGauges bool) {
	if mg.fams == nil {
		mg.fams = map[string]*famSum{}
	}
	for _, f := range fams {
		t := f.GetType()
		if !withGauges && t != dto.MetricType_COUNTER && t != dto.MetricType_HISTOGRAM {
			continue
		}
		fs := mg.fams[f.GetName()]
		if fs == nil {
			fs = &famSum{fam: &dto.MetricFamily{Name: f.Name, Help: f.Help, Type: f.Type}, series: map[string]*dto.Metric{}}
			mg.fams[f.GetName()] = fs
		}
		if fs.fam.GetType() != t {
			continue // cannot happen: every generation runs the same code
		}
		for _, s := range f.Metric {
			key := labelKey(s.Label)
			fs.series[key] = sum(fs.series[key], s, t)
		}
	}
}

// families returns the sums, families by name and series by labels.
func (mg *merger) families() []*dto.MetricFamily {
	out := make([]*dto.MetricFamily, 0, len(mg.fams))
	for _, fs := range mg.fams {
		keys := make([]string, 0, len(fs.series))
		for k := range fs.series {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		f := &dto.MetricFamily{Name: fs.fam.Name, Help: fs.fam.Help, Type: fs.fam.Type}
		for _, k := range keys {
			f.Metric = append(f.Metric, fs.series[k])
		}
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out
}

func labelKey(labels []*dto.LabelPair) string {
	var b strings.Builder
	for _, l := range labels {
		b.WriteString(l.GetName())
		b.WriteByte(0)
		b.WriteString(l.GetValue())
		b.WriteByte(0)
	}
	return b.String()
}

// sum returns acc + s as a new metric (acc may be nil). Timestamps,
// exemplars and creation times are left out: a sum has none of its own.
func sum(acc, s *dto.Metric, t dto.MetricType) *dto.Metric {
	out := &dto.Metric{}
	if acc != nil {
		out.Label = acc.Label
	} else {
		for _, l := range s.Label {
			out.Label = append(out.Label, &dto.LabelPair{Name: l.Name, Value: l.Value})
		}
	}
	switch t {
	case dto.MetricType_COUNTER:
		out.Counter = &dto.Counter{Value: proto.Float64(acc.GetCounter().GetValue() + s.GetCounter().GetValue())}
	case dto.MetricType_GAUGE:
		out.Gauge = &dto.Gauge{Value: proto.Float64(acc.GetGauge().GetValue() + s.GetGauge().GetValue())}
	case dto.MetricType_UNTYPED:
		out.Untyped = &dto.Untyped{Value: proto.Float64(acc.GetUntyped().GetValue() + s.GetUntyped().GetValue())}
	case dto.MetricType_HISTOGRAM:
		a, h := acc.GetHistogram(), s.GetHistogram()
		out.Histogram = &dto.Histogram{
			SampleCount: proto.Uint64(a.GetSampleCount() + h.GetSampleCount()),
			SampleSum:   proto.Float64(a.GetSampleSum() + h.GetSampleSum()),
		}
		// Every generation has the same buckets (the same code made them).
		counts := map[float64]uint64{}
		var bounds []float64
		for _, hb := range [][]*dto.Bucket{a.GetBucket(), h.GetBucket()} {
			for _, b := range hb {
				if _, seen := counts[b.GetUpperBound()]; !seen {
					bounds = append(bounds, b.GetUpperBound())
				}
				counts[b.GetUpperBound()] += b.GetCumulativeCount()
			}
		}
		slices.Sort(bounds)
		for _, ub := range bounds {
			out.Histogram.Bucket = append(out.Histogram.Bucket,
				&dto.Bucket{UpperBound: proto.Float64(ub), CumulativeCount: proto.Uint64(counts[ub])})
		}
	default:
		// Summaries cannot be summed; the relay has none. Keep the latest.
		out.Summary = s.Summary
	}
	return out
}
