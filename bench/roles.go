package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/streamrelay/relay"
)

// The harness runs each server as a separate process: it starts its own
// executable again with roleEnv set to a JSON roleConfig. The child serves
// on two loopback listeners (the server itself and a control port for
// statistics), prints their addresses as one JSON line on stdout, and
// runs until its stdin is closed, so that a child never outlives a
// harness that dies.

// roleEnv names the environment variable that makes a process a child.
const roleEnv = "RELAYBENCH_ROLE"

// Roles.
const (
	roleUpstream = "upstream"
	roleBare     = "bare"
	roleRelay    = "relay"
)

// roleConfig is what a child is told.
type roleConfig struct {
	Role       string `json:"role"`
	Upstream   string `json:"upstream,omitempty"`    // bare, relay: the mock upstream's base URL
	RecordFile string `json:"record_file,omitempty"` // relay: where records go, as JSON lines
	CPUProfile string `json:"cpu_profile,omitempty"` // bare, relay: where to write a CPU profile
	// UpstreamH2C makes the bare proxy and the relay speak cleartext
	// HTTP/2 to the upstream, multiplexing streams over few connections.
	UpstreamH2C bool `json:"upstream_h2c,omitempty"`
}

// roleAddrs is what a child answers.
type roleAddrs struct {
	Addr    string `json:"addr"`
	Control string `json:"control"`
}

// RunChild runs the server role named by the RELAYBENCH_ROLE environment
// variable, when the process was started as one of the harness's
// children, and returns its exit code and true. In any other process it
// returns (0, false) at once. Call it first thing in main (or TestMain).
func RunChild() (code int, isChild bool) {
	v := os.Getenv(roleEnv)
	if v == "" {
		return 0, false
	}
	var cfg roleConfig
	if err := json.Unmarshal([]byte(v), &cfg); err != nil {
		fmt.Fprintf(os.Stderr, "relaybench child: bad %s: %v\n", roleEnv, err)
		return 2, true
	}
	if err := runRole(cfg, os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "relaybench %s: %v\n", cfg.Role, err)
		return 1, true
	}
	return 0, true
}

// server is one role's handlers and how to stop it.
type server struct {
	handler http.Handler
	control *http.ServeMux
	stop    func(ctx context.Context) error // before the HTTP servers shut down
}

func runRole(cfg roleConfig, stdin io.Reader, stdout io.Writer) error {
	raiseFileLimit()
	var (
		srv *server
		err error
	)
	switch cfg.Role {
	case roleUpstream:
		srv = upstreamServer()
	case roleBare:
		srv, err = bareServer(cfg)
	case roleRelay:
		srv, err = relayServer(cfg)
	default:
		err = fmt.Errorf("unknown role %q", cfg.Role)
	}
	if err != nil {
		return err
	}
	if cfg.CPUProfile != "" {
		stopProfile, err := startCPUProfile(cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer stopProfile()
	}
	srv.control.HandleFunc("GET /stats", serveStats)
	srv.control.HandleFunc("POST /gc", func(http.ResponseWriter, *http.Request) { debug.FreeOSMemory() })
	srv.control.HandleFunc("GET /heap", func(w http.ResponseWriter, _ *http.Request) {
		runtime.GC()
		_ = pprof.Lookup("heap").WriteTo(w, 0)
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	cl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	main, ctl := newHTTPServer(srv.handler), newHTTPServer(srv.control)
	go func() { _ = main.Serve(ln) }()
	go func() { _ = ctl.Serve(cl) }()
	line, _ := json.Marshal(roleAddrs{Addr: ln.Addr().String(), Control: cl.Addr().String()})
	if _, err := fmt.Fprintf(stdout, "%s\n", line); err != nil {
		return err
	}

	_, _ = io.Copy(io.Discard, stdin) // until the harness closes it
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var errs []error
	if srv.stop != nil {
		errs = append(errs, srv.stop(ctx))
	}
	if err := main.Shutdown(ctx); err != nil {
		errs = append(errs, main.Close())
	}
	errs = append(errs, ctl.Close())
	return errors.Join(errs...)
}

// startCPUProfile profiles the process until the returned function runs.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

// newHTTPServer is the host server of every role, configured alike. It
// speaks HTTP/1.1 and, for the upstream hop of the memory scenario,
// cleartext HTTP/2 with prior knowledge.
func newHTTPServer(h http.Handler) *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		Protocols:         &p,
	}
}

func upstreamServer() *server {
	u := newUpstream()
	ctl := http.NewServeMux()
	ctl.Handle("/", u.control())
	return &server{handler: u, control: ctl, stop: func(context.Context) error { u.close(); return nil }}
}

func bareServer(cfg roleConfig) (*server, error) {
	target, err := url.Parse(cfg.Upstream)
	if err != nil {
		return nil, err
	}
	rp, ws := newBareProxy(target, cfg.UpstreamH2C), newBareWS(target.Host)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isWebSocket(r) {
			ws.ServeHTTP(w, r)
			return
		}
		rp.ServeHTTP(w, r)
	})
	return &server{handler: h, control: http.NewServeMux()}, nil
}

