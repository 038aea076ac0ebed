package bench

import (
	"strings"
	"testing"
	"time"
)

// TestTargetThresholds pins the CPU and throughput targets to issue #10's
// figures: 1.10 × bare CPU per JSON request and per stream, 0.92 × bare
// JSON throughput. The failing cases sit between the old thresholds (1.15,
// 0.9) and the new ones, so a reverted threshold fails here.
func TestTargetThresholds(t *testing.T) {
	const n = 1000
	bareCPU, bareWall := 100*time.Millisecond, time.Second
	scaled := func(d time.Duration, f float64) time.Duration { return time.Duration(float64(d) * f) }
	for _, tc := range []struct {
		name                          string
		cpu, stream                   float64 // relay CPU / bare CPU
		tput                          float64 // relay req/s / bare req/s
		wantCPU, wantStream, wantTput string
	}{
		{name: "within", cpu: 1.09, stream: 1.09, tput: 0.93,
			wantCPU: "PASS", wantStream: "PASS", wantTput: "PASS"},
		{name: "between the old and the new thresholds", cpu: 1.11, stream: 1.12, tput: 0.91,
			wantCPU: "MISS", wantStream: "MISS", wantTput: "MISS"},
		{name: "far off", cpu: 1.3, stream: 1.2, tput: 0.8,
			wantCPU: "MISS", wantStream: "MISS", wantTput: "MISS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &harness{}
			h.res.tput = []tputResult{{conc: 16, reqs: [3]int64{0, n, n}, arms: [3]usage{{},
				{cpu: bareCPU, wall: bareWall},
				// The same requests in a longer wall time: throughput scales by 1/wall.
				{cpu: scaled(bareCPU, tc.cpu), wall: scaled(bareWall, 1/tc.tput)}}}}
			h.res.stream.longN = [3]int64{0, n, n}
			h.res.stream.long = [3]usage{{}, {cpu: bareCPU}, {cpu: scaled(bareCPU, tc.stream)}}

			got := map[string]target{}
			for _, x := range h.targets() {
				got[x.name] = x
			}
			for _, c := range []struct{ name, verdict, want string }{
				{"CPU per JSON request, c=16", tc.wantCPU, "≤ 1.10 × bare"},
				{"CPU per streamed request (200 events, c=50)", tc.wantStream, "≤ 1.10 × bare"},
				{"Throughput, JSON, c=16", tc.wantTput, "≥ 0.92 × bare"},
			} {
				x, ok := got[c.name]
				if !ok {
					t.Fatalf("no target %q among %d", c.name, len(got))
				}
				if x.verdict() != c.verdict || x.want != c.want {
					t.Errorf("%s: %s (%s, wanted %s), want %s against %q", c.name, x.verdict(), x.versus, x.want, c.verdict, c.want)
				}
			}
			// Nothing else was measured, so nothing else may claim a verdict.
			for name, x := range got {
				if x.measured && !strings.HasPrefix(name, "CPU per") && !strings.HasPrefix(name, "Throughput") {
					t.Errorf("%s: measured without figures", name)
				}
			}
		})
	}
}
