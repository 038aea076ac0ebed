package relay

import (
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestResolveCost: resolving a request to a route with one upstream and
// one key (the common case) takes one allocation and no clock reading,
// and reporting a success reads no clock either; a failure does, to rest
// the key. The backend's headers are the route's plus the credential.
// Mutations it kills: a per-request header map or report closure, a
// clock reading on every resolve or report.
func TestResolveCost(t *testing.T) {
	var reads atomic.Int32
	clock := ClockFunc(func() time.Time { reads.Add(1); return time.Unix(1e9, 0) })
	rt, err := NewRouteTable([]Route{{Name: "r", Prefix: "/v1", Upstream: "http://up/base/", AuthHeader: "Authorization",
		AuthValue: "sk-up", Headers: map[string]string{"anthropic-version": "1"}}}, clock)
	require.NoError(t, err)
	req, _ := http.NewRequest("POST", "http://relay/v1/chat/completions?x=1", nil)
	tg, err := rt.Resolve(req)
	require.NoError(t, err)
	require.Len(t, tg.Backends, 1)
	b := tg.Backends[0]
	assert.Equal(t, "http://up/base/v1/chat/completions?x=1", b.URL.String())
	assert.Equal(t, http.Header{"Authorization": {"Bearer sk-up"}, "Anthropic-Version": {"1"}}, b.Header)
	b.Done(AttemptResult{Status: 200})
	assert.Zero(t, reads.Load(), "no clock reading to resolve or to report a success")
	b.Done(AttemptResult{Status: 500})
	assert.Equal(t, int32(1), reads.Load(), "a failure is timed")

	if raceEnabled {
		return
	}
	allocs := testing.AllocsPerRun(100, func() {
		tg, _ := rt.Resolve(req)
		tg.Backends[0].Done(AttemptResult{Status: 200})
	})
	// The target with its backend and URL, and the path joined to the
	// base path.
	assert.Equal(t, 2.0, allocs)
}

// TestResolveSeparatesRequests: two requests' targets share no URL, so
// that one request's failover or rewrite cannot touch another's.
func TestResolveSeparatesRequests(t *testing.T) {
	rt, err := NewRouteTable([]Route{{Name: "r", Prefix: "/", Upstreams: []Upstream{
		{URL: "http://a", AuthHeader: "x-api-key", Keys: []string{"k1", "k2"}},
		{URL: "http://b"},
	}}}, nil)
	require.NoError(t, err)
	r1, _ := http.NewRequest("POST", "http://relay/one", nil)
	r2, _ := http.NewRequest("POST", "http://relay/two", nil)
	t1, err := rt.Resolve(r1)
	require.NoError(t, err)
	t2, err := rt.Resolve(r2)
	require.NoError(t, err)
	require.Len(t, t1.Backends, 3, "both upstreams, then the pool's other key")
	for i, b := range t1.Backends {
		assert.Equal(t, "/one", b.URL.Path, "backend %d", i)
		assert.NotSame(t, b.URL, t2.Backends[i].URL, "backend %d", i)
	}
	assert.Equal(t, "/two", t2.Backends[0].URL.Path)
	keys := map[string]bool{}
	for _, b := range t1.Backends {
		if k := b.Header.Get("X-Api-Key"); k != "" {
			keys[k] = true
		}
	}
	assert.Equal(t, map[string]bool{"k1": true, "k2": true}, keys, "a failover never repeats a key")
}
