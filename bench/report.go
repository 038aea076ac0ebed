package bench

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// target is one line of the targets table.
type target struct {
	name        string
	relay, bare string
	versus      string // the relay against the bare proxy, as the target reads
	want        string
	pass        bool
	measured    bool
}

func (t target) verdict() string {
	switch {
	case !t.measured:
		return "n/a"
	case t.pass:
		return "PASS"
	default:
		return "MISS"
	}
}

// report renders the run as markdown.
func (h *harness) report() string {
	var b strings.Builder
	r := &h.res
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }

	w("# Stream Relay benchmarks\n\n")
	w("Mode **%s**, %s, %s.\n\n", h.cfg.Mode, r.started.UTC().Format("2006-01-02 15:04 MST"),
		r.finished.Sub(r.started).Round(time.Second))
	w("Command: `%s`\n\n", h.cfg.Command)
	h.machine(w)

	if h.plan.timings {
		ts := h.targets()
		w("## Targets (relay with everything on versus the bare proxy, same run)\n\n")
		w("| Target | Relay | Bare | Relay vs bare | Wanted | Result |\n|---|---|---|---|---|---|\n")
		for _, t := range ts {
			if t.measured {
				w("| %s | %s | %s | %s | %s | %s |\n", t.name, t.relay, t.bare, t.versus, t.want, t.verdict())
			}
		}
		w("\nAdded figures are an arm's minus the direct arm's, so they are what the proxy hop costs; the latency " +
			"added by the attack is under attack minus alone, same server. " +
			"Targets are reported, never asserted: only fidelity fails a run.\n\n")
		if h.wants(scenarioLatency) {
			h.latencySection(w)
		}
		if h.wants(scenarioThroughput) {
			h.throughputSection(w)
		}
		if h.wants(scenarioStreaming) {
			h.streamingSection(w)
		}
		if h.wants(scenarioMemory) {
			h.memorySection(w)
		}
	}
	h.scaleSection(w)
	if len(r.hostile) > 0 {
		h.hostileSection(w)
	}
	h.wsSection(w)
	h.fidelitySection(w)
	if r.profile != nil {
		h.profileSection(w)
	}
	return b.String()
}

func (h *harness) machine(w func(string, ...any)) {
	r := &h.res
	model := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	pin := "none (taskset unavailable, fewer than 2 CPUs, or -no-pin)"
	if h.taskset != "" {
		pin = "server under test on core 1 (`taskset -c 1`); mock upstream on core 0"
		if os.Getenv(pinnedEnv) != "" {
			pin += "; driver on core 0"
		} else {
			pin += "; driver unpinned"
		}
	}
	if h.nice != "" {
		pin += fmt.Sprintf("; every process at niceness %d (`nice -n %d`)", h.cfg.Nice, h.cfg.Nice)
	}
	procs := make([]string, 0, 3)
	for _, role := range []string{roleUpstream, roleBare, roleRelay} {
		if st, ok := r.procs[role]; ok {
			procs = append(procs, fmt.Sprintf("%s %d", role, st.Gomaxprocs))
		}
	}
	procs = append(procs, fmt.Sprintf("driver %d", runtime.GOMAXPROCS(0)))
	w("| Machine | |\n|---|---|\n")
	w("| CPUs (nproc) | %d |\n| CPU model | %s |\n| Go | %s |\n| Kernel | %s |\n", onlineCPUs(), model, runtime.Version(), kernel)
	w("| Pinning | %s |\n| GOMAXPROCS | %s |\n| Open-file limit | %d |\n", pin, strings.Join(procs, ", "), fileLimit())
	w("| Load average (1 min) at start, end | %s, %s |\n", r.loadStart, r.loadEnd)
	w("| Source | %s |\n\n", revision())
}

// revision names the git commit the harness runs in, and whether tracked
// files differ from it, or "unknown" outside a repository.
func revision() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	rev := "commit " + strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
		rev += " with uncommitted changes"
	}
	return rev
}

