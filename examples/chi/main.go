// Command chi mounts Stream Relay in a chi router: the relay serves
// /llm/… beside the application's own routes, behind chi's usual
// middleware.
//
//	OPENAI_API_KEY=sk-… RELAY_CLIENT_KEY=my-client-key go run ./chi
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

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"github.com/streamrelay/relay"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("chi example", "error", err.Error())
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
	// No WriteTimeout: it would cut long streams.
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
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rl.Shutdown(sctx); err != nil { // drain streams first
		log.Warn("streams cut at shutdown", "error", err.Error())
	}
	return srv.Shutdown(sctx)
}

// newRelay builds a relay with one route, /v1 → upstream.
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

// newHandler is the application.
//
// chi's Recoverer re-panics http.ErrAbortHandler, so an interrupted binary
// stream is still aborted; Compress's default content types leave
// text/event-stream and audio alone (do not add "text/*" or "*/*" to
// them: a gzip writer holds bytes back). Mount does not change the
// request path for a plain http.Handler, hence http.StripPrefix.
func newHandler(rl *relay.Relay) http.Handler {
	r := chi.NewRouter()
	r.Use(middleware.RequestID, middleware.Recoverer, middleware.Compress(5))
	r.Get("/hello", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "hello from the application")
	})
	r.Mount("/llm", http.StripPrefix("/llm", rl))
	return r
}
