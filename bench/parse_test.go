package bench

import (
	"net/url"
	"testing"
	"time"
)

func TestSpecRoundTrip(t *testing.T) {
	tests := []spec{
		{mode: modeSSE, seed: 1, n: 200, interval: time.Millisecond},
		{mode: modeJSON, seed: 1 << 63, n: 40, delay: 3 * time.Microsecond},
		{mode: modeAudio, seed: 5, n: 16, size: 4096, failAt: 8},
		{mode: modeSSE, seed: 9, n: 5, hold: "memory-relay-1 &x"},
		{mode: modeSSE, seed: 2, n: 200, interval: time.Millisecond, gzip: true},
	}
	for _, want := range tests {
		q, err := url.ParseQuery(want.query())
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseSpec(q)
		if err != nil {
			t.Fatalf("%+v: %v", want, err)
		}
		if got != want {
			t.Errorf("round trip of %+v gave %+v", want, got)
		}
	}
}

func TestParseSpecRejects(t *testing.T) {
	for _, q := range []string{
		"mode=video&seed=1&n=1",
		"mode=sse&seed=x&n=1",
		"mode=sse&seed=1&n=-1",
		"mode=sse&seed=1&n=100001",
		"mode=sse&seed=1&n=1&interval=x",
		"mode=audio&seed=1&n=1&size=2000000",
	} {
		v, _ := url.ParseQuery(q)
		if _, err := parseSpec(v); err == nil {
			t.Errorf("parseSpec(%q) accepted it", q)
		}
	}
}

func TestStamp(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{`{"i":3,"t":1764100000123456789,"x":1}`, 1764100000123456789, true},
		{`{"t":0}`, 0, true},
		{`{"t":}`, 0, false},
		{`{"i":3}`, 0, false},
		{`{"t":12345678901234567890}`, 0, false},
	}
	for _, tt := range tests {
		got, err := stamp([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("stamp(%s) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestPayloadsCarryOneStamp(t *testing.T) {
	const ts = 1764100000123456789
	for name, p := range map[string][]byte{
		"chunk":      appendChunk(nil, 42, 3, ts),
		"usage":      appendUsageChunk(nil, 42, 10, ts),
		"completion": appendCompletion(nil, 42, 40, ts),
	} {
		got, err := stamp(p)
		if err != nil || got != ts {
			t.Errorf("%s: stamp %d, %v", name, got, err)
		}
	}
}

func TestQuantile(t *testing.T) {
	s := samples{5, 1, 4, 2, 3, 6, 7, 8, 9, 10}
	tests := []struct {
		q    float64
		want time.Duration
	}{{0, 1}, {0.5, 5}, {0.9, 9}, {0.99, 10}, {1, 10}}
	for _, tt := range tests {
		if got := s.quantile(tt.q); got != tt.want {
			t.Errorf("quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if got := (samples{}).p99(); got != 0 {
		t.Errorf("p99 of no samples = %v, want 0", got)
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		line string
		want time.Duration
		ok   bool
	}{
		{"1234 (relay bench) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 8 0 123 456 789", 3 * time.Second, true},
		{"1234 (a) b) R 1 1 1 0 -1 0 0 0 0 0 7 3 0 0", 100 * time.Millisecond, true},
		{"1234 (x) S 1", 0, false},
		{"no parenthesis", 0, false},
	}
	for _, tt := range tests {
		got, err := parseStatCPU([]byte(tt.line))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseStatCPU(%q) = %v, %v; want %v, ok %v", tt.line, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	tests := []struct {
		status string
		want   int64
		ok     bool
	}{
		{"Name:\trelay\nVmPeak:\t  2000 kB\nVmRSS:\t   1500 kB\nThreads:\t4\n", 1500 << 10, true},
		{"Name:\trelay\n", 0, false},
		{"VmRSS:\t 12 MB\n", 0, false},
	}
	for _, tt := range tests {
		got, err := parseVmRSS([]byte(tt.status))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseVmRSS(%q) = %d, %v; want %d, ok %v", tt.status, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseVmHWM(t *testing.T) {
	status := []byte("Name:\trelay\nVmHWM:\t  2048 kB\nVmRSS:\t   1500 kB\n")
	if got, err := parseStatusKB(status, "VmHWM"); err != nil || got != 2048<<10 {
		t.Errorf("VmHWM = %d, %v; want %d", got, err, 2048<<10)
	}
	if got, err := parseStatusKB(status, "VmPeak"); err == nil {
		t.Errorf("VmPeak is absent, got %d", got)
	}
}

func TestMetricValue(t *testing.T) {
	exp := []byte("# HELP relay_records_dropped_total x\n# TYPE relay_records_dropped_total counter\n" +
		"relay_records_dropped_total 3\nrelay_records_dropped_total_other 9\nrelay_requests_total{route=\"a\"} 5\n")
	if v, ok := metricValue(exp, "relay_records_dropped_total"); !ok || v != 3 {
		t.Errorf("got %v, %v; want 3, true", v, ok)
	}
	if _, ok := metricValue(exp, "relay_missing"); ok {
		t.Error("found a metric that is not there")
	}
}

func TestParseCoreBusy(t *testing.T) {
	stat := []byte("cpu  100 0 50 1000 5 0 1 0 0 0\ncpu0 60 0 30 500 2 0 1 0 0 0\ncpu1 40 1 20 500 3 2 0 7 0 0\nintr 1\n")
	tests := []struct {
		core int
		want time.Duration
		ok   bool
	}{
		{0, 910 * time.Millisecond, true},
		{1, 700 * time.Millisecond, true},
		{2, 0, false},
	}
	for _, tt := range tests {
		got, err := parseCoreBusy(stat, tt.core)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("core %d: %v, %v; want %v, ok %v", tt.core, got, err, tt.want, tt.ok)
		}
	}
}