// perK is CPU seconds per 1,000 units.
func perK(cpu time.Duration, n int64) float64 {
	if n == 0 {
		return 0
	}
	return cpu.Seconds() / float64(n) * 1000
}

func perN(x uint64, n int64) float64 {
	if n == 0 {
		return 0
	}
	return float64(x) / float64(n)
}

// eventAllocs is the allocations each further event of a stream costs,
// from the difference between 200-event and 20-event streams.
func (s *streamResult) eventAllocs(i int) float64 {
	long, short := perN(s.allocLong[i].allocs, s.allocLongN[i]), perN(s.allocShort[i].allocs, s.allocShortN[i])
	return (long - short) / float64(streamEvents-shortEvents)
}

// The ceilings for the relay against the bare proxy: server CPU per
// JSON request and per stream, and the floor for JSON throughput. One
// source for the pass rule and the "Wanted" column.
const (
	maxCPURatio        = 1.10
	minThroughputRatio = 0.92
)

func (h *harness) targets() []target {
	cpuWant := fmt.Sprintf("≤ %.2f × bare", maxCPURatio)
	r := &h.res
	var ts []target
	added := func(s [3]samples, q float64) (relay, bare time.Duration, ok bool) {
		if len(s[0]) == 0 || len(s[1]) == 0 || len(s[2]) == 0 {
			return 0, 0, false
		}
		return s[2].quantile(q) - s[0].quantile(q), s[1].quantile(q) - s[0].quantile(q), true
	}
	for _, x := range []struct {
		what string
		s    [3]samples
	}{{"JSON", r.latency.jsonTTFB}, {"SSE", r.latency.sseTTFB}} {
		rl, br, ok := added(x.s, 0.5)
		ts = append(ts, target{name: "Added TTFB p50, " + x.what, relay: us(rl), bare: us(br), versus: signedUS(rl - br),
			want: "≤ bare + 50 µs", pass: rl <= br+50*time.Microsecond, measured: ok})
		rl, br, ok = added(x.s, 0.99)
		ts = append(ts, target{name: "Added TTFB p99, " + x.what, relay: us(rl), bare: us(br), versus: ratio(float64(rl), float64(br)),
			want: "≤ 1.5 × bare", pass: float64(rl) <= 1.5*float64(br), measured: ok})
	}
	rl, br, ok := added(r.latency.events, 0.5)
	ts = append(ts, target{name: "Added latency per SSE event p50", relay: us(rl), bare: us(br), versus: signedUS(rl - br),
		want: "≤ bare + 5 µs", pass: rl <= br+5*time.Microsecond, measured: ok})

	for _, t := range r.tput {
		rc, bc := perK(t.arms[2].cpu, t.reqs[2]), perK(t.arms[1].cpu, t.reqs[1])
		ts = append(ts, target{name: fmt.Sprintf("CPU per JSON request, c=%d", t.conc),
			relay: fmt.Sprintf("%.3f s/1k", rc), bare: fmt.Sprintf("%.3f s/1k", bc), versus: ratio(rc, bc),
			want: cpuWant, pass: rc <= maxCPURatio*bc, measured: bc > 0})
	}
	s := &r.stream
	rc, bc := perK(s.long[2].cpu, s.longN[2]), perK(s.long[1].cpu, s.longN[1])
	ts = append(ts, target{name: "CPU per streamed request (200 events, c=50)",
		relay: fmt.Sprintf("%.3f s/1k", rc), bare: fmt.Sprintf("%.3f s/1k", bc), versus: ratio(rc, bc),
		want: cpuWant, pass: rc <= maxCPURatio*bc, measured: bc > 0})
	for _, t := range r.tput {
		rr, brr := rps(t.reqs[2], t.arms[2].wall), rps(t.reqs[1], t.arms[1].wall)
		ts = append(ts, target{name: fmt.Sprintf("Throughput, JSON, c=%d", t.conc),
			relay: fmt.Sprintf("%.0f req/s", rr), bare: fmt.Sprintf("%.0f req/s", brr), versus: ratio(rr, brr),
			want: fmt.Sprintf("≥ %.2f × bare", minThroughputRatio), pass: rr >= minThroughputRatio*brr, measured: brr > 0})
	}
	for i := 0; i+1 < len(r.mem); i += 2 {
		bm, rm := r.mem[i], r.mem[i+1]
		for k := range min(len(bm.points), len(rm.points)) {
			bp, rp := bm.points[k], rm.points[k]
			bs, rs := perStream(bm.baseRSS, bp), perStream(rm.baseRSS, rp)
			ts = append(ts, target{name: fmt.Sprintf("Memory per idle stream, %d open, %s upstream", rp.streams, rm.proto),
				relay: kib(rs), bare: kib(bs), versus: ratio(rs, bs),
				want: "≤ bare", pass: rs <= bs, measured: bs > 0})
		}
	}
	ea, eb := s.eventAllocs(2), s.eventAllocs(1)
	ts = append(ts, target{name: "Allocations per SSE event, steady state (relay's own: relay − bare)", relay: fmt.Sprintf("%.3f", ea),
		bare: fmt.Sprintf("%.3f", eb), versus: fmt.Sprintf("%+.3f", ea-eb),
		want: "0 (relay − bare < 0.05)", pass: ea-eb < 0.05, measured: s.allocLongN[2] > 0 && s.allocShortN[2] > 0})
	var ra, ba uint64
	var rn, bn int64
	for _, t := range r.tput {
		ra, ba = ra+t.arms[2].allocs, ba+t.arms[1].allocs
		rn, bn = rn+t.reqs[2], bn+t.reqs[1]
	}
	rpa, bpa := perN(ra, rn), perN(ba, bn)
	ts = append(ts, target{name: "Allocations per JSON request", relay: fmt.Sprintf("%.1f", rpa), bare: fmt.Sprintf("%.1f", bpa),
		versus: ratio(rpa, bpa), want: "≤ 1.5 × bare", pass: rpa <= 1.5*bpa, measured: bpa > 0})
	ts = append(ts, h.hostileTargets()...)
	ts = append(ts, h.wsTargets()...)
	for _, sc := range r.scale {
		if sc.arm != armRelay {
			continue
		}
		ts = append(ts, target{name: fmt.Sprintf("%d concurrent streams through the relay, %s upstream", sc.streams, sc.proto),
			relay: fmt.Sprintf("%d of %d intact", sc.completed, sc.streams), bare: "", versus: "",
			want: "none truncated", pass: sc.completed == int64(sc.streams) && sc.failed == 0, measured: true})
	}
	return ts
}