// relayServer builds the relay with everything on: API-key auth, an
// in-memory limiter too generous to refuse, Prometheus metrics (scraped by
// the driver on the control port), an asynchronous JSON-lines recorder
// writing to a file, and usage extraction for the route's provider.
func relayServer(cfg roleConfig) (*server, error) {
	f, err := os.OpenFile(cfg.RecordFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	opts := []relay.Option{
		relay.WithRoutes(relay.Route{
			Name:       "bench",
			Prefix:     "/v1",
			Upstream:   cfg.Upstream,
			AuthHeader: "Authorization",
			AuthValue:  upstreamKey,
			Provider:   relay.ProviderOpenAI,
		}),
		relay.WithAPIKeys(relay.APIKey{Key: clientKey, ID: "bench-client", Tenant: "bench"}),
		relay.WithRateLimit(relay.Limits{
			RequestsPerMinute: 1e12, Burst: 1 << 40,
			TokensPerMinute: 1 << 50, TokenBurst: 1 << 50,
		}),
		relay.WithRecorder(relay.NewJSONLinesRecorder(f)),
		relay.WithModels(modelName),
	}
	if cfg.UpstreamH2C {
		// Otherwise the relay's own default transport is measured.
		opts = append(opts, relay.WithTransport(upstreamTransport(true)))
	}
	rl, err := relay.New(opts...)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	ctl := http.NewServeMux()
	ctl.Handle("GET /metrics", rl.MetricsHandler())
	stop := func(ctx context.Context) error {
		err := rl.Shutdown(ctx) // writes the queued records
		return errors.Join(err, f.Close())
	}
	return &server{handler: rl, control: ctl, stop: stop}, nil
}

// runtimeStats are a child's runtime counters, served on GET /stats.
type runtimeStats struct {
	Allocs     uint64 `json:"allocs"`      // heap objects allocated since start
	AllocBytes uint64 `json:"alloc_bytes"` // heap bytes allocated since start
	HeapLive   uint64 `json:"heap_live"`   // bytes in live and unswept objects
	StackInuse uint64 `json:"stack_inuse"` // bytes in goroutine stacks
	Goroutines uint64 `json:"goroutines"`
	GCs        uint64 `json:"gcs"`
	Gomaxprocs int    `json:"gomaxprocs"`
}

func serveStats(w http.ResponseWriter, _ *http.Request) {
	// ReadMemStats stops the world, which flushes every P's cached
	// allocation counts; runtime/metrics would give figures that lag.
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(runtimeStats{
		Allocs: ms.Mallocs, AllocBytes: ms.TotalAlloc, HeapLive: ms.HeapAlloc, StackInuse: ms.StackInuse,
		Goroutines: uint64(runtime.NumGoroutine()), GCs: uint64(ms.NumGC),
		Gomaxprocs: runtime.GOMAXPROCS(0),
	})
}

// raiseFileLimit lifts the open-file limit as far as the process may
// (root may raise the hard limit too): 10,000 streams through a proxy
// need over 20,000 descriptors in it.
func raiseFileLimit() {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return
	}
	const want = 1 << 17
	if lim.Max < want {
		raised := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			return
		}
	}
	lim.Cur = lim.Max
	_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

// fileLimit reports the current soft open-file limit.
func fileLimit() uint64 {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return 0
	}
	return lim.Cur
}

// readAddrs reads a child's address line.
func readAddrs(r *bufio.Reader) (roleAddrs, error) {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return roleAddrs{}, fmt.Errorf("reading the child's addresses: %w", err)
	}
	var a roleAddrs
	if err := json.Unmarshal(line, &a); err != nil {
		return a, fmt.Errorf("child's address line %q: %w", line, err)
	}
	return a, nil
}
