package relay

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMemoryLimiterRequests(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := NewMemoryLimiter(Limits{RequestsPerMinute: 60, Burst: 3})
	id := Identity{Tenant: "a"}
	vip := Identity{Tenant: "vip", Limits: &Limits{RequestsPerMinute: 600, Burst: 10}}
	tests := []struct {
		at      time.Duration
		id      Identity
		allowed bool
		remain  int64
		retry   time.Duration
	}{
		{0, id, true, 2, 0},
		{0, id, true, 1, 0},
		{0, id, true, 0, 0},
		{0, id, false, 0, time.Second},
		{500 * time.Millisecond, id, false, 0, time.Second},
		{time.Second, id, true, 0, 0},
		{time.Second, vip, true, 9, 0}, // overrides apply per tenant
	}
	for i, tt := range tests {
		d := m.AllowAt(t0.Add(tt.at), LimitRequest{Identity: tt.id, Cost: Cost{Requests: 1}})
		assert.Equal(t, tt.allowed, d.Allowed, "step %d", i)
		assert.Equal(t, tt.remain, d.Requests.Remaining, "step %d", i)
		assert.Equal(t, tt.retry, d.RetryAfter, "step %d", i)
		if !tt.allowed {
			assert.Equal(t, "requests", d.Reason)
		}
	}
}

func TestMemoryLimiterTokensDoNotSpendRequests(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := NewMemoryLimiter(Limits{RequestsPerMinute: 60, Burst: 2, TokensPerMinute: 100})
	req := LimitRequest{Identity: Identity{Tenant: "a"}, Cost: Cost{Requests: 1, Tokens: 80}}
	assert.True(t, m.AllowAt(t0, req).Allowed)
	d := m.AllowAt(t0, req)
	assert.False(t, d.Allowed)
	assert.Equal(t, "tokens", d.Reason)
	assert.Equal(t, int64(1), d.Requests.Remaining, "a token refusal must not spend a request")
	// Settling gives back what was not used.
	m.SettleAt(t0, req, 10)
	assert.True(t, m.AllowAt(t0, req).Allowed)
	// Using more than reserved puts the tenant in debt.
	m.SettleAt(t0, req, 180)
	d = m.AllowAt(t0.Add(30*time.Second), LimitRequest{Identity: Identity{Tenant: "a"}, Cost: Cost{Requests: 1, Tokens: 1}})
	assert.False(t, d.Allowed, "debt of 110 tokens takes more than 30s to repay")
}

// TestMemoryLimiterSettle: the exported Settle, the TokenSettler method a
// host or a wrapping limiter calls (the relay itself calls SettleAt), gives
// back what a request did not use and charges overuse into debt; req.Now is
// the time of settlement.
// Mutation it kills: Settle made a no-op (not calling SettleAt).
func TestMemoryLimiterSettle(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := NewMemoryLimiter(Limits{TokensPerMinute: 1000})
	var settler TokenSettler = m
	id := Identity{Tenant: "a"}
	req := LimitRequest{Identity: id, Cost: Cost{Requests: 1, Tokens: 600}, Now: t0}
	remaining := func() int64 {
		return m.AllowAt(t0, LimitRequest{Identity: id, Cost: Cost{Requests: 1}}).Tokens.Remaining
	}
	require.True(t, m.AllowAt(t0, req).Allowed)
	require.Equal(t, int64(400), remaining())

	require.NoError(t, settler.Settle(context.Background(), req, 100))
	assert.Equal(t, int64(900), remaining(), "500 unused tokens given back")

	require.True(t, m.AllowAt(t0, req).Allowed)
	require.NoError(t, settler.Settle(context.Background(), req, 1300))
	d := m.AllowAt(t0, LimitRequest{Identity: id, Cost: Cost{Requests: 1, Tokens: 1}})
	assert.False(t, d.Allowed, "700 tokens of overuse: 400 in debt")
	assert.Equal(t, "tokens", d.Reason)
	assert.Equal(t, 25*time.Second, d.RetryAfter, "401 tokens at 1000 a minute")
}

