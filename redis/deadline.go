package relayredis

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Error is the type of this package's sentinel errors.
type Error string

func (e Error) Error() string { return string(e) }

// ErrBusy is returned, at once, while too many calls to a Redis that
// stopped answering are still outstanding (see caller).
const ErrBusy = Error("relayredis: too many Redis calls outstanding")

// maxOutstanding bounds the calls left running after their deadline, per
// Limiter or Recorder.
const maxOutstanding = 256

// caller runs Redis calls under deadlines that hold whatever the client's
// configuration, and logs when Redis stops and starts answering.
//
// go-redis applies a context's deadline to socket reads and writes only
// when the client was built with ContextTimeoutEnabled. Without it, a
// Redis that accepts connections but does not answer (overloaded, paused,
// a network partition) would block a call for the client's ReadTimeout,
// seconds, on the request path. So for such clients each call runs in a
// goroutine of its own and the caller stops waiting at the deadline; the
// abandoned call ends when the client's own timeout fires. At most
// maxOutstanding calls may be abandoned at once; past that, calls fail
// with ErrBusy without touching Redis, so a hung Redis cannot pile up
// goroutines.
type caller struct {
	client    redis.UniversalClient
	direct    bool // the client honours context deadlines itself
	component string
	log       *slog.Logger

	outstanding atomic.Int64
	failing     atomic.Bool
}

func newCaller(client redis.UniversalClient, component string, log *slog.Logger) *caller {
	return &caller{client: client, direct: honoursDeadlines(client), component: component, log: log}
}

// honoursDeadlines reports whether the client applies context deadlines
// to socket I/O. Unknown implementations are assumed not to.
func honoursDeadlines(c redis.UniversalClient) bool {
	switch c := c.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return false
}

// call runs fn with a context that ends after timeout (zero: when parent
// ends) and returns its result, or the context's error once it ends.
func call[T any](c *caller, parent context.Context, timeout time.Duration, fn func(ctx context.Context) (T, error)) (T, error) {
	ctx := parent
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(parent, timeout)
		defer cancel()
	}
	var v T
	var err error
	if c.direct {
		v, err = fn(ctx)
	} else {
		v, err = detached(c, ctx, fn)
	}
	c.observe(parent, err)
	return v, err
}

type result[T any] struct {
	v   T
	err error
}

func detached[T any](c *caller, ctx context.Context, fn func(ctx context.Context) (T, error)) (T, error) {
	var zero T
	if c.outstanding.Add(1) > maxOutstanding {
		c.outstanding.Add(-1)
		return zero, ErrBusy
	}
	done := make(chan result[T], 1) // buffered: an abandoned call must not block
	go func() {
		defer c.outstanding.Add(-1)
		v, err := fn(ctx)
		done <- result[T]{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// observe logs changes between "Redis answers" and "Redis fails", once per
// change rather than once per call.
func (c *caller) observe(parent context.Context, err error) {
	switch {
	case err == nil:
		if c.failing.Swap(false) {
			c.log.Info("relayredis: redis answers again", "component", c.component)
		}
	case parent.Err() != nil:
		// The caller gave up (a client went away); that says nothing
		// about Redis.
	default:
		if !c.failing.Swap(true) {
			c.log.Warn("relayredis: redis calls failing", "component", c.component, "error", err)
		}
	}
}

// ping checks that Redis answers within timeout.
func (c *caller) ping(ctx context.Context, timeout time.Duration) error {
	_, err := call(c, ctx, timeout, func(ctx context.Context) (string, error) {
		return c.client.Ping(ctx).Result()
	})
	return err
}
