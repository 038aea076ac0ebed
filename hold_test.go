package relay

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/streamrelay/relay/internal/testkit"
)

// inTurn is an upstream that answers its n-th request with the n-th
// handler (the last one for any request beyond), so that a failover test
// does not depend on which upstream of a route is tried first.
func inTurn(t *testing.T, handlers ...http.HandlerFunc) (http.HandlerFunc, *atomic.Int32) {
	var n atomic.Int32
	return func(w http.ResponseWriter, r *http.Request) {
		i := int(n.Add(1)) - 1
		handlers[min(i, len(handlers)-1)](w, r)
	}, &n
}

// newHoldEnv is newEnv for a route of two upstreams, b1 and b2, both one
// server answering with handlers in turn.
func newHoldEnv(t *testing.T, r Route, handlers ...http.HandlerFunc) (*env, *atomic.Int32) {
	up, n := inTurn(t, handlers...)
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	t.Cleanup(srv.CloseClientConnections) // runs first: ends stalled handlers
	r.Prefix = "/v1"
	r.Upstreams = []Upstream{{Name: "b1", URL: srv.URL}, {Name: "b2", URL: srv.URL}}
	notUsed := func(http.ResponseWriter, *http.Request) { t.Error("the env's own upstream called") }
	return newEnv(t, notUsed, r), n
}

// fixture reads a shared recording.
func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sharedFixtures(t), name))
	require.NoError(t, err)
	return b
}

// withoutEvents drops the events whose "event:" line names one of names.
func withoutEvents(stream []byte, names ...string) []byte {
	var out []byte
	for _, ev := range bytes.SplitAfter(stream, []byte("\n\n")) {
		drop := false
		for _, n := range names {
			drop = drop || bytes.HasPrefix(ev, []byte("event: "+n+"\n"))
		}
		if !drop {
			out = append(out, ev...)
		}
	}
	return out
}

const (
	roleChunk    = `data: {"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}` + "\n\n"
	contentChunk = `data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}]}` + "\n\n"
	doneChunk    = "data: [DONE]\n\n"
)

// TestHoldFailsOverBeforeFirstContent: a stream that fails before its
// first content event is dropped, and the next upstream's stream is the
// only one the client sees, as if the first had never answered.
func TestHoldFailsOverBeforeFirstContent(t *testing.T) {
	overloaded := fixture(t, "anthropic_messages_stream_overloaded_error_CONSTRUCTED.sse")
	text := fixture(t, "anthropic_messages_stream_text.sse")
	good := contentChunk + doneChunk
	stall := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, roleChunk)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}
	tests := []struct {
		name  string
		route Route
		first http.HandlerFunc
		want  string // the whole body the client gets: the second upstream's
		why   string
		// failed is the first attempt's error type in Record.AttemptLog.
		failed ErrorType
	}{
		{
			name:  "anthropic overloaded_error after message_start",
			route: Route{Provider: ProviderAnthropic},
			// The recording's prefix, but for its one text delta: the
			// error comes before any content.
			first:  replay(withoutEvents(overloaded, "content_block_delta"), "text/event-stream"),
			want:   string(text),
			failed: ErrTypeUpstreamEvent,
		},
		{name: "empty 200", first: sseUpstream(), want: good, failed: ErrTypeStreamInterrupted},
		{name: "role chunk, then the end", first: sseUpstream(roleChunk), want: good, failed: ErrTypeStreamInterrupted},
		{
			name: "openai error chunk",
			first: sseUpstream(roleChunk, ": comment\n\n",
				`data: {"error":{"message":"Upstream failed","type":"server_error","code":502}}`+"\n\n"),
			want:   good,
			failed: ErrTypeUpstreamEvent,
		},
		{name: "broken mid-event", first: hijackAfter("text/event-stream", roleChunk+`data: {"id"`), want: good, failed: ErrTypeStreamInterrupted},
		{
			name:   "first token timeout",
			route:  Route{Timeouts: Timeouts{FirstToken: 50 * time.Millisecond}},
			first:  stall,
			want:   good,
			failed: ErrTypeUpstreamTimeout,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			second := sseUpstream(good)
			if tt.route.Provider == ProviderAnthropic {
				second = replay(text, "text/event-stream")
			}
			e, n := newHoldEnv(t, tt.route, tt.first, second)
			resp, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, tt.want, string(body), "only the second upstream's bytes")
			assert.Equal(t, int32(2), n.Load())
			rec := e.lastRecord()
			assert.Equal(t, 2, rec.Attempts)
			assert.Equal(t, ErrTypeNone, rec.ErrorType)
			assert.Equal(t, int64(len(body)), rec.BytesOut)
			assert.Positive(t, rec.TTFT)
			first, second2 := rec.Upstream, "b1"
			if first == "b1" {
				second2 = "b2"
			}
			m := e.relay.metrics.upstreamReqs
			assert.Equal(t, 1.0, testutil.ToFloat64(m.WithLabelValues("test", second2, "stream_error")), "the failed attempt")
			assert.Equal(t, 1.0, testutil.ToFloat64(m.WithLabelValues("test", first, "200")), "the relayed attempt")
			assert.Equal(t, 0.0, testutil.ToFloat64(m.WithLabelValues("test", second2, "200")), "counted once")
			assert.Equal(t, []AttemptInfo{{Upstream: second2, Status: 200, ErrorType: tt.failed}, {Upstream: first, Status: 200}},
				rec.AttemptLog, "the held attempt that failed, then the one relayed")
		})
	}
}

