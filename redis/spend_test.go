package relayredis

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// microsPerToken prices every token at 8 micro-units ($8 per million).
const microsPerToken = 8

// pricedLimiter stands in for the relay's price table until it is wired:
// it prices each request's spend from its tokens, at admission
// (Cost.Spend) and at settlement (used spend), and passes both to the
// Redis limiter.
type pricedLimiter struct{ *Limiter }

func (p pricedLimiter) Allow(ctx context.Context, req relay.LimitRequest) (relay.Decision, error) {
	req.Cost.Spend = req.Cost.Tokens * microsPerToken
	return p.Limiter.Allow(ctx, req)
}

func (p pricedLimiter) Settle(ctx context.Context, req relay.LimitRequest, used int64) error {
	req.Cost.Spend = req.Cost.Tokens * microsPerToken
	req.UsedSpend = used * microsPerToken
	return p.Limiter.Settle(ctx, req, used)
}

// TestReplicasShareSpendBudget: three relays share one tenant's $0.10 day
// budget in Redis. 50 concurrent requests, spread over them, each reserve
// 1001 tokens ($0.008008); the admitted ones are held at the upstream
// until every other one was refused (reason budget), so all 50 are in
// flight at once: exactly 12 fit, and the spend never exceeds the budget.
// Each then settles at half its reservation (501 tokens), through other
// replicas, so sequential requests are admitted again until the settled
// spend leaves less than one reservation: 11 more, and still within the
// budget.
func TestReplicasShareSpendBudget(t *testing.T) {
	const n, budget, reserve, used = 50, 100_000, 1001 * microsPerToken, 501 * microsPerToken
	addr := sharedRedisAddr(t)
	prefix := uniquePrefix(t)
	arrived := make(chan struct{}, n)
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"model":"m","usage":{"prompt_tokens":1,"completion_tokens":500}}`)
	}))
	t.Cleanup(up.Close)
	var once sync.Once
	releaseAll := func() { once.Do(func() { close(release) }) }
	defer releaseAll() // unblocks the upstream if the test fails early

	// The script's clock is pinned mid-day, so that the day cannot turn
	// during the test.
	noon := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	limits := &relay.Limits{SpendPerDay: budget}
	var reps [3]*replica
	for i := range reps {
		lim, err := NewLimiter(newClient(t, addr, true), WithPrefix(prefix), WithTimeout(10*time.Second))
		require.NoError(t, err)
		lim.testNow = func() time.Time { return noon }
		reps[i] = newReplica(t, up.URL, "acme", limits, relay.WithLimiter(pricedLimiter{lim}))
	}
	hc := newHTTPClient(t)
	const body = `{"model":"m","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}` // 1 + 1000 tokens

	statuses := make(chan *http.Response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			resp, err := reps[i%3].postBody(hc, body)
			if assert.NoError(t, err) {
				statuses <- resp
			}
		})
	}
	admitted, refused := 0, 0
	deadline := time.After(testkit.Timeout)
	for admitted+refused < n {
		select {
		case <-arrived:
			admitted++
		case resp := <-statuses:
			require.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "a request ended before the held ones were released")
			assert.Equal(t, "0.1", resp.Header.Get("X-Ratelimit-Limit-Spend"))
			refused++
		case <-deadline:
			t.Fatalf("only %d requests admitted and %d refused", admitted, refused)
		}
	}
	assert.Equal(t, budget/reserve, admitted, "$0.10 holds twelve reservations of $0.008008")
	assert.LessOrEqual(t, admitted*reserve, budget)
	releaseAll() // from now on the upstream answers at once
	testkit.WaitWithin(t, wg.Wait, 30*time.Second, "the requests did not finish")
	close(statuses)
	ok := 0
	for resp := range statuses {
		if resp.StatusCode == http.StatusOK {
			ok++
		}
	}
	assert.Equal(t, admitted, ok)
	for _, r := range reps {
		require.NoError(t, r.relay.Flush(testkit.Context(t)), "settlements")
	}

	// Settled at $0.004008 each: 48096 spent. Sequential requests, each
	// settled before the next, fit while the spend is at most 91992.
	more := 0
	for i := range 20 {
		resp, err := reps[i%3].postBody(hc, body)
		require.NoError(t, err)
		require.NoError(t, reps[i%3].relay.Flush(testkit.Context(t)))
		if resp.StatusCode != http.StatusOK {
			assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
			break
		}
		more++
	}
	assert.Equal(t, 11, more)
	assert.LessOrEqual(t, (admitted+more)*used, budget, "spent more than the budget")
	for i, r := range reps {
		assert.Zero(t, r.limiterErrors(t), "replica %d failed open", i)
	}
}