// TestMemoryLimiterManyKeys sends 100,000 distinct tenants through the
// limiter: no goroutine per key, and idle buckets are evicted so memory
// stays bounded, while an active tenant keeps its state.
func TestMemoryLimiterManyKeys(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := NewMemoryLimiter(Limits{RequestsPerMinute: 60, Burst: 2})
	goroutines := runtime.NumGoroutine()
	active := LimitRequest{Identity: Identity{Tenant: "active"}, Cost: Cost{Requests: 1}}
	require.True(t, m.AllowAt(t0, active).Allowed)
	require.True(t, m.AllowAt(t0, active).Allowed)
	for i := range 100_000 {
		d := m.AllowAt(t0, LimitRequest{Identity: Identity{Tenant: fmt.Sprint("t", i)}, Cost: Cost{Requests: 1}})
		require.True(t, d.Allowed)
	}
	assert.Equal(t, 100_001, m.Len())
	assert.LessOrEqual(t, runtime.NumGoroutine(), goroutines, "no goroutine per key")

	// A minute later every idle bucket is full again and is evicted on the
	// next call; the active tenant, drained again just before, is kept.
	later := t0.Add(time.Minute + time.Second)
	require.True(t, m.AllowAt(later.Add(-time.Second), active).Allowed)
	require.True(t, m.AllowAt(later.Add(-time.Second), active).Allowed)
	m.AllowAt(later, LimitRequest{Identity: Identity{Tenant: "probe"}, Cost: Cost{Requests: 1}})
	assert.LessOrEqual(t, m.Len(), 2, "idle buckets evicted")
	d := m.AllowAt(later, active)
	assert.True(t, d.Allowed)
	assert.Equal(t, int64(0), d.Requests.Remaining, "the active tenant's bucket was not reset")
}

func TestLimiterFuncAndNoLimit(t *testing.T) {
	var seen LimitRequest
	l := LimiterFunc(func(_ context.Context, r LimitRequest) (Decision, error) {
		seen = r
		return Decision{Allowed: true}, nil
	})
	_, err := l.Allow(context.Background(), LimitRequest{Route: "r"})
	require.NoError(t, err)
	assert.Equal(t, "r", seen.Route)
	d, err := noLimit{}.Allow(context.Background(), LimitRequest{})
	assert.NoError(t, err)
	assert.True(t, d.Allowed)
}

func TestMemoryLimiterClockGoingBack(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := NewMemoryLimiter(Limits{RequestsPerMinute: 6, Burst: 1}) // one per 10s
	req := LimitRequest{Identity: Identity{Tenant: "a"}, Cost: Cost{Requests: 1}}
	admitted := 0
	for i := range 10 {
		at := t0.Add(10 * time.Second)
		if i%2 == 1 {
			at = t0 // a reading from a request that started earlier
		}
		if m.AllowAt(at, req).Allowed {
			admitted++
		}
	}
	assert.LessOrEqual(t, admitted, 2, "out-of-order readings must not mint requests")
}

func TestMemoryLimiterLimitsChangeKeepsState(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := NewMemoryLimiter(Limits{})
	a := LimitRequest{Identity: Identity{Tenant: "t", Limits: &Limits{RequestsPerMinute: 6, Burst: 1}}, Cost: Cost{Requests: 1}}
	b := LimitRequest{Identity: Identity{Tenant: "t", Limits: &Limits{RequestsPerMinute: 6, Burst: 2}}, Cost: Cost{Requests: 1}}
	admitted := 0
	for i := range 20 {
		req := a
		if i%2 == 1 {
			req = b
		}
		if m.AllowAt(t0, req).Allowed {
			admitted++
		}
	}
	assert.LessOrEqual(t, admitted, 2, "alternating keys of one tenant must not reset its bucket")
}

// TestMemoryLimiterAlternatingKeysRefill: a tenant whose keys carry
// different limits, used in turn at a rate under the limit, is not locked
// out by the switches.
func TestMemoryLimiterAlternatingKeysRefill(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := NewMemoryLimiter(Limits{})
	a := LimitRequest{Identity: Identity{Tenant: "t", Limits: &Limits{RequestsPerMinute: 60, Burst: 5}}, Cost: Cost{Requests: 1}}
	b := LimitRequest{Identity: Identity{Tenant: "t", Limits: &Limits{RequestsPerMinute: 60, Burst: 6}}, Cost: Cost{Requests: 1}}
	admitted := 0
	for i := range 150 {
		req := a
		if i%2 == 1 {
			req = b
		}
		if m.AllowAt(t0.Add(time.Duration(i)*900*time.Millisecond), req).Allowed {
			admitted++
		}
	}
	assert.Greater(t, admitted, 130, "one request every 0.9s is under 60 a minute")
}
