// Command gin mounts Stream Relay in a Gin engine: the relay serves /llm/…
// beside the application's own routes.
//
//	OPENAI_API_KEY=sk-… RELAY_CLIENT_KEY=my-client-key go run ./gin
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
	"syscall"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/streamrelay/relay"
)

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	gin.SetMode(gin.ReleaseMode)
	if err := run(log); err != nil {
		log.Error("gin example", "error", err.Error())
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
// gin.Recovery is applied to the application's routes only, not to the
// relay's: it recovers http.ErrAbortHandler, the panic with which the
// relay aborts an interrupted binary stream (TTS audio), and then lets the
// response end normally, so that a client would take a truncated audio
// file for a complete one. (SSE streams are safe either way: the relay
// ends them with an error event, without panicking.) gin's ResponseWriter
// implements Flush and Unwrap, which the relay's http.ResponseController
// needs.
func newHandler(rl *relay.Relay) *gin.Engine {
	r := gin.New()
	app := r.Group("/", gin.Recovery())
	app.GET("/hello", func(c *gin.Context) {
		c.String(http.StatusOK, "hello from the application\n")
	})
	r.Any("/llm/*path", gin.WrapH(http.StripPrefix("/llm", rl)))
	return r
}
