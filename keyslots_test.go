package relay

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fakeKeySlots is a KeySlotStore in memory, shared by the relays of a
// test as Redis is by replicas.
type fakeKeySlots struct {
	mu    sync.Mutex
	held  map[string]int
	asked []string // the candidates of the first call, as the relay ordered them
	fail  bool
}

type fakeKeyLease struct {
	s    *fakeKeySlots
	id   string
	once sync.Once
}

func (l *fakeKeyLease) Release() {
	l.once.Do(func() {
		l.s.mu.Lock()
		defer l.s.mu.Unlock()
		l.s.held[l.id]--
	})
}

func (s *fakeKeySlots) AcquireKey(_ context.Context, req KeySlotRequest) (int, Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return -1, nil, errors.New("store down")
	}
	if s.asked == nil {
		for _, k := range req.Keys {
			s.asked = append(s.asked, k.ID)
		}
	}
	for i, k := range req.Keys {
		if s.held[k.ID] < k.Max {
			s.held[k.ID]++
			return i, &fakeKeyLease{s: s, id: k.ID}, nil
		}
	}
	return -1, nil, nil
}

func TestKeySlotsSharedByRelays(t *testing.T) {
	store := &fakeKeySlots{held: map[string]int{}}
	g := newGatedSSE()
	up := newGatedUpstream(t, g)
	ups := []Upstream{{Name: "up", URL: up, AuthHeader: "Authorization", Keys: []string{"k0", "k1"}, MaxInFlight: 1}}
	route := Route{Name: "test", Prefix: "/v1", Kind: KindSSE, Upstreams: ups, QueueTimeout: time.Minute}
	relays := []*env{
		newEnv(t, func(http.ResponseWriter, *http.Request) {}, route, WithKeySlots(store)),
		newEnv(t, func(http.ResponseWriter, *http.Request) {}, route, WithKeySlots(store)),
	}
	t.Cleanup(func() { close(g.gate) })
	// One stream on each relay: two keys, one slot each, both taken.
	var open []*http.Response
	for _, e := range relays {
		resp, err := e.open(testkit.Context(t))
		require.NoError(t, err)
		testkit.Recv(t, g.arrived, "the stream did not reach the upstream")
		open = append(open, resp)
	}
	assert.ElementsMatch(t, []string{"test/up/0", "test/up/1"}, store.asked, "candidates are named by route, upstream and index")
	// A third request, on either relay, waits for a slot the other relay holds.
	results := make(chan int, 2)
	for _, e := range relays {
		go func() {
			resp, err := e.open(testkit.Context(t))
			if err != nil {
				results <- 0
				return
			}
			_, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			results <- resp.StatusCode
		}()
	}
	waitUntil(t, func() bool {
		n := 0
		for _, e := range relays {
			s := e.relay.resolver.(*RouteTable).routes[0].slots
			s.mu.Lock()
			n += len(s.waiters)
			s.mu.Unlock()
		}
		return n == 2
	}, "the requests did not queue on both relays")
	finishStream(t, relays[0], g, open[0]) // frees a slot of relay 0: one waiter runs, on either relay
	testkit.Recv(t, g.arrived, "a queued stream did not reach the upstream")
	finishStream(t, relays[1], g, open[1])
	testkit.Recv(t, g.arrived, "a queued stream did not reach the upstream")
	for range 2 {
		testkit.Send(t, g.gate, struct{}{}, "no stream took the gate")
	}
	for range 2 {
		assert.Equal(t, http.StatusOK, testkit.Recv(t, results, "a request did not end"))
	}
	g.mu.Lock()
	for k, peak := range g.keyPeak {
		assert.LessOrEqual(t, peak, 1, "key %s had more than MaxInFlight streams over both relays", k)
	}
	g.mu.Unlock()
	for _, e := range relays {
		e.handled() // its queued request (finishStream saw the first)
		assert.Equal(t, []int{0, 0}, e.relay.resolver.(*RouteTable).InFlight("test", "up"))
	}
	store.mu.Lock()
	assert.Equal(t, map[string]int{"test/up/0": 0, "test/up/1": 0}, store.held, "every lease released")
	store.mu.Unlock()
}

