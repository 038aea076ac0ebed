package bench

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// The WebSocket scenario (issue #12): sessions to the mock realtime
// upstream directly, through a bare hijack-and-copy proxy (bareWS) and
// through the relay, every frame checked.

// scenarioWebSocket names the scenario for Config.Scenarios.
const scenarioWebSocket = "websocket"

// Sizes shared by every mode.
const (
	wsCPUConc     = 50  // sessions echoing at once in the CPU measurement
	wsHeldDeltas  = 5   // deltas a held session receives once released
	wsHeldEchoes  = 3   // messages a held session then echoes
	wsFidelityPar = 4   // fidelity sessions at once
	wsFDMargin    = 300 // descriptors kept free beside held sessions
)

// wsPlan sizes the scenario in a mode.
type wsPlan struct {
	fidelity  int // sessions of each fidelity case per arm
	rounds    int // latency rounds
	echoes    int // round trips of the echo session of each arm and round
	cpuRounds int
	cpuDur    time.Duration
	memCounts []int // idle sessions held open, cumulatively
}

func wsPlanFor(mode string) wsPlan {
	switch mode {
	case ModeFull:
		return wsPlan{fidelity: 10, rounds: 6, echoes: 400, cpuRounds: 4, cpuDur: 2 * time.Second, memCounts: []int{1000, 5000}}
	case ModeQuick:
		return wsPlan{fidelity: 5, rounds: 2, echoes: 200, cpuRounds: 1, cpuDur: time.Second, memCounts: []int{1000, 5000}}
	}
	return wsPlan{fidelity: 3}
}

// wsResult holds the scenario's figures, indexed by arm.
type wsResult struct {
	mu     sync.Mutex
	cases  []string              // fidelity cases in the order first run
	byCase map[string]*[3][2]int // case → arm → intact, failed

	oneWay, rtt [3]samples
	cpu         [3]usage
	cpuN        [3]int64 // echoes (one message each way) in the CPU windows
	mem         []memResult
	scale       []scaleResult
	reduced     string // why fewer sessions than planned were held, if so
}

// tally counts one fidelity session.
func (r *wsResult) tally(name string, ai int, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byCase == nil {
		r.byCase = map[string]*[3][2]int{}
	}
	c, seen := r.byCase[name]
	if !seen {
		c = new([3][2]int)
		r.byCase[name] = c
		r.cases = append(r.cases, name)
	}
	if ok {
		c[ai][0]++
	} else {
		c[ai][1]++
	}
}

// wsCase is one fidelity check: a whole session, run against an arm.
type wsCase struct {
	name      string
	relayOnly bool // a feature of the relay, not of a plain proxy
	run       func(ctx context.Context, h *harness, a *arm) error
}

// wsCheck runs one session and records its outcome.
func (h *harness) wsCheck(a *arm, scenario string, fn func(ctx context.Context) error) bool {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	err := fn(ctx)
	h.res.count(a.name, err == nil)
	if err != nil {
		h.fails.add(a.name, scenario, err)
		return false
	}
	return true
}

// wsEchoSizes cover each payload-length encoding and its edges.
func wsEchoSizes() []int { return []int{0, 1, 125, 126, 127, 1000, 65535, 65536, 70000} }

