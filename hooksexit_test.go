package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamrelay/relay/internal/testkit"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// balanced reports whether calls, a hookLog's, start with one
// request-start, end with one request-end, and have each attempt-start
// followed by its attempt-end before anything else starts or ends.
func balanced(t *testing.T, calls []string) {
	t.Helper()
	require.NotEmpty(t, calls)
	assert.Equal(t, "request-start", calls[0])
	assert.Equal(t, "request-end", calls[len(calls)-1])
	open := false
	for i, c := range calls {
		switch {
		case i > 0 && c == "request-start", i < len(calls)-1 && c == "request-end":
			t.Errorf("call %d: %s again: %q", i, c, calls)
		case strings.HasPrefix(c, "attempt-start"):
			assert.False(t, open, "call %d: an attempt starts while one is open: %q", i, calls)
			open = true
		case strings.HasPrefix(c, "attempt-end"):
			assert.True(t, open, "call %d: an attempt ends that was not started: %q", i, calls)
			open = false
		case c == "request-end":
			assert.False(t, open, "the request ends with an attempt open: %q", calls)
		}
	}
}

// TestHooksBalancedOnEveryExit: the exits TestHooksOrderAndFacts does not
// take (the include_usage retry, a panic, a client that leaves mid-stream)
// end every attempt started, and the request, once each.
func TestHooksBalancedOnEveryExit(t *testing.T) {
	const body = `{"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}`

	t.Run("include_usage refused and retried", func(t *testing.T) {
		log := &hookLog{}
		stream := sseUpstream(`data: {"choices":[{"delta":{"content":"hi"}}]}`+"\n\n", "data: [DONE]\n\n")
		up := func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			if bytes.Contains(b, []byte("stream_options")) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				_, _ = io.WriteString(w, azureRefusal)
				return
			}
			stream(w, r)
		}
		e := newEnv(t, up, Route{Prefix: "/", Provider: ProviderAzure}, WithHooks(log.hooks()))
		resp, _ := e.do(e.request("POST", "/openai/deployments/d/chat/completions?api-version=2024-10-21", body))
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, 2, e.lastRecord().Attempts)
		balanced(t, log.calls)
		require.Len(t, log.ends, 2, "%q", log.calls)
		assert.Equal(t, AttemptEndInfo{Attempt: 1, Upstream: log.ends[0].Upstream, Host: log.ends[0].Host,
			Status: 400, ErrorType: ErrTypeUpstreamStatus, Failover: true, Duration: log.ends[0].Duration}, log.ends[0])
		assert.Equal(t, 200, log.ends[1].Status)
		assert.Equal(t, ErrTypeNone, log.ends[1].ErrorType)
	})

	t.Run("panic in the transport", func(t *testing.T) {
		log := &hookLog{}
		e := newEnv(t, okUpstream, Route{Prefix: "/v1"}, WithHooks(log.hooks()),
			WithTransport(roundTripFunc(func(*http.Request) (*http.Response, error) { panic(http.ErrAbortHandler) })))
		if resp, err := e.front.Client().Do(e.request("POST", "/v1/chat/completions", body)); err == nil {
			resp.Body.Close()
		}
		e.handled()
		balanced(t, log.calls)
		assert.Len(t, log.ends, 1)
		assert.Equal(t, http.StatusInternalServerError, log.end.Record.Status)
	})

	t.Run("client leaves mid-stream", func(t *testing.T) {
		log := &hookLog{}
		first := `data: {"choices":[{"delta":{"content":"hi"}}]}` + "\n\n"
		up := func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, first)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
		e := newEnv(t, up, Route{Prefix: "/v1", Provider: ProviderOpenAI}, WithHooks(log.hooks()))
		// The include_usage edit holds events until whole: read the first.
		e.leave(e.request("POST", "/v1/chat/completions", body), len(first))
		balanced(t, log.calls)
		require.Len(t, log.ends, 1)
		assert.Equal(t, ErrTypeClientCanceled, log.ends[0].ErrorType)
		assert.Equal(t, ErrTypeClientCanceled, log.end.Record.ErrorType)
	})

	t.Run("shutdown cuts a stream", func(t *testing.T) {
		log := &hookLog{}
		first := `data: {"choices":[{"delta":{"content":"hi"}}]}` + "\n\n"
		up := func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			_, _ = io.WriteString(w, first)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
		e := newEnv(t, up, Route{Prefix: "/v1", Provider: ProviderOpenAI}, WithHooks(log.hooks()))
		resp, err := e.front.Client().Do(e.request("POST", "/v1/chat/completions", body))
		require.NoError(t, err)
		defer resp.Body.Close()
		_, err = io.ReadFull(resp.Body, make([]byte, len(first)))
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(testkit.Context(t))
		cancel() // no grace: the stream is cut at once
		_ = e.relay.Shutdown(ctx)
		_, _ = io.Copy(io.Discard, resp.Body)
		e.handled()
		balanced(t, log.calls)
		require.Len(t, log.ends, 1)
		assert.Equal(t, log.end.Record.ErrorType, log.ends[0].ErrorType)
		assert.NotEqual(t, ErrTypeNone, log.ends[0].ErrorType)
	})
}

// TestHooksContextReachesTheTransport: the upstream request's context
// holds the values of the context AttemptStart returned (an instrumented
// transport finds its span there), while its cancellation stays the
// relay's: a client that leaves cancels it, and a context the transport
// derives from it, at once.
func TestHooksContextReachesTheTransport(t *testing.T) {
	type key struct{}
	entered, cancelled := make(chan any, 1), make(chan error, 1)
	tr := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		entered <- r.Context().Value(key{})
		child, stop := context.WithCancel(r.Context()) // as http.Transport derives its own
		defer stop()
		select {
		case <-child.Done():
			cancelled <- child.Err()
		case <-time.After(testkit.Timeout):
			cancelled <- errors.New("the transport's context was not cancelled")
		}
		return nil, child.Err()
	})
	h := &Hooks{
		RequestStart: func(ctx context.Context, _ RequestStartInfo) context.Context {
			return context.WithValue(ctx, key{}, "request")
		},
		AttemptStart: func(ctx context.Context, i AttemptStartInfo) context.Context {
			return context.WithValue(ctx, key{}, fmt.Sprint("attempt ", i.Attempt, " of ", ctx.Value(key{})))
		},
	}
	e := newEnv(t, okUpstream, Route{Prefix: "/v1"}, WithHooks(h), WithTransport(tr))
	ctx, cancel := context.WithCancel(testkit.Context(t))
	defer cancel()
	req := e.request("POST", "/v1/chat/completions", `{"model":"m","messages":[]}`).WithContext(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := e.front.Client().Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	assert.Equal(t, "attempt 1 of request", testkit.Recv(t, entered, "the transport was not called"))
	cancel() // the client leaves
	assert.ErrorIs(t, testkit.Recv(t, cancelled, "the transport did not return"), context.Canceled)
	testkit.Recv(t, done, "the client did not return")
	e.handled()
	assert.Equal(t, ErrTypeClientCanceled, e.lastRecord().ErrorType)
}
