package bench

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

// profileSummary is what the report shows of the relay's CPU profile.
type profileSummary struct {
	path    string
	wall    time.Duration // how long the profile ran
	sampled time.Duration // CPU time sampled
	flat    []hotSpot     // functions by their own time
	cum     []hotSpot     // functions of the relay's package by time in them and their callees
	areas   []hotSpot     // features, by time in their code and callees
}

type hotSpot struct {
	name string
	t    time.Duration
}

const relayPkg = "github.com/streamrelay/relay."

// profileAreas attribute a stack to a feature when any of its frames
// contains the pattern. A stack can belong to several areas.
func profileAreas() []struct{ label, pattern string } {
	return []struct{ label, pattern string }{
		{"Relay handler, total (ServeHTTP)", relayPkg + "(*Relay).ServeHTTP"},
		{"Relaying the response body (relayResponse)", relayPkg + "(*exchange).relayResponse"},
		{"Upstream round trip (Transport.RoundTrip)", "net/http.(*Transport).roundTrip"},
		{"Building the upstream request (upstreamRequest)", relayPkg + "(*exchange).upstreamRequest"},
		{"Authentication (staticKeys)", relayPkg + "(*staticKeys).Authenticate"},
		{"Rate limiter (MemoryLimiter)", relayPkg + "(*MemoryLimiter)"},
		{"Route resolution (RouteTable.Resolve)", relayPkg + "(*RouteTable).Resolve"},
		{"Finishing: metrics, settlement, record (exchange.finish)", relayPkg + "(*exchange).finish"},
		{"SSE observation (sseParser)", relayPkg + "(*sseParser)"},
		{"Usage extraction (internal/provider)", "github.com/streamrelay/relay/internal/provider."},
		{"Write-deadline upkeep (extendWriteDeadline)", relayPkg + "(*exchange).extendWriteDeadline"},
		{"Async record worker (AsyncRecorder.run)", relayPkg + "(*AsyncRecorder).run"},
		{"JSON encoding of records (appendRecordJSON)", relayPkg + "appendRecordJSON"},
		{"Upstream timeouts: timer and idle watch (attempt)", relayPkg + "(*attempt)"},
		{"Metrics scrape (promhttp)", "prometheus/promhttp."},
		{"Prometheus collectors (WithLabelValues, Observe, Inc)", "prometheus.(*"},
		{"Context creation (context.With…)", "context.With"},
		{"Response header sorting and writing (net/http)", "net/http.(*chunkWriter).writeHeader"},
		{"Garbage collector (background mark)", "runtime.gcBgMarkWorker"},
		{"Allocation (mallocgc)", "runtime.mallocgc"},
		{"Scheduler (findRunnable, netpoll)", "runtime.findRunnable"},
		{"Syscalls (read, write, epoll)", "internal/runtime/syscall/"},
	}
}

// readProfile summarises a CPU profile.
func readProfile(path string) (*profileSummary, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		return nil, err
	}
	vi := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" && st.Unit == "nanoseconds" {
			vi = i
		}
	}
	if vi < 0 {
		return nil, fmt.Errorf("%s is not a CPU profile", path)
	}
	areas := profileAreas()
	flat := map[string]int64{}
	cum := map[string]int64{}
	area := make([]int64, len(areas))
	var total int64
	for _, s := range p.Sample {
		v := s.Value[vi]
		total += v
		var frames []string
		for _, loc := range s.Location {
			// Lines are innermost first: inlined calls come before their caller.
			for _, ln := range loc.Line {
				if ln.Function != nil {
					frames = append(frames, ln.Function.Name)
				}
			}
		}
		if len(frames) > 0 {
			flat[frames[0]] += v
		}
		seen := map[string]bool{}
		for _, fn := range frames {
			if !seen[fn] && strings.HasPrefix(fn, relayPkg) {
				cum[fn] += v
			}
			seen[fn] = true
		}
		for i, a := range areas {
			for _, fn := range frames {
				if strings.Contains(fn, a.pattern) {
					area[i] += v
					break
				}
			}
		}
	}
	sum := &profileSummary{path: path, wall: time.Duration(p.DurationNanos), sampled: time.Duration(total)}
	sum.flat = top(flat, 25)
	sum.cum = top(cum, 25)
	for i, a := range areas {
		sum.areas = append(sum.areas, hotSpot{a.label, time.Duration(area[i])})
	}
	return sum, nil
}

func top(m map[string]int64, n int) []hotSpot {
	out := make([]hotSpot, 0, len(m))
	for k, v := range m {
		out = append(out, hotSpot{k, time.Duration(v)})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].t != out[j].t {
			return out[i].t > out[j].t
		}
		return out[i].name < out[j].name
	})
	return out[:min(n, len(out))]
}

func pct(part, whole time.Duration) string {
	if whole <= 0 {
		return "0.0%"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(part)/float64(whole))
}

func (h *harness) profileSection(w func(string, ...any)) {
	p := h.res.profile
	w("## Relay CPU profile\n\n")
	w("`%s`: %v of CPU sampled over %v (the whole life of the main relay process: every scenario of "+
		"the run but memory, which uses fresh processes). Percentages are of the sampled CPU. Inspect with "+
		"`go tool pprof -top %s`.\n\n", p.path, p.sampled.Round(time.Millisecond), p.wall.Round(time.Second), p.path)
	w("### By feature (time in its code and callees; a stack may count in several)\n\n| Area | CPU | Share |\n|---|---|---|\n")
	for _, a := range p.areas {
		w("| %s | %v | %s |\n", a.name, a.t.Round(time.Millisecond), pct(a.t, p.sampled))
	}
	w("\n### Top functions by own (flat) time\n\n| Function | Flat | Share |\n|---|---|---|\n")
	for _, f := range p.flat {
		w("| `%s` | %v | %s |\n", f.name, f.t.Round(time.Millisecond), pct(f.t, p.sampled))
	}
	w("\n### Relay functions by cumulative time\n\n| Function | Cum | Share |\n|---|---|---|\n")
	for _, f := range p.cum {
		w("| `%s` | %v | %s |\n", strings.TrimPrefix(f.name, relayPkg), f.t.Round(time.Millisecond), pct(f.t, p.sampled))
	}
	w("\n")
}