// wsCases are the fidelity checks.
func wsCases() []wsCase {
	return []wsCase{
		{name: "text and binary messages, every length form", run: func(ctx context.Context, h *harness, a *arm) error {
			c, err := h.d.wsDial(ctx, a, wsSpec{seed: h.seed()})
			if err != nil {
				return err
			}
			defer c.conn.Close()
			if err := c.expectHello(c.seed); err != nil {
				return err
			}
			var msg, scratch []byte
			for i, size := range wsEchoSizes() {
				// Text: generated base64 (valid UTF-8); binary: raw bytes.
				msg, scratch = appendAudioB64(msg[:0], scratch, c.seed, i, size*3/4+3)
				if _, err := c.echo(opText, msg[:size]); err != nil {
					return err
				}
				if _, err := c.echo(opBinary, appendAudio(msg[:0], c.seed, i, size)); err != nil {
					return err
				}
			}
			return c.closeByClient(1000, "")
		}},
		{name: "1 MiB binary message, close without a code", run: func(ctx context.Context, h *harness, a *arm) error {
			c, err := h.d.wsDial(ctx, a, wsSpec{seed: h.seed()})
			if err != nil {
				return err
			}
			defer c.conn.Close()
			if err := c.expectHello(c.seed); err != nil {
				return err
			}
			if _, err := c.echo(opBinary, appendAudio(nil, c.seed, 0, 1<<20)); err != nil {
				return err
			}
			return c.closeByClient(0, "")
		}},
		{name: "fragmented messages with a ping between fragments", run: wsFragmented},
		{name: "pings both ways, close with code and reason by the client", run: func(ctx context.Context, h *harness, a *arm) error {
			c, err := h.d.wsDial(ctx, a, wsSpec{seed: h.seed()})
			if err != nil {
				return err
			}
			defer c.conn.Close()
			if err := c.expectHello(c.seed); err != nil {
				return err
			}
			for _, p := range [][]byte{nil, []byte("bench ping"), appendAudio(nil, c.seed, 1, 125)} {
				if _, err := c.echo(opPing, p); err != nil { // the pong carries the ping's payload
					return err
				}
			}
			// The upstream's ping reaches the client, and the client's pong the upstream.
			if err := c.writeFrame(true, opText, []byte(wsPingMe)); err != nil {
				return wsErr(err, "asking for a ping")
			}
			f, err := c.readFrame()
			switch {
			case err != nil:
				return wsErr(err, "waiting for the upstream's ping")
			case f.op != opPing || string(f.payload) != wsUpstreamPing:
				return failf(failAltered, "opcode %d %q where the upstream's ping was due", f.op, clip(f.payload))
			}
			if err := c.writeFrame(true, opPong, f.payload); err != nil {
				return wsErr(err, "answering the upstream's ping")
			}
			if p, err := c.expectMessage(opText, "the upstream's word that the pong arrived"); err != nil {
				return err
			} else if string(p) != wsPingMe {
				return failf(failAltered, "got %q after the pong, want %q", clip(p), wsPingMe)
			}
			return c.closeByClient(4001, "bench: client bye ✓")
		}},
		{name: "realtime responses with usage, close with code and reason by the upstream", run: func(ctx context.Context, h *harness, a *arm) error {
			s := wsSpec{seed: h.seed(), n: 20, r: 3, closeCode: 4002}
			c, err := h.d.wsDial(ctx, a, s)
			if err != nil {
				return err
			}
			defer c.conn.Close()
			if err := c.expectHello(s.seed); err != nil {
				return err
			}
			if err := c.readStream(s, nil); err != nil {
				return err
			}
			return c.closeByUpstream(4002)
		}},
		{name: "browser subprotocol key (relay only)", relayOnly: true, run: func(ctx context.Context, h *harness, a *arm) error {
			s := wsSpec{seed: h.seed()}
			c, err := h.d.wsDialHeaders(ctx, a, s, "Sec-WebSocket-Protocol: realtime, openai-insecure-api-key."+a.key+"\r\n")
			if err != nil {
				return err
			}
			defer c.conn.Close()
			if err := c.expectHello(s.seed); err != nil {
				return err
			}
			if _, err := c.echo(opText, []byte(`{"type":"input_audio_buffer.commit"}`)); err != nil {
				return err
			}
			return c.closeByClient(1000, "")
		}},
		{name: "wrong key refused before the upgrade (relay only)", relayOnly: true, run: func(ctx context.Context, h *harness, a *arm) error {
			_, err := h.d.wsDialHeaders(ctx, a, wsSpec{seed: h.seed()}, "Authorization: Bearer sk-bench-wrong\r\n")
			if statusOf(err) == 401 {
				return nil
			}
			if err == nil {
				return failf(failAltered, "a session with a wrong key was upgraded")
			}
			return fmt.Errorf("a session with a wrong key: %w, want a 401", err)
		}},
	}
}

// wsFragmented sends a text message in three fragments with a ping between
// the second and the third, then a binary one whose last fragment is
// empty, and expects the upstream's echo frame by frame: the same
// fragments in the same order, the pong in its place.
func wsFragmented(ctx context.Context, h *harness, a *arm) error {
	c, err := h.d.wsDial(ctx, a, wsSpec{seed: h.seed()})
	if err != nil {
		return err
	}
	defer c.conn.Close()
	if err := c.expectHello(c.seed); err != nil {
		return err
	}
	big := appendAudio(nil, c.seed, 7, 100000)
	frames := []wsFrame{
		{false, opText, []byte(`{"type":"conversation.item.create",`)},
		{false, opCont, []byte(`"item":{"type":"message","role":"user",`)},
		{true, opPing, []byte("between fragments")},
		{true, opCont, []byte(`"content":[{"type":"input_text","text":"hello"}]}}`)},
		{false, opBinary, []byte("first")},
		{false, opCont, big},
		{true, opCont, nil},
	}
	for _, f := range frames {
		if err := c.writeFrame(f.fin, f.op, f.payload); err != nil {
			return wsErr(err, "sending fragments")
		}
	}
	for i, want := range frames {
		if want.op == opPing {
			want.op = opPong
		}
		got, err := c.next()
		if err != nil {
			return wsErr(err, fmt.Sprintf("fragment %d", i))
		}
		if got.fin != want.fin || got.op != want.op || string(got.payload) != string(want.payload) {
			return failf(failAltered, "frame %d: fin %v opcode %d %q, want fin %v opcode %d %q", i,
				got.fin, got.op, clip(got.payload), want.fin, want.op, clip(want.payload))
		}
	}
	return c.closeByClient(1000, "")
}

