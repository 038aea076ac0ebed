package relay_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/streamrelay/relay"
)

// fakeOpenAI stands in for api.openai.com: it streams two tokens and a
// usage chunk.
func fakeOpenAI() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range []string{
			`{"model":"gpt-4o-mini","choices":[{"delta":{"content":"Hello"}}]}`,
			`{"model":"gpt-4o-mini","choices":[{"delta":{"content":" world"}}]}`,
			`{"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}`,
			`[DONE]`,
		} {
			if strings.Contains(ev, `"usage"`) && !strings.Contains(string(body), `"include_usage":true`) {
				continue // as OpenAI: usage only when asked
			}
			fmt.Fprintf(w, "data: %s\n\n", ev)
			w.(http.Flusher).Flush()
		}
	}))
}

// A complete gateway: one route, one client key, mounted in net/http.
func Example() {
	upstream := fakeOpenAI() // in production: "https://api.openai.com"
	defer upstream.Close()

	gw, err := relay.New(
		relay.WithRoutes(relay.Route{
			Name:       "openai",
			Prefix:     "/v1",
			Upstream:   upstream.URL,
			AuthHeader: "Authorization",
			AuthValue:  "sk-upstream", // or AuthEnv: "OPENAI_API_KEY"
		}),
		relay.WithAPIKeys(relay.APIKey{Key: "sk-client-1", Tenant: "acme"}),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer gw.Shutdown(context.Background())

	mux := http.NewServeMux()
	mux.Handle("/v1/", gw)
	mux.Handle("/metrics", gw.MetricsHandler())
	srv := httptest.NewServer(mux) // in production: http.ListenAndServe(":8080", mux)
	defer srv.Close()

	req, _ := http.NewRequest("POST", srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer sk-client-1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status)
	// Two deltas and [DONE]: the usage chunk the relay asked the upstream
	// for is recorded, not sent to a client that did not ask for it.
	fmt.Print(strings.Count(string(body), "data: "), " events\n")
	// Output:
	// 200 OK
	// 3 events
}

// A Recorder is how usage reaches your own store. The relay calls it from
// a queue worker, never on the request path, so it may be slow.
func ExampleRecorderFunc() {
	upstream := fakeOpenAI()
	defer upstream.Close()

	rec := relay.RecorderFunc(func(ctx context.Context, r relay.Record) error {
		// Write to your database here; return an error to have it retried.
		fmt.Printf("tenant=%s route=%s model=%s status=%d input=%d output=%d\n",
			r.Tenant, r.Route, r.Model, r.Status, r.Usage.InputTokens, r.Usage.OutputTokens)
		return nil
	})
	gw, _ := relay.New(
		relay.WithRoutes(relay.Route{Name: "openai", Prefix: "/v1", Upstream: upstream.URL}),
		relay.WithAPIKeys(relay.APIKey{Key: "sk-client-1", Tenant: "acme"}),
		relay.WithRecorder(rec),
	)
	req := httptest.NewRequest("POST", "/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o-mini","stream":true}`))
	req.Header.Set("Authorization", "Bearer sk-client-1")
	gw.ServeHTTP(httptest.NewRecorder(), req)
	_ = gw.Shutdown(context.Background()) // returns once the record is written
	// Output:
	// tenant=acme route=openai model=gpt-4o-mini status=200 input=5 output=2
}

// Authenticators map a request to a tenant. This one trusts a header set
// by an authenticating proxy in front of the relay — only safe when
// clients cannot reach the relay directly.
func ExampleAuthenticatorFunc() {
	auth := relay.AuthenticatorFunc(func(r *http.Request) (relay.Identity, error) {
		user := r.Header.Get("X-Authenticated-User")
		if user == "" {
			return relay.Identity{}, fmt.Errorf("%w: no user", relay.ErrUnauthenticated)
		}
		return relay.Identity{Tenant: user, KeyID: "sso", Limits: &relay.Limits{RequestsPerMinute: 30}}, nil
	})
	req := httptest.NewRequest("GET", "/", nil)
	req.Header.Set("X-Authenticated-User", "alice")
	id, err := auth.Authenticate(req)
	fmt.Println(id.Tenant, id.Limits.RequestsPerMinute, err)
	_, err = auth.Authenticate(httptest.NewRequest("GET", "/", nil))
	fmt.Println(errors.Is(err, relay.ErrUnauthenticated))
	// Output:
	// alice 30 <nil>
	// true
}

// The in-memory limiter takes explicit times, which makes limits easy to
// test and simulate.
func ExampleMemoryLimiter_AllowAt() {
	lim := relay.NewMemoryLimiter(relay.Limits{RequestsPerMinute: 60, Burst: 2})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	req := relay.LimitRequest{Identity: relay.Identity{Tenant: "acme"}, Cost: relay.Cost{Requests: 1}}
	for _, at := range []time.Duration{0, 0, 0, time.Second} {
		d := lim.AllowAt(t0.Add(at), req)
		fmt.Println(at, d.Allowed, d.Requests.Remaining, d.RetryAfter)
	}
	// Output:
	// 0s true 1 0s
	// 0s true 0 0s
	// 0s false 0 1s
	// 1s true 0 0s
}

// A Limiter of your own, for example one that consults a billing system.
func ExampleLimiterFunc() {
	credits := map[string]int{"acme": 1}
	lim := relay.LimiterFunc(func(ctx context.Context, req relay.LimitRequest) (relay.Decision, error) {
		if credits[req.Identity.Tenant] <= 0 {
			return relay.Decision{Allowed: false, Reason: "requests", RetryAfter: time.Hour}, nil
		}
		credits[req.Identity.Tenant]--
		return relay.Decision{Allowed: true}, nil
	})
	req := relay.LimitRequest{Identity: relay.Identity{Tenant: "acme"}}
	for range 2 {
		d, _ := lim.Allow(context.Background(), req)
		fmt.Println(d.Allowed)
	}
	// Output:
	// true
	// false
}

// A resolver of your own can route by anything in the request.
func ExampleUpstreamResolverFunc() {
	table, _ := relay.NewRouteTable([]relay.Route{
		{Name: "openai", Prefix: "/v1", Upstream: "https://api.openai.com"},
		{Name: "anthropic", Prefix: "/v1/messages", Upstream: "https://api.anthropic.com",
			Provider: relay.ProviderAnthropic, AuthHeader: "x-api-key", AuthValue: "sk-ant-…"},
		{Name: "canary", Prefix: "/canary", StripPrefix: true, Upstream: "https://canary.internal"},
	}, nil)
	// Send beta testers to a canary deployment, everyone else to the table.
	res := relay.UpstreamResolverFunc(func(r *http.Request) (*relay.Target, error) {
		if r.Header.Get("X-Beta") == "1" {
			r = r.Clone(r.Context())
			r.URL.Path = "/canary" + r.URL.Path
		}
		return table.Resolve(r)
	})
	t, _ := res.Resolve(httptest.NewRequest("POST", "/v1/messages", nil))
	fmt.Println(t.Route, t.Backends[0].URL)
	t, _ = res.Resolve(httptest.NewRequest("POST", "/v1/chat/completions?x=1", nil))
	fmt.Println(t.Route, t.Backends[0].URL)
	beta := httptest.NewRequest("POST", "/v1/chat/completions", nil)
	beta.Header.Set("X-Beta", "1")
	t, _ = res.Resolve(beta)
	fmt.Println(t.Route, t.Backends[0].URL)
	// Output:
	// anthropic https://api.anthropic.com/v1/messages
	// openai https://api.openai.com/v1/chat/completions?x=1
	// canary https://canary.internal/v1/chat/completions
}

// Shutdown drains: new requests get 503, live streams finish (or are cut
// with an error event when ctx ends), then queued records are written.
func ExampleRelay_Shutdown() {
	gw, _ := relay.New(
		relay.WithRoutes(relay.Route{Name: "r", Prefix: "/", Upstream: "http://127.0.0.1:1"}),
		relay.WithAPIKeys(relay.APIKey{Key: "k"}),
	)
	srv := &http.Server{Addr: "127.0.0.1:0", Handler: gw}
	// On SIGTERM:
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := gw.Shutdown(ctx); err != nil { // first the streams and records
		log.Print(err)
	}
	_ = srv.Shutdown(ctx) // then the listener
	fmt.Println(gw.Ready(ctx))
	// Output:
	// relay: shutting down
}
