package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// keyedUpstream counts the requests it gets by the credential injected
// (Authorization: Bearer k<i>), names that credential in its JSON answer,
// and answers the credentials in fail with their status and a
// Retry-After when one is set.
type keyedUpstream struct {
	mu    sync.Mutex
	calls map[string]int
	fail  map[string]int // credential → status
	retry string         // Retry-After of a failing answer; "" none
	srv   *httptest.Server
	// A request with an X-Block header is announced on arrived, then
	// answered once release is closed.
	arrived chan struct{}
	release chan struct{}
}

func newKeyedUpstream(t *testing.T) *keyedUpstream {
	u := &keyedUpstream{calls: map[string]int{}, fail: map[string]int{},
		arrived: make(chan struct{}, 1), release: make(chan struct{})}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Header.Get("X-Block") != "" {
			u.arrived <- struct{}{}
			select {
			case <-u.release:
			case <-r.Context().Done():
			}
		}
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		u.mu.Lock()
		u.calls[key]++
		st, retry := u.fail[key], u.retry
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if st != 0 {
			if retry != "" {
				w.Header().Set("Retry-After", retry)
			}
			w.WriteHeader(st)
			_, _ = io.WriteString(w, `{"error":{"message":"no"}}`)
			return
		}
		_, _ = fmt.Fprintf(w, `{"key":%q}`, key)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *keyedUpstream) count(key string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.calls[key]
}

func (u *keyedUpstream) setFail(key string, status int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if status == 0 {
		delete(u.fail, key)
	} else {
		u.fail[key] = status
	}
}

// stickyEnv is a relay with one route over one upstream of n keys
// k0..k<n-1>.
type stickyEnv struct {
	*env
	up    *keyedUpstream
	table *RouteTable
}

func newStickyEnv(t *testing.T, n int, sticky Sticky, opts ...Option) *stickyEnv {
	up := newKeyedUpstream(t)
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
	}
	e := newEnv(t, nil, Route{Prefix: "/v1", Sticky: sticky, Upstreams: []Upstream{
		{Name: "up", URL: up.srv.URL, AuthHeader: "Authorization", Keys: keys},
	}}, opts...)
	return &stickyEnv{env: e, up: up, table: e.relay.resolver.(*RouteTable)}
}

// post sends a request with body, and the session header when session is
// not empty, and returns the key that answered ("" for a failure).
func (s *stickyEnv) post(session, body string) string {
	s.t.Helper()
	req := s.request("POST", "/v1/chat/completions", body)
	if session != "" {
		req.Header.Set("X-Session-Id", session)
	}
	resp, b := s.do(req)
	if resp.StatusCode != 200 {
		return ""
	}
	var got struct{ Key string }
	require.NoError(s.t, json.Unmarshal(b, &got), "%s", b)
	return got.Key
}

// TestStickySessionUsesOneKey is the proof: 30 requests of one
// session use one key while other sessions spread over the keys, for
// every source. The prompt source pins a conversation that grows turn by
// turn, and conversations with other system prompts spread.
func TestStickySessionUsesOneKey(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sticky Sticky
		// session and body: request turn of session s
		session func(s int) string
		body    func(s, turn int) string
	}{
		{"header", Sticky{Source: StickyHeader, Header: "x-session-id"},
			func(s int) string { return fmt.Sprintf("session-%d", s) },
			func(int, int) string { return `{"model":"m"}` }},
		{"prompt_cache_key", Sticky{Source: StickyPromptCacheKey}, nil,
			func(s, _ int) string { return fmt.Sprintf(`{"model":"m","prompt_cache_key":"conv-%d"}`, s) }},
		{"openai user", Sticky{Source: StickyUser}, nil,
			func(s, _ int) string { return fmt.Sprintf(`{"user":"u%d","model":"m"}`, s) }},
		{"anthropic metadata.user_id", Sticky{Source: StickyUser}, nil,
			func(s, _ int) string { return fmt.Sprintf(`{"model":"m","metadata":{"user_id":"u%d"}}`, s) }},
		{"prompt", Sticky{Source: StickyPrompt}, nil,
			func(s, turn int) string {
				msgs := `{"role":"user","content":"hello"}`
				for i := range turn {
					msgs += fmt.Sprintf(`,{"role":"assistant","content":"a%d"},{"role":"user","content":"q%d"}`, i, i)
				}
				return fmt.Sprintf(`{"model":"m","system":"you are agent %d","messages":[%s]}`, s, msgs)
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newStickyEnv(t, 4, tc.sticky)
			session := func(s int) string {
				if tc.session == nil {
					return ""
				}
				return tc.session(s)
			}
			used := map[string]int{}
			for turn := range 30 {
				k := e.post(session(0), tc.body(0, turn))
				require.NotEmpty(t, k)
				used[k]++
				if turn < 4 { // other sessions interleave, moving the round robin
					e.post(session(100+turn), tc.body(100+turn, 0))
				}
			}
			require.Len(t, used, 1, "one session, one key: %v", used)
			others := map[string]bool{}
			for s := 1; s <= 8; s++ {
				first := e.post(session(s), tc.body(s, 0))
				for turn := 1; turn < 3; turn++ {
					assert.Equal(t, first, e.post(session(s), tc.body(s, turn)), "session %d moved", s)
				}
				others[first] = true
			}
			assert.Len(t, others, 4, "eight new sessions spread over the four keys")
			total := 0
			for i := range 4 {
				total += e.up.count(fmt.Sprintf("k%d", i))
			}
			assert.Equal(t, 30+4+8*3, total, "the upstream counted every request once")
			assert.Equal(t, 13, e.table.Pins("test"))
		})
	}
}

