package relayredis

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// leaveAfterScript is a client leaving just as its lease script ran: the
// first script call succeeds on Redis, then the hook cancels the
// request's context and reports its error, as a reply lost to a client
// gone would.
type leaveAfterScript struct {
	armed  atomic.Bool
	cancel context.CancelFunc
}

func (h *leaveAfterScript) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h *leaveAfterScript) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err == nil && strings.HasPrefix(cmd.Name(), "eval") && h.armed.CompareAndSwap(true, false) {
			h.cancel()
			return context.Canceled
		}
		return err
	}
}

func (h *leaveAfterScript) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestLeaseRemovedWhenRequestLeavesDuringScript: a lease the script took
// for a request that left before the answer came is removed at once, not
// left to hold the tenant's slot until its TTL.
func TestLeaseRemovedWhenRequestLeavesDuringScript(t *testing.T) {
	c := newClient(t, sharedRedisAddr(t), true)
	prefix := uniquePrefix(t)
	lim := &relay.Limits{MaxConcurrent: 1}
	l, err := NewLimiter(c, WithPrefix(prefix), WithTimeout(5*time.Second))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(testkit.Context(t))
	h := &leaveAfterScript{cancel: cancel}
	h.armed.Store(true)
	c.AddHook(h)

	_, _, err = l.Acquire(ctx, leaseReq("t", "r1", lim, false))
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, h.armed.Load(), "the script did not run")

	ls, d, err := l.Acquire(testkit.Context(t), leaseReq("t", "r2", lim, false))
	require.NoError(t, err)
	assert.True(t, d.Allowed, "the slot of the request that left is free")
	if ls != nil {
		ls.Release()
	}
}
