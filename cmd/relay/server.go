package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/streamrelay/relay"
)

// hooks let tests drive the server; the zero value is production, less
// the reload signal, which main passes.
type hooks struct {
	// listening is told the address the server listens on.
	listening func(addr string)
	// metricsListening is told the address of observability.prometheus.addr.
	metricsListening func(addr string)
	// demoStep paces the demo upstream (see startDemoUpstream).
	demoStep func(ctx context.Context) error
	// getenv replaces os.LookupEnv.
	getenv func(string) (string, bool)
	// reload asks for the configuration to be read again (SIGHUP in main).
	reload <-chan os.Signal
	// reloaded is told the outcome of each reload: nil, or why the new
	// configuration was rejected.
	reloaded func(err error)
	// transport replaces the upstream transport.
	transport http.RoundTripper
	// listener wraps the main listener.
	listener func(net.Listener) net.Listener
	// now paces the TLS certificate's renewal checks (nil: time.Now).
	now func() time.Time
}

// usageError is a bad command line; main exits 2 for it.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// run is the whole program: it parses args, serves until ctx is cancelled
// (SIGINT or SIGTERM in main), reloading the configuration on each value
// from reload (SIGHUP), then drains and returns nil. It returns an error
// when it cannot start; logs go to stderr, records by default to stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, reload <-chan os.Signal) error {
	return runWith(ctx, args, stdout, stderr, hooks{reload: reload})
}

