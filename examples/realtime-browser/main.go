// Command realtime-browser serves a web page that opens an OpenAI
// Realtime session from the browser through Stream Relay. The browser
// presents a relay key as the subprotocol "openai-insecure-api-key.<key>"
// (the WebSocket API cannot set headers); the relay checks it, removes it
// and dials the upstream with the upstream's own key, which never reaches
// the browser.
//
//	OPENAI_API_KEY=sk-… RELAY_CLIENT_KEY=my-browser-key go run ./realtime-browser
//	open 'http://localhost:8080/#key=my-browser-key&binary=0'
//
// Without an OpenAI account, -mock serves a mock realtime upstream on a
// loopback port instead (it echoes text and binary messages and answers
// response.create with a delta and usage):
//
//	RELAY_CLIENT_KEY=my-browser-key go run ./realtime-browser -mock
//	open 'http://localhost:8080/#key=my-browser-key'
package main

import (
	"context"
	"embed"
	"errors"
	"flag"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/examples/internal/realtimemock"
)

// static holds the page (an embed.FS is read-only).
//
//go:embed index.html
var static embed.FS

// mockUpstreamKey is the credential the relay injects towards the mock.
const mockUpstreamKey = "mock-upstream-key"

func main() {
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(log); err != nil {
		log.Error("realtime-browser example", "error", err.Error())
		os.Exit(1)
	}
}

func run(log *slog.Logger) error {
	addr := flag.String("addr", ":8080", "listen address")
	mock := flag.Bool("mock", false, "relay to a mock realtime upstream on loopback instead of api.openai.com")
	flag.Parse()
	upstream, upstreamKey, clientKey := "https://api.openai.com", os.Getenv("OPENAI_API_KEY"), os.Getenv("RELAY_CLIENT_KEY")
	if *mock {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		msrv := &http.Server{Handler: realtimemock.New(mockUpstreamKey), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = msrv.Serve(ln) }()
		defer msrv.Close()
		upstream, upstreamKey = "http://"+ln.Addr().String(), mockUpstreamKey
	}
	if upstreamKey == "" || clientKey == "" {
		return errors.New("set OPENAI_API_KEY (the upstream's key, or use -mock) and RELAY_CLIENT_KEY (the key the browser sends)")
	}
	rl, err := newRelay(upstream, upstreamKey, clientKey, log)
	if err != nil {
		return err
	}
	// No WriteTimeout or ReadTimeout: sessions last as long as the
	// conversation (the relay bounds idle ones itself).
	srv := &http.Server{Addr: *addr, Handler: newHandler(rl), ReadHeaderTimeout: 10 * time.Second}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe() }()
	log.Info("listening", "addr", srv.Addr, "upstream", upstream)
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	// The relay's Shutdown lets live sessions run until its deadline and
	// then closes them with 1001 (going away); http.Server.Shutdown does
	// not wait for hijacked connections, so the relay goes first.
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rl.Shutdown(sctx); err != nil {
		log.Warn("sessions cut at shutdown", "error", err.Error())
	}
	return srv.Shutdown(sctx)
}

// newRelay builds a relay with one route, /v1 → upstream, injecting the
// upstream key and accepting one browser key. Nothing in it is specific to
// WebSocket: an upgrade on a route's path is relayed as a session.
func newRelay(upstream, upstreamKey, clientKey string, log *slog.Logger) (*relay.Relay, error) {
	return relay.New(
		relay.WithRoutes(relay.Route{
			Name: "openai", Prefix: "/v1", Upstream: upstream,
			AuthHeader: "Authorization", AuthValue: upstreamKey,
		}),
		relay.WithAPIKeys(relay.APIKey{Key: clientKey, ID: "browser"}),
		relay.WithLogger(log),
	)
}

// newHandler serves the page at / and the relay at /v1/ on the same
// origin, so the page needs no CORS and its WebSocket URL is
// ws(s)://<this host>/v1/realtime.
func newHandler(rl http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/", rl)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		http.ServeFileFS(w, r, static, "index.html")
	})
	return mux
}
