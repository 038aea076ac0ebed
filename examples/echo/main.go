// Command echo mounts Stream Relay in an Echo application: the relay serves
// /llm/… beside the application's own routes, behind Echo's usual
// middleware.
//
//	OPENAI_API_KEY=sk-… RELAY_CLIENT_KEY=my-client-key go run ./echo
//	curl -N localhost:8080/llm/v1/chat/completions -H 'Authorization: Bearer my-client-key' \
//	  -H 'Content-Type: application/json' \
//	  -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hi"}]}'
package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/streamrelay/relay"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("echo example", "error", err.Error())
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

// newHandler is the application, served by Echo itself (an *echo.Echo is an
// http.Handler).
//
// Echo's Recover re-panics http.ErrAbortHandler, so an interrupted binary
// stream is still aborted. Echo's Gzip compresses every content type, so
// it skips the relay's paths: a gzip writer would hold events back until
// flushed and would recompress bodies the relay passes through byte for
// byte. echo.Response implements Unwrap and Flush, which the relay's
// http.ResponseController needs.
func newHandler(rl *relay.Relay) *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Use(middleware.Recover(), middleware.RequestID())
	e.Use(middleware.GzipWithConfig(middleware.GzipConfig{
		Skipper: func(c echo.Context) bool { return strings.HasPrefix(c.Request().URL.Path, "/llm/") },
	}))
	e.GET("/hello", func(c echo.Context) error {
		return c.String(http.StatusOK, "hello from the application\n")
	})
	e.Any("/llm/*", echo.WrapHandler(http.StripPrefix("/llm", rl)))
	return e
}
