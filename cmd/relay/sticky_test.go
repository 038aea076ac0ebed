package main

import (
	"strings"
	"testing"
	"time"

	"github.com/streamrelay/relay"
)

// TestStickyKeys: a route's sticky mapping reaches relay.Route.Sticky,
// and its absence leaves stickiness off.
func TestStickyKeys(t *testing.T) {
	const cfg = `
routes:
  - name: chat
    path: /v1
    sticky: {source: header, header: X-Session-Id, ttl: 10m, max_pins: 1000}
    upstreams: [{url: https://api.openai.com, auth_header: Authorization, keys: [a, b]}]
  - name: plain
    path: /v2
    upstream: https://api.openai.com
auth: {api_keys: [k1]}
`
	c, err := parseConfig([]byte(cfg), "relay.yaml", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := relay.Sticky{Source: relay.StickyHeader, Header: "X-Session-Id", TTL: 10 * time.Minute, MaxPins: 1000}
	if got := c.Routes[0].route(env(nil)).Sticky; got != want {
		t.Errorf("sticky = %+v, want %+v", got, want)
	}
	if got := c.Routes[1].route(env(nil)).Sticky; got != (relay.Sticky{}) {
		t.Errorf("a route without sticky: %+v", got)
	}
	bad := strings.Replace(cfg, "source: header", "source: prompt", 1)
	if _, err := parseConfig([]byte(bad), "relay.yaml", env(nil)); err == nil ||
		!strings.Contains(err.Error(), "relay.yaml:5: routes[0].sticky.header") {
		t.Errorf("error = %v, want one at routes[0].sticky.header", err)
	}
}