// TestStickyAcrossUpstreams: a pin names the upstream as well as the
// key: a route of two single-key upstreams (weighted round robin) sends
// a session to one of them only, while sessions spread over both.
func TestStickyAcrossUpstreams(t *testing.T) {
	up := newKeyedUpstream(t)
	e := newEnv(t, nil, Route{Prefix: "/v1", Sticky: Sticky{Source: StickyUser}, Upstreams: []Upstream{
		{Name: "a", URL: up.srv.URL, AuthHeader: "Authorization", AuthValue: "k0"},
		{Name: "b", URL: up.srv.URL, AuthHeader: "Authorization", AuthValue: "k1"},
	}})
	s := &stickyEnv{env: e, up: up, table: e.relay.resolver.(*RouteTable)}
	body := func(u int) string { return fmt.Sprintf(`{"model":"m","user":"u%d"}`, u) }
	firsts := map[int]string{}
	for u := range 4 { // the round robin alternates
		firsts[u] = s.post("", body(u))
	}
	for range 5 {
		for u := range 4 {
			assert.Equal(t, firsts[u], s.post("", body(u)), "user %d moved", u)
		}
	}
	assert.NotEqual(t, firsts[0], firsts[1], "users spread over both upstreams")
}

// TestStickyNotOnOtherRoutes: a route without Sticky keeps no pin and
// spreads a session's requests over its keys, the session header or a
// prompt_cache_key notwithstanding.
func TestStickyNotOnOtherRoutes(t *testing.T) {
	e := newStickyEnv(t, 4, Sticky{})
	used := map[string]bool{}
	for range 4 {
		used[e.post("s", `{"model":"m","prompt_cache_key":"c","user":"u"}`)] = true
	}
	assert.Len(t, used, 4, "round robin as ever")
	assert.Equal(t, -1, e.table.Pins("test"), "no pin table")
	assert.Nil(t, e.table.routes[0].sticky)
}

// TestStickyNoPinKeySpreads: on a sticky route, requests without the pin
// key (no header, an empty or null value) spread and pin nothing.
func TestStickyNoPinKeySpreads(t *testing.T) {
	for _, tc := range []struct {
		sticky  Sticky
		session string
		body    string
	}{
		{Sticky{Source: StickyHeader, Header: "X-Session-Id"}, "", `{"model":"m"}`},
		{Sticky{Source: StickyPromptCacheKey}, "", `{"model":"m","prompt_cache_key":""}`},
		{Sticky{Source: StickyUser}, "", `{"model":"m","user":null}`},
		{Sticky{Source: StickyPrompt}, "", `{"model":"m"}`},
	} {
		e := newStickyEnv(t, 4, tc.sticky)
		used := map[string]bool{}
		for range 4 {
			used[e.post(tc.session, tc.body)] = true
		}
		assert.Len(t, used, 4, "%s: spread", tc.sticky.Source)
		assert.Zero(t, e.table.Pins("test"), "%s: nothing pinned", tc.sticky.Source)
	}
}

