package relayclickhouse_test

import (
	"context"
	"errors"
	"log"
	"net/http"
	"os"
	"os/signal"
	"time"

	"github.com/streamrelay/relay"
	relayclickhouse "github.com/streamrelay/relay/clickhouse"
)

// Example records every request of a relay in ClickHouse. Inserts happen
// in batches off the request path; an unreachable ClickHouse never slows a
// stream, and /readyz reports it.
func Example() {
	// For credentials or TLS, start from DefaultOptions and call
	// clickhouse.Open instead.
	conn, err := relayclickhouse.Open("127.0.0.1:9000")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close() // last: after Shutdown has written the queued records

	ctx := context.Background()
	if err := relayclickhouse.CreateTable(ctx, conn, "relay_requests"); err != nil {
		log.Fatal(err)
	}
	rec, err := relayclickhouse.New(conn, "relay_requests")
	if err != nil {
		log.Fatal(err)
	}

	r, err := relay.New(
		relay.WithRoutes(relay.Route{
			Name: "openai", Prefix: "/v1", Upstream: "https://api.openai.com",
			AuthHeader: "Authorization", AuthEnv: "OPENAI_API_KEY",
		}),
		relay.WithAPIKeys(relay.APIKey{Key: os.Getenv("RELAY_CLIENT_KEY"), ID: "team-a", Tenant: "acme"}),
		relay.WithRecorder(rec),
		// Optional: the queue in front of ClickHouse.
		relay.WithRecordQueue(relay.AsyncOptions{BatchSize: 1000, WriteTimeout: 10 * time.Second}),
	)
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.Handle("/v1/", r)
	mux.Handle("/readyz", r.ReadyzHandler())
	mux.Handle("/metrics", r.MetricsHandler())
	srv := &http.Server{Addr: "127.0.0.1:8080", Handler: mux}
	go func() {
		if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			log.Fatal(err)
		}
	}()

	stop, cancel := signal.NotifyContext(ctx, os.Interrupt)
	defer cancel()
	<-stop.Done()
	sctx, cancelShutdown := context.WithTimeout(ctx, 30*time.Second)
	defer cancelShutdown()
	// The relay first: it drains streams, then writes queued records.
	if err := r.Shutdown(sctx); err != nil {
		log.Print(err)
	}
	_ = srv.Shutdown(sctx)
}