func rps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// perStream is the RSS each open stream added, in bytes.
func perStream(base int64, p memPoint) float64 {
	if p.streams == 0 {
		return 0
	}
	return float64(p.rss-base) / float64(p.streams)
}

func (h *harness) latencySection(w func(string, ...any)) {
	r := &h.res.latency
	p := h.plan
	w("## 1. Latency at concurrency 1\n\n")
	w("%d interleaved rounds; per arm and round: %d JSON requests (TTFB = time to the response headers), "+
		"%d 3-event streams (TTFB = time to the first event), and %d streams of %d events %v apart "+
		"(event latency = receive time minus the event's send stamp).\n\n",
		p.rounds, p.jsonTTFB, p.sseTTFB, p.eventStreams, streamEvents, eventInterval)
	w("| Measure | Arm | Samples | p50 | p99 | Added p50 | Added p99 |\n|---|---|---|---|---|---|---|\n")
	for _, x := range []struct {
		what string
		s    [3]samples
	}{{"TTFB, JSON", r.jsonTTFB}, {"TTFB, SSE", r.sseTTFB}, {"Event latency", r.events}} {
		for i, name := range []string{armDirect, armBare, armRelay} {
			s := x.s[i]
			addedP50, addedP99 := "", ""
			if i > 0 && len(x.s[0]) > 0 {
				addedP50, addedP99 = signedUS(s.p50()-x.s[0].p50()), signedUS(s.p99()-x.s[0].p99())
			}
			w("| %s | %s | %d | %s | %s | %s | %s |\n", x.what, name, len(s), us(s.p50()), us(s.p99()), addedP50, addedP99)
		}
	}
	w("\n")
}

