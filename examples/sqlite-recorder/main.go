// Command sqlite-recorder runs Stream Relay with a custom Recorder that
// stores one row per request in SQLite (modernc.org/sqlite: pure Go, no
// cgo), then shows per-tenant usage from it.
//
//	OPENAI_API_KEY=sk-… RELAY_CLIENT_KEY=my-client-key go run ./sqlite-recorder -db relay.db
//	sqlite3 relay.db 'SELECT tenant, count(*), sum(input_tokens + output_tokens) FROM relay_requests GROUP BY tenant'
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/streamrelay/relay"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	dbPath := flag.String("db", "relay.db", "SQLite database `file`")
	flag.Parse()
	if err := run(*dbPath, log); err != nil {
		log.Error("sqlite-recorder example", "error", err.Error())
		os.Exit(1)
	}
}

func run(dbPath string, log *slog.Logger) error {
	upstreamKey, clientKey := os.Getenv("OPENAI_API_KEY"), os.Getenv("RELAY_CLIENT_KEY")
	if upstreamKey == "" || clientKey == "" {
		return errors.New("set OPENAI_API_KEY (the upstream's key) and RELAY_CLIENT_KEY (the key clients send)")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rec, err := OpenSQLiteRecorder(ctx, dbPath)
	if err != nil {
		return err
	}
	defer rec.Close()
	rl, err := newRelay("https://api.openai.com", upstreamKey, clientKey, rec, log)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", rl)
	mux.Handle("/readyz", rl.ReadyzHandler()) // fails while SQLite writes fail
	srv := &http.Server{Addr: ":8080", Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe() }()
	log.Info("listening", "addr", srv.Addr, "db", dbPath)
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Shutdown drains the streams, then writes the queued records: only
	// then may the database be closed.
	if err := rl.Shutdown(sctx); err != nil {
		log.Warn("shutdown: streams cut or records lost", "error", err.Error())
	}
	return srv.Shutdown(sctx)
}

// newRelay builds a relay that records to rec. The relay wraps rec in an
// AsyncRecorder (bounded queue, batches, retries with backoff), so SQLite
// is never written on the request path.
func newRelay(upstream, upstreamKey, clientKey string, rec relay.Recorder, log *slog.Logger) (*relay.Relay, error) {
	return relay.New(
		relay.WithRoutes(relay.Route{
			Name: "openai", Prefix: "/v1", Upstream: upstream,
			AuthHeader: "Authorization", AuthValue: upstreamKey,
		}),
		relay.WithAPIKeys(relay.APIKey{Key: clientKey, ID: "example", Tenant: "acme",
			Labels: map[string]string{"plan": "pro"}}),
		relay.WithRecorder(rec),
		relay.WithRecordQueue(relay.AsyncOptions{FlushInterval: 500 * time.Millisecond}),
		relay.WithLogger(log),
	)
}