// TestStickyRepins: the pinned key answering 429 with Retry-After rests;
// the request fails over and the key that served it becomes the pin, the
// rested key is not asked again, and the pin stays on its new key once
// the old one is back. A key failing once (500, no rest) moves the pin
// the same way.
func TestStickyRepins(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		retry  string
	}{
		{"429 with Retry-After", http.StatusTooManyRequests, "30"},
		{"500", http.StatusInternalServerError, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newStepClock()
			e := newStickyEnv(t, 3, Sticky{Source: StickyHeader, Header: "X-Session-Id"}, WithClock(clock))
			e.up.retry = tc.retry
			pinned := e.post("s", `{"model":"m"}`)
			require.NotEmpty(t, pinned)
			e.up.setFail(pinned, tc.status)
			moved := e.post("s", `{"model":"m"}`)
			require.NotEmpty(t, moved, "failed over")
			assert.NotEqual(t, pinned, moved)
			assert.Equal(t, 2, e.up.count(pinned), "the pinned key was asked first")
			for range 5 {
				assert.Equal(t, moved, e.post("s", `{"model":"m"}`), "re-pinned")
			}
			assert.Equal(t, 2, e.up.count(pinned), "the failed key is not asked again")
			e.up.setFail(pinned, 0)
			clock.advance(time.Minute)
			assert.Equal(t, moved, e.post("s", `{"model":"m"}`), "the pin stays on the key that serves")
			m := e.relay.metrics.sticky
			for outcome, want := range map[string]float64{"new": 1, "moved": 1, "hit": 6} {
				assert.Equal(t, want, testutil.ToFloat64(m.WithLabelValues("test", outcome)), outcome)
			}
		})
	}
}

// TestStickyRestingKeyNotTried: a pinned key that rests (another
// session's 429 with Retry-After rested it) is not tried: the request
// goes straight to another key, which becomes the pin.
func TestStickyRestingKeyNotTried(t *testing.T) {
	clock := newStepClock()
	e := newStickyEnv(t, 2, Sticky{Source: StickyHeader, Header: "X-Session-Id"}, WithClock(clock))
	e.up.retry = "30"
	pinned := e.post("a", `{"model":"m"}`)
	e.up.setFail(pinned, http.StatusTooManyRequests)
	// Session b lands on the pinned key first (the round robin), which
	// rests it for 30s.
	for e.up.count(pinned) < 2 {
		require.NotEmpty(t, e.post("", `{"model":"m"}`))
	}
	e.up.setFail(pinned, 0)
	before := e.up.count(pinned)
	other := e.post("a", `{"model":"m"}`)
	assert.NotEqual(t, pinned, other, "the resting key is skipped")
	assert.Equal(t, before, e.up.count(pinned), "and not asked")
	clock.advance(31 * time.Second)
	assert.Equal(t, other, e.post("a", `{"model":"m"}`), "re-pinned to the key that served")
}

