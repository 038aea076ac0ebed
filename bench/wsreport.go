package bench

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// The targets for WebSocket sessions, relay against the bare
// hijack-and-copy proxy in the same run (issue #12). One source for the
// pass rules and the "Wanted" column.
const (
	wsMaxAddedLatency = 5 * time.Microsecond // per message, p50, over bare's
	wsMaxCPURatio     = 1.15                 // CPU per message
	wsMaxMemRatio     = 1.10                 // memory per idle session
)

// cpuPerMessage is server CPU per message, in µs: each echo is one
// message each way.
func (r *wsResult) cpuPerMessage(ai int) float64 {
	if r.cpuN[ai] == 0 {
		return 0
	}
	return r.cpu[ai].cpu.Seconds() * 1e6 / float64(2*r.cpuN[ai])
}

// wsTargets are the scenario's lines of the targets table.
func (h *harness) wsTargets() []target {
	r := &h.res.ws
	var ts []target
	for _, x := range []struct {
		what string
		s    [3]samples
	}{{"WebSocket: added latency per message p50, upstream → client", r.oneWay},
		{"WebSocket: added round trip per echoed message p50", r.rtt}} {
		if len(x.s[0]) == 0 || len(x.s[1]) == 0 || len(x.s[2]) == 0 {
			continue
		}
		rl, br := x.s[2].p50()-x.s[0].p50(), x.s[1].p50()-x.s[0].p50()
		ts = append(ts, target{name: x.what, relay: us(rl), bare: us(br), versus: signedUS(rl - br),
			want: "≤ bare + " + us(wsMaxAddedLatency), pass: rl <= br+wsMaxAddedLatency, measured: true})
	}
	if rc, bc := r.cpuPerMessage(2), r.cpuPerMessage(1); bc > 0 && rc > 0 {
		ts = append(ts, target{name: fmt.Sprintf("WebSocket: CPU per message (echo, %d sessions)", wsCPUConc),
			relay: fmt.Sprintf("%.2f µs", rc), bare: fmt.Sprintf("%.2f µs", bc), versus: ratio(rc, bc),
			want: fmt.Sprintf("≤ %.2f × bare", wsMaxCPURatio), pass: rc <= wsMaxCPURatio*bc, measured: true})
	}
	var bare, rl *memResult
	for i := range r.mem {
		switch m := &r.mem[i]; m.arm {
		case armBare:
			bare = m
		case armRelay:
			rl = m
		}
	}
	if bare != nil && rl != nil {
		for k := range min(len(bare.points), len(rl.points)) {
			bs, rs := perStream(bare.baseRSS, bare.points[k]), perStream(rl.baseRSS, rl.points[k])
			ts = append(ts, target{name: fmt.Sprintf("WebSocket: memory per idle session, %d open", rl.points[k].streams),
				relay: kib(rs), bare: kib(bs), versus: ratio(rs, bs),
				want: fmt.Sprintf("≤ %.2f × bare", wsMaxMemRatio), pass: rs <= wsMaxMemRatio*bs, measured: bs > 0})
		}
	}
	for _, sc := range r.scale {
		if sc.arm != armRelay {
			continue
		}
		ts = append(ts, target{name: fmt.Sprintf("WebSocket: %d concurrent sessions through the relay", sc.streams),
			relay: fmt.Sprintf("%d of %d intact", sc.completed, sc.streams), want: "all intact",
			pass: sc.completed == int64(sc.streams) && sc.failed == 0, measured: true})
	}
	return ts
}

