package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Scenario constants shared by every mode.
const (
	streamEvents  = 200              // events of a measured stream
	shortEvents   = 20               // events of the short streams that isolate per-event allocations
	eventInterval = time.Millisecond // between events, so that each is its own read and write
	// shortInterval spreads a short stream over the time of a long one, so
	// that allocations made by the clock (metrics scrapes, the record
	// queue's ticker) cancel out of the per-event difference.
	shortInterval  = eventInterval * (streamEvents - 1) / (shortEvents - 1)
	streamConc     = 50              // concurrency of the streaming CPU scenario
	allocConc      = 10              // concurrency of the per-event allocation measurement
	jsonTokens     = 40              // tokens of a JSON completion (a ~500-byte body)
	heldEvents     = 5               // events of a held stream (one before the hold)
	openInFlight   = 256             // held streams being opened at once
	requestTimeout = 2 * time.Minute // any response taking longer fails
)

// plan sizes a run.
type plan struct {
	rounds       int // latency rounds; each runs every arm once
	jsonTTFB     int // JSON requests per arm and round at concurrency 1
	sseTTFB      int // 3-event streams per arm and round at concurrency 1
	eventStreams int // 200-event streams per arm and round at concurrency 1

	tputConcs  []int
	tputRounds int
	tputDur    time.Duration

	streamRounds int
	streamCount  int // 200-event streams per arm and round
	allocStreams int // 200-event and 20-event streams per arm for allocations

	memSets []memSet

	hostile hostilePlan
	ws      wsPlan

	fidelity     int  // responses of each kind per arm in the fidelity check
	smokeHeld    int  // concurrent held streams per arm in smoke mode
	timings      bool // whether timing scenarios run at all
	warmRequests int
}

// memSet is one memory measurement: idle streams held open, cumulatively,
// with HTTP/1.1 or cleartext HTTP/2 from the server to the upstream.
type memSet struct {
	h2c    bool
	counts []int
}

func (m memSet) proto() string {
	if m.h2c {
		return "h2c"
	}
	return "HTTP/1.1"
}

// instance names the relay process of the set, and its record file.
func (m memSet) instance() string {
	if m.h2c {
		return "memory-h2c"
	}
	return "memory-http1"
}

func planFor(mode string) (plan, error) {
	p, err := basePlanFor(mode)
	p.ws = wsPlanFor(mode)
	return p, err
}

func basePlanFor(mode string) (plan, error) {
	switch mode {
	case ModeFull:
		return plan{
			rounds: 6, jsonTTFB: 400, sseTTFB: 300, eventStreams: 4,
			tputConcs: []int{16, 64}, tputRounds: 5, tputDur: 1200 * time.Millisecond,
			streamRounds: 4, streamCount: 250, allocStreams: 200,
			memSets: []memSet{{false, []int{1000}}, {true, []int{1000, 10000}}},
			hostile: hostilePlan{slow: 1000, large: 100, quiet: 10 * time.Second, attack: 30 * time.Second,
				upDelay: 10 * time.Second, normalConc: 4},
			fidelity: 100, timings: true, warmRequests: 500,
		}, nil
	case ModeQuick:
		return plan{
			rounds: 2, jsonTTFB: 100, sseTTFB: 100, eventStreams: 2,
			tputConcs: []int{16, 64}, tputRounds: 1, tputDur: time.Second,
			streamRounds: 1, streamCount: 150, allocStreams: 50,
			memSets: []memSet{{false, []int{1000}}, {true, []int{1000, 2000}}},
			hostile: hostilePlan{slow: 200, large: 20, quiet: 3 * time.Second, attack: 10 * time.Second,
				upDelay: 4 * time.Second, normalConc: 2},
			fidelity: 40, timings: true, warmRequests: 200,
		}, nil
	case ModeSmoke:
		return plan{fidelity: 200, smokeHeld: 1000, warmRequests: 50,
			// A scaled-down attack: it checks that the scenario ends on
			// time and that the normal streams stay intact; its figures
			// mean nothing.
			hostile: hostilePlan{slow: 20, large: 4, quiet: time.Second, attack: 4 * time.Second,
				upDelay: time.Second, normalConc: 2},
		}, nil
	}
	return plan{}, fmt.Errorf("unknown mode %q (want smoke, quick or full)", mode)
}