func runWith(ctx context.Context, args []string, stdout, stderr io.Writer, h hooks) (err error) {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration `file` (YAML; see cmd/relay/README.md); SIGHUP reloads it")
	demo := fs.Bool("demo", false, "run with a built-in mock upstream and the client key \""+demoKey+"\"; needs no network")
	addr := fs.String("addr", "", "listen `address` (host:port), overriding the configuration")
	check := fs.Bool("check", false, "validate the configuration and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: relay -config FILE | relay -demo\n\nStream Relay: a streaming gateway for LLM and TTS APIs.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{"unexpected argument " + strconv.Quote(fs.Arg(0))}
	}
	getenv := h.getenv
	if getenv == nil {
		getenv = os.LookupEnv
	}

	var cfg *fileConfig
	var src []byte
	var mock *demoUpstream
	switch {
	case *demo && *configPath != "":
		return usageError{"-demo and -config cannot be combined"}
	case *demo:
		if mock, err = startDemoUpstream(h.demoStep); err != nil {
			return err
		}
		defer mock.Close()
		cfg = demoConfig(mock.url)
	case *configPath != "":
		if src, err = os.ReadFile(*configPath); err != nil {
			return fmt.Errorf("reading config: %w", err)
		}
		if cfg, err = parseConfig(src, *configPath, getenv); err != nil {
			return err
		}
	default:
		return usageError{"no configuration: give -config FILE, or -demo to try the relay"}
	}
	if *check {
		if tc := cfg.Server.TLS; tc != nil {
			if _, err := newCertificate(tc.CertFile, tc.KeyFile, slog.New(slog.DiscardHandler), nil); err != nil {
				return fmt.Errorf("%s:%d: server.tls: %w", cfg.file, cfg.line("server.tls"), err)
			}
		}
		if err := checkRelay(cfg, getenv); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: configuration OK (%d routes, %d client keys)\n", cfg.file, len(cfg.Routes), len(cfg.Auth.APIKeys))
		return nil
	}

	lg := newLogs(cfg.Log, stderr)
	log := lg.log
	a := &app{path: *configPath, addrFlag: *addr, getenv: getenv, lg: lg, started: cfg,
		metrics: newMetricSet(), stopping: make(chan struct{}), hooks: h, sum: sha256.Sum256(src)}
	a.life, a.endLife = context.WithCancel(context.Background())
	defer a.endLife()
	a.transport = h.transport
	if a.transport == nil {
		// One upstream connection pool for every generation.
		t := relay.NewTransport()
		defer t.CloseIdleConnections()
		a.transport = t
	}
	if tc := cfg.Server.TLS; tc != nil {
		if a.cert, err = newCertificate(tc.CertFile, tc.KeyFile, log, h.now); err != nil {
			return fmt.Errorf("%s:%d: server.tls: %w", cfg.file, cfg.line("server.tls"), err)
		}
	}
	if a.st, err = openStorage(ctx, cfg, stdout, log); err != nil {
		return err
	}
	defer func() {
		if cerr := a.st.close(); cerr != nil && err == nil {
			log.Warn("closing storage failed", "error", cerr.Error())
		}
	}()
	if a.tel, err = newTelemetry(ctx, cfg.Observability.OTLP); err != nil {
		return err
	}
	defer func() {
		// After the relays' shutdown: the spans of the last requests, and
		// the last metrics, are flushed, within a bound of their own.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if terr := a.tel.shutdown(sctx); terr != nil {
			log.Warn("flushing OpenTelemetry export failed", "error", terr.Error())
		}
	}()
	g, err := a.newGeneration(cfg)
	if err != nil {
		return err
	}
	a.cur.p.Store(g)

	listen := cfg.listenAddr()
	if *addr != "" {
		listen = *addr
	}
	srv := a.server(cfg, a.tel.handler(a.mux(cfg, cfg.Observability.Prometheus.Addr == "")))
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		_ = g.rl.Shutdown(context.Background())
		return fmt.Errorf("listen: %w", err)
	}
	if h.listener != nil {
		ln = h.listener(ln)
	}
	var msrv *http.Server
	var mln net.Listener
	if maddr := cfg.Observability.Prometheus.Addr; maddr != "" {
		if mln, err = net.Listen("tcp", maddr); err != nil {
			ln.Close()
			_ = g.rl.Shutdown(context.Background())
			return fmt.Errorf("%s:%d: observability.prometheus.addr: listen: %w", cfg.file, cfg.line("observability.prometheus.addr"), err)
		}
		msrv = &http.Server{Handler: a.metricsMux(cfg), ReadHeaderTimeout: srv.ReadHeaderTimeout,
			IdleTimeout: srv.IdleTimeout, MaxHeaderBytes: srv.MaxHeaderBytes, ErrorLog: srv.ErrorLog}
	}
	bound := ln.Addr().String()
	attrs := []any{"addr", bound, "protocols", srv.Protocols.String(), "tls", a.cert != nil,
		"routes", cfg.routeSummary(), "client_keys", len(cfg.Auth.APIKeys),
		"rate_limit", cfg.rateLimitSummary(a.st), "records", strings.Join(a.st.names, ",")}
	if mln != nil {
		attrs = append(attrs, "metrics_addr", mln.Addr().String())
	}
	log.Info("relay listening", attrs...)
	if mock != nil {
		printDemoBanner(stderr, bound)
	}
	if h.listening != nil {
		h.listening(bound)
	}
	if mln != nil && h.metricsListening != nil {
		h.metricsListening(mln.Addr().String())
	}

	served := make(chan error, 2)
	go func() {
		if a.cert != nil {
			served <- srv.ServeTLS(ln, "", "")
		} else {
			served <- srv.Serve(ln)
		}
	}()
	if msrv != nil {
		go func() { served <- msrv.Serve(mln) }()
	}
	wctx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	watching := a.watch(wctx)
	select {
	case err := <-served:
		stopWatching()
		<-watching
		// Streams still running are cut by the deadline, as on SIGTERM.
		grace := time.Duration(a.cur.p.Load().cfg.Server.ShutdownTimeout)
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
		a.stop(dctx, grace)
		cancel()
		_ = srv.Close()
		if msrv != nil {
			_ = msrv.Close()
		}
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	grace := time.Duration(a.cur.p.Load().cfg.Server.ShutdownTimeout)
	log.Info("shutting down: draining streams", "deadline", grace.String())
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	// The relays first: they refuse new requests with 503 (and /readyz
	// fails) while live streams finish, then write the queued records. The
	// server's Shutdown would otherwise wait on the streams itself.
	<-watching // ends with ctx: no reload from now on
	a.stop(dctx, grace)
	sctx, cancel2 := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel2()
	for _, s := range []*http.Server{srv, msrv} {
		if s != nil && s.Shutdown(sctx) != nil {
			_ = s.Close()
		}
	}
	<-served
	if msrv != nil {
		<-served
	}
	log.Info("stopped")
	return nil
}

// server is the main listener's http.Server. Its limits are documented in
// the README: header size and read time, keep-alive idle time; there is
// no ReadTimeout or WriteTimeout, either of which would cut long streams
// (the relay bounds each write to a client itself and extends the
// connection's write deadline as a stream progresses).
func (a *app) server(c *fileConfig, h http.Handler) *http.Server {
	s := &c.Server
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: time.Duration(s.ReadHeaderTimeout),
		IdleTimeout:       time.Duration(s.KeepaliveTimeout),
		MaxHeaderBytes:    s.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(a.lg.log.Handler(), slog.LevelWarn),
		Protocols:         new(http.Protocols),
		HTTP2: &http.HTTP2Config{
			// Streams one client connection may run at once (Go's
			// default, made explicit); more wait for a free slot.
			MaxConcurrentStreams: 250,
		},
	}
	srv.Protocols.SetHTTP1(true)
	if a.cert != nil {
		srv.Protocols.SetHTTP2(true)
		srv.TLSConfig = a.cert.tlsConfig()
	}
	srv.Protocols.SetUnencryptedHTTP2(s.H2C)
	return srv
}

