package bench

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The hostile-clients scenario (issue #9): while normal streams run, a
// fresh server process receives slow-body connections (headers with a
// Content-Length, then one body byte every slowTick; half without a key)
// and clients that each send large JSON bodies, one at a time, to an
// upstream endpoint that waits before answering. It reports the server's
// peak resident memory, how the hostile requests ended, and what the
// attack added to the normal streams' latency, for the bare proxy and the
// relay. Only the normal streams are checked for fidelity: the hostile
// requests may be refused in any way (a 200 to a large body is still
// checked byte for byte).

// Constants of the hostile scenario, in every mode.
const (
	slowTick      = 2 * time.Second // between the bytes of a slow body
	slowLength    = 4096            // the Content-Length a slow connection declares
	largeSize     = 9 << 20         // bytes of each large body, under both servers' 10 MiB limit
	largeCutoff   = 2 * time.Second // no large body starts closer than this to the attack's end
	normalTimeout = time.Minute     // a normal stream taking longer fails
	dialInFlight  = 64              // slow connections being opened at once
	refusalPause  = 100 * time.Millisecond
	memSample     = 100 * time.Millisecond // VmRSS sampling period; goroutines every 10th sample
	releaseWait   = 10 * time.Second       // bound on waiting for the server to let go after the attack
)

// hostilePlan sizes the hostile-clients scenario.
type hostilePlan struct {
	slow       int           // slow-body connections, every other one with a valid key
	large      int           // clients sending large bodies, one at a time
	quiet      time.Duration // normal streams alone, before the attack
	attack     time.Duration // the attack, normal streams alongside
	upDelay    time.Duration // the upstream's wait before answering a large body
	normalConc int           // concurrent normal streams
}

// files is the descriptors the scenario needs in the server, and about as
// many in the driver: one per client connection, one per upstream
// connection, and some for listeners and the rest.
func (hp hostilePlan) files() int { return hp.slow + 2*hp.large + 2*hp.normalConc + 256 }

// hostile kinds, in report order.
const (
	kindSlowNoKey = iota
	kindSlowKey
	kindLarge
	hostileKinds
)

func hostileKindName(k int) string {
	return [...]string{"slow body, no key", "slow body, valid key", "9 MiB body, valid key"}[k]
}

// hostileTally counts how one kind of hostile request ended.
type hostileTally struct {
	clients  int
	requests int64
	ends     map[string]int64 // by status code ("401") or end (endOpen, …)
	answer   samples          // time to a response, of those answered
}

// normalResult is the normal streams of one phase.
type normalResult struct {
	served  int64
	refused map[int]int64 // clean refusals (429, 503) by status
	ttfb    samples       // to the first event
	events  samples       // each event's latency (receive time minus send stamp)
}

// hostileResult is one arm's run of the scenario.
type hostileResult struct {
	arm      string
	plan     hostilePlan // as run (slow may be reduced to fit the open-file limit)
	wantSlow int         // slow connections the mode asks for

	baseRSS    int64 // settled, before the quiet phase
	peakRSS    int64 // VmHWM at the attack's end
	sampledRSS int64 // the largest VmRSS sampled during the attack
	endRSS     int64 // VmRSS at the attack's end
	afterRSS   int64 // settled, after the release
	baseG      uint64
	peakG      uint64 // goroutines, the most sampled during the attack
	afterG     uint64 // goroutines after the release
	attackCPU  time.Duration
	loadCPU    time.Duration // the mock upstream's and the driver's, during the attack
	core1      time.Duration // core 1 busy, by any process, during the attack
	attackWall time.Duration
	released   time.Duration // from the attack's end until the server let go (see hostileOn)

	quiet, attack normalResult
	kinds         [hostileKinds]hostileTally
}

// hostile runs the scenario on the bare proxy and then the relay, each in
// a fresh process. The main server processes are stopped first.
func (h *harness) hostile() error {
	for _, a := range h.arms[1:] {
		if err := h.stopServer(a); err != nil {
			return err
		}
	}
	hp := h.fitFileLimit(h.plan.hostile)
	for _, a := range h.arms[1:] {
		if err := h.startServer(a, "hostile", false); err != nil {
			return err
		}
		r, err := h.hostileOn(a, hp)
		if err != nil {
			return err
		}
		r.wantSlow = h.plan.hostile.slow
		h.res.hostile = append(h.res.hostile, r)
		if err := h.stopServer(a); err != nil {
			return err
		}
	}
	return nil
}

// fitFileLimit reduces the slow connections, if need be, to what the
// open-file limit allows (see hostileFiles). Every process of the harness
// has already raised its soft limit as far as it may (raiseFileLimit).
func (h *harness) fitFileLimit(hp hostilePlan) hostilePlan {
	lim := int(fileLimit())
	if hp.files() <= lim {
		return hp
	}
	other := hp.files() - hp.slow
	fit := max(0, lim-other)
	h.logf("hostile: the open-file limit is %d; slow connections reduced from %d to %d", lim, hp.slow, fit)
	hp.slow = fit
	return hp
}

// hostileOn runs the scenario against one server arm.
func (h *harness) hostileOn(a *arm, hp hostilePlan) (hostileResult, error) {
	r := hostileResult{arm: a.name, plan: hp}
	p := a.proc
	h.logf("hostile %s: warming up", a.name)
	h.runCount(8, 100, func() { h.check(a, "hostile", spec{mode: modeJSON, seed: h.seed(), n: jsonTokens}, nil) })
	h.runCount(8, 40, func() { h.check(a, "hostile", spec{mode: modeSSE, seed: h.seed(), n: shortEvents}, nil) })
	var (
		st  runtimeStats
		err error
	)
	if r.baseRSS, st, err = h.settle(p); err != nil {
		return r, err
	}
	r.baseG = st.Goroutines

	h.logf("hostile %s: %v of normal streams alone", a.name, hp.quiet)
	h.normalStreams(a, hp.normalConc, hp.quiet, &r.quiet)

	h.logf("hostile %s: %d slow-body connections, %d clients of %d MiB bodies, for %v", a.name, hp.slow, hp.large, largeSize>>20, hp.attack)
	sampler := h.sampleMemory(p)
	cpu0, _ := cpuTime(p.pid())
	load0 := h.loadCPU()
	core0, _ := coreBusy(1)
	t0 := time.Now()
	end := t0.Add(hp.attack)
	ctx, cancel := context.WithDeadline(context.Background(), end)
	defer cancel()
	at := newHostileTallies(hp)
	var wg sync.WaitGroup
	opened := h.slowClients(ctx, a, hp.slow, at, &wg)
	h.largeClients(ctx, a, hp, end, at, &wg)
	if !waitTimeout(opened, 30*time.Second) {
		h.logf("hostile %s: the slow connections were not all opened within 30s", a.name)
	}
	h.normalStreams(a, hp.normalConc, time.Until(end), &r.attack)
	r.endRSS, _ = rss(p.pid())
	r.peakRSS, _ = peakRSS(p.pid())
	cpu1, _ := cpuTime(p.pid())
	core1, _ := coreBusy(1)
	r.attackCPU, r.loadCPU, r.core1, r.attackWall = cpu1-cpu0, h.loadCPU()-load0, core1-core0, time.Since(t0)
	cancel()
	wg.Wait()
	r.kinds = at.result()

	// Every hostile connection is closed now. Wait for the server to let
	// go of them: until its goroutines are back near the baseline, or have
	// not fallen for a second (idle upstream connections kept for reuse
	// hold two each), at most releaseWait.
	t1 := time.Now()
	slack := uint64(2*hp.normalConc + 16) // the driver's idle keep-alive connections
	var last uint64
	lastFall := t1
	for time.Since(t1) < releaseWait && time.Since(lastFall) < time.Second {
		st, err := p.stats(context.Background())
		if err != nil || st.Goroutines <= r.baseG+slack {
			break
		}
		if last == 0 || st.Goroutines < last {
			last, lastFall = st.Goroutines, time.Now()
		}
		time.Sleep(memSample)
	}
	r.released = time.Since(t1)
	r.sampledRSS, r.peakG = sampler()
	if r.afterRSS, st, err = h.settle(p); err != nil {
		return r, err
	}
	r.afterG = st.Goroutines
	h.logf("hostile %s: peak RSS %s (from %s), %s", a.name, mib(r.peakRSS), mib(r.baseRSS), r.endsSummary())
	return r, nil
}

// loadCPU is the CPU time the mock upstream and this process have used.
func (h *harness) loadCPU() time.Duration {
	up, _ := cpuTime(h.up.pid())
	self, _ := cpuTime(os.Getpid())
	return up + self
}

// waitTimeout waits for wg, at most d; it reports whether wg finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// hostileTallies collects the hostile requests' ends from many goroutines.
type hostileTallies struct {
	mu    sync.Mutex
	kinds [hostileKinds]hostileTally
}

func newHostileTallies(hp hostilePlan) *hostileTallies {
	t := &hostileTallies{}
	t.kinds[kindSlowNoKey].clients = hp.slow - hp.slow/2
	t.kinds[kindSlowKey].clients = hp.slow / 2
	t.kinds[kindLarge].clients = hp.large
	for i := range t.kinds {
		t.kinds[i].ends = map[string]int64{}
	}
	return t
}

func (t *hostileTallies) add(kind int, e rawEnd) {
	key := e.how
	if e.how == endAnswered {
		key = strconv.Itoa(e.status)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	k := &t.kinds[kind]
	k.requests++
	k.ends[key]++
	if e.how == endAnswered {
		k.answer = append(k.answer, e.after)
	}
}

func (t *hostileTallies) result() [hostileKinds]hostileTally {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.kinds
}

// slowClients opens n slow-body connections, every other one with the
// client key, and returns a group that is done once each has written its
// head (or failed to). Each trickles its body until it is answered or ctx
// ends; wg is done when all have ended.
func (h *harness) slowClients(ctx context.Context, a *arm, n int, at *hostileTallies, wg *sync.WaitGroup) *sync.WaitGroup {
	addr := strings.TrimPrefix(a.base, "http://")
	body := paddedBody(chatStreamBody, slowLength)
	sem := make(chan struct{}, dialInFlight)
	opened := new(sync.WaitGroup)
	opened.Add(n)
	rng := rand.New(rand.NewPCG(h.seed(), 1))
	for i := range n {
		kind, key := kindSlowNoKey, ""
		if i%2 == 1 {
			kind, key = kindSlowKey, a.key
		}
		head := requestHead(addr, spec{mode: modeSSE, seed: h.seed(), n: shortEvents}, key, len(body))
		// Spread the first bytes over a tick so that the connections do
		// not all write at once.
		first := time.Duration(rng.Int64N(int64(slowTick))) + time.Millisecond
		wg.Go(func() {
			var once sync.Once
			done := func() { once.Do(func() { <-sem; opened.Done() }) }
			defer done()
			sem <- struct{}{}
			e := rawExchange(ctx, addr, head, func(ctx context.Context, w net.Conn, answered <-chan struct{}) {
				a.sent.Add(1)
				done()
				trickle(body, first, slowTick)(ctx, w, answered)
			})
			at.add(kind, e)
		})
	}
	return opened
}

// largeClients starts hp.large clients, each sending large bodies with the
// client key, one at a time, until largeCutoff before end. A 200 is
// checked byte for byte; after anything else a client waits as long as a
// served request would have taken before it tries again, so that every
// arm is offered the same load.
func (h *harness) largeClients(ctx context.Context, a *arm, hp hostilePlan, end time.Time, at *hostileTallies, wg *sync.WaitGroup) {
	addr := strings.TrimPrefix(a.base, "http://")
	body := largeChatBody(largeSize)
	feed := whole(body)
	for range hp.large {
		wg.Go(func() {
			for time.Until(end) > largeCutoff {
				s := spec{mode: modeJSON, seed: h.seed(), n: jsonTokens, delay: hp.upDelay}
				e := rawExchange(ctx, addr, requestHead(addr, s, a.key, len(body)), feed)
				if e.sent {
					a.sent.Add(1)
				}
				at.add(kindLarge, e)
				if e.how == endAnswered && e.status == 200 {
					h.checkLarge(a, s, e)
					continue
				}
				t := time.NewTimer(hp.upDelay)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				t.Stop()
			}
		})
	}
}

// checkLarge checks a served large body's response, a JSON completion.
func (h *harness) checkLarge(a *arm, s spec, e rawEnd) {
	var err error
	switch t, serr := stamp(e.body); {
	case e.bodyErr != nil:
		err = failf(failTruncated, "large body's response: %v", e.bodyErr)
	case serr != nil:
		err = failf(failAltered, "large body's response: %v", serr)
	default:
		if want := appendCompletion(nil, s.seed, s.n, t); !bytes.Equal(e.body, want) {
			err = failf(failAltered, "large body's response differs: got %q, want %q", clip(e.body), clip(want))
		}
	}
	h.res.count(a.name, err == nil)
	if err != nil {
		h.fails.add(a.name, "hostile", err)
	}
}

// normalStreams runs 200-event streams from conc workers for d, checking
// each, and collects their TTFB and per-event latency. A clean refusal
// (429 or 503) is counted, not failed: a server may shed load under
// attack, and the report shows how much it did.
func (h *harness) normalStreams(a *arm, conc int, d time.Duration, nr *normalResult) {
	if nr.refused == nil {
		nr.refused = map[int]int64{}
	}
	var mu sync.Mutex
	var served atomic.Int64
	h.runFor(conc, d, func(int) bool {
		ctx, cancel := context.WithTimeout(context.Background(), normalTimeout)
		defer cancel()
		var lat []time.Duration
		o, err := h.d.do(ctx, a, spec{mode: modeSSE, seed: h.seed(), n: streamEvents, interval: eventInterval}, &lat, nil)
		status := statusOf(err)
		refused := kindOf(err) == failStatus && (status == 429 || status == 503)
		h.res.count(a.name, err == nil || refused)
		switch {
		case err == nil:
			served.Add(1)
			mu.Lock()
			nr.ttfb = append(nr.ttfb, o.ttfb)
			nr.events = append(nr.events, lat...)
			mu.Unlock()
			return true
		case refused:
			mu.Lock()
			nr.refused[status]++
			mu.Unlock()
			time.Sleep(refusalPause) // a refused client backs off a little
		default:
			h.fails.add(a.name, "hostile", err)
		}
		return false
	})
	nr.served += served.Load()
}

// sampleMemory samples a process's VmRSS every memSample, and its
// goroutines every tenth sample, until the returned function is called;
// that returns the largest of each.
func (h *harness) sampleMemory(p *process) func() (int64, uint64) {
	stop, done := make(chan struct{}), make(chan struct{})
	var peak int64
	var peakG uint64
	go func() {
		defer close(done)
		t := time.NewTicker(memSample)
		defer t.Stop()
		for i := 0; ; i++ {
			if v, err := rss(p.pid()); err == nil {
				peak = max(peak, v)
			}
			if i%10 == 0 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if st, err := p.stats(ctx); err == nil {
					peakG = max(peakG, st.Goroutines)
				}
				cancel()
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() (int64, uint64) {
		close(stop)
		<-done
		return peak, peakG
	}
}

// slowOpenAtEnd counts the slow-body connections still unanswered and
// open when the attack ended.
func (r *hostileResult) slowOpenAtEnd() int64 {
	return r.kinds[kindSlowNoKey].ends[endOpen] + r.kinds[kindSlowKey].ends[endOpen]
}

// addedEvents is the q-quantile of the normal streams' per-event latency
// under attack minus alone.
func (r *hostileResult) addedEvents(q float64) time.Duration {
	return r.attack.events.quantile(q) - r.quiet.events.quantile(q)
}

// endsSummary lists how the hostile requests ended, for the log.
func (r *hostileResult) endsSummary() string {
	parts := make([]string, 0, hostileKinds)
	for k := range r.kinds {
		parts = append(parts, hostileKindName(k)+": "+r.kinds[k].endsString())
	}
	return strings.Join(parts, "; ")
}

// endsString lists the ends of one kind, statuses first, most frequent
// first within each group.
func (t *hostileTally) endsString() string {
	if len(t.ends) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(t.ends))
	for k := range t.ends {
		keys = append(keys, k)
	}
	isStatus := func(k string) bool { _, err := strconv.Atoi(k); return err == nil }
	slices.SortFunc(keys, func(x, y string) int {
		if sx, sy := isStatus(x), isStatus(y); sx != sy {
			if sx {
				return -1
			}
			return 1
		}
		if c := cmp.Compare(t.ends[y], t.ends[x]); c != 0 {
			return c
		}
		return strings.Compare(x, y)
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s × %d", k, t.ends[k])
	}
	return strings.Join(parts, ", ")
}