// wsFidelity runs every fidelity case on every arm (relay-only cases on
// the relay), wsPlan.fidelity sessions of each.
func (h *harness) wsFidelity() {
	n := h.plan.ws.fidelity
	for ai, a := range h.arms {
		for _, wc := range wsCases() {
			if wc.relayOnly && a.name != armRelay {
				continue
			}
			h.runCount(wsFidelityPar, n, func() {
				ok := h.wsCheck(a, "ws-fidelity", func(ctx context.Context) error { return wc.run(ctx, h, a) })
				h.res.ws.tally(wc.name, ai, ok)
			})
		}
	}
}

// wsLatency measures, at concurrency 1, the latency of each of 200 audio
// deltas 1 ms apart (receive time minus send stamp, upstream → client)
// and the round trip of echoed messages (client → upstream → client).
func (h *harness) wsLatency() {
	p := h.plan.ws
	r := &h.res.ws
	for round := range p.rounds {
		h.logf("websocket latency round %d/%d", round+1, p.rounds)
		for _, ai := range order(round) {
			a := h.arms[ai]
			var lat []time.Duration
			if h.wsCheck(a, "ws-latency", func(ctx context.Context) error {
				s := wsSpec{seed: h.seed(), n: streamEvents, r: 1, interval: eventInterval, closeCode: 1000}
				c, err := h.d.wsDial(ctx, a, s)
				if err != nil {
					return err
				}
				defer c.conn.Close()
				if err := c.expectHello(s.seed); err != nil {
					return err
				}
				if err := c.readStream(s, &lat); err != nil {
					return err
				}
				return c.closeByUpstream(1000)
			}) {
				r.oneWay[ai] = append(r.oneWay[ai], lat...)
			}
			var rtts []time.Duration
			if h.wsCheck(a, "ws-latency", func(ctx context.Context) error {
				c, err := h.d.wsDial(ctx, a, wsSpec{seed: h.seed()})
				if err != nil {
					return err
				}
				defer c.conn.Close()
				if err := c.expectHello(c.seed); err != nil {
					return err
				}
				var msg, scratch []byte
				for i := range p.echoes {
					msg, scratch = appendEchoMessage(msg[:0], scratch, c.seed, i, wsAudioBytes)
					rtt, err := c.echo(opText, msg)
					if err != nil {
						return err
					}
					rtts = append(rtts, rtt)
				}
				return c.closeByClient(1000, "")
			}) {
				r.rtt[ai] = append(r.rtt[ai], rtts...)
			}
		}
	}
}

// wsCPU measures the server's CPU and allocations per message: wsCPUConc
// sessions, opened beforehand, each echoing realtime-shaped audio
// messages closed-loop for cpuDur; each echo is one message each way.
func (h *harness) wsCPU() {
	p := h.plan.ws
	r := &h.res.ws
	for round := range p.cpuRounds {
		for _, ai := range order(round) {
			a := h.arms[ai]
			h.logf("websocket CPU %s, round %d/%d", a.name, round+1, p.cpuRounds)
			conns := make([]*wsConn, wsCPUConc)
			var wg sync.WaitGroup
			for w := range conns {
				wg.Go(func() {
					h.wsCheck(a, "ws-cpu", func(ctx context.Context) error {
						// The session outlives this context: its deadline is set on the connection.
						c, err := h.d.wsDial(ctx, a, wsSpec{seed: h.seed()})
						if err != nil {
							return err
						}
						if err := c.expectHello(c.seed); err != nil {
							_ = c.conn.Close()
							return err
						}
						conns[w] = c
						return nil
					})
				})
			}
			wg.Wait()
			var failed [wsCPUConc]bool
			msgs := make([][]byte, wsCPUConc)
			scratch := make([][]byte, wsCPUConc)
			seq := make([]int, wsCPUConc)
			before := h.snap(a)
			n, _ := h.runFor(wsCPUConc, p.cpuDur, func(w int) bool {
				c := conns[w]
				if c == nil || failed[w] {
					time.Sleep(10 * time.Millisecond)
					return false
				}
				msgs[w], scratch[w] = appendEchoMessage(msgs[w][:0], scratch[w], c.seed, seq[w], wsAudioBytes)
				seq[w]++
				if _, err := c.echo(opText, msgs[w]); err != nil {
					failed[w] = true
					h.res.count(a.name, false)
					h.fails.add(a.name, "ws-cpu", err)
					return false
				}
				return true
			})
			r.cpu[ai].add(before, h.snap(a))
			r.cpuN[ai] += n
			for w, c := range conns {
				if c == nil || failed[w] {
					if c != nil {
						_ = c.conn.Close()
					}
					continue
				}
				wg.Go(func() {
					h.wsCheck(a, "ws-cpu", func(context.Context) error { return c.closeByClient(1000, "") })
				})
			}
			wg.Wait()
		}
	}
}