func (h *harness) throughputSection(w func(string, ...any)) {
	w("## 2. Non-streaming throughput\n\n")
	w("Closed loop, %d round(s) of %v per arm; each request is a %d-token chat completion (~600-byte body). "+
		"Server CPU is utime+stime of the server process from /proc; \"load CPU\" is the mock upstream's plus the "+
		"driver's (they share core 0), which shows whether the server or the load side was the bottleneck. "+
		"\"Others on core 1\" is the share of core 1 that processes other than the server used meanwhile (other work on "+
		"the machine; it should be near 0%%). \"req/s per server core\" is requests divided by server CPU seconds: the rate the "+
		"server would reach with a core to itself.\n\n",
		h.plan.tputRounds, h.plan.tputDur, jsonTokens)
	w("| Concurrency | Arm | Requests | req/s | Server CPU s / 1k req | Server core use | Others on core 1 | req/s per server core | Load CPU s / 1k req | Allocs / req | KiB alloc / req |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, t := range h.res.tput {
		for i, name := range []string{armDirect, armBare, armRelay} {
			u := t.arms[i]
			srv, use, oth, perCore, allocs, kb := "—", "—", "—", "—", "—", "—"
			if i > 0 {
				oth = others(u)
				srv = fmt.Sprintf("%.3f", perK(u.cpu, t.reqs[i]))
				use = fmt.Sprintf("%.0f%%", 100*u.cpu.Seconds()/u.wall.Seconds())
				if u.cpu > 0 {
					perCore = fmt.Sprintf("%.0f", float64(t.reqs[i])/u.cpu.Seconds())
				}
				allocs = fmt.Sprintf("%.1f", perN(u.allocs, t.reqs[i]))
				kb = fmt.Sprintf("%.1f", perN(u.allocBytes, t.reqs[i])/1024)
			}
			w("| %d | %s | %d | %.0f | %s | %s | %s | %s | %.3f | %s | %s |\n", t.conc, name, t.reqs[i], rps(t.reqs[i], u.wall),
				srv, use, oth, perCore, perK(u.loadCPU, t.reqs[i]), allocs, kb)
		}
	}
	w("\n")
}

