package deployments

// A relay serving every kind of traffic, for the live test: an in-process
// fake OpenAI-style upstream, the relay in front of it on a real socket,
// and a load generator whose requests make the relay export every series
// the monitoring assets select.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
)

// The fake upstream's behaviours, chosen per request with the
// X-Fake-Upstream header, which the relay forwards as it is. Without it
// the upstream answers as OpenAI does: a stream or a JSON completion.
const (
	behaveHeader     = "X-Fake-Upstream"
	behaveFail       = "fail"        // 500 with an OpenAI-style error body
	behaveBreak      = "break"       // one content event, then the connection is cut
	behaveHold       = "hold"        // one content event, then wait until the relay cancels
	behaveErrorEvent = "error-event" // a stream with an error object in an event
	holdIDHeader     = "X-Hold-Id"   // names a held request, to await its cancellation

	upstreamSecret = "sk-upstream-secret" // injected by the relay; the fake checks it
)

// The relay's client keys, one per tenant.
const (
	keyMain    = "sk-live-main"    // generous limits
	keyTiny    = "sk-live-tiny"    // one request per minute: refused for requests
	keyThrifty = "sk-live-thrifty" // ten tokens per minute: refused for tokens
	keyFlaky   = "sk-live-flaky"   // its limiter calls fail (the relay fails open)
)

// fakeUpstream is an in-process OpenAI-style chat completions API.
type fakeUpstream struct {
	srv  *httptest.Server
	stop chan struct{} // closed at cleanup: releases held streams

	mu    sync.Mutex
	holds map[string]chan struct{} // hold id → closed when that request is cancelled
}

func newFakeUpstream(t *testing.T) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{stop: make(chan struct{}), holds: map[string]chan struct{}{}}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(func() {
		close(u.stop)
		u.srv.Close()
	})
	return u
}

// expectCancel returns a channel that is closed once the held request with
// this id has seen its context end, that is once the relay cancelled it.
func (u *fakeUpstream) expectCancel(id string) <-chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	ch := make(chan struct{})
	u.holds[id] = ch
	return ch
}

func (u *fakeUpstream) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+upstreamSecret {
		http.Error(w, `{"error":{"message":"bad upstream key","type":"invalid_request_error"}}`, http.StatusUnauthorized)
		return
	}
	var req struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, `{"error":{"message":"bad JSON","type":"invalid_request_error"}}`, http.StatusBadRequest)
		return
	}
	switch r.Header.Get(behaveHeader) {
	case behaveFail:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `{"error":{"message":"The server had an error","type":"server_error"}}`)
	case behaveBreak:
		sse(w, chunk(req.Model, `{"content":"Hel"}`, ""))
		// Cuts the connection mid-body, without the terminating chunk.
		panic(http.ErrAbortHandler)
	case behaveHold:
		sse(w, chunk(req.Model, `{"content":"Hel"}`, ""))
		u.mu.Lock()
		ch := u.holds[r.Header.Get(holdIDHeader)]
		delete(u.holds, r.Header.Get(holdIDHeader))
		u.mu.Unlock()
		select {
		case <-r.Context().Done():
			if ch != nil {
				close(ch)
			}
		case <-u.stop:
		}
	case behaveErrorEvent:
		sse(w, chunk(req.Model, `{"content":"Hel"}`, ""),
			`{"error":{"message":"The model is overloaded","type":"server_error"}}`, "[DONE]")
	default:
		if !req.Stream {
			w.Header().Set("Content-Type", "application/json")
			_, _ = fmt.Fprintf(w, `{"id":"chatcmpl-live","object":"chat.completion","created":1700000000,"model":%s,`+
				`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"},"finish_reason":"stop"}],%s}`,
				jsonString(req.Model), usageJSON)
			return
		}
		sse(w,
			chunk(req.Model, `{"role":"assistant","content":""}`, ""),
			chunk(req.Model, `{"content":"Hel"}`, ""),
			chunk(req.Model, `{"content":"lo "}`, ""),
			chunk(req.Model, `{"content":"there"}`, ""),
			chunk(req.Model, `{}`, "stop"),
			`{"id":"chatcmpl-live","object":"chat.completion.chunk","created":1700000000,"model":`+jsonString(req.Model)+`,"choices":[],`+usageJSON+`}`,
			"[DONE]")
	}
}

// usageJSON reports tokens of all four types the relay counts.
const usageJSON = `"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19,` +
	`"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}`

// sse writes each data as one event, flushing after each, as a streaming
// upstream does.
func sse(w http.ResponseWriter, data ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	rc := http.NewResponseController(w)
	for _, d := range data {
		_, _ = io.WriteString(w, "data: "+d+"\n\n")
		_ = rc.Flush()
	}
}

