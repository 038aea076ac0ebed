package main

import (
	"strings"
	"testing"
	"time"

	"github.com/streamrelay/relay"
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