func (h *harness) streamingSection(w func(string, ...any)) {
	s := &h.res.stream
	w("## 3. Streaming CPU\n\n")
	w("%d round(s); per arm and round %d streams of %d events %v apart at concurrency %d. Allocations per event "+
		"come from a separate measurement at concurrency %d (where events seldom share a read): %d streams of %d events "+
		"%v apart against %d streams of %d events %v apart, the same duration, so that allocations made by the clock "+
		"cancel out (metrics scraping pauses meanwhile); the difference is divided by the %d extra events.\n\n",
		h.plan.streamRounds, h.plan.streamCount, streamEvents, eventInterval, streamConc,
		allocConc, h.plan.allocStreams, streamEvents, eventInterval, h.plan.allocStreams, shortEvents,
		shortInterval.Round(10*time.Microsecond), streamEvents-shortEvents)
	w("| Arm | Streams | Wall s | Server CPU s / 1k streams | Server core use | Others on core 1 | Load CPU s / 1k streams | Allocs / stream | Allocs / event |\n")
	w("|---|---|---|---|---|---|---|---|---|\n")
	for i, name := range []string{armDirect, armBare, armRelay} {
		u := s.long[i]
		srv, use, oth, allocs, ev := "—", "—", "—", "—", "—"
		if i > 0 {
			oth = others(u)
			srv = fmt.Sprintf("%.3f", perK(u.cpu, s.longN[i]))
			use = fmt.Sprintf("%.0f%%", 100*u.cpu.Seconds()/u.wall.Seconds())
			allocs = fmt.Sprintf("%.1f", perN(u.allocs, s.longN[i]))
			ev = fmt.Sprintf("%.3f", s.eventAllocs(i))
		}
		w("| %s | %d | %.1f | %s | %s | %s | %.3f | %s | %s |\n", name, s.longN[i], u.wall.Seconds(), srv, use,
			oth, perK(u.loadCPU, s.longN[i]), allocs, ev)
	}
	w("\n")
	if s.gzipN[1] == 0 && s.gzipN[2] == 0 {
		return
	}
	w("**Gzip-compressed streams.** The same streams, asked for with `Accept-Encoding: gzip`; the upstream compresses " +
		"them and flushes its compressor after each event, as providers that compress streams do. The bare proxy passes " +
		"the compressed bytes on; the relay passes them on too and decodes a copy to observe usage. The driver checks " +
		"every decoded event and the compressed bytes themselves (rebuilt from the events' stamps).\n\n")
	w("| Arm | Streams | Wall s | Server CPU s / 1k streams | Server core use | Load CPU s / 1k streams | Allocs / stream |\n")
	w("|---|---|---|---|---|---|---|\n")
	for i, name := range []string{armDirect, armBare, armRelay} {
		u := s.gzip[i]
		srv, use, allocs := "—", "—", "—"
		if i > 0 {
			srv = fmt.Sprintf("%.3f", perK(u.cpu, s.gzipN[i]))
			use = fmt.Sprintf("%.0f%%", 100*u.cpu.Seconds()/u.wall.Seconds())
			allocs = fmt.Sprintf("%.1f", perN(u.allocs, s.gzipN[i]))
		}
		w("| %s | %d | %.1f | %s | %s | %.3f | %s |\n", name, s.gzipN[i], u.wall.Seconds(), srv, use,
			perK(u.loadCPU, s.gzipN[i]), allocs)
	}
	// perK is CPU seconds per 1,000 streams: milliseconds per stream.
	rg, bg := perK(s.gzip[2].cpu, s.gzipN[2]), perK(s.gzip[1].cpu, s.gzipN[1])
	rp, bp := perK(s.long[2].cpu, s.longN[2]), perK(s.long[1].cpu, s.longN[1])
	w("\nServer CPU per gzip stream: relay %.0f µs, bare %.0f µs, relay − bare %+.0f µs (%s). Relay − bare for "+
		"plain streams: %+.0f µs; what decoding 200 events adds, the difference of the two: %+.0f µs per stream. "+
		"Both servers spend more CPU per gzip stream than per plain one, the bare proxy too, though it only passes "+
		"bytes on: the load side on core 0 (compressing, decoding, and re-compressing to check) saturates and paces "+
		"the streams differently; compare the two servers within a kind.\n\n",
		rg*1000, bg*1000, (rg-bg)*1000, ratio(rg, bg), (rp-bp)*1000, ((rg-bg)-(rp-bp))*1000)
}

