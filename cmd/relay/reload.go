package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamrelay/relay"
)

// app is the running server: what lives as long as the process (storage,
// limiters, the upstream transport, the certificate, the metrics) and the
// configuration generations built on it.
type app struct {
	path      string // the configuration file; "" with -demo
	addrFlag  string // -addr, which overrides the file's listen address
	getenv    func(string) (string, bool)
	lg        *logs
	st        *storage
	transport http.RoundTripper
	cert      *certificate // nil without server.tls
	tel       *telemetry   // the OTLP export; nil when off (otlp.go)
	metrics   *metricSet
	hooks     hooks
	// started is the configuration the process started with: its
	// listeners, storage and log format stay until a restart.
	started *fileConfig

	cur current

	mu       sync.Mutex // serialises reloads and the start of shutdown
	genID    int
	sum      [sha256.Size]byte // of the file content last loaded
	retiring sync.WaitGroup
	stopping chan struct{} // closed when shutdown begins
	// stopCtx is the shutdown's context, with its deadline: set under mu
	// before stopping is closed, read only after stopping is closed.
	stopCtx context.Context
	// life ends when the shutdown's deadline passes: a retired generation
	// that went idle before shutdown began writes its records in it, so
	// that none outlives the deadline.
	life    context.Context
	endLife context.CancelFunc
}

// newGeneration builds a relay for c, with a registry of its own.
func (a *app) newGeneration(c *fileConfig) (*generation, error) {
	reg := prometheus.NewRegistry()
	rl, err := relay.New(append(relayOptions(c, a.st, a.getenv, a.lg, reg, a.transport), a.tel.options()...)...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.file, err)
	}
	a.genID++
	a.metrics.add(reg)
	return newGeneration(a.genID, c, rl, reg), nil
}

// errStopping refuses a reload once shutdown has begun.
var errStopping = errors.New("shutting down")