func (h *harness) scenarios() error {
	h.logf("warming up")
	for _, a := range h.arms {
		h.runCount(8, h.plan.warmRequests, func() { h.check(a, "warm-up", spec{mode: modeJSON, seed: h.seed(), n: jsonTokens}, nil) })
		h.runCount(8, h.plan.warmRequests/4, func() {
			h.check(a, "warm-up", spec{mode: modeSSE, seed: h.seed(), n: shortEvents}, nil)
		})
	}
	h.logf("fidelity")
	h.fidelity()
	h.logf("websocket fidelity")
	h.wsFidelity()
	if h.plan.smokeHeld > 0 {
		h.logf("%d held streams per arm", h.plan.smokeHeld)
		for _, a := range h.arms {
			sc := h.holdAndRelease(a, "smoke", h.plan.smokeHeld)
			sc.proto = "HTTP/1.1"
			if a.proc == nil {
				sc.proto = "—"
			}
			h.res.scale = append(h.res.scale, sc)
		}
	}
	if !h.plan.timings {
		return h.hostile() // scaled down: it must end on time, normal streams intact
	}
	if h.wants(scenarioLatency) {
		h.latency()
	}
	if h.wants(scenarioThroughput) {
		h.throughput()
	}
	if h.wants(scenarioStreaming) {
		h.streaming()
	}
	if h.wants(scenarioWebSocket) {
		h.wsLatency()
		h.wsCPU()
		if err := h.wsMemory(); err != nil {
			return err
		}
	}
	if h.wants(scenarioMemory) {
		if err := h.memory(); err != nil {
			return err
		}
	}
	if h.wants(scenarioHostile) {
		return h.hostile()
	}
	return nil
}

// Scenario names, for Config.Scenarios.
const (
	scenarioLatency    = "latency"
	scenarioThroughput = "throughput"
	scenarioStreaming  = "streaming"
	scenarioMemory     = "memory"
	scenarioHostile    = "hostile"
)

// Scenarios lists the timed scenarios a run can be limited to.
func Scenarios() []string {
	return []string{scenarioLatency, scenarioThroughput, scenarioStreaming, scenarioWebSocket, scenarioMemory, scenarioHostile}
}

// wants reports whether the run includes a timed scenario.
func (h *harness) wants(name string) bool {
	return len(h.cfg.Scenarios) == 0 || slices.Contains(h.cfg.Scenarios, name)
}

// check sends one request and records a failure.
func (h *harness) check(a *arm, scenario string, s spec, lat *[]time.Duration) (outcome, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	o, err := h.d.do(ctx, a, s, lat, nil)
	h.res.count(a.name, err == nil)
	if err != nil {
		h.fails.add(a.name, scenario, err)
		return o, false
	}
	return o, true
}

// runCount calls fn total times from conc goroutines.
func (h *harness) runCount(conc, total int, fn func()) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(conc, total) {
		wg.Go(func() {
			for next.Add(1) <= int64(total) {
				fn()
			}
		})
	}
	wg.Wait()
}