func (h *harness) memorySection(w func(string, ...any)) {
	w("## 4. Memory per idle stream\n\n")
	w("Fresh server processes. Each stream gets its first event, then the upstream holds it open. RSS is VmRSS from " +
		"/proc; \"settled\" is after a GC that returns freed memory to the OS (debug.FreeOSMemory), \"raw\" before it. " +
		"Per-stream figures subtract the settled baseline. Live heap counts whole objects, RSS only the pages written: " +
		"a fresh 32 KiB copy buffer that holds one event is mostly untouched, so it counts 32 KiB of heap but about " +
		"4 KiB of RSS. Stacks are the goroutine stacks in use (runtime.MemStats.StackInuse), all resident.\n\n")
	w("| Arm | Upstream hop | Streams | Held at upstream | Baseline RSS | RSS raw | RSS settled | Per stream (settled) | Per stream (raw) | Goroutines / stream | Live heap / stream | Stacks / stream |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, m := range h.res.mem {
		for _, p := range m.points {
			n := float64(p.streams)
			w("| %s | %s | %d | %d | %s | %s | %s | %s | %s | %.2f | %s | %s |\n", m.arm, m.proto, p.streams, p.held, mib(m.baseRSS),
				mib(p.rawRSS), mib(p.rss), kib(perStream(m.baseRSS, p)), kib(float64(p.rawRSS-m.baseRSS)/n),
				float64(int64(p.stats.Goroutines)-int64(m.baseStats.Goroutines))/n,
				kib(float64(int64(p.stats.HeapLive)-int64(m.baseStats.HeapLive))/n),
				kib(float64(int64(p.stats.StackInuse)-int64(m.baseStats.StackInuse))/n))
		}
	}
	w("\n")
}

func (h *harness) scaleSection(w func(string, ...any)) {
	if len(h.res.scale) == 0 {
		return
	}
	w("## 5. Concurrent streams\n\n")
	w("All streams open at once (the upstream holds each after its first event), then released and checked.\n\n")
	w("| Arm | Upstream hop | Streams | Held at upstream at peak | Intact | Failed | Time to open | Time to drain |\n|---|---|---|---|---|---|---|---|\n")
	for _, sc := range h.res.scale {
		w("| %s | %s | %d | %d | %d | %d | %v | %v |\n", sc.arm, sc.proto, sc.streams, sc.peakHeld, sc.completed, sc.failed,
			sc.openTime.Round(time.Millisecond), sc.drainTime.Round(time.Millisecond))
	}
	w("\n")
}

func (h *harness) fidelitySection(w func(string, ...any)) {
	r := &h.res
	w("## Fidelity\n\n")
	w("Every response is checked as it arrives: status, content type, each SSE event byte for byte (all but the send "+
		"stamp), event order and count, the usage chunk and [DONE], a content hash, and audio length and hash. "+
		"Streams the upstream cuts short must reach the client visibly cut (an error event or an aborted body). "+
		"The relay's records must number the requests it was sent, less those it counted as dropped, and hold no "+
		"credential. The relay's metrics were scraped %d times (%d failed).\n\n", h.scrapes.Load(), h.scrapeKO.Load())
	w("| Arm | Responses checked | Intact | Failed |\n|---|---|---|---|\n")
	for i, name := range []string{armDirect, armBare, armRelay} {
		w("| %s | %d | %d | %d |\n", name, r.checked[i]+r.bad[i], r.checked[i], r.bad[i])
	}
	w("\n| Relay process | Requests sent | Records written | Counted dropped | Check |\n|---|---|---|---|---|\n")
	for _, ri := range r.instances {
		res := "ok"
		if ri.err != nil {
			res = ri.err.Error()
		} else if ri.wsRecords > 0 {
			res = fmt.Sprintf("ok; %d WebSocket session records, their usage as the upstream reported it", ri.wsRecords)
		}
		w("| %s | %d | %d | %.0f | %s |\n", ri.name, ri.sent, ri.lines, ri.dropped, res)
	}
	keys, counts, examples := h.fails.summary()
	if len(keys) == 0 {
		w("\n**Fidelity: PASS** — no truncated or altered response.\n\n")
		return
	}
	w("\n**Fidelity: FAIL** — %d responses failed:\n\n", h.fails.count())
	for _, k := range keys {
		w("- %s: %d\n", k, counts[k])
	}
	w("\nFirst failures:\n\n")
	for _, e := range examples {
		w("- %s\n", strings.ReplaceAll(e, "\n", " "))
	}
	w("\n")
}

