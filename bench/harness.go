// Package bench is Stream Relay's multi-process benchmark harness. It
// compares three ways of reaching a mock OpenAI-style upstream — directly,
// through a bare httputil.ReverseProxy, and through the relay with every
// feature on — interleaving them round by round, and checks every response
// byte for byte: a single truncated or altered stream fails the run.
//
// Each server runs in its own process, started from the harness's own
// executable (see RunChild); the server under test is pinned to one core
// with taskset where it exists, the driver and the mock upstream to
// another. Run it with `go run ./cmd/relaybench` (see README.md).
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Modes of a run.
const (
	ModeSmoke = "smoke" // fidelity only: every arm, no timing, under a minute
	ModeQuick = "quick" // every scenario, small
	ModeFull  = "full"  // every scenario at the sizes of BENCHMARKS.md
)

// pinnedEnv marks a harness process already pinned by taskset.
const pinnedEnv = "RELAYBENCH_PINNED"

// Config selects what a run does. The zero value of each field is the
// default given in its comment.
type Config struct {
	// Mode is ModeSmoke, ModeQuick or ModeFull (the default).
	Mode string
	// Scenarios limits a quick or full run to these timed scenarios (see
	// Scenarios()); empty means all. Fidelity checks always run.
	Scenarios []string
	// CPUProfile, if set, is where the relay's process writes a CPU profile
	// of the run; the report then lists the relay's hot spots. Profiling
	// costs the relay a little CPU, so keep timing figures from runs
	// without it.
	CPUProfile string
	// BareCPUProfile, if set, is where the bare proxy's process writes a
	// CPU profile, for comparison with the relay's.
	BareCPUProfile string
	// HeapProfileDir, if set, receives heap profiles of the bare proxy and
	// the relay at each point of the memory scenario.
	HeapProfileDir string
	// Out, if set, is a file the markdown report is also written to.
	Out string
	// WorkDir holds the relay's record files. Empty means a temporary
	// directory, removed at the end.
	WorkDir string
	// NoPin disables pinning with taskset.
	NoPin bool
	// Nice, when not zero, is the niceness every benchmark process runs
	// at (with nice(1); negative values need CAP_SYS_NICE), so that other
	// work on the machine disturbs the measurements less.
	Nice int
	// PinDriver re-executes the harness under `taskset -c 0` so that the
	// driver shares core 0 with the mock upstream. Only for a harness run
	// as its own program: the process is replaced.
	PinDriver bool
	// Exe is the executable children are started from. Empty means this
	// process's own, which must call RunChild first thing.
	Exe string
	// Command is the command line shown in the report.
	Command string
	// Stdout receives the report, Stderr progress and child diagnostics.
	// Nil means os.Stdout and os.Stderr.
	Stdout, Stderr io.Writer
}

// harness is one run.
type harness struct {
	cfg     Config
	plan    plan
	exe     string
	taskset string
	nice    string // path of nice(1), when Config.Nice is used
	workDir string
	up      *process
	arms    [3]*arm // direct, bare, relay
	d       *driver
	fails   *failures
	res     results
	seeds   atomic.Uint64

	scrapeMu sync.Mutex
	scrapeOn *process // the relay process being scraped, nil while none is up
	scrapes  atomic.Int64
	scrapeKO atomic.Int64
}

// Run runs the harness and returns the process exit code: 0 when every
// response was complete and intact, 1 when any was not, 2 when the
// harness itself could not run.
func Run(cfg Config) int {
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	// Children's diagnostics and progress lines share the writer.
	cfg.Stderr = &lockedWriter{w: cfg.Stderr}
	if cfg.Mode == "" {
		cfg.Mode = ModeFull
	}
	h, err := newHarness(cfg)
	if err != nil {
		fmt.Fprintf(cfg.Stderr, "relaybench: %v\n", err)
		return 2
	}
	code := h.run()
	return code
}