// TestHoldNeverAfterFirstContent: once content came, a failure is the
// client's to see (the upstream's own error event, or the relay's), and no
// other upstream is asked.
func TestHoldNeverAfterFirstContent(t *testing.T) {
	overloaded := fixture(t, "anthropic_messages_stream_overloaded_error_CONSTRUCTED.sse")
	notCalled := func(w http.ResponseWriter, r *http.Request) { t.Error("failed over after the first content") }
	t.Run("error event after content", func(t *testing.T) {
		e, n := newHoldEnv(t, Route{Provider: ProviderAnthropic}, replay(overloaded, "text/event-stream"), notCalled)
		_, body := e.do(e.request("POST", "/v1/messages", `{"model":"m","stream":true}`))
		assert.Equal(t, string(overloaded), string(body))
		assert.Equal(t, int32(1), n.Load())
		rec := e.lastRecord()
		assert.Equal(t, 1, rec.Attempts)
		assert.Equal(t, ErrTypeUpstreamEvent, rec.ErrorType)
	})
	t.Run("broken after content", func(t *testing.T) {
		e, n := newHoldEnv(t, Route{}, hijackAfter("text/event-stream", roleChunk+contentChunk), notCalled)
		_, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
		assert.True(t, strings.HasPrefix(string(body), roleChunk+contentChunk), "%q", body)
		assert.Contains(t, string(body), "event: error\n")
		assert.Equal(t, int32(1), n.Load())
		assert.Equal(t, ErrTypeStreamInterrupted, e.lastRecord().ErrorType)
	})
}

// TestHoldLastAttemptAndOff: the last attempt is never held, so when no
// attempt is left the client gets what that upstream sent, error event
// and all; a route that turns the hold off relays its first stream as it
// comes, and never fails over.
func TestHoldLastAttemptAndOff(t *testing.T) {
	bad := roleChunk + `data: {"error":{"message":"busy","type":"server_error","code":503}}` + "\n\n"
	t.Run("both fail", func(t *testing.T) {
		e, n := newHoldEnv(t, Route{}, sseUpstream("data: {\"first\":1}\n\n", bad), sseUpstream(bad))
		_, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
		assert.Equal(t, bad, string(body), "the last attempt's stream, whole")
		assert.Equal(t, int32(2), n.Load())
		rec := e.lastRecord()
		assert.Equal(t, 2, rec.Attempts)
		assert.Equal(t, ErrTypeUpstreamEvent, rec.ErrorType)
	})
	t.Run("hold off", func(t *testing.T) {
		e, n := newHoldEnv(t, Route{NoFirstContentHold: true}, sseUpstream(bad), sseUpstream(contentChunk))
		_, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
		assert.Equal(t, bad, string(body))
		assert.Equal(t, int32(1), n.Load())
	})
	t.Run("more than maxHold before content commits", func(t *testing.T) {
		comments := strings.Repeat(": processing\n\n", maxHold/14+1)
		e, n := newHoldEnv(t, Route{}, sseUpstream(comments, bad), sseUpstream(contentChunk))
		_, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
		assert.Equal(t, comments+bad, string(body), "committed: relayed whole, no failover")
		assert.Equal(t, int32(1), n.Load())
	})
	t.Run("keep-alive route is not held", func(t *testing.T) {
		e, n := newHoldEnv(t, Route{KeepAlive: time.Hour}, sseUpstream(bad), sseUpstream(contentChunk))
		_, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
		assert.Equal(t, bad, string(body))
		assert.Equal(t, int32(1), n.Load())
	})
	t.Run("complete without content", func(t *testing.T) {
		e, n := newHoldEnv(t, Route{}, sseUpstream(roleChunk, doneChunk), sseUpstream(contentChunk))
		_, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
		assert.Equal(t, roleChunk+doneChunk, string(body), "a complete stream is an answer")
		assert.Equal(t, int32(1), n.Load())
	})
}

