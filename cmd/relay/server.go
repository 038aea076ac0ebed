package main

import (
	"context"
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

	"github.com/streamrelay/relay"
)

// hooks let tests drive the server; the zero value is production.
type hooks struct {
	// listening is told the address the server listens on.
	listening func(addr string)
	// demoStep paces the demo upstream (see startDemoUpstream).
	demoStep func(ctx context.Context) error
	// getenv replaces os.LookupEnv.
	getenv func(string) (string, bool)
}

// usageError is a bad command line; main exits 2 for it.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// run is the whole program: it parses args, serves until ctx is cancelled
// (SIGINT or SIGTERM in main), then drains and returns nil. It returns an
// error when it cannot start; logs go to stderr, records by default to
// stdout.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runWith(ctx, args, stdout, stderr, hooks{})
}

func runWith(ctx context.Context, args []string, stdout, stderr io.Writer, h hooks) (err error) {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration `file` (YAML; see cmd/relay/README.md)")
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
		if cfg, err = loadConfig(*configPath, getenv); err != nil {
			return err
		}
	default:
		return usageError{"no configuration: give -config FILE, or -demo to try the relay"}
	}
	if *check {
		fmt.Fprintf(stdout, "%s: configuration OK (%d routes, %d client keys)\n", cfg.file, len(cfg.Routes), len(cfg.Auth.APIKeys))
		return nil
	}
	listen := cfg.listenAddr()
	if *addr != "" {
		listen = *addr
	}

	log := newLogger(cfg.Log, stderr)
	st, err := openStorage(ctx, cfg, stdout, log)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := st.close(); cerr != nil && err == nil {
			log.Warn("closing storage failed", "error", cerr.Error())
		}
	}()
	rl, err := relay.New(relayOptions(cfg, st, getenv, log, newRegistry())...)
	if err != nil {
		return fmt.Errorf("%s: %w", cfg.file, err)
	}

	mux := http.NewServeMux()
	mux.Handle("/healthz", rl.HealthzHandler())
	mux.Handle("/readyz", rl.ReadyzHandler())
	if p := cfg.Observability.Prometheus; p.Enabled {
		mux.Handle(p.Path, rl.MetricsHandler())
	}
	mux.Handle("/", rl)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: time.Duration(cfg.Server.ReadHeaderTimeout),
		IdleTimeout:       time.Duration(cfg.Server.KeepaliveTimeout),
		// No WriteTimeout or ReadTimeout: either would cut long streams.
		// The relay bounds each write to a client itself (client write
		// timeout) and extends the connection's deadline as a stream
		// progresses.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		_ = rl.Shutdown(context.Background())
		return fmt.Errorf("listen: %w", err)
	}
	bound := ln.Addr().String()
	log.Info("relay listening", "addr", bound, "routes", cfg.routeSummary(), "client_keys", len(cfg.Auth.APIKeys),
		"rate_limit", cfg.rateLimitSummary(st), "records", strings.Join(st.names, ","))
	if mock != nil {
		printDemoBanner(stderr, bound)
	}
	if h.listening != nil {
		h.listening(bound)
	}

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		_ = rl.Shutdown(context.Background())
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	grace := time.Duration(cfg.Server.ShutdownTimeout)
	log.Info("shutting down: draining streams", "deadline", grace.String())
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	// The relay first: it refuses new requests with 503 (and /readyz fails)
	// while live streams finish, then writes the queued records. The
	// server's Shutdown would otherwise wait on the streams itself.
	if err := rl.Shutdown(dctx); err != nil {
		log.Warn("shutdown: streams cut or records lost", "error", err.Error())
	}
	sctx, cancel2 := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel2()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-served
	log.Info("stopped")
	return nil
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
	case st.limiter != nil:
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
