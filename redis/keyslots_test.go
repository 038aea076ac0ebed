package relayredis

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// keyCounter is an upstream that counts its open requests per injected
// credential and holds each until a value on gate.
type keyCounter struct {
	gate    chan struct{}
	arrived chan string
	mu      sync.Mutex
	open    map[string]int
	peak    map[string]int
}

func startKeyCounter(t *testing.T) (*keyCounter, *httptest.Server) {
	k := &keyCounter{gate: make(chan struct{}), arrived: make(chan string, 64),
		open: map[string]int{}, peak: map[string]int{}}
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		key := r.Header.Get("Authorization")
		k.mu.Lock()
		k.open[key]++
		k.peak[key] = max(k.peak[key], k.open[key])
		k.mu.Unlock()
		defer func() {
			k.mu.Lock()
			k.open[key]--
			k.mu.Unlock()
		}()
		k.arrived <- key
		select {
		case <-k.gate:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"c1","object":"chat.completion","model":"m","choices":[],`+
			`"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}`)
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() { close(k.gate) })
	return k, up
}

// TestReplicasShareKeyMaxInFlight: three relays sharing one Redis
// (WithKeySlots) never let the upstream see more than MaxInFlight 2
// concurrent requests on either of its two keys; the requests over the
// cap wait in the replicas' queues and all run.
func TestReplicasShareKeyMaxInFlight(t *testing.T) {
	c := newClient(t, sharedRedisAddr(t), true)
	prefix := uniquePrefix(t)
	k, up := startKeyCounter(t)
	route := relay.Route{Name: "chat", Prefix: "/v1", Kind: relay.KindJSON, QueueTimeout: time.Minute,
		Upstreams: []relay.Upstream{{Name: "up", URL: up.URL, AuthHeader: "Authorization",
			Keys: []string{"sk-up-a", "sk-up-b"}, MaxInFlight: 2}}}
	var replicas []*replica
	var limiters []*Limiter
	for range 3 {
		l, err := NewLimiter(c, WithPrefix(prefix), WithTimeout(5*time.Second))
		require.NoError(t, err)
		limiters = append(limiters, l)
		reg := prometheus.NewRegistry()
		rl, err := relay.New(relay.WithRoutes(route), relay.WithRegisterer(reg), relay.WithKeySlots(l),
			relay.WithAPIKeys(relay.APIKey{Key: clientKey, ID: "key-1", Tenant: "t"}))
		require.NoError(t, err)
		front := httptest.NewServer(rl)
		t.Cleanup(func() {
			front.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			assert.NoError(t, rl.Shutdown(ctx))
		})
		replicas = append(replicas, &replica{relay: rl, front: front, reg: reg})
	}
	hc := newHTTPClient(t)
	const perReplica, slots = 3, 4 // 2 keys × MaxInFlight 2
	n := perReplica * len(replicas)
	results := make(chan int, n)
	for i := range n {
		r := replicas[i%len(replicas)]
		go func() {
			resp, err := r.post(hc)
			if err != nil {
				results <- 0
				return
			}
			results <- resp.StatusCode
		}()
	}
	for range slots {
		testkit.Recv(t, k.arrived, "a request did not reach the upstream")
	}
	ctx := testkit.Context(t)
	for _, id := range []string{"chat/up/0", "chat/up/1"} {
		held, err := limiters[0].KeySlots(ctx, id)
		require.NoError(t, err)
		assert.EqualValues(t, 2, held, "key %s", id)
	}
	// Each request let through frees a slot that a waiting one takes,
	// on whichever replica.
	for i := range n {
		testkit.Send(t, k.gate, struct{}{}, "no request took the gate")
		if i < n-slots {
			testkit.Recv(t, k.arrived, "a queued request did not reach the upstream")
		}
	}
	for range n {
		assert.Equal(t, http.StatusOK, testkit.Recv(t, results, "a request did not end"))
	}
	k.mu.Lock()
	assert.Equal(t, map[string]int{"Bearer sk-up-a": 2, "Bearer sk-up-b": 2}, k.peak,
		"each key saw at most (and at some point) MaxInFlight requests")
	k.mu.Unlock()
	within(t, testkit.Timeout, func() bool {
		for _, l := range limiters {
			if l.Leases() != 0 {
				return false
			}
		}
		return true
	}, "the key leases were not released")
	for _, id := range []string{"chat/up/0", "chat/up/1"} {
		held, err := limiters[0].KeySlots(ctx, id)
		require.NoError(t, err)
		assert.Zero(t, held, "key %s", id)
	}
}

// TestKeySlotExpiresAfterCrash: a key slot is renewed while held, past
// its TTL; when its replica stops renewing, it comes back after the TTL.
// The candidates are tried in order.
func TestKeySlotExpiresAfterCrash(t *testing.T) {
	c := newClient(t, sharedRedisAddr(t), true)
	prefix := uniquePrefix(t)
	const ttl = 300 * time.Millisecond
	ctx := testkit.Context(t)
	a, err := NewLimiter(c, WithPrefix(prefix), WithTimeout(5*time.Second), WithLeaseTTL(ttl))
	require.NoError(t, err)
	b, err := NewLimiter(c, WithPrefix(prefix), WithTimeout(5*time.Second), WithLeaseTTL(ttl))
	require.NoError(t, err)
	renewals := make(chan error, 64)
	a.leases.renewed = func(n int, err error) {
		select {
		case renewals <- err:
		default:
		}
	}
	one := []relay.KeyCandidate{{ID: "r/u/0", Max: 1}}
	two := append(one, relay.KeyCandidate{ID: "r/u/1", Max: 1})

	i, held, err := a.AcquireKey(ctx, relay.KeySlotRequest{Keys: one, ID: "held"})
	require.NoError(t, err)
	require.Equal(t, 0, i)
	require.NotNil(t, held)
	start := time.Now()
	for range 4 {
		assert.NoError(t, testkit.Recv(t, renewals, "the key lease was not renewed"))
	}
	require.Greater(t, time.Since(start), ttl)
	i, l, err := b.AcquireKey(ctx, relay.KeySlotRequest{Keys: one, ID: "other"})
	require.NoError(t, err)
	assert.Equal(t, -1, i, "a renewed key lease holds its slot past its TTL")
	assert.Nil(t, l)
	i, l, err = b.AcquireKey(ctx, relay.KeySlotRequest{Keys: two, ID: "next"})
	require.NoError(t, err)
	assert.Equal(t, 1, i, "the next candidate with room")
	l.Release()

	a.crash()
	var got relay.Lease
	within(t, 5*time.Second, func() bool {
		i, got, err = b.AcquireKey(ctx, relay.KeySlotRequest{Keys: one, ID: "other"})
		require.NoError(t, err)
		return i == 0
	}, "the crashed replica's key slot did not expire")
	got.Release()
	n, err := b.KeySlots(ctx, "r/u/0")
	require.NoError(t, err)
	assert.Zero(t, n, "Release removes the lease")
	within(t, testkit.Timeout, func() bool { return a.renewerStopped() && b.renewerStopped() },
		"the renewers did not stop")
}