func TestKeySlotsStoreDown(t *testing.T) {
	store := &fakeKeySlots{held: map[string]int{}, fail: true}
	g := newGatedSSE()
	up := newGatedUpstream(t, g)
	ups := []Upstream{{Name: "up", URL: up, AuthHeader: "Authorization", Keys: []string{"k0"}, MaxInFlight: 1}}
	e := newEnv(t, func(http.ResponseWriter, *http.Request) {},
		Route{Name: "test", Prefix: "/v1", Kind: KindSSE, Upstreams: ups}, WithKeySlots(store))
	t.Cleanup(func() { close(g.gate) })
	resp, err := e.open(testkit.Context(t))
	require.NoError(t, err)
	testkit.Recv(t, g.arrived, "the stream did not reach the upstream")
	// The store is down: the per-process count still caps the key.
	r2, _ := e.do(e.request(http.MethodPost, "/v1/chat/completions", `{"model":"m","messages":[]}`))
	assert.Equal(t, http.StatusTooManyRequests, r2.StatusCode)
	finishStream(t, e, g, resp)
	assert.Equal(t, []int{0}, e.relay.resolver.(*RouteTable).InFlight("test", "up"))
}

// newGatedUpstream serves g on a real socket and returns its URL.
func newGatedUpstream(t *testing.T, g *gatedSSE) string {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(up.Close)
	return up.URL
}

// TestKeySlotCandidates: the store is offered the chosen key first, the
// other keys of its pool with the resting ones last, then the next
// capped upstream's keys, up to the first uncapped upstream, which is
// taken when every candidate is full.
func TestKeySlotCandidates(t *testing.T) {
	clock := newStepClock()
	rt, err := NewRouteTable([]Route{{Name: "r", Prefix: "/", MaxAttempts: 3, Upstreams: []Upstream{
		{Name: "a", URL: "http://a", AuthHeader: "x-api-key", Keys: []string{"k0", "k1", "k2"}, MaxInFlight: 1},
		{Name: "b", URL: "http://b", MaxInFlight: 2},
		{Name: "c", URL: "http://c"},
	}}}, clock)
	require.NoError(t, err)
	pool := rt.routes[0].backends[0]
	pool.keys[1].restUntil = clock.Now().Add(time.Hour) // rests: offered last
	req, _ := http.NewRequest("POST", "http://relay/v1", nil)
	for range 10 { // the resolution rotates: every order ends the same way
		tg, err := rt.Resolve(req)
		require.NoError(t, err)
		i := slices.IndexFunc(tg.Backends, func(b Backend) bool { return b.Name == "a" })
		if i < 0 || slices.IndexFunc(tg.Backends, func(b Backend) bool { return b.Name == "c" }) < i {
			continue
		}
		// Make the order a, b, c from i on, as the loop does with swaps.
		order := map[string]int{"a": 0, "b": 1, "c": 2}
		slices.SortStableFunc(tg.Backends[i:], func(x, y Backend) int { return order[x.Name] - order[y.Name] })
		want := tg.Backends[i].key
		cands, at, free := tg.candidates(i)
		var ids []string
		for _, c := range cands {
			ids = append(ids, c.ID)
		}
		others := []string{}
		for d := 1; d < 3; d++ {
			if k := (want + d) % 3; k != 1 {
				others = append(others, "r/a/"+strconv.Itoa(k))
			}
		}
		exp := append([]string{"r/a/" + strconv.Itoa(want)}, others...)
		if want != 1 {
			exp = append(exp, "r/a/1")
		}
		exp = append(exp, "r/b/0")
		assert.Equal(t, exp, ids)
		assert.Equal(t, KeyCandidate{ID: "r/b/0", Max: 2}, cands[len(cands)-1])
		assert.Len(t, at, len(cands))
		require.GreaterOrEqual(t, free, 0)
		assert.Equal(t, "c", tg.Backends[free].Name)
		return
	}
	t.Fatal("no resolution put upstream a before c")
}
