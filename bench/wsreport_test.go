package bench

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestWSTargetThresholds pins the WebSocket targets to issue #12's
// figures: added latency per message p50 ≤ bare + 5 µs, CPU per message
// ≤ 1.15 × bare, memory per idle session ≤ 1.1 × bare, every concurrent
// session intact. Each failing case sits just past its threshold.
func TestWSTargetThresholds(t *testing.T) {
	lat := func(d time.Duration) samples { return samples{d, d, d} }
	for _, tc := range []struct {
		name        string
		addedOver   time.Duration // relay's added latency over bare's
		cpu, mem    float64       // relay / bare
		intact      int64
		wantLatency string
		wantCPU     string
		wantMem     string
		wantScale   string
	}{
		{"within", 4 * time.Microsecond, 1.14, 1.09, 5000, "PASS", "PASS", "PASS", "PASS"},
		{"just past", 6 * time.Microsecond, 1.16, 1.11, 4999, "MISS", "MISS", "MISS", "MISS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &harness{}
			r := &h.res.ws
			direct, bare := 100*time.Microsecond, 130*time.Microsecond
			r.oneWay = [3]samples{lat(direct), lat(bare), lat(bare + tc.addedOver)}
			r.rtt = [3]samples{lat(direct), lat(bare), lat(bare + tc.addedOver)}
			const echoes = 100000
			r.cpuN = [3]int64{echoes, echoes, echoes}
			bareCPU := time.Second
			r.cpu = [3]usage{{}, {cpu: bareCPU}, {cpu: time.Duration(float64(bareCPU) * tc.cpu)}}
			const perSession = 40 << 10
			point := func(f float64) memPoint {
				return memPoint{streams: 5000, rss: 100<<20 + int64(f*perSession*5000)}
			}
			r.mem = []memResult{{arm: armBare, baseRSS: 100 << 20, points: []memPoint{point(1)}},
				{arm: armRelay, baseRSS: 100 << 20, points: []memPoint{point(tc.mem)}}}
			r.scale = []scaleResult{{arm: armBare, streams: 5000, completed: 5000},
				{arm: armRelay, streams: 5000, completed: tc.intact, failed: 5000 - tc.intact}}

			got := map[string]target{}
			for _, x := range h.wsTargets() {
				got[x.name] = x
			}
			for _, c := range []struct{ name, verdict, want string }{
				{"WebSocket: added latency per message p50, upstream → client", tc.wantLatency, "≤ bare + 5.0 µs"},
				{"WebSocket: added round trip per echoed message p50", tc.wantLatency, "≤ bare + 5.0 µs"},
				{"WebSocket: CPU per message (echo, 50 sessions)", tc.wantCPU, "≤ 1.15 × bare"},
				{"WebSocket: memory per idle session, 5000 open", tc.wantMem, "≤ 1.10 × bare"},
				{"WebSocket: 5000 concurrent sessions through the relay", tc.wantScale, "all intact"},
			} {
				x, ok := got[c.name]
				if !ok {
					t.Fatalf("no target %q among %v", c.name, got)
				}
				if x.verdict() != c.verdict || x.want != c.want {
					t.Errorf("%s: %s (%s, wanted %s), want %s against %q", c.name, x.verdict(), x.versus, x.want, c.verdict, c.want)
				}
			}
			if len(got) != 5 {
				t.Errorf("%d WebSocket targets, want 5", len(got))
			}
		})
	}
	// Without figures, no target claims a verdict.
	if ts := (&harness{}).wsTargets(); len(ts) != 0 {
		t.Errorf("targets without figures: %+v", ts)
	}
}

// TestRelayInstanceWSUsage: the session records must sum to the usage
// the upstream reported, and the check says which way they differ.
func TestRelayInstanceWSUsage(t *testing.T) {
	want := sessionUsage(5, 3, 20)
	rec := func(u wsUsage) string {
		return `{"request_id":"r","kind":"websocket","status":101,"usage":{"input_tokens":` + itoa(u.input()) +
			`,"output_tokens":` + itoa(u.output()) + `,"cached_input_tokens":` + itoa(u.cached) +
			`,"audio_input_tokens":` + itoa(u.inAudio) + `,"audio_output_tokens":` + itoa(u.outAudio) + `}}` + "\n"
	}
	half := responseUsage(5, 0, 20)
	for _, tc := range []struct {
		name    string
		records string
		sent    int64
		wantErr string
	}{
		{"sums match", rec(half) + rec(wsUsage{want.inText - half.inText, want.inAudio - half.inAudio, want.cached - half.cached,
			want.outText - half.outText, want.outAudio - half.outAudio}) + `{"kind":"chat"}` + "\n", 3, ""},
		{"a response missing", rec(half) + `{"kind":"chat"}` + "\n", 2, "session records sum to usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "records.jsonl")
			if err := os.WriteFile(path, []byte(tc.records), 0o600); err != nil {
				t.Fatal(err)
			}
			ri := &relayInstance{name: "main", file: path, sent: tc.sent, haveDropped: true, wsWant: want}
			ri.check()
			switch {
			case tc.wantErr == "" && ri.err != nil:
				t.Errorf("check: %v", ri.err)
			case tc.wantErr != "" && (ri.err == nil || !strings.Contains(ri.err.Error(), tc.wantErr)):
				t.Errorf("check: %v, want an error containing %q", ri.err, tc.wantErr)
			}
		})
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
