package relayredis

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCallerBoundsAbandonedCalls: calls to a client that ignores context
// deadlines return at the deadline; once maxOutstanding are left running,
// further calls fail at once with ErrBusy; when they end, calls run again.
func TestCallerBoundsAbandonedCalls(t *testing.T) {
	c := &caller{component: "test", log: slog.New(slog.DiscardHandler)} // not direct
	ctx := context.Background()
	release := make(chan struct{})
	var started sync.WaitGroup
	for range maxOutstanding {
		started.Add(1)
		_, err := call(c, ctx, time.Millisecond, func(context.Context) (int, error) {
			started.Done()
			<-release // a Redis that does not answer
			return 1, nil
		})
		require.ErrorIs(t, err, context.DeadlineExceeded)
	}
	testkit.Wait(t, started.Wait, "the abandoned calls did not start")

	ran := false
	_, err := call(c, ctx, time.Hour, func(context.Context) (int, error) { ran = true; return 1, nil })
	require.ErrorIs(t, err, ErrBusy)
	assert.False(t, ran, "a call past the bound must not reach Redis")

	close(release)
	// The abandoned calls end on their own goroutines; wait for the last.
	deadline := time.Now().Add(5 * time.Second)
	for c.outstanding.Load() > 0 && time.Now().Before(deadline) {
		runtime.Gosched()
	}
	v, err := call(c, ctx, time.Hour, func(context.Context) (int, error) { return 7, nil })
	require.NoError(t, err)
	assert.Equal(t, 7, v)
}

// TestCallerLogsChanges: one warning when Redis starts failing, one note
// when it answers again, nothing per call, and nothing when it was the
// caller that gave up.
func TestCallerLogsChanges(t *testing.T) {
	var buf bytes.Buffer
	c := &caller{direct: true, component: "limiter", log: slog.New(slog.NewTextHandler(&buf, nil))}
	fail := func(context.Context) (int, error) { return 0, errors.New("connection refused") }
	ok := func(context.Context) (int, error) { return 1, nil }
	ctx := context.Background()
	gone, cancel := context.WithCancel(ctx)
	cancel()

	_, _ = call(c, gone, 0, fail) // the client went away: not Redis's fault
	_, _ = call(c, ctx, 0, ok)
	for range 3 {
		_, _ = call(c, ctx, 0, fail)
	}
	for range 3 {
		_, _ = call(c, ctx, 0, ok)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2, buf.String())
	assert.Contains(t, lines[0], "level=WARN")
	assert.Contains(t, lines[0], "connection refused")
	assert.Contains(t, lines[0], "component=limiter")
	assert.Contains(t, lines[1], "level=INFO")
}
