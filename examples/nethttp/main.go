// Command nethttp mounts Stream Relay in a plain net/http server: the relay
// serves /llm/… beside the application's own routes.
//
//	OPENAI_API_KEY=sk-… RELAY_CLIENT_KEY=my-client-key go run ./nethttp
//	curl -N localhost:8080/llm/v1/chat/completions -H 'Authorization: Bearer my-client-key' \
//	  -H 'Content-Type: application/json' \
//	  -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hi"}]}'
package main

import (
	"context"
	"errors"
	"fmt"
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
	if err := run(log); err != nil {
		log.Error("nethttp example", "error", err.Error())
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	upstreamKey, clientKey := os.Getenv("OPENAI_API_KEY"), os.Getenv("RELAY_CLIENT_KEY")
	if upstreamKey == "" || clientKey == "" {
		return errors.New("set OPENAI_API_KEY (the upstream's key) and RELAY_CLIENT_KEY (the key clients send)")
	}
	rl, err := newRelay("https://api.openai.com", upstreamKey, clientKey, log)
	if err != nil {
		return err
	}
	// No WriteTimeout: it would cut long streams (the relay bounds each
	// write to a client itself). ReadHeaderTimeout guards against slowloris.
	srv := &http.Server{Addr: ":8080", Handler: newHandler(rl), ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe() }()
	log.Info("listening", "addr", srv.Addr)
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	// Drain the relay's streams first; the server's Shutdown would wait on
	// them without telling them to end.
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rl.Shutdown(sctx); err != nil {
		log.Warn("streams cut at shutdown", "error", err.Error())
	}
	return srv.Shutdown(sctx)
}

// newRelay builds a relay with one route, /v1 → upstream, injecting the
// upstream key and accepting one client key.
func newRelay(upstream, upstreamKey, clientKey string, log *slog.Logger) (*relay.Relay, error) {
	return relay.New(
		relay.WithRoutes(relay.Route{
			Name: "openai", Prefix: "/v1", Upstream: upstream,
			AuthHeader: "Authorization", AuthValue: upstreamKey,
		}),
		relay.WithAPIKeys(relay.APIKey{Key: clientKey, ID: "example"}),
		relay.WithLogger(log),
	)
}

// newHandler is the application: the relay under /llm/ and an ordinary
// route beside it. http.StripPrefix hands the relay the path without
// /llm, so its route prefixes are the upstream's own paths.
func newHandler(rl *relay.Relay) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/llm/", http.StripPrefix("/llm", rl))
	mux.Handle("GET /metrics", rl.MetricsHandler())
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "hello from the application")
	})
	return mux
}
