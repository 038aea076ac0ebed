package relayredis

import (
	"context"
	"testing"
	"time"

	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/limitervectors"
)

// TestLimiterVectors runs the shared vectors through the real script on a
// real Redis, with the script's clock set to each step's time (testNow),
// so that the decisions must equal relay.MemoryLimiter's exactly.
func TestLimiterVectors(t *testing.T) {
	client := newClient(t, sharedRedisAddr(t), true)
	limitervectors.Run(t, "../testdata/limiter_vectors.json", func(t *testing.T) limitervectors.Limiter {
		return &atLimiter{lim: newTestLimiter(t, client)} // a prefix of its own: a fresh tenant
	})
}

// atLimiter drives the Redis limiter at explicit times through testNow.
type atLimiter struct{ lim *Limiter }

func (a *atLimiter) AllowAt(now time.Time, req relay.LimitRequest) (relay.Decision, error) {
	a.lim.testNow = func() time.Time { return now }
	return a.lim.Allow(context.Background(), req)
}

func (a *atLimiter) SettleAt(now time.Time, req relay.LimitRequest, used int64) error {
	a.lim.testNow = func() time.Time { return now }
	return a.lim.Settle(context.Background(), req, used)
}