// chunk is a chat.completion.chunk with one choice.
func chunk(model, delta, finish string) string {
	fr := "null"
	if finish != "" {
		fr = jsonString(finish)
	}
	return `{"id":"chatcmpl-live","object":"chat.completion.chunk","created":1700000000,"model":` + jsonString(model) +
		`,"choices":[{"index":0,"delta":` + delta + `,"finish_reason":` + fr + `}]}`
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// flakyLimiter is the in-memory limiter, except that it fails for the
// tenant "flaky", as a limiter whose store is down does. Settle is the
// MemoryLimiter's, so token budgets are settled as usual.
type flakyLimiter struct{ *relay.MemoryLimiter }

func (l flakyLimiter) Allow(ctx context.Context, req relay.LimitRequest) (relay.Decision, error) {
	if req.Identity.Tenant == "flaky" {
		return relay.Decision{}, errors.New("limiter store unreachable")
	}
	return l.MemoryLimiter.Allow(ctx, req)
}

// flakyRecorder writes records as JSON lines to nowhere, but fails one
// batch write in five (the retry that follows succeeds), so that storage
// errors and retries are counted but nothing is dropped.
type flakyRecorder struct {
	inner   *relay.JSONLinesRecorder
	batches atomic.Int64
}

func (f *flakyRecorder) Record(ctx context.Context, rec relay.Record) error {
	return f.RecordBatch(ctx, []relay.Record{rec})
}

func (f *flakyRecorder) RecordBatch(ctx context.Context, recs []relay.Record) error {
	if f.batches.Add(1)%5 == 1 {
		return errors.New("storage unavailable")
	}
	return f.inner.RecordBatch(ctx, recs)
}

// startRelay starts a relay in front of up on 127.0.0.1, serving its
// metrics on /metrics, with a route to up ("chat") and one to a closed
// port ("dead").
func startRelay(t *testing.T, up *fakeUpstream) (*relay.Relay, *httptest.Server) {
	t.Helper()
	rl, err := relay.New(
		relay.WithRoutes(
			relay.Route{Name: "chat", Prefix: "/v1", Upstreams: []relay.Upstream{{
				Name: "fake-openai", URL: up.srv.URL, AuthHeader: "Authorization", AuthValue: upstreamSecret,
			}}},
			relay.Route{Name: "dead", Prefix: "/dead", StripPrefix: true, Upstreams: []relay.Upstream{{
				Name: "closed-port", URL: "http://" + freeAddr(t), AuthHeader: "Authorization", AuthValue: upstreamSecret,
			}}, Timeouts: relay.Timeouts{Connect: 5 * time.Second}},
		),
		relay.WithAPIKeys(
			relay.APIKey{Key: keyMain, ID: "main", Tenant: "main"},
			relay.APIKey{Key: keyTiny, ID: "tiny", Tenant: "tiny", Limits: &relay.Limits{RequestsPerMinute: 1, Burst: 1}},
			relay.APIKey{Key: keyThrifty, ID: "thrifty", Tenant: "thrifty", Limits: &relay.Limits{TokensPerMinute: 10}},
			relay.APIKey{Key: keyFlaky, ID: "flaky", Tenant: "flaky"},
		),
		// What WithRateLimit installs, wrapped to fail for one tenant.
		relay.WithLimiter(flakyLimiter{relay.NewMemoryLimiter(relay.Limits{RequestsPerMinute: 1e6})}),
		relay.WithModels("demo-model"),
		relay.WithRecorder(&flakyRecorder{inner: relay.NewJSONLinesRecorder(io.Discard)}),
		relay.WithRecordQueue(relay.AsyncOptions{FlushInterval: 20 * time.Millisecond, RetryBackoff: time.Millisecond}),
		relay.WithMaxBodyBytes(16<<10),
	)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", rl.MetricsHandler())
	mux.Handle("/", rl)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := rl.Shutdown(ctx); err != nil {
			t.Errorf("relay shutdown: %v", err)
		}
		srv.Close()
	})
	return rl, srv
}

// call is one request of the load and the statuses it may get.
type call struct {
	name       string
	key        string // "" sends no key
	path       string
	behave     string
	body       string
	want       []int
	disconnect bool // read the first event, then go away
}

const (
	streamBody = `{"model":"demo-model","stream":true,"messages":[{"role":"user","content":"Say hello"}]}`
	otherBody  = `{"model":"some-other-model","stream":true,"messages":[{"role":"user","content":"Say hello"}]}`
	jsonBody   = `{"model":"demo-model","messages":[{"role":"user","content":"Say hello"}],"max_tokens":64}`
	chatPath   = "/v1/chat/completions"
)