// TestHoldReleasesFirstContentAtOnce: a held stream's first content event,
// and the events held before it, reach the client before the upstream
// sends anything more: the upstream waits for the client to have it.
func TestHoldReleasesFirstContentAtOnce(t *testing.T) {
	acks := make(chan struct{})
	up := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for _, c := range []string{": hello\n\n", roleChunk, contentChunk} {
			_, _ = io.WriteString(w, c)
			w.(http.Flusher).Flush()
		}
		select {
		case <-acks:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, doneChunk)
	}
	e, n := newHoldEnv(t, Route{}, up)
	resp, err := e.front.Client().Do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	var got string
	for range 3 { // the comment, the role chunk, the content chunk
		ev, err := br.ReadString('\n')
		require.NoError(t, err)
		blank, err := br.ReadString('\n')
		require.NoError(t, err)
		got += ev + blank
	}
	assert.Equal(t, ": hello\n\n"+roleChunk+contentChunk, got)
	testkit.Send(t, acks, struct{}{}, "the upstream did not wait for the client")
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Equal(t, doneChunk, string(rest))
	e.handled()
	assert.Equal(t, int32(1), n.Load())
	assert.Equal(t, 1, e.lastRecord().Attempts)
}

// TestKeepAliveOnlyBetweenEvents: during upstream silence the client gets
// keep-alive comments between events, and none while the upstream has
// left an event half sent (an event split across reads).
func TestKeepAliveOnlyBetweenEvents(t *testing.T) {
	const part1, part2 = `data: {"id":"c","choices":[{"index":0,`, `"delta":{"content":"there"}}]}` + "\n\n"
	midEvent, finish := make(chan struct{}), make(chan struct{})
	up := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for _, step := range []struct {
			chunk string
			wait  chan struct{}
		}{{contentChunk, midEvent}, {part1, finish}, {part2 + doneChunk, nil}} {
			_, _ = io.WriteString(w, step.chunk)
			w.(http.Flusher).Flush()
			if step.wait == nil {
				return
			}
			select {
			case <-step.wait:
			case <-r.Context().Done():
				return
			}
		}
	}
	e := newEnv(t, up, Route{Prefix: "/v1", KeepAlive: 20 * time.Millisecond})
	fired := make(chan bool, 64)
	e.relay.keepAliveHook = func(wrote bool) {
		select {
		case fired <- wrote:
		default:
		}
	}
	resp, err := e.front.Client().Do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
	require.NoError(t, err)
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	readEvent := func() string {
		var s string
		for {
			line, err := br.ReadString('\n')
			require.NoError(t, err)
			if s += line; line == "\n" {
				return s
			}
		}
	}
	assert.Equal(t, contentChunk, readEvent())
	assert.Equal(t, ": keep-alive\n\n", readEvent(), "silence between events: a comment")
	close(midEvent) // the upstream sends half an event, and goes silent
	for wrote := true; wrote; {
		wrote = testkit.Recv(t, fired, "no keep-alive timer fired mid-event")
	}
	close(finish)
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	e.handled()
	// Comments the timer sent before the half event arrived come first;
	// none is inside the event.
	body := strings.TrimLeft(strings.ReplaceAll(string(rest), ": keep-alive\n\n", "\x00"), "\x00")
	assert.Equal(t, part1+part2+doneChunk, body)
	rec := e.lastRecord()
	assert.Equal(t, ErrTypeNone, rec.ErrorType)
	assert.Equal(t, int64(3), rec.Events)
	assert.Equal(t, int64(len(contentChunk)+len(": keep-alive\n\n")+len(rest)), rec.BytesOut, "comments counted")
}

