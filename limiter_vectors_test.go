package relay_test

import (
	"testing"
	"time"

	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/limitervectors"
)

// TestMemoryLimiterVectors runs the shared vectors against MemoryLimiter at
// their explicit times: the same decisions the Redis script must give
// (redis/vectors_test.go runs them through the same runner).
func TestMemoryLimiterVectors(t *testing.T) {
	limitervectors.Run(t, "testdata/limiter_vectors.json", func(*testing.T) limitervectors.Limiter {
		return memoryAt{relay.NewMemoryLimiter(relay.Limits{})}
	})
}

type memoryAt struct{ m *relay.MemoryLimiter }

func (a memoryAt) AllowAt(now time.Time, req relay.LimitRequest) (relay.Decision, error) {
	return a.m.AllowAt(now, req), nil
}

func (a memoryAt) SettleAt(now time.Time, req relay.LimitRequest, used int64) error {
	a.m.SettleAt(now, req, used)
	return nil
}
