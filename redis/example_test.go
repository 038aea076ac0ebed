package relayredis_test

import (
	"log"
	"log/slog"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/relay"
	relayredis "github.com/streamrelay/relay/redis"
)

// Every replica of a gateway builds the same relay: the limiter's buckets
// and the record stream live in the shared Redis.
func Example() {
	// A single node here; redis.NewUniversalClient with several Addrs
	// gives a Cluster client, and with MasterName a Sentinel one.
	client := redis.NewClient(&redis.Options{
		Addr: "127.0.0.1:6379",
		// Lets socket reads honour the limiter's short per-call timeout
		// directly (without it the limiter enforces it itself).
		ContextTimeoutEnabled: true,
	})

	limiter, err := relayredis.NewLimiter(client,
		relayredis.WithPrefix("gateway"),
		relayredis.WithDefaultLimits(relay.Limits{RequestsPerMinute: 600, TokensPerMinute: 200_000}),
		relayredis.WithTimeout(50*time.Millisecond),
		relayredis.WithLogger(slog.Default()),
	)
	if err != nil {
		log.Fatal(err)
	}
	recorder, err := relayredis.NewRecorder(client,
		relayredis.WithPrefix("gateway"), // stream "gateway:records"
		relayredis.WithMaxLen(1_000_000),
	)
	if err != nil {
		log.Fatal(err)
	}

	rl, err := relay.New(
		relay.WithRoutes(relay.Route{
			Name:       "openai",
			Prefix:     "/v1",
			Upstream:   "https://api.openai.com",
			AuthHeader: "Authorization",
			AuthEnv:    "OPENAI_API_KEY",
		}),
		relay.WithAPIKeys(relay.APIKey{Key: "sk-client-secret", Tenant: "acme"}),
		relay.WithLimiter(limiter),
		relay.WithLimiterFailOpen(true), // the default: a Redis outage does not stop traffic
		relay.WithRecorder(recorder),    // queued and batched by the relay
	)
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.Handle("/v1/", rl)
	mux.Handle("/readyz", rl.ReadyzHandler()) // 503 while Redis is down
	mux.Handle("/metrics", rl.MetricsHandler())
	// On shutdown, call rl.Shutdown first (it drains streams and flushes
	// queued records to Redis), then the server's Shutdown, then
	// client.Close.
	log.Fatal(http.ListenAndServe(":8080", mux))
}