func newHarness(cfg Config) (*harness, error) {
	p, err := planFor(cfg.Mode)
	if err != nil {
		return nil, err
	}
	for _, s := range cfg.Scenarios {
		if !slices.Contains(Scenarios(), s) {
			return nil, fmt.Errorf("unknown scenario %q (want some of %s)", s, strings.Join(Scenarios(), ", "))
		}
	}
	h := &harness{cfg: cfg, plan: p, exe: cfg.Exe, d: newDriver(), fails: newFailures()}
	if h.exe == "" {
		if h.exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	if !cfg.NoPin && onlineCPUs() >= 2 {
		if path, err := exec.LookPath("taskset"); err == nil {
			h.taskset = path
		}
	}
	if cfg.Nice != 0 {
		if path, err := exec.LookPath("nice"); err == nil {
			h.nice = path
		}
	}
	if cfg.PinDriver && (h.taskset != "" || h.nice != "") && os.Getenv(pinnedEnv) == "" {
		// Replace this process with itself on core 0; the pid stays.
		args := append(append(h.prefix(0), h.exe), os.Args[1:]...)
		env := append(os.Environ(), pinnedEnv+"=1")
		return nil, fmt.Errorf("pinning the driver: %w", syscall.Exec(args[0], args, env))
	}
	return h, nil
}

// currentNice is this process's niceness.
func currentNice() int {
	// The raw system call answers 20 - niceness, so that it is positive.
	prio, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0)
	if err != nil {
		return 0
	}
	return 20 - prio
}

// onlineCPUs counts the machine's CPUs, whatever this process's affinity.
func onlineCPUs() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return runtime.NumCPU()
	}
	return max(1, strings.Count(string(b), "\nprocessor\t")+boolInt(strings.HasPrefix(string(b), "processor\t")))
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (h *harness) logf(format string, args ...any) {
	at := time.Since(h.res.started).Round(100 * time.Millisecond)
	fmt.Fprintf(h.cfg.Stderr, "relaybench %6v: "+format+"\n", append([]any{at}, args...)...)
}

func (h *harness) run() int {
	raiseFileLimit()
	h.res.started = time.Now()
	h.res.loadStart = loadAverage()
	h.workDir = h.cfg.WorkDir
	if h.workDir == "" {
		dir, err := os.MkdirTemp("", "relaybench-")
		if err != nil {
			h.logf("%v", err)
			return 2
		}
		h.workDir = dir
		defer os.RemoveAll(dir)
	}
	if err := h.start(); err != nil {
		h.logf("%v", err)
		h.stopAll()
		return 2
	}
	ctx, cancel := context.WithCancel(context.Background())
	scraped := make(chan struct{})
	go func() { defer close(scraped); h.scrape(ctx) }()

	err := h.scenarios()
	cancel()
	<-scraped
	h.stopAll()
	if err != nil {
		h.logf("%v", err)
		return 2
	}
	if h.cfg.CPUProfile != "" {
		if prof, err := readProfile(h.cfg.CPUProfile); err != nil {
			h.logf("reading the relay's CPU profile: %v", err)
		} else {
			h.res.profile = prof
		}
	}
	h.res.finished = time.Now()
	h.res.loadEnd = loadAverage()
	report := h.report()
	if _, err := io.WriteString(h.cfg.Stdout, report); err != nil {
		return 2
	}
	if h.cfg.Out != "" {
		if err := os.WriteFile(h.cfg.Out, []byte(report), 0o644); err != nil {
			h.logf("%v", err)
			return 2
		}
	}
	if n := h.fails.count(); n > 0 {
		h.logf("FAIL: %d responses were not complete and intact", n)
		return 1
	}
	return 0
}

// start launches the mock upstream and the two servers under test.
func (h *harness) start() error {
	var err error
	if h.up, err = h.spawn(roleConfig{Role: roleUpstream}, 0); err != nil {
		return err
	}
	h.res.procs = map[string]runtimeStats{}
	if st, err := h.up.stats(context.Background()); err == nil {
		h.res.procs[roleUpstream] = st
	}
	h.arms[0] = &arm{name: armDirect, base: h.up.url(), key: upstreamKey}
	h.arms[1] = &arm{name: armBare, key: clientKey}
	h.arms[2] = &arm{name: armRelay, key: clientKey}
	if err := h.startServer(h.arms[1], "main", false); err != nil {
		return err
	}
	return h.startServer(h.arms[2], "main", false)
}

// spawn starts a child on core cpu (when pinning).
func (h *harness) spawn(cfg roleConfig, cpu int) (*process, error) {
	return startProcess(h.prefix(cpu), h.exe, cfg, h.cfg.Stderr)
}