// reload reads the configuration file again and, when it is valid, makes
// it current: new requests get its keys, routes, limits, timeouts, models
// and log level at once, while requests already running finish on the
// generation they started in. An invalid file changes nothing: the error,
// with its file, line and key, goes to the log, and the running
// configuration stays. Changes that only a restart applies (listen
// addresses, TLS on or off, storage, the metrics listener and path, the
// log format, the watch interval) are named in the log and left out; the
// rest applies.
func (a *app) reload(trigger string) (err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	log := a.lg.log
	defer func() {
		if errors.Is(err, errStopping) {
			return
		}
		result := "success"
		if err != nil {
			result = "rejected"
			log.Error("configuration reload rejected; the running configuration stays",
				"trigger", trigger, "generation", a.cur.p.Load().id, "error", err.Error())
		}
		a.metrics.reloads.WithLabelValues(result).Inc()
		if a.hooks.reloaded != nil {
			a.hooks.reloaded(err)
		}
	}()
	select {
	case <-a.stopping:
		return errStopping
	default:
	}
	if a.path == "" {
		return errors.New("nothing to reload: -demo has no configuration file")
	}
	src, err := os.ReadFile(a.path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	// A rejected file is not retried until it changes (but see server.tls).
	a.sum = sha256.Sum256(src)
	c, err := parseConfig(src, a.path, a.getenv)
	if err != nil {
		return err
	}
	restart := a.needsRestart(c)
	g, err := a.newGeneration(c)
	if err != nil {
		return err
	}
	if a.cert != nil && c.Server.TLS != nil {
		// Read the certificate again too (new paths, or the same files).
		if err := a.cert.use(c.Server.TLS.CertFile, c.Server.TLS.KeyFile); err != nil {
			a.discard(g)
			// The file may be right and the certificate files not
			// written yet: the watch tries again at its next tick.
			a.sum = [sha256.Size]byte{}
			return fmt.Errorf("%s:%d: server.tls: %w", c.file, c.line("server.tls"), err)
		}
	}
	old := a.cur.p.Swap(g)
	a.retiring.Add(1)
	go a.retire(old)

	if len(restart) > 0 {
		a.metrics.pending.Set(1)
		a.lg.always.Warn("configuration changes that need a restart were not applied", "keys", restart)
	} else {
		a.metrics.pending.Set(0)
	}
	// Written whatever the old or the new level: one line per reload.
	a.lg.always.Info("configuration reloaded", "trigger", trigger, "generation", g.id,
		"routes", c.routeSummary(), "client_keys", len(c.Auth.APIKeys),
		"rate_limit", c.rateLimitSummary(a.st), "log_level", c.Log.Level,
		"previous_generation", old.id, "previous_in_flight", old.inflight())
	a.lg.level.Set(parseLevel(c.Log.Level))
	return nil
}

// discard shuts down a generation that never served.
func (a *app) discard(g *generation) {
	_ = g.rl.Shutdown(context.Background())
	a.metrics.retire(g.reg)
}

// retire waits until no request is inside g — or until shutdown begins —
// and then shuts its relay down, which writes its queued records. Woken by
// the shutdown, it shuts down in the shutdown's own context, deadline and
// all, as the current generation does: the library then cuts streams
// still running ahead of the deadline by its reserve and writes the
// records in what is left, so the process exits by the deadline; records
// still unwritten are dropped and counted rather than outlive it.
func (a *app) retire(g *generation) {
	defer a.retiring.Done()
	g.retire()
	ctx := a.life
	select {
	case <-g.idle:
	case <-a.stopping:
		ctx = a.stopCtx // set before stopping was closed
	}
	if err := g.rl.Shutdown(ctx); err != nil {
		a.lg.log.Warn("retired configuration: streams cut at shutdown or records lost",
			"generation", g.id, "error", err.Error())
	}
	a.metrics.retire(g.reg)
	a.lg.log.Debug("configuration generation retired", "generation", g.id)
}

// stop shuts every generation down: the current one and those still
// draining, all by ctx's deadline (grace is for the log only).
func (a *app) stop(ctx context.Context, grace time.Duration) {
	a.mu.Lock()
	a.stopCtx = ctx
	close(a.stopping)
	a.mu.Unlock()
	defer context.AfterFunc(ctx, a.endLife)()
	g := a.cur.p.Load()
	if err := g.rl.Shutdown(ctx); err != nil {
		a.lg.log.Warn("shutdown: streams cut or records lost", "error", err.Error(), "deadline", grace.String())
	}
	a.retiring.Wait()
}

// needsRestart lists the keys whose change c makes but a reload does not
// apply.
func (a *app) needsRestart(c *fileConfig) []string {
	o := a.started
	var keys []string
	changed := func(key string, was, is any) {
		if !reflect.DeepEqual(was, is) {
			keys = append(keys, key)
		}
	}
	if a.addrFlag == "" {
		changed("server.addr/host/port", o.listenAddr(), c.listenAddr())
	}
	changed("server.tls", o.Server.TLS != nil, c.Server.TLS != nil)
	changed("observability.otlp", o.Observability.OTLP, c.Observability.OTLP)
	changed("server.h2c", o.Server.H2C, c.Server.H2C)
	changed("server.read_header_timeout", o.Server.ReadHeaderTimeout, c.Server.ReadHeaderTimeout)
	changed("server.keepalive_timeout", o.Server.KeepaliveTimeout, c.Server.KeepaliveTimeout)
	changed("server.max_header_bytes", o.Server.MaxHeaderBytes, c.Server.MaxHeaderBytes)
	changed("server.watch_interval", o.Server.WatchInterval, c.Server.WatchInterval)
	// The stores are opened once; the queue is each generation's own.
	ws, is := o.Storage, c.Storage
	ws.Queue, is.Queue = queueConfig{}, queueConfig{}
	changed("storage", ws, is)
	changed("observability.prometheus", o.Observability.Prometheus, c.Observability.Prometheus)
	changed(c.logKey()+".format", o.Log.Format, c.Log.Format)
	return keys
}

// watch reloads on each value from the reload channel (SIGHUP) and, with
// server.watch_interval, whenever the file's content changes. It returns a
// channel closed when it has stopped, once ctx ends.
func (a *app) watch(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var tick <-chan time.Time
		if d := time.Duration(a.started.Server.WatchInterval); d > 0 && a.path != "" {
			t := time.NewTicker(d)
			defer t.Stop()
			tick = t.C
		}
		var readErr string
		for {
			select {
			case <-ctx.Done():
				return
			case <-a.hooks.reload:
				_ = a.reload("SIGHUP")
			case <-tick:
				src, err := os.ReadFile(a.path)
				if err != nil {
					// Logged once per spell: a file being replaced may be
					// missing for an instant.
					if err.Error() != readErr {
						readErr = err.Error()
						a.lg.log.Warn("watching the configuration: cannot read it", "error", readErr)
					}
					continue
				}
				readErr = ""
				a.mu.Lock()
				same := sha256.Sum256(src) == a.sum
				a.mu.Unlock()
				if !same {
					_ = a.reload("file changed")
				}
			}
		}
	}()
	return done
}