// others is the share of core 1 used by anything but the server under
// test during a window.
func others(u usage) string {
	if u.wall <= 0 || u.core1 == 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f%%", 100*max(0, (u.core1-u.cpu).Seconds())/u.wall.Seconds())
}

// hostileTargets compares the relay with the bare proxy under attack.
func (h *harness) hostileTargets() []target {
	var bare, rl *hostileResult
	for i := range h.res.hostile {
		switch r := &h.res.hostile[i]; r.arm {
		case armBare:
			bare = r
		case armRelay:
			rl = r
		}
	}
	if bare == nil || rl == nil {
		return nil
	}
	what := fmt.Sprintf("%d slow bodies + %d × %d MiB bodies", rl.plan.slow, rl.plan.large, largeSize>>20)
	openB, openR := bare.slowOpenAtEnd(), rl.slowOpenAtEnd()
	ra, ba := rl.addedEvents(0.99), bare.addedEvents(0.99)
	return []target{
		{name: "Peak RSS under attack (" + what + ")", relay: mib(rl.peakRSS), bare: mib(bare.peakRSS),
			versus: ratio(float64(rl.peakRSS), float64(bare.peakRSS)), want: "≤ bare",
			pass: rl.peakRSS <= bare.peakRSS, measured: bare.peakRSS > 0 && rl.peakRSS > 0},
		{name: "Slow-body connections still unanswered and open at the attack's end", relay: strconv.FormatInt(openR, 10),
			bare: strconv.FormatInt(openB, 10), versus: fmt.Sprintf("%+d", openR-openB), want: "0", pass: openR == 0, measured: true},
		{name: "Per-event latency p99 added by the attack", relay: latency(ra, true), bare: latency(ba, true),
			versus: latency(ra-ba, true), want: "≤ bare", pass: ra <= ba,
			measured: len(rl.attack.events) > 0 && len(bare.attack.events) > 0 && len(rl.quiet.events) > 0 && len(bare.quiet.events) > 0},
	}
}