// TestStickyPinnedKeyFull: a pinned key at its upstream's MaxInFlight
// is not waited for: the request takes the other key, which becomes the
// pin, and the pin stays there once the first key is free again.
func TestStickyPinnedKeyFull(t *testing.T) {
	up := newKeyedUpstream(t)
	e := newEnv(t, nil, Route{Prefix: "/v1", Sticky: Sticky{Source: StickyHeader, Header: "X-Session-Id"},
		Upstreams: []Upstream{{Name: "up", URL: up.srv.URL, AuthHeader: "Authorization",
			Keys: []string{"k0", "k1"}, MaxInFlight: 1}}})
	s := &stickyEnv{env: e, up: up, table: e.relay.resolver.(*RouteTable)}
	pinned := s.post("s", `{"model":"m"}`)
	other := s.post("", `{"model":"m"}`) // the round robin's next is the pinned key again
	require.NotEqual(t, pinned, other)
	done := make(chan string, 1)
	go func() {
		req := e.request("POST", "/v1/chat/completions", `{"model":"m"}`)
		req.Header.Set("X-Block", "1")
		ctx, cancel := context.WithTimeout(req.Context(), testkit.Timeout)
		defer cancel()
		resp, err := e.front.Client().Do(req.WithContext(ctx)) // no require off the test's goroutine
		if err != nil {
			done <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	testkit.Recv(t, up.arrived, "the blocking request did not arrive")
	inflight := s.table.InFlight("test", "up")
	require.Equal(t, 1, inflight[keyIndex(pinned)], "the blocking request holds the pinned key")
	assert.Equal(t, other, s.post("s", `{"model":"m"}`), "the full pinned key is not waited for")
	close(up.release)
	assert.Equal(t, fmt.Sprintf(`200 {"key":%q}`, pinned), testkit.Recv(t, done, "the blocking request did not end"))
	e.handled()
	assert.Equal(t, other, s.post("s", `{"model":"m"}`), "re-pinned to the key that served")
}

func keyIndex(k string) int { return int(k[1] - '0') }

// TestStickyTTL: a pin lives TTL after its last use, every use
// refreshing it; then the session spreads again. The clock is the
// relay's.
func TestStickyTTL(t *testing.T) {
	clock := newStepClock()
	e := newStickyEnv(t, 2, Sticky{Source: StickyHeader, Header: "X-Session-Id", TTL: time.Minute}, WithClock(clock))
	// steer sends unpinned requests until the round robin's next choice
	// is not key, so that only a pin can send a request there.
	steer := func(key string) {
		for range 2 {
			if e.post("", `{"model":"m"}`) == key {
				return
			}
		}
		t.Fatal("the round robin never took " + key)
	}
	pinned := e.post("s", `{"model":"m"}`)
	for range 3 {
		clock.advance(time.Minute - time.Millisecond)
		steer(pinned)
		assert.Equal(t, pinned, e.post("s", `{"model":"m"}`), "each use refreshes the pin")
	}
	clock.advance(time.Minute)
	steer(pinned)
	assert.NotEqual(t, pinned, e.post("s", `{"model":"m"}`), "expired: the session spreads")
}

// TestStickyBounded: many sessions keep at most MaxPins pins, the most
// recently used ones.
func TestStickyBounded(t *testing.T) {
	e := newStickyEnv(t, 4, Sticky{Source: StickyHeader, Header: "X-Session-Id", MaxPins: 16})
	keys := map[int]string{}
	for s := range 200 {
		keys[s] = e.post(fmt.Sprintf("s%d", s), `{"model":"m"}`)
	}
	assert.Equal(t, 16, e.table.Pins("test"))
	st := e.table.routes[0].sticky
	assert.LessOrEqual(t, len(st.ents), 16, "slots are reused, not grown")
	for s := 199; s > 199-16; s-- { // the newest first: each lookup refreshes
		assert.Equal(t, keys[s], e.post(fmt.Sprintf("s%d", s), `{"model":"m"}`), "session %d kept its pin", s)
	}
}

// TestStickyTableLRU checks the pin table itself: eviction of the least
// recently used, refresh on lookup, expiry swept by a store, slots reused.
func TestStickyTableLRU(t *testing.T) {
	now := time.Unix(1e9, 0)
	st := &stickyTable{ttl: time.Minute, maxPins: 3, index: map[uint64]int32{}, head: -1, tail: -1, free: -1}
	for h := uint64(1); h <= 3; h++ {
		st.store(h, 0, int(h), now)
	}
	_, k, ok := st.lookup(1, now) // 1 is now the most recent
	require.True(t, ok)
	assert.Equal(t, 1, k)
	st.store(4, 0, 4, now) // evicts 2
	_, _, ok = st.lookup(2, now)
	assert.False(t, ok, "the least recently used is evicted")
	for _, h := range []uint64{1, 3, 4} {
		_, k, ok := st.lookup(h, now)
		assert.True(t, ok)
		assert.Equal(t, int(h), k)
	}
	st.store(3, 0, 7, now)
	_, k, _ = st.lookup(3, now)
	assert.Equal(t, 7, k, "a store moves the pin")

	later := now.Add(time.Minute)
	_, _, ok = st.lookup(1, later)
	assert.False(t, ok, "expired at TTL")
	assert.Equal(t, 2, st.len(), "dropped when found expired")
	st.store(5, 0, 5, later) // sweeps 4 and 3, expired at the tail
	assert.Equal(t, 1, st.len())
	assert.Equal(t, 3, len(st.ents), "slots reused")
	_, k, ok = st.lookup(5, later)
	assert.True(t, ok)
	assert.Equal(t, 5, k)
}

// TestStickyValidation: NewRouteTable reports sticky problems by field.
func TestStickyValidation(t *testing.T) {
	for _, tc := range []struct {
		sticky Sticky
		field  string
	}{
		{Sticky{Source: "cookie"}, "Sticky.Source"},
		{Sticky{TTL: time.Minute}, "Sticky.Source"},
		{Sticky{Source: StickyHeader}, "Sticky.Header"},
		{Sticky{Source: StickyHeader, Header: "bad header"}, "Sticky.Header"},
		{Sticky{Source: StickyUser, Header: "X-Session-Id"}, "Sticky.Header"},
		{Sticky{Source: StickyUser, TTL: -time.Second}, "Sticky.TTL"},
		{Sticky{Source: StickyUser, MaxPins: -1}, "Sticky.MaxPins"},
		{Sticky{Source: StickyPrompt, PromptBytes: -1}, "Sticky.PromptBytes"},
		{Sticky{Source: StickyUser, PromptBytes: 10}, "Sticky.PromptBytes"},
	} {
		_, err := NewRouteTable([]Route{{Name: "r", Upstream: "http://up", Sticky: tc.sticky}}, nil)
		var re *RouteError
		if assert.True(t, errors.As(err, &re), "%+v", tc.sticky) {
			assert.Equal(t, tc.field, re.Field, "%+v: %v", tc.sticky, err)
		}
	}
	_, err := NewRouteTable([]Route{{Name: "r", Upstream: "http://up",
		Sticky: Sticky{Source: StickyPrompt, PromptBytes: 100, TTL: time.Hour, MaxPins: 10}}}, nil)
	assert.NoError(t, err)
}

// TestStickyPromptBounded: the prompt source hashes only the first
// PromptBytes bytes: conversations that differ past them share a pin,
// and what is hashed is the system prompt and first message only.
func TestStickyPromptBounded(t *testing.T) {
	e := newStickyEnv(t, 4, Sticky{Source: StickyPrompt, PromptBytes: 40})
	long := strings.Repeat("x", 40)
	a := e.post("", `{"model":"m","system":"`+long+`a","messages":[{"role":"user","content":"1"}]}`)
	for i := range 3 {
		assert.Equal(t, a, e.post("", fmt.Sprintf(`{"model":"m","system":"%s%d","messages":[{"role":"user","content":"%d"}]}`, long, i, i)))
	}
	assert.Equal(t, 1, e.table.Pins("test"))
}

// TestStickyAllocations: requests on a route without Sticky allocate the
// same whatever pin members their body has, and a sticky route's request
// costs no more allocations than a plain one, pinned (a hit) or without
// a pin key.
func TestStickyAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without -race (.ci/run runs one)")
	}
	tr := &memTransport{json: []byte(`{"ok":true}`)}
	rl, err := New(WithRoutes(
		Route{Name: "plain", Prefix: "/plain", Upstream: "http://upstream.test", AuthHeader: "Authorization", AuthValue: "sk"},
		Route{Name: "sticky", Prefix: "/sticky", Upstream: "http://upstream.test", AuthHeader: "Authorization", AuthValue: "sk",
			Sticky: Sticky{Source: StickyPromptCacheKey}},
	), WithAPIKeys(APIKey{Key: testKey}), WithTransport(tr), WithRegisterer(prometheus.NewRegistry()))
	require.NoError(t, err)
	measure := func(path, body string) float64 {
		w := &discardWriter{h: http.Header{}}
		return testing.AllocsPerRun(200, func() {
			clear(w.h)
			req := httptest.NewRequest("POST", path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+testKey)
			req.Header.Set("Content-Type", "application/json")
			rl.ServeHTTP(w, req)
		})
	}
	const plainBody = `{"model":"m","messages":[{"role":"user","content":"hello"}]}`
	const pinBody = `{"model":"m","prompt_cache_key":"c1","user":"u","messages":[{"role":"user","content":"hello"}]}`
	base := measure("/plain/json", plainBody)
	assert.Equal(t, base, measure("/plain/json", pinBody), "pin members cost a plain route nothing")
	assert.Equal(t, base, measure("/sticky/json", plainBody), "a sticky route without a pin key costs nothing")
	assert.Equal(t, base, measure("/sticky/json", pinBody), "a pinned request costs nothing once pinned")
}
