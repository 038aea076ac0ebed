package relay

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSpendRefundDoesNotCrossWindow: a reservation made in one window and
// refunded after the boundary must not credit the new window, which never
// held it. Otherwise every stream that straddles a boundary hands its
// unused reservation to the next window, and that window admits more than
// its budget: here 20 reservations of one unit in a minute whose budget
// is ten.
func TestSpendRefundDoesNotCrossWindow(t *testing.T) {
	const unit = int64(MoneyUnit)
	m := NewMemoryLimiter(Limits{SpendPerMinute: 10 * unit})
	req := func(at time.Time) LimitRequest {
		return LimitRequest{Identity: Identity{Tenant: "t"}, Cost: Cost{Requests: 1, Spend: unit}, Now: at}
	}
	before := time.Date(2026, 3, 10, 12, 0, 59, 0, time.UTC)
	after := before.Add(2 * time.Second) // 12:01:01, the next minute
	var old []LimitRequest
	for range 10 {
		r := req(before)
		if assert.True(t, m.AllowAt(before, r).Allowed) {
			old = append(old, r)
		}
	}
	admitted := 0
	for range 10 {
		if m.AllowAt(after, req(after)).Allowed {
			admitted++
		}
	}
	assert.Equal(t, 10, admitted, "a new minute, a new budget")
	// The requests of the minute before end now, having used nothing.
	for _, r := range old {
		r.Now, r.Reserved = after, before
		m.SettleAt(after, r, 0)
	}
	d := m.AllowAt(after, req(after))
	assert.False(t, d.Allowed, "the minute's ten units are reserved by its own requests: an 11th must wait")

	// A refund within the window of its reservation still comes back.
	r := req(after)
	r.Now, r.Reserved = after.Add(time.Second), after
	m.SettleAt(r.Now, r, 0)
	assert.True(t, m.AllowAt(r.Now, req(r.Now)).Allowed, "a refund in its own window frees its reservation")
}

// TestSettleTellsReservationTime: the relay settles with the time the
// reservation was made (the request's start), so a limiter can keep a
// refund out of a window begun since.
func TestSettleTellsReservationTime(t *testing.T) {
	before := time.Date(2026, 3, 10, 12, 0, 59, 0, time.UTC)
	after := before.Add(2 * time.Second)
	clock := &fixedClock{now: before}
	s := &spendSettler{}
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		clock.set(after) // the response ends in the next minute
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, usageJSON(100, 200))
	}, Route{Prefix: "/v1"}, WithLimiter(s), WithClock(clock))
	usePrices2And8(t, e.relay)
	resp, _ := e.do(e.request("POST", "/v1/chat/completions", budgetBody()))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, e.relay.Flush(testkit.Context(t)))
	s.mu.Lock()
	defer s.mu.Unlock()
	require.Len(t, s.settled, 1)
	assert.Equal(t, before, s.settled[0].Reserved)
	assert.Equal(t, after, s.settled[0].Now)
}