func (h *harness) hostileSection(w func(string, ...any)) {
	hp := h.res.hostile[0].plan
	reduced, need := "", hp.files()
	if want := h.res.hostile[0].wantSlow; want > hp.slow {
		need += want - hp.slow
		reduced = fmt.Sprintf(", too low for the %d slow connections this mode asks for: they were reduced to %d", want, hp.slow)
	}
	w("## 6. Hostile clients\n\n")
	w("A fresh process per server, one at a time. Each gets %v of normal streams alone, then %v of attack with the "+
		"normal streams going on: %d slow-body connections (a request head declaring a %d-byte JSON body, then one "+
		"byte every %v; every other one with a valid key, the rest with none) and %d clients each sending %d MiB JSON "+
		"chat bodies with a valid key, one at a time, to an upstream that waits %v before answering (after anything "+
		"but a 200 a client waits as long before it tries again, so both servers are offered the same load). Normal "+
		"streams: %d concurrent %d-event streams, %v apart, checked byte for byte; TTFB is to the first event. "+
		"Peak RSS is the kernel's high-water mark (VmHWM) at the attack's end, which no sampling can miss; VmRSS was "+
		"also sampled every %v. At the end the clients close every hostile connection still open; \"released\" is the "+
		"time until the server's goroutines were back near their baseline or stopped falling for a second (an idle "+
		"upstream connection kept for reuse holds two), \"after\" their number then. \"Load CPU\" is the mock "+
		"upstream's and the driver's (core 0): they carry the attack's load side too, alike for both servers, so part "+
		"of the added latency is theirs; \"others on core 1\" is the share of the server's core not charged to the server "+
		"process meanwhile: other work on the machine, and kernel work such as loopback packet processing that /proc "+
		"charges to no process. Only the "+
		"normal streams and the served large bodies are checked; a hostile request may be refused in any way. "+
		"The scenario needs about %d open files in the server and in the driver; every process of the harness "+
		"raises its soft RLIMIT_NOFILE to the hard limit at start (now %d)%s.\n\n",
		hp.quiet, hp.attack, hp.slow, slowLength, slowTick, hp.large, largeSize>>20, hp.upDelay,
		hp.normalConc, streamEvents, eventInterval, memSample, need, fileLimit(), reduced)
	w("| Arm | Baseline RSS | Peak RSS (VmHWM) | Largest VmRSS sampled | RSS at attack end | RSS after release (settled) | Goroutines: baseline → peak → after | Server CPU during attack | Others on core 1 | Load CPU during attack | Released |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range h.res.hostile {
		w("| %s | %s | %s | %s | %s | %s | %d → %d → %d | %.2f s of %.1f s | %s | %.2f s | %v |\n", r.arm, mib(r.baseRSS), mib(r.peakRSS),
			mib(r.sampledRSS), mib(r.endRSS), mib(r.afterRSS), r.baseG, r.peakG, r.afterG, r.attackCPU.Seconds(), r.attackWall.Seconds(),
			others(usage{wall: r.attackWall, cpu: r.attackCPU, core1: r.core1}), r.loadCPU.Seconds(), r.released.Round(time.Millisecond))
	}
	w("\nNormal streams:\n\n")
	w("| Arm | Phase | Streams served | Refused | TTFB p50 | TTFB p99 | Event latency p50 | Event latency p99 |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range h.res.hostile {
		for _, ph := range []struct {
			name string
			n    *normalResult
		}{{"alone", &r.quiet}, {"under attack", &r.attack}} {
			n := ph.n
			w("| %s | %s | %d | %s | %s | %s | %s | %s |\n", r.arm, ph.name, n.served, refusedString(n.refused),
				latency(n.ttfb.p50(), false), latency(n.ttfb.p99(), false), latency(n.events.p50(), false), latency(n.events.p99(), false))
		}
		if len(r.quiet.events) > 0 && len(r.attack.events) > 0 {
			w("| %s | **added by the attack** | | | %s | %s | %s | %s |\n", r.arm,
				latency(r.attack.ttfb.p50()-r.quiet.ttfb.p50(), true), latency(r.attack.ttfb.p99()-r.quiet.ttfb.p99(), true),
				latency(r.addedEvents(0.5), true), latency(r.addedEvents(0.99), true))
		}
	}
	w("\nHow the hostile requests ended (a status code, or: %q, no response before the attack ended; %q, the server "+
		"closed the connection without a response; %q; %q):\n\n", endOpen, endClosed, endDial, endAborted)
	w("| Arm | Kind | Clients | Requests | Ends | Time to a response p50 / max |\n|---|---|---|---|---|---|\n")
	for _, r := range h.res.hostile {
		for k := range r.kinds {
			t := &r.kinds[k]
			answer := "—"
			if len(t.answer) > 0 {
				answer = fmt.Sprintf("%v / %v", t.answer.p50().Round(time.Millisecond), t.answer.quantile(1).Round(time.Millisecond))
			}
			w("| %s | %s | %d | %d | %s | %s |\n", r.arm, hostileKindName(k), t.clients, t.requests, t.endsString(), answer)
		}
	}
	w("\n")
}

// latency formats a duration in µs, or in ms from 10 ms, signed if asked.
func latency(d time.Duration, signed bool) string {
	unit, scale := "µs", float64(time.Microsecond)
	if d >= 10*time.Millisecond || d <= -10*time.Millisecond {
		unit, scale = "ms", float64(time.Millisecond)
	}
	if signed {
		return fmt.Sprintf("%+.1f %s", float64(d)/scale, unit)
	}
	return fmt.Sprintf("%.1f %s", float64(d)/scale, unit)
}

// refusedString lists clean refusals by status, or "0".
func refusedString(m map[int]int64) string {
	if len(m) == 0 {
		return "0"
	}
	codes := make([]int, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	slices.Sort(codes)
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%d × %d", c, m[c])
	}
	return strings.Join(parts, ", ")
}
