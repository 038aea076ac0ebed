package relay

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// heldSettler is a limiter with token budgets that settles like a remote
// one: the relay settles with it in the background, and each settlement
// waits until the test releases it.
type heldSettler struct {
	noLimit
	release chan struct{}

	mu      sync.Mutex
	settled []int64
}

func (s *heldSettler) Settle(ctx context.Context, _ LimitRequest, used int64) error {
	select {
	case <-s.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settled = append(s.settled, used)
	return nil
}

func (s *heldSettler) all() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]int64(nil), s.settled...)
}

// usageUpstream answers a chat completion that used 8 tokens.
func usageUpstream(w http.ResponseWriter, r *http.Request) {
	_, _ = io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"model":"m","usage":{"prompt_tokens":3,"completion_tokens":5}}`)
}

const reservingBody = `{"model":"m","max_tokens":300,"messages":[{"role":"user","content":"hi"}]}`

// TestFlushWaitsForSettlement: with a limiter that is not the in-memory
// one, the relay settles a request's tokens in the background, after its
// handler returned; Flush returns only once that settlement is done (and
// the record written), so a caller can read the limiter's state without
// racing it.
// Mutations it kills: the relay skipping Settle; Flush not waiting for
// settlements in flight.
func TestFlushWaitsForSettlement(t *testing.T) {
	s := &heldSettler{release: make(chan struct{})}
	e := newEnv(t, usageUpstream, Route{Prefix: "/v1"}, WithLimiter(s))
	resp, _ := e.do(e.request("POST", "/v1/chat/completions", reservingBody))
	require.Equal(t, 200, resp.StatusCode)

	// The settlement is held: Flush must still be waiting when its
	// context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, e.relay.Flush(ctx), context.DeadlineExceeded, "Flush returned before the settlement was done")
	assert.Empty(t, s.all())

	close(s.release)
	require.NoError(t, e.relay.Flush(testkit.Context(t)), "Flush did not return after the settlement was released")
	assert.Equal(t, []int64{8}, s.all(), "settled with the usage the upstream reported")
	require.Len(t, e.sink.all(), 1, "Flush writes the record too")
	assert.Equal(t, int64(8), e.sink.all()[0].Usage.Total())
}

// TestShutdownWaitsForSettlement: Shutdown returns only after the
// settlements of finished requests are done.
// Mutation it kills: Shutdown not waiting for settlements in flight.
func TestShutdownWaitsForSettlement(t *testing.T) {
	// Shutdown settles on two paths: within its ctx's deadline, and,
	// without one, until every settlement has ended.
	for _, tc := range []struct {
		name string
		ctx  func(t *testing.T) context.Context
	}{
		{"with a deadline", func(t *testing.T) context.Context { return testkit.Context(t) }},
		{"without a deadline", func(t *testing.T) context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			return ctx
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &heldSettler{release: make(chan struct{})}
			e := newEnv(t, usageUpstream, Route{Prefix: "/v1"}, WithLimiter(s))
			resp, _ := e.do(e.request("POST", "/v1/chat/completions", reservingBody))
			require.Equal(t, 200, resp.StatusCode)

			done := make(chan error, 1)
			ctx := tc.ctx(t)
			go func() { done <- e.relay.Shutdown(ctx) }()
			select {
			case err := <-done:
				t.Fatalf("Shutdown returned (%v) while a settlement was held", err)
			case <-time.After(100 * time.Millisecond):
			}
			close(s.release)
			require.NoError(t, testkit.Recv(t, done, "Shutdown did not return after the settlement was released"))
			assert.Equal(t, []int64{8}, s.all())
			require.NoError(t, e.relay.Flush(testkit.Context(t)), "Flush after Shutdown returns at once")
		})
	}
}
