package main

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/relay"
	relayredis "github.com/streamrelay/relay/redis"
)

// TestConcurrencyKeys: the concurrency caps of rate_limit and of a key's
// limits reach relay.Limits, and a route's queue_timeout and an
// upstream's max_in_flight reach relay.Route; negative values are
// refused, naming the key.
func TestConcurrencyKeys(t *testing.T) {
	const cfg = `
routes:
  - name: tts
    path: /v1
    queue_timeout: 2s
    upstreams: [{name: el, url: https://api.elevenlabs.io, auth_header: xi-api-key, keys: [a, b], max_in_flight: 2}]
rate_limit: {enabled: true, max_concurrent: 4, max_sessions: 2, queue_timeout: 1s, max_queued: 8}
auth:
  api_keys:
    - k1
    - {key: k2, limits: {max_concurrent: 1, queue_timeout: 3s}}
`
	c, err := parseConfig([]byte(cfg), "relay.yaml", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := relay.Limits{MaxConcurrent: 4, MaxSessions: 2, QueueTimeout: time.Second, MaxQueued: 8}
	if got := c.RateLimit.limits(); got != want {
		t.Errorf("rate_limit limits = %+v, want %+v", got, want)
	}
	rt := c.Routes[0].route(env(nil))
	if rt.QueueTimeout != 2*time.Second || rt.Upstreams[0].MaxInFlight != 2 {
		t.Errorf("route = %+v", rt)
	}
	keys := c.Auth.APIKeys
	if l := keys[1].Limits; l == nil || l.MaxConcurrent != 1 || time.Duration(l.QueueTimeout) != 3*time.Second {
		t.Errorf("key limits = %+v", keys[1].Limits)
	}

	for _, tc := range []struct{ cfg, want string }{
		{strings.Replace(cfg, "max_concurrent: 4", "max_concurrent: -1", 1), "rate_limit.max_concurrent"},
		{strings.Replace(cfg, "max_in_flight: 2", "max_in_flight: -1", 1), "max_in_flight"},
		{strings.Replace(cfg, "queue_timeout: 2s", "queue_timeout: -2s", 1), "queue_timeout"},
	} {
		_, err := parseConfig([]byte(tc.cfg), "relay.yaml", env(nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error = %v, want one naming %s", err, tc.want)
		}
	}
}

// TestKeySlotsFollowRedisLimiter: the upstream keys' max_in_flight is
// shared through Redis exactly when Redis limits (rate_limit.enabled with
// storage.redis); otherwise it is counted per process.
func TestKeySlotsFollowRedisLimiter(t *testing.T) {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never contacted
	defer client.Close()
	rl, err := relayredis.NewLimiter(client)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		enabled bool
		redis   relay.Limiter
		want    relay.KeySlotStore
	}{
		{"redis limiting", true, rl, rl},
		{"redis without rate_limit", false, rl, nil},
		{"memory limiting", true, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &storage{memory: relay.NewMemoryLimiter(relay.Limits{}), redis: tc.redis}
			c := &fileConfig{RateLimit: rateLimitConfig{Enabled: tc.enabled}}
			if got := st.keySlots(c); got != tc.want {
				t.Errorf("keySlots = %v, want %v", got, tc.want)
			}
		})
	}
}