// mux routes the health checks and, unless they have a listener of their
// own, the metrics; everything else goes to the current generation.
func (a *app) mux(c *fileConfig, withMetrics bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/healthz", http.HandlerFunc(healthz))
	mux.Handle("/readyz", http.HandlerFunc(a.readyz))
	if p := c.Observability.Prometheus; p.Enabled && withMetrics {
		mux.Handle(p.Path, a.metricsHandler())
	}
	mux.Handle("/", &a.cur)
	return mux
}

// metricsMux serves observability.prometheus.addr: the metrics and the
// health checks, nothing else.
func (a *app) metricsMux(c *fileConfig) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/healthz", http.HandlerFunc(healthz))
	mux.Handle("/readyz", http.HandlerFunc(a.readyz))
	mux.Handle(c.Observability.Prometheus.Path, a.metricsHandler())
	return mux
}

func (a *app) metricsHandler() http.Handler {
	return promhttp.HandlerFor(a.metrics, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(a.lg.log.Handler(), slog.LevelWarn),
	})
}

// healthz answers 200 "ok" while the process runs.
func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.WriteString(w, "ok\n")
}

// readyz answers 200 "ready", or 503 "not ready: …" naming what fails:
// "draining" during shutdown, else the stores that do not answer
// ("redis", "clickhouse"), else the relay's failing component ("limiter",
// "recorder": a store answers pings but refuses writes). Errors, which may
// name internal addresses, go to the log, never to the body.
func (a *app) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	var reasons []string
	err := a.cur.p.Load().rl.Ready(ctx)
	if errors.Is(err, relay.ErrDraining) {
		reasons = append(reasons, "draining")
	} else {
		for _, c := range a.st.checks {
			if cerr := c.hc.Healthy(ctx); cerr != nil {
				reasons = append(reasons, c.name)
				a.lg.log.Warn("not ready", "store", c.name, "error", cerr.Error())
			}
		}
		var nr *relay.NotReadyError
		if len(reasons) == 0 && errors.As(err, &nr) {
			reasons = append(reasons, nr.Component)
			a.lg.log.Warn("not ready", "part", nr.Component, "error", nr.Err.Error())
		}
	}
	if len(reasons) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "not ready: "+strings.Join(reasons, ", ")+"\n")
		return
	}
	_, _ = io.WriteString(w, "ready\n")
}

// listenAddr is server.addr, or server.host and server.port.
func (c *fileConfig) listenAddr() string {
	if c.Server.Addr != "" {
		return c.Server.Addr
	}
	return net.JoinHostPort(c.Server.Host, strconv.Itoa(c.Server.Port))
}

// routeSummary describes the routes for the startup log: upstream URLs are
// shown without their query or user information, which may hold secrets.
func (c *fileConfig) routeSummary() []string {
	out := make([]string, 0, len(c.Routes))
	for _, r := range c.Routes {
		urls := []string{r.Upstream}
		if len(r.Upstreams) > 0 {
			urls = urls[:0]
			for _, u := range r.Upstreams {
				urls = append(urls, u.URL)
			}
		}
		for i, s := range urls {
			if u, err := url.Parse(s); err == nil {
				urls[i] = u.Scheme + "://" + u.Host + u.Path
			}
		}
		out = append(out, r.Name+" "+r.Path+" -> "+strings.Join(urls, ","))
	}
	return out
}

func (c *fileConfig) rateLimitSummary(st *storage) string {
	switch {
	case !c.RateLimit.Enabled:
		return "off"
	case st.redis != nil:
		return "redis"
	default:
		return "memory"
	}
}

// printDemoBanner tells a person what to try.
func printDemoBanner(w io.Writer, addr string) {
	host, port, _ := net.SplitHostPort(addr)
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "localhost"
	}
	base := "http://" + net.JoinHostPort(host, port)
	fmt.Fprintf(w, `
Stream Relay demo: a built-in mock upstream, no network and no API key needed.
Client key: %s

  curl -N %s/v1/chat/completions -H 'Authorization: Bearer %s' \
    -H 'Content-Type: application/json' \
    -d '{"model":"demo","stream":true,"messages":[{"role":"user","content":"Hello"}]}'

Also %s/v1/messages (Anthropic events), %s/v1/audio/speech (audio/mpeg chunks),
%s/metrics, /healthz and /readyz. Records go to stdout, logs to stderr.

`, demoKey, base, demoKey, base, base, base)
}