// prefix is the launcher command line that puts a program on core cpu at
// the configured niceness; empty when neither applies.
func (h *harness) prefix(cpu int) []string {
	var p []string
	// nice(1) adjusts relative to the current niceness, which a re-executed
	// driver already has.
	if adj := h.cfg.Nice - currentNice(); h.nice != "" && adj != 0 {
		p = append(p, h.nice, "-n", strconv.Itoa(adj))
	}
	if h.taskset != "" {
		p = append(p, h.taskset, "-c", strconv.Itoa(cpu))
	}
	return p
}

// startServer starts a fresh process for a server arm, on core 1.
func (h *harness) startServer(a *arm, instance string, h2c bool) error {
	cfg := roleConfig{Role: a.name, Upstream: h.up.url(), UpstreamH2C: h2c}
	a.h2c = h2c
	if a.name == armRelay {
		cfg.RecordFile = filepath.Join(h.workDir, "records-"+instance+".jsonl")
		if instance == "main" {
			cfg.CPUProfile = h.cfg.CPUProfile
		}
	}
	if a.name == armBare && instance == "main" {
		cfg.CPUProfile = h.cfg.BareCPUProfile
	}
	p, err := h.spawn(cfg, 1)
	if err != nil {
		return err
	}
	a.proc, a.base = p, p.url()
	a.sent.Store(0)
	a.takeWSUsage()
	if a.name == armRelay {
		h.setScrape(p)
		h.res.instances = append(h.res.instances, &relayInstance{name: instance, file: cfg.RecordFile})
	}
	if st, err := p.stats(context.Background()); err == nil {
		h.res.procs[a.name] = st
	}
	return nil
}

// stopServer stops a server arm's process; for the relay it first takes
// a last scrape and afterwards checks the records it wrote.
func (h *harness) stopServer(a *arm) error {
	if a.proc == nil {
		return nil
	}
	p := a.proc
	a.proc = nil
	if a.name != armRelay {
		return p.stop()
	}
	h.setScrape(nil)
	inst := h.res.instances[len(h.res.instances)-1]
	inst.sent = a.sent.Load()
	inst.wsWant = a.takeWSUsage()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if m, err := p.control(ctx, "GET", "/metrics"); err == nil {
		inst.dropped, inst.haveDropped = metricValue(m, "relay_records_dropped_total")
	}
	err := p.stop()
	inst.check()
	if inst.err != nil {
		h.fails.add(armRelay, "records", inst.err)
	}
	return err
}

func (h *harness) stopAll() {
	for _, a := range h.arms[1:] {
		if a == nil {
			continue
		}
		if err := h.stopServer(a); err != nil {
			h.logf("%v", err)
		}
	}
	if h.up != nil {
		if err := h.up.stop(); err != nil {
			h.logf("%v", err)
		}
		h.up = nil
	}
}

func (h *harness) setScrape(p *process) {
	h.scrapeMu.Lock()
	defer h.scrapeMu.Unlock()
	h.scrapeOn = p
}

// scrape fetches the relay's metrics every second, as Prometheus would,
// so that the relay's figures include serving them.
func (h *harness) scrape(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h.scrapeMu.Lock()
		p := h.scrapeOn
		h.scrapeMu.Unlock()
		if p == nil {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := p.control(sctx, "GET", "/metrics"); err != nil {
			h.scrapeKO.Add(1)
		} else {
			h.scrapes.Add(1)
		}
		cancel()
	}
}

// seed returns a fresh content seed.
func (h *harness) seed() uint64 { return splitmix(h.seeds.Add(1)) }

// failures collects responses that failed their checks.
type failures struct {
	mu       sync.Mutex
	total    int
	byKey    map[string]int // "arm/scenario/kind"
	examples []string
}

func newFailures() *failures { return &failures{byKey: map[string]int{}} }

const maxExamples = 12

func (f *failures) add(armName, scenario string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.total++
	f.byKey[armName+"/"+scenario+"/"+kindOf(err)]++
	if len(f.examples) < maxExamples {
		f.examples = append(f.examples, fmt.Sprintf("%s, %s: %v", armName, scenario, err))
	}
}

func (f *failures) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.total
}

// summary lists the failure counts by arm, scenario and kind.
func (f *failures) summary() (keys []string, counts map[string]int, examples []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	counts = make(map[string]int, len(f.byKey))
	for k, v := range f.byKey {
		keys = append(keys, k)
		counts[k] = v
	}
	sort.Strings(keys)
	return keys, counts, append([]string(nil), f.examples...)
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