// wsMemory measures the resident memory of idle sessions in fresh server
// processes, then releases them all, has each exchange messages and
// close, and checks every one (the concurrency target).
func (h *harness) wsMemory() error {
	for _, a := range h.arms[1:] {
		if err := h.stopServer(a); err != nil {
			return err
		}
	}
	counts := h.plan.ws.memCounts
	// Each session holds two descriptors in the server, one in the driver
	// and one in the upstream.
	fit := (int(fileLimit()) - wsFDMargin) / 2
	for len(counts) > 0 && counts[len(counts)-1] > fit {
		h.res.ws.reduced = fmt.Sprintf("%d sessions skipped: the open-file limit is %d", counts[len(counts)-1], fileLimit())
		h.logf("websocket memory: %s", h.res.ws.reduced)
		counts = counts[:len(counts)-1]
	}
	if len(counts) == 0 {
		return nil
	}
	for _, a := range h.arms[1:] {
		if err := h.startServer(a, "ws-memory", false); err != nil {
			return err
		}
		m, sc, err := h.wsMemoryOf(a, counts)
		if err != nil {
			return err
		}
		m.proto, sc.proto = "WebSocket", "WebSocket"
		h.res.ws.mem = append(h.res.ws.mem, m)
		h.res.ws.scale = append(h.res.ws.scale, sc)
		if err := h.stopServer(a); err != nil {
			return err
		}
	}
	return nil
}

func (h *harness) wsMemoryOf(a *arm, counts []int) (memResult, scaleResult, error) {
	h.runCount(8, 100, func() {
		h.wsCheck(a, "ws-memory", func(ctx context.Context) error {
			s := wsSpec{seed: h.seed(), n: wsHeldDeltas, r: 1}
			return h.d.wsHeldSession(ctx, a, s, nil)
		})
	})
	return h.measureHeld(a, counts, heldKind{group: "ws-memory", scenario: "ws-scale", noun: "sessions",
		profile: "websocket", open: h.wsOpen})
}

// wsOpen starts n held sessions of a hold group and returns once each
// has its session.created (or failed).
func (h *harness) wsOpen(a *arm, group string, n int, set *heldSet) error {
	return h.openHeld(a, n, set, "sessions", func(ctx context.Context, onOpen func()) error {
		s := wsSpec{seed: h.seed(), n: wsHeldDeltas, r: 1, hold: group}
		return h.d.wsHeldSession(ctx, a, s, onOpen)
	})
}

// wsHeldSession is one session of the memory and scale measurements:
// session.created (then opened runs, when not nil), the stream phase once
// the upstream lets it go on, a few echoed messages, and the client's
// close.
func (d *driver) wsHeldSession(ctx context.Context, a *arm, s wsSpec, opened func()) error {
	c, err := d.wsDial(ctx, a, s)
	if err != nil {
		return err
	}
	defer c.conn.Close()
	if err := c.expectHello(s.seed); err != nil {
		return err
	}
	if opened != nil {
		opened()
	}
	if err := c.readStream(s, nil); err != nil {
		return err
	}
	var msg, scratch []byte
	for i := range wsHeldEchoes {
		msg, scratch = appendEchoMessage(msg[:0], scratch, s.seed, i, wsAudioBytes)
		if _, err := c.echo(opText, msg); err != nil {
			return err
		}
	}
	return c.closeByClient(1000, "bench: bye")
}