// round is one request of every kind.
func round() []call {
	ok := []int{http.StatusOK}
	return []call{
		{name: "stream", key: keyMain, path: chatPath, body: streamBody, want: ok},
		{name: "stream, unlisted model", key: keyMain, path: chatPath, body: otherBody, want: ok},
		{name: "json", key: keyMain, path: chatPath, body: jsonBody, want: ok},
		{name: "upstream 500", key: keyMain, path: chatPath, behave: behaveFail, body: jsonBody, want: []int{http.StatusInternalServerError}},
		{name: "upstream cut mid-stream", key: keyMain, path: chatPath, behave: behaveBreak, body: streamBody, want: ok},
		{name: "error event", key: keyMain, path: chatPath, behave: behaveErrorEvent, body: streamBody, want: ok},
		{name: "client disconnects", key: keyMain, path: chatPath, behave: behaveHold, body: streamBody, want: ok, disconnect: true},
		{name: "closed port", key: keyMain, path: "/dead" + chatPath, body: jsonBody, want: []int{http.StatusBadGateway}},
		{name: "no key", path: chatPath, body: jsonBody, want: []int{http.StatusUnauthorized}},
		{name: "no route", key: keyMain, path: "/nowhere", body: jsonBody, want: []int{http.StatusNotFound}},
		{name: "too large", key: keyMain, path: chatPath, body: `{"model":"demo-model","messages":[{"role":"user","content":"` + strings.Repeat("a", 20<<10) + `"}]}`, want: []int{http.StatusRequestEntityTooLarge}},
		{name: "request limit", key: keyTiny, path: chatPath, body: jsonBody, want: []int{http.StatusOK, http.StatusTooManyRequests}},
		{name: "token limit", key: keyThrifty, path: chatPath, body: jsonBody, want: []int{http.StatusOK, http.StatusTooManyRequests}},
		{name: "limiter down", key: keyFlaky, path: chatPath, body: streamBody, want: ok},
	}
}

// loadGen sends calls to the relay and checks what they get. Errors are
// reported on t; a call cut short because ctx ended is not an error.
type loadGen struct {
	t      *testing.T
	base   string
	client *http.Client
	up     *fakeUpstream
	holds  atomic.Int64
}

// run sends rounds of every call from workers goroutines at once.
func (l *loadGen) run(ctx context.Context, rounds, workers int) {
	calls := make(chan call)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for c := range calls {
				l.do(ctx, c)
			}
		})
	}
	for range rounds {
		for _, c := range round() {
			select {
			case calls <- c:
			case <-ctx.Done():
			}
		}
	}
	close(calls)
	wg.Wait() // bounded by ctx, in which every call runs
}

// background sends a round every interval until the returned stop is
// called; stop waits for the calls under way.
func (l *loadGen) background(ctx context.Context, interval time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			l.run(ctx, 1, 4)
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() {
		cancel()
		testkit.Recv(l.t, done, "the background traffic did not stop")
	}
}

// do sends one call and checks its status and, for streams, its body.
func (l *loadGen) do(ctx context.Context, c call) {
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, l.base+c.path, strings.NewReader(c.body))
	if err != nil {
		l.t.Errorf("%s: %v", c.name, err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	if c.behave != "" {
		req.Header.Set(behaveHeader, c.behave)
	}
	var canceled <-chan struct{}
	if c.disconnect {
		id := strconv.FormatInt(l.holds.Add(1), 10)
		req.Header.Set(holdIDHeader, id)
		canceled = l.up.expectCancel(id)
	}
	resp, err := l.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			l.t.Errorf("%s: %v", c.name, err)
		}
		return
	}
	defer resp.Body.Close()
	if !slices.Contains(c.want, resp.StatusCode) {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		l.t.Errorf("%s: status %d, want one of %v: %s", c.name, resp.StatusCode, c.want, b)
		return
	}
	if c.disconnect {
		l.disconnect(ctx, c, resp, cancel, canceled)
		return
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		if ctx.Err() == nil {
			l.t.Errorf("%s: reading the body: %v", c.name, err)
		}
		return
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") || resp.StatusCode != http.StatusOK {
		return
	}
	want := "data: [DONE]"
	if c.behave == behaveBreak {
		want = "event: error" // the relay ends a cut stream with an error event
	}
	if !strings.Contains(string(body), want) {
		l.t.Errorf("%s: stream lacks %q:\n%s", c.name, want, body)
	}
}

// disconnect reads the first content event of resp, goes away, and checks
// that the relay cancels the upstream request.
func (l *loadGen) disconnect(ctx context.Context, c call, resp *http.Response, cancel context.CancelFunc, canceled <-chan struct{}) {
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if ctx.Err() == nil {
				l.t.Errorf("%s: stream ended before its first event: %v", c.name, err)
			}
			return
		}
		if strings.HasPrefix(line, "data: ") {
			break
		}
	}
	cancel()
	bound := time.NewTimer(20 * time.Second)
	defer bound.Stop()
	select {
	case <-canceled:
	case <-ctx.Done():
	case <-bound.C:
		l.t.Errorf("%s: the upstream request was not cancelled 20s after the client went away", c.name)
	}
}