// TestKeepAliveOff: a route without KeepAlive sends no comment, however
// long the upstream is silent.
func TestKeepAliveOff(t *testing.T) {
	e := newEnv(t, sseUpstream(contentChunk, doneChunk), Route{Prefix: "/v1"})
	e.relay.keepAliveHook = func(bool) { t.Error("a keep-alive timer ran on a route without KeepAlive") }
	_, body := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`))
	assert.Equal(t, contentChunk+doneChunk, string(body))
}

// TestHoldTellsDone: a resolver's Done hook hears of a held stream that
// failed before its first content as a failure (ErrNoFirstContent), and of
// the relayed one as its status.
func TestHoldTellsDone(t *testing.T) {
	up, _ := inTurn(t, sseUpstream(roleChunk), sseUpstream(contentChunk, doneChunk))
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	u, err := url.Parse(srv.URL + "/v1/chat/completions")
	require.NoError(t, err)
	results := make(chan AttemptResult, 4)
	done := func(r AttemptResult) { results <- r }
	res := UpstreamResolverFunc(func(*http.Request) (*Target, error) {
		return &Target{Route: "test", Kind: KindAuto, Backends: []Backend{
			{Name: "b1", URL: u, Done: done}, {Name: "b2", URL: u, Done: done},
		}}, nil
	})
	e := newEnv(t, func(http.ResponseWriter, *http.Request) {}, Route{Prefix: "/v1"})
	rl, err := New(WithResolver(res), WithAPIKeys(APIKey{Key: testKey, ID: "k1", Tenant: "acme"}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = rl.Shutdown(testkit.Context(t)) })
	front := httptest.NewServer(rl)
	t.Cleanup(front.Close)
	req := e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`)
	req.URL, err = url.Parse(front.URL + "/v1/chat/completions")
	require.NoError(t, err)
	resp, err := front.Client().Do(req)
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, contentChunk+doneChunk, string(body))
	first := testkit.Recv(t, results, "the first attempt was not reported")
	assert.ErrorIs(t, first.Err, ErrNoFirstContent)
	assert.Zero(t, first.Status)
	second := testkit.Recv(t, results, "the second attempt was not reported")
	assert.Equal(t, AttemptResult{Status: 200}, second)
}

// TestHoldClientLeaves: a client that leaves while its stream is held
// cancels the upstream at once, is recorded as gone, and no other
// upstream is asked.
func TestHoldClientLeaves(t *testing.T) {
	sent, ended := make(chan struct{}), make(chan struct{})
	stall := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, roleChunk)
		w.(http.Flusher).Flush()
		close(sent)
		<-r.Context().Done()
		close(ended)
	}
	notCalled := func(http.ResponseWriter, *http.Request) { t.Error("failed over for a client that left") }
	e, n := newHoldEnv(t, Route{}, stall, notCalled)
	ctx, cancel := context.WithCancel(testkit.Context(t))
	req := e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true}`).WithContext(ctx)
	errc := make(chan error, 1)
	go func() {
		resp, err := e.front.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	testkit.Recv(t, sent, "the upstream was not asked")
	cancel()
	testkit.Recv(t, ended, "the upstream was not cancelled")
	assert.Error(t, testkit.Recv(t, errc, "the client's request did not end"), "no headers were sent")
	e.handled()
	rec := e.lastRecord()
	assert.Equal(t, StatusClientClosedRequest, rec.Status)
	assert.True(t, rec.ClientGone)
	assert.Equal(t, int32(1), n.Load())
}