// wsSection renders the scenario: fidelity always, timed parts when run.
func (h *harness) wsSection(w func(string, ...any)) {
	r := &h.res.ws
	if len(r.cases) == 0 {
		return
	}
	p := h.plan.ws
	w("## 7. WebSocket sessions\n\n")
	w("Sessions to the mock realtime upstream (`%s`, OpenAI Realtime-shaped events: session.created, "+
		"response.output_audio.delta with %d bytes of base64 audio, response.done with usage) directly, through the "+
		"bare hijack-and-copy proxy (two goroutines and two pooled 32 KiB copy buffers per session) and through the "+
		"relay (its own WebSocket support, the bench route, nothing configured for sessions). The driver speaks raw "+
		"RFC 6455 frames and checks every frame it receives byte for byte (all but the send stamp), its opcode and "+
		"FIN bit, and the close code and reason.\n\n", wsPath, wsAudioBytes)
	w("**Fidelity** (sessions intact / failed; every mode):\n\n| Case | direct | bare | relay |\n|---|---|---|---|\n")
	for _, name := range r.cases {
		c := r.byCase[name]
		cell := func(ai int) string {
			if c[ai][0]+c[ai][1] == 0 {
				return "—"
			}
			return fmt.Sprintf("%d / %d", c[ai][0], c[ai][1])
		}
		w("| %s | %s | %s | %s |\n", name, cell(0), cell(1), cell(2))
	}
	w("\n")
	h.wsEndsTable(w)
	if !h.plan.timings || !h.wants(scenarioWebSocket) {
		return
	}
	w("**Latency at concurrency 1.** %d interleaved rounds; per arm and round one session of %d audio deltas %v apart "+
		"(latency = receive time minus the delta's send stamp, upstream → client) and one session of %d echoed "+
		"%d-byte audio messages, one at a time (round trip, client → upstream → client).\n\n",
		p.rounds, streamEvents, eventInterval, p.echoes, len(appendEchoMessageSize()))
	w("| Measure | Arm | Samples | p50 | p99 | Added p50 | Added p99 |\n|---|---|---|---|---|---|---|\n")
	for _, x := range []struct {
		what string
		s    [3]samples
	}{{"Delta latency", r.oneWay}, {"Echo round trip", r.rtt}} {
		for i, name := range []string{armDirect, armBare, armRelay} {
			s := x.s[i]
			addedP50, addedP99 := "", ""
			if i > 0 && len(x.s[0]) > 0 {
				addedP50, addedP99 = signedUS(s.p50()-x.s[0].p50()), signedUS(s.p99()-x.s[0].p99())
			}
			w("| %s | %s | %d | %s | %s | %s | %s |\n", x.what, name, len(s), us(s.p50()), us(s.p99()), addedP50, addedP99)
		}
	}
	w("\n**CPU per message.** %d round(s) of %v per arm: %d sessions, opened beforehand, each echoing audio messages "+
		"closed-loop; an echo is one message each way, so CPU per message is server CPU over twice the echoes. Server "+
		"CPU is utime+stime from /proc, as for HTTP.\n\n", p.cpuRounds, p.cpuDur, wsCPUConc)
	w("| Arm | Echoes | Echoes/s | Server CPU µs / message | Server core use | Others on core 1 | Load CPU µs / message | Allocs / message | Bytes alloc / message |\n")
	w("|---|---|---|---|---|---|---|---|---|\n")
	for i, name := range []string{armDirect, armBare, armRelay} {
		u, n := r.cpu[i], r.cpuN[i]
		srv, use, oth, allocs, bytes := "—", "—", "—", "—", "—"
		if i > 0 {
			srv = fmt.Sprintf("%.2f", r.cpuPerMessage(i))
			if u.wall > 0 {
				use = fmt.Sprintf("%.0f%%", 100*u.cpu.Seconds()/u.wall.Seconds())
			}
			oth = others(u)
			allocs = fmt.Sprintf("%.2f", perN(u.allocs, 2*n))
			bytes = fmt.Sprintf("%.0f", perN(u.allocBytes, 2*n))
		}
		load := 0.0
		if n > 0 {
			load = u.loadCPU.Seconds() * 1e6 / float64(2*n)
		}
		w("| %s | %d | %.0f | %s | %s | %s | %.2f | %s | %s |\n", name, n, rps(n, u.wall), srv, use, oth, load, allocs, bytes)
	}
	w("\n**Memory per idle session** (fresh server processes). Each session has its session.created, then the upstream "+
		"holds it. RSS as in section 4 (settled: after a GC that returns freed memory); per-session figures subtract "+
		"the settled baseline. Then every session is released: it receives %d deltas and a response.done, echoes %d "+
		"messages and closes, all at once; each is checked.\n\n", wsHeldDeltas, wsHeldEchoes)
	if r.reduced != "" {
		w("Fewer sessions than planned: %s.\n\n", r.reduced)
	}
	w("| Arm | Sessions | Held at upstream | Baseline RSS | RSS raw | RSS settled | Per session (settled) | Per session (raw) | Goroutines / session | Live heap / session | Stacks / session |\n")
	w("|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, m := range r.mem {
		for _, pt := range m.points {
			n := float64(pt.streams)
			w("| %s | %d | %d | %s | %s | %s | %s | %s | %.2f | %s | %s |\n", m.arm, pt.streams, pt.held, mib(m.baseRSS),
				mib(pt.rawRSS), mib(pt.rss), kib(perStream(m.baseRSS, pt)), kib(float64(pt.rawRSS-m.baseRSS)/n),
				float64(int64(pt.stats.Goroutines)-int64(m.baseStats.Goroutines))/n,
				kib(float64(int64(pt.stats.HeapLive)-int64(m.baseStats.HeapLive))/n),
				kib(float64(int64(pt.stats.StackInuse)-int64(m.baseStats.StackInuse))/n))
		}
	}
	w("\n| Arm | Sessions | Held at upstream at peak | Intact | Failed | Time to open | Time to finish |\n|---|---|---|---|---|---|---|\n")
	for _, sc := range r.scale {
		w("| %s | %d | %d | %d | %d | %v | %v |\n", sc.arm, sc.streams, sc.peakHeld, sc.completed, sc.failed,
			sc.openTime.Round(time.Millisecond), sc.drainTime.Round(time.Millisecond))
	}
	w("\n")
}

// appendEchoMessageSize is one echo message, for its size in the report.
func appendEchoMessageSize() []byte {
	b, _ := appendEchoMessage(nil, nil, 0, 0, wsAudioBytes)
	return b
}

// wsEndsTable shows how the relay recorded its sessions' ends: by whom
// and with which close code (Record.ClosedBy, Record.CloseCode).
func (h *harness) wsEndsTable(w func(string, ...any)) {
	var rows []string
	for _, ri := range h.res.instances {
		keys := slices.Sorted(maps.Keys(ri.wsEnds))
		for _, k := range keys {
			by, code, _ := strings.Cut(k, " ")
			if code == "0" {
				code = "—" // no close: refused before the upgrade
			}
			rows = append(rows, fmt.Sprintf("| %s | %s | %s | %d |\n", ri.name, by, code, ri.wsEnds[k]))
		}
	}
	if len(rows) == 0 {
		return
	}
	w("The relay's session records by how the session ended (closed_by, close_code):\n\n")
	w("| Relay process | Closed by | Close code | Records |\n|---|---|---|---|\n")
	for _, r := range rows {
		w("%s", r)
	}
	w("\n")
}
