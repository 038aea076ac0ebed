// Command relaybench benchmarks Stream Relay against a bare reverse proxy
// and a direct connection to a mock upstream, each server in its own
// process, and prints a markdown report. Any truncated or altered
// response makes it exit 1.
//
//	relaybench            # full run (a few minutes)
//	relaybench -quick     # every scenario, small
//	relaybench -smoke     # fidelity only, under a minute
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/streamrelay/relay/bench"
)

func main() {
	if code, ok := bench.RunChild(); ok {
		os.Exit(code)
	}
	var (
		smoke   = flag.Bool("smoke", false, "fidelity only: every arm, a few hundred responses and 1,000 concurrent streams each, a small hostile-clients attack, no timing")
		quick   = flag.Bool("quick", false, "every scenario at small sizes")
		out     = flag.String("out", "", "also write the markdown report to this file")
		prof    = flag.String("cpuprofile", "", "have the relay process write a CPU profile here; the report then lists its hot spots")
		bprof   = flag.String("bare-cpuprofile", "", "have the bare proxy's process write a CPU profile here, for comparison")
		heap    = flag.String("heapprofiles", "", "save heap profiles of the servers at each point of the memory scenario in this directory")
		workDir = flag.String("workdir", "", "directory for the relay's record files (default: a temporary directory)")
		only    = flag.String("scenarios", "", "comma-separated timed scenarios to run (default all): "+strings.Join(bench.Scenarios(), ", "))
		nice    = flag.Int("nice", -20, "niceness of every benchmark process in quick and full runs (0: leave it); shields the measurements from other work on the machine")
		noPin   = flag.Bool("no-pin", false, "do not pin processes to cores with taskset")
	)
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "relaybench: unexpected arguments %q\n", flag.Args())
		os.Exit(2)
	}
	mode := bench.ModeFull
	switch {
	case *smoke && *quick:
		fmt.Fprintln(os.Stderr, "relaybench: -smoke and -quick are exclusive")
		os.Exit(2)
	case *smoke:
		mode = bench.ModeSmoke
	case *quick:
		mode = bench.ModeQuick
	}
	var scenarios []string
	if *only != "" {
		scenarios = strings.Split(*only, ",")
	}
	profPath := *prof
	if profPath != "" {
		// An absolute path names the file unambiguously in the report.
		if abs, err := filepath.Abs(profPath); err == nil {
			profPath = abs
		}
	}
	os.Exit(bench.Run(bench.Config{
		Mode:           mode,
		Scenarios:      scenarios,
		CPUProfile:     profPath,
		Out:            *out,
		HeapProfileDir: *heap,
		BareCPUProfile: *bprof,
		WorkDir:        *workDir,
		NoPin:          *noPin,
		Nice:           niceness(mode, *nice),
		PinDriver:      !*noPin && mode != bench.ModeSmoke,
		Command:        command(),
	}))
}

// command is how the run was started, for the report: `go run` builds in
// a temporary directory, so its binary's path says nothing useful.
func command() string {
	prog := os.Args[0]
	if strings.Contains(prog, "go-build") {
		prog = "go run ./cmd/relaybench"
	}
	return strings.TrimSpace(prog + " " + strings.Join(os.Args[1:], " "))
}

// niceness leaves smoke runs, which measure nothing, at normal priority.
func niceness(mode string, n int) int {
	if mode == bench.ModeSmoke {
		return 0
	}
	return n
}