// runFor calls fn from conc goroutines, numbered from 0, for d and
// returns how many calls succeeded and how long they took.
func (h *harness) runFor(conc int, d time.Duration, fn func(worker int) bool) (int64, time.Duration) {
	var done atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for w := range conc {
		wg.Go(func() {
			for time.Now().Before(end) {
				if fn(w) {
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return done.Load(), time.Since(start)
}

// order is the arms in the order of round r: rotating the order keeps any
// drift within a round from favouring one arm.
func order(r int) [3]int { return [3]int{r % 3, (r + 1) % 3, (r + 2) % 3} }

// fidelity checks every kind of response on every arm, and that a stream
// the upstream cuts short is visibly cut short for the client.
func (h *harness) fidelity() {
	n := h.plan.fidelity
	for _, a := range h.arms {
		h.runCount(8, n, func() { h.check(a, "fidelity", spec{mode: modeJSON, seed: h.seed(), n: jsonTokens}, nil) })
		h.runCount(20, n, func() { h.check(a, "fidelity", spec{mode: modeSSE, seed: h.seed(), n: 50}, nil) })
		h.runCount(4, max(4, n/10), func() {
			h.check(a, "fidelity", spec{mode: modeSSE, seed: h.seed(), n: 20, interval: eventInterval}, nil)
		})
		h.runCount(4, max(4, n/10), func() {
			h.check(a, "fidelity", spec{mode: modeAudio, seed: h.seed(), n: 16, size: 4096}, nil)
		})
		h.runCount(8, max(4, n/4), func() {
			h.check(a, "fidelity", spec{mode: modeSSE, seed: h.seed(), n: 50, gzip: true}, nil)
		})
		for _, s := range []spec{
			{mode: modeSSE, n: 20, failAt: 10},
			{mode: modeSSE, n: 20, failAt: 10, gzip: true},
			{mode: modeAudio, n: 16, size: 4096, failAt: 8},
		} {
			h.runCount(4, 8, func() {
				s := s
				s.seed = h.seed()
				h.expectCut(a, s)
			})
		}
	}
}

// expectCut sends a request whose upstream breaks off mid-response and
// fails the run unless the client sees the break.
func (h *harness) expectCut(a *arm, s spec) {
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	_, err := h.d.do(ctx, a, s, nil, nil)
	switch k := kindOf(err); {
	case err == nil:
		h.res.count(a.name, false)
		h.fails.add(a.name, "cut-"+s.mode, failf(failAltered, "the upstream broke off after %d of %d, but the client saw a clean end", s.failAt, s.n))
	case k == failTruncated:
		h.res.count(a.name, true)
	default:
		h.res.count(a.name, false)
		h.fails.add(a.name, "cut-"+s.mode, err)
	}
}

// latency measures, at concurrency 1, the time to first byte of JSON
// requests and streams and the latency of each event of 200-event streams.
func (h *harness) latency() {
	p := h.plan
	r := &h.res.latency
	for round := range p.rounds {
		h.logf("latency round %d/%d", round+1, p.rounds)
		for _, ai := range order(round) {
			a := h.arms[ai]
			for range p.jsonTTFB {
				if o, ok := h.check(a, "latency", spec{mode: modeJSON, seed: h.seed(), n: jsonTokens}, nil); ok {
					r.jsonTTFB[ai] = append(r.jsonTTFB[ai], o.ttfb)
				}
			}
			for range p.sseTTFB {
				if o, ok := h.check(a, "latency", spec{mode: modeSSE, seed: h.seed(), n: 3}, nil); ok {
					r.sseTTFB[ai] = append(r.sseTTFB[ai], o.ttfb)
				}
			}
			for range p.eventStreams {
				var lat []time.Duration
				if _, ok := h.check(a, "latency", spec{mode: modeSSE, seed: h.seed(), n: streamEvents, interval: eventInterval}, &lat); ok {
					r.events[ai] = append(r.events[ai], lat...)
				}
			}
		}
	}
}

// usage is what a server process used over a measured window.
type usage struct {
	wall       time.Duration
	cpu        time.Duration // the server's
	loadCPU    time.Duration // the mock upstream's and the driver's
	core1      time.Duration // all CPU time spent on core 1, by any process
	allocs     uint64
	allocBytes uint64
}

type snapshot struct {
	at       time.Time
	cpu      time.Duration
	loadCPU  time.Duration
	core1    time.Duration
	st       runtimeStats
	hasStats bool
}

func (h *harness) snap(a *arm) snapshot {
	s := snapshot{at: time.Now()}
	if up, err := cpuTime(h.up.pid()); err == nil {
		s.loadCPU += up
	}
	if self, err := cpuTime(os.Getpid()); err == nil {
		s.loadCPU += self
	}
	s.core1, _ = coreBusy(1)
	if a.proc != nil {
		s.cpu, _ = cpuTime(a.proc.pid())
		st, err := a.proc.stats(context.Background())
		s.st, s.hasStats = st, err == nil
	}
	return s
}

func (u *usage) add(from, to snapshot) {
	u.wall += to.at.Sub(from.at)
	u.cpu += to.cpu - from.cpu
	u.loadCPU += to.loadCPU - from.loadCPU
	u.core1 += to.core1 - from.core1
	if from.hasStats && to.hasStats {
		u.allocs += to.st.Allocs - from.st.Allocs
		u.allocBytes += to.st.AllocBytes - from.st.AllocBytes
	}
}

// throughput measures non-streaming requests per second and the server's
// CPU and allocations per request, closed-loop at each concurrency. It
// uses the lean rawClient, one keep-alive connection per worker.
func (h *harness) throughput() {
	p := h.plan
	for _, c := range p.tputConcs {
		t := tputResult{conc: c}
		for round := range p.tputRounds {
			h.logf("throughput at concurrency %d, round %d/%d", c, round+1, p.tputRounds)
			for _, ai := range order(round) {
				a := h.arms[ai]
				clients := make([]*rawClient, c)
				for w := range clients {
					clients[w] = newRawClient(strings.TrimPrefix(a.base, "http://"))
				}
				before := h.snap(a)
				n, _ := h.runFor(c, p.tputDur, func(w int) bool {
					a.sent.Add(1)
					err := clients[w].do(spec{mode: modeJSON, seed: h.seed(), n: jsonTokens}, a.key)
					h.res.count(a.name, err == nil)
					if err != nil {
						h.fails.add(a.name, "throughput", err)
					}
					return err == nil
				})
				t.arms[ai].add(before, h.snap(a))
				t.reqs[ai] += n
				for _, cl := range clients {
					cl.close()
				}
			}
		}
		h.res.tput = append(h.res.tput, t)
	}
}

// streaming measures the server's CPU and allocations per 200-event
// stream at concurrency 50, plain and gzip-compressed (flushed per event,
// which the relay decodes on a copy to observe it and the bare proxy
// passes on). Then, at concurrency allocConc, where events seldom pile up
// into one read, it compares 200-event with 20-event plain streams of the
// same duration for the allocations each further event costs.
func (h *harness) streaming() {
	p := h.plan
	r := &h.res.stream
	measure := func(a *arm, conc, count int, s spec, u *usage, n *int64) {
		var ok atomic.Int64
		before := h.snap(a)
		h.runCount(conc, count, func() {
			s := s
			s.seed = h.seed()
			if _, good := h.check(a, "streaming", s, nil); good {
				ok.Add(1)
			}
		})
		u.add(before, h.snap(a))
		*n += ok.Load()
	}
	long := spec{mode: modeSSE, n: streamEvents, interval: eventInterval}
	gz := spec{mode: modeSSE, n: streamEvents, interval: eventInterval, gzip: true}
	short := spec{mode: modeSSE, n: shortEvents, interval: shortInterval}
	for round := range p.streamRounds {
		for _, ai := range order(round) {
			a := h.arms[ai]
			h.logf("streaming %s, round %d/%d", a.name, round+1, p.streamRounds)
			measure(a, streamConc, p.streamCount, long, &r.long[ai], &r.longN[ai])
			measure(a, streamConc, p.streamCount, gz, &r.gzip[ai], &r.gzipN[ai])
		}
	}
	// A scrape allocates hundreds of objects; one more or less in a window
	// would swamp the per-event figure, so scraping pauses meanwhile.
	relayProc := h.arms[2].proc
	h.setScrape(nil)
	defer h.setScrape(relayProc)
	for _, ai := range []int{1, 2} {
		a := h.arms[ai]
		h.logf("allocations per event, %s", a.name)
		measure(a, allocConc, p.allocStreams, long, &r.allocLong[ai], &r.allocLongN[ai])
		measure(a, allocConc, p.allocStreams, short, &r.allocShort[ai], &r.allocShortN[ai])
	}
}

// memory measures the resident memory of idle open streams in fresh
// server processes, then releases them all and checks every one (the scale
// scenario). The direct arm runs the scale scenario only.
func (h *harness) memory() error {
	for _, a := range h.arms[1:] {
		if err := h.stopServer(a); err != nil {
			return err
		}
	}
	top := 0
	for _, ms := range h.plan.memSets {
		top = max(top, ms.counts[len(ms.counts)-1])
	}
	h.logf("scale: %d direct streams", top)
	sc := h.holdAndRelease(h.arms[0], "scale", top)
	sc.proto = "—"
	h.res.scale = append(h.res.scale, sc)
	for _, ms := range h.plan.memSets {
		counts := ms.counts
		if !ms.h2c {
			// Over HTTP/1.1 each stream holds two descriptors in the server.
			fit := (int(fileLimit()) - 200) / 2
			for len(counts) > 0 && counts[len(counts)-1] > fit {
				h.logf("skipping %d streams over HTTP/1.1: the open-file limit is %d", counts[len(counts)-1], fileLimit())
				counts = counts[:len(counts)-1]
			}
			if len(counts) == 0 {
				continue
			}
		}
		for _, a := range h.arms[1:] {
			if err := h.startServer(a, ms.instance(), ms.h2c); err != nil {
				return err
			}
			m, sc, err := h.memoryOf(a, counts)
			if err != nil {
				return err
			}
			m.proto, sc.proto = ms.proto(), ms.proto()
			h.res.mem = append(h.res.mem, m)
			h.res.scale = append(h.res.scale, sc)
			if err := h.stopServer(a); err != nil {
				return err
			}
		}
	}
	return nil
}

// settle frees what a process can and reads its RSS and runtime stats.
func (h *harness) settle(p *process) (int64, runtimeStats, error) {
	ctx := context.Background()
	if err := p.freeMemory(ctx); err != nil {
		return 0, runtimeStats{}, err
	}
	time.Sleep(200 * time.Millisecond) // let the freed pages leave the RSS
	r, err := rss(p.pid())
	if err != nil {
		return 0, runtimeStats{}, err
	}
	st, err := p.stats(ctx)
	return r, st, err
}

func (h *harness) memoryOf(a *arm, counts []int) (memResult, scaleResult, error) {
	h.runCount(8, 200, func() { h.check(a, "memory", spec{mode: modeJSON, seed: h.seed(), n: jsonTokens}, nil) })
	h.runCount(8, 100, func() { h.check(a, "memory", spec{mode: modeSSE, seed: h.seed(), n: shortEvents}, nil) })
	return h.measureHeld(a, counts, heldKind{group: "memory", scenario: "scale", noun: "streams",
		profile: strings.ReplaceAll(strings.ToLower(protoOf(a)), "/", ""), open: h.open})
}

// heldKind is what a memory measurement holds open: HTTP streams or
// WebSocket sessions.
type heldKind struct {
	group    string // the hold group's prefix, and the log's name of the measurement
	scenario string // the heldSet's, for failures
	noun     string // "streams", "sessions"
	profile  string // the heap profiles' file name part
	open     func(a *arm, group string, n int, set *heldSet) error
}

// measureHeld measures a's memory (after its warm-up) at each count of
// held items of kind k, opened in steps, then releases them all at once
// and checks every one (the scale result).
func (h *harness) measureHeld(a *arm, counts []int, k heldKind) (memResult, scaleResult, error) {
	m := memResult{arm: a.name}
	var err error
	if m.baseRSS, m.baseStats, err = h.settle(a.proc); err != nil {
		return m, scaleResult{}, err
	}
	group := k.group + "-" + a.name + "-" + strconv.FormatUint(h.seed(), 36)
	set := &heldSet{arm: a.name, scenario: k.scenario}
	start := time.Now()
	opened := 0
	for _, c := range counts {
		h.logf("%s %s: opening %s %d..%d", k.group, a.name, k.noun, opened+1, c)
		if err := k.open(a, group, c-opened, set); err != nil {
			return m, scaleResult{}, err
		}
		opened = c
		pt := memPoint{streams: c}
		time.Sleep(300 * time.Millisecond)
		pt.rawRSS, _ = rss(a.proc.pid())
		if pt.rss, pt.stats, err = h.settle(a.proc); err != nil {
			return m, scaleResult{}, err
		}
		pt.held = h.heldAtUpstream()
		if dir := h.cfg.HeapProfileDir; dir != "" {
			name := fmt.Sprintf("heap-%s-%s-%d.pb.gz", a.name, k.profile, c)
			if err := h.saveHeap(a.proc, filepath.Join(dir, name)); err != nil {
				h.logf("heap profile: %v", err)
			}
		}
		m.points = append(m.points, pt)
	}
	h.logf("%s %s: releasing %d %s", k.group, a.name, opened, k.noun)
	return m, h.finish(a, group, set, opened, start), nil
}

// heldAtUpstream asks the mock upstream how many streams it holds now.
func (h *harness) heldAtUpstream() int64 {
	b, err := h.up.control(context.Background(), "GET", "/held")
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// holdAndRelease opens n streams that all stay open at once, then
// releases them and checks every one.
func (h *harness) holdAndRelease(a *arm, scenario string, n int) scaleResult {
	group := scenario + "-" + a.name + "-" + strconv.FormatUint(h.seed(), 36)
	set := &heldSet{arm: a.name, scenario: scenario}
	start := time.Now()
	if err := h.open(a, group, n, set); err != nil {
		h.fails.add(a.name, scenario, err)
	}
	return h.finish(a, group, set, n, start)
}

// heldSet tracks streams opened to be held.
type heldSet struct {
	arm, scenario string
	wg            sync.WaitGroup
	ok            atomic.Int64
	failed        atomic.Int64
}

// open starts n streams of a hold group and returns once each has
// received its first event (or failed).
func (h *harness) open(a *arm, group string, n int, set *heldSet) error {
	return h.openHeld(a, n, set, "streams", func(ctx context.Context, onOpen func()) error {
		_, err := h.d.do(ctx, a, spec{mode: modeSSE, seed: h.seed(), n: heldEvents, hold: group}, nil, onOpen)
		return err
	})
}

// openHeld runs n held items (streams, sessions) of set, at most
// openInFlight opening at once, and returns once each has called its
// onOpen (or ended); one runs an item to its end, calling onOpen once it
// is open.
func (h *harness) openHeld(a *arm, n int, set *heldSet, noun string, one func(ctx context.Context, onOpen func()) error) error {
	sem := make(chan struct{}, openInFlight)
	var opened sync.WaitGroup
	opened.Add(n)
	for range n {
		sem <- struct{}{}
		set.wg.Add(1)
		go func() {
			defer set.wg.Done()
			var once sync.Once
			onOpen := func() { once.Do(func() { <-sem; opened.Done() }) }
			defer onOpen() // an item that failed before it opened
			ctx, cancel := context.WithTimeout(context.Background(), 2*requestTimeout)
			defer cancel()
			err := one(ctx, onOpen)
			h.res.count(a.name, err == nil)
			if err != nil {
				set.failed.Add(1)
				h.fails.add(a.name, set.scenario, err)
				return
			}
			set.ok.Add(1)
		}()
	}
	done := make(chan struct{})
	go func() { opened.Wait(); close(done) }()
	t := time.NewTimer(requestTimeout)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		return fmt.Errorf("%s: %d %s were not all open within %v", a.name, n, noun, requestTimeout)
	}
}

// finish releases a hold group and waits for its streams to end.
func (h *harness) finish(a *arm, group string, set *heldSet, n int, start time.Time) scaleResult {
	sc := scaleResult{arm: a.name, streams: n, peakHeld: h.heldAtUpstream(), openTime: time.Since(start)}
	t0 := time.Now()
	if _, err := h.up.control(context.Background(), "POST", "/release?hold="+group); err != nil {
		h.fails.add(a.name, set.scenario, fmt.Errorf("releasing the held streams: %w", err))
	}
	set.wg.Wait()
	sc.drainTime = time.Since(t0)
	sc.completed, sc.failed = set.ok.Load(), set.failed.Load()
	return sc
}

// saveHeap writes a heap profile of a child, taken after a GC.
func (h *harness) saveHeap(p *process, path string) error {
	b, err := p.control(context.Background(), "GET", "/heap")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// protoOf names the upstream protocol of a server arm.
func protoOf(a *arm) string {
	if a.h2c {
		return "h2c"
	}
	return "HTTP/1.1"
}
