package relay

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// prices2And8 is a price table of $2 per million input tokens and $8
// per million output tokens for every model: 2 and 8 micro-units a token.
func prices2And8(t *testing.T) *PriceTable {
	t.Helper()
	pt, err := NewPriceTable("test-1", "USD", []PriceEntry{{Models: []string{"*"},
		Price: ModelPrice{Input: 2 * MoneyUnit, Output: 8 * MoneyUnit}}})
	require.NoError(t, err)
	return pt
}

// usePrices2And8 prices rl's requests at prices2And8, as WithPrices does.
func usePrices2And8(t *testing.T, rl *Relay) {
	rl.prices = prices2And8(t)
	rl.pricing = newPricing(rl.prices)
}

// budgetBody asks for max_tokens 1000 with a prompt of 400 bytes, which
// the relay estimates at 100 tokens: a reservation of 100 input and 1000
// output tokens, $0.0082 at $2/$8 per million.
func budgetBody() string {
	return `{"model":"m","max_tokens":1000,"messages":[{"role":"user","content":"` + strings.Repeat("x", 400) + `"}]}`
}

// usageJSON answers a chat completion that used in and out tokens.
func usageJSON(in, out int) string {
	return fmt.Sprintf(`{"model":"m","usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, in, out)
}

// fixedClock is a clock the test moves.
type fixedClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fixedClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fixedClock) set(t time.Time) { c.mu.Lock(); defer c.mu.Unlock(); c.now = t }

// TestSpendBudgetReservesAtAdmission is the proof: with a $0.01
// budget, a request with max_tokens 1000 at $2/$8 per million reserves
// $0.0082 at admission, so a second request while the first is in flight
// is refused with reason budget (429, Retry-After, spend headers); once
// the first settles at its real cost ($0.0018), a request is admitted
// again.
// Mutations it kills: spend not reserved at admission (the second is
// admitted), not settled (the third is refused), refused for another
// reason or with the token answer.
func TestSpendBudgetReservesAtAdmission(t *testing.T) {
	clock := &fixedClock{now: time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)}
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	var calls atomic.Int32
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if calls.Add(1) == 1 {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, usageJSON(100, 200)) // 200 + 1600 = $0.0018
	}, Route{Prefix: "/v1"}, WithRateLimit(Limits{SpendPerDay: 10_000}), WithClock(clock))
	usePrices2And8(t, e.relay)

	type result struct {
		resp *http.Response
		err  error
	}
	first := make(chan result, 1)
	go func() {
		resp, err := e.front.Client().Do(e.request("POST", "/v1/chat/completions", budgetBody()))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
		first <- result{resp, err}
	}()
	testkit.Recv(t, arrived, "the first request did not reach the upstream")

	resp, body := e.do(e.request("POST", "/v1/chat/completions", budgetBody()))
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "the first request's $0.0082 leaves $0.0018")
	assert.Contains(t, string(body), "spend budget")
	assert.Equal(t, "0.01", resp.Header.Get("X-Ratelimit-Limit-Spend"))
	assert.Equal(t, "0.0018", resp.Header.Get("X-Ratelimit-Remaining-Spend"), "$0.0082 reserved")
	assert.Equal(t, "12h0m0s", resp.Header.Get("X-Ratelimit-Reset-Spend"), "the day's end, UTC")
	assert.Equal(t, "43200", resp.Header.Get("Retry-After"))
	assert.Equal(t, 1.0, testutil.ToFloat64(e.relay.metrics.limited.WithLabelValues("test", "budget")))
	assert.Equal(t, int32(1), calls.Load(), "the refused request never reached the upstream")

	close(release)
	r1 := testkit.Recv(t, first, "the first request did not finish")
	require.NoError(t, r1.err)
	assert.Equal(t, http.StatusOK, r1.resp.StatusCode)
	assert.Equal(t, "0.0018", r1.resp.Header.Get("X-Ratelimit-Remaining-Spend"))
	e.handled() // the first one's handler returned: its settlement is done

	resp, _ = e.do(e.request("POST", "/v1/chat/completions", budgetBody()))
	assert.Equal(t, http.StatusOK, resp.StatusCode, "settled at $0.0018: $0.0082 is free again")
	assert.Equal(t, "0", resp.Header.Get("X-Ratelimit-Remaining-Spend"))
}

// TestSpendBudgetHoldsUnderConcurrency: 50 concurrent requests, each
// reserving $0.0082 and using all of it, against a $0.10 budget: all of
// them are in the relay at once (the admitted ones are held at the
// upstream until every other one was refused), and exactly 12 are
// admitted, so the spend never exceeds the budget.
// Mutation it kills: a budget checked against settled spend only (after
// the fact), which admits all 50.
func TestSpendBudgetHoldsUnderConcurrency(t *testing.T) {
	const n, budget, each = 50, 100_000, 8_200
	clock := &fixedClock{now: time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)}
	arrived, release := make(chan struct{}, n), make(chan struct{})
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, usageJSON(100, 1000)) // $0.0082: all of its reservation
	}, Route{Prefix: "/v1"}, WithRateLimit(Limits{SpendPerDay: budget}), WithClock(clock))
	usePrices2And8(t, e.relay)

	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.front.Client().Do(e.request("POST", "/v1/chat/completions", budgetBody()))
			if err != nil {
				statuses <- 0
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	// Every request is either held at the upstream or refused before
	// any is let through.
	got := map[int]int{}
	deadline := time.After(testkit.Timeout)
	for in := 0; in+got[http.StatusTooManyRequests] < n; {
		select {
		case <-arrived:
			in++
		case s := <-statuses:
			got[s]++
			require.Equal(t, http.StatusTooManyRequests, s, "a request ended before the held ones were released")
		case <-deadline:
			t.Fatalf("only %d requests admitted and %d refused", in, got[http.StatusTooManyRequests])
		}
	}
	close(release)
	wg.Wait()
	close(statuses)
	for s := range statuses {
		got[s]++
	}
	assert.Equal(t, map[int]int{200: budget / each, 429: n - budget/each}, got)
	var spent int64
	for _, rec := range e.records() {
		if rec.Status == http.StatusOK {
			require.True(t, rec.Cost.Known)
			assert.Equal(t, 2*rec.Usage.InputTokens+8*rec.Usage.OutputTokens, int64(rec.Cost.Amount), "priced at $2/$8 per million")
			spent += int64(rec.Cost.Amount)
		}
	}
	assert.LessOrEqual(t, spent, int64(budget), "spent more than the budget")
	assert.Equal(t, float64(n-budget/each), testutil.ToFloat64(e.relay.metrics.limited.WithLabelValues("test", "budget")))
}

// TestSpendBudgetDayBoundary: a day budget spent in the last second of a
// UTC day refuses until midnight (Retry-After 1) and admits from
// midnight on, with the injected clock.
func TestSpendBudgetDayBoundary(t *testing.T) {
	clock := &fixedClock{now: time.Date(2026, 3, 10, 23, 59, 59, 0, time.UTC)}
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, usageJSON(100, 1000))
	}, Route{Prefix: "/v1"}, WithRateLimit(Limits{SpendPerDay: 10_000}), WithClock(clock))
	usePrices2And8(t, e.relay)

	resp, _ := e.do(e.request("POST", "/v1/chat/completions", budgetBody()))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	resp, _ = e.do(e.request("POST", "/v1/chat/completions", budgetBody()))
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "$0.0082 of $0.01 spent today")
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))

	clock.set(time.Date(2026, 3, 10, 23, 59, 59, 999_000_000, time.UTC))
	resp, _ = e.do(e.request("POST", "/v1/chat/completions", budgetBody()))
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "still the same day")

	clock.set(time.Date(2026, 3, 11, 0, 0, 0, 0, time.UTC))
	resp, _ = e.do(e.request("POST", "/v1/chat/completions", budgetBody()))
	assert.Equal(t, http.StatusOK, resp.StatusCode, "a new UTC day, a new budget")
	assert.Equal(t, "0.0018", resp.Header.Get("X-Ratelimit-Remaining-Spend"))
}

// TestSpendSettlementRules: the spend reservation settles by the token
// reservation's rules (exchange.used): a request that failed before any
// byte reached the client (connection refused: 502) or got an upstream
// error without usage gets its whole spend back; a success whose usage
// went unreported keeps its reservation.
func TestSpendSettlementRules(t *testing.T) {
	refused := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		return "http://" + l.Addr().String()
	}()
	tests := []struct {
		name     string
		upstream http.HandlerFunc
		route    Route
		status   int
		kept     bool // the reservation is kept: the next request is refused
	}{
		{"connection refused", func(http.ResponseWriter, *http.Request) {}, Route{Prefix: "/v1", Upstream: refused}, 502, false},
		{"upstream 500 without usage", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(500)
		}, Route{Prefix: "/v1"}, 500, false},
		{"success without usage", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"model":"m"}`)
		}, Route{Prefix: "/v1"}, 200, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fixedClock{now: time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)}
			e := newEnv(t, tc.upstream, tc.route, WithRateLimit(Limits{SpendPerDay: 10_000}), WithClock(clock))
			usePrices2And8(t, e.relay)
			resp, _ := e.do(e.request("POST", "/v1/chat/completions", budgetBody()))
			require.Equal(t, tc.status, resp.StatusCode)
			assert.Equal(t, "0.0018", resp.Header.Get("X-Ratelimit-Remaining-Spend"), "$0.0082 reserved")
			resp, _ = e.do(e.request("POST", "/v1/chat/completions", budgetBody()))
			if tc.kept {
				assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode, "the reservation was kept as the estimate")
			} else {
				assert.Equal(t, tc.status, resp.StatusCode, "the reservation came back")
			}
		})
	}
}

// spendSettler records what a remote-style limiter is asked to settle.
type spendSettler struct {
	noLimit
	mu      sync.Mutex
	settled []LimitRequest
	used    []int64
}

func (s *spendSettler) Settle(_ context.Context, req LimitRequest, used int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settled, s.used = append(s.settled, req), append(s.used, used)
	return nil
}

// TestSettleCarriesSpend: a limiter other than MemoryLimiter is asked to
// settle tokens and spend in one Settle call: the reservation in
// req.Cost, the cost in req.UsedSpend.
func TestSettleCarriesSpend(t *testing.T) {
	s := &spendSettler{}
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, usageJSON(100, 200))
	}, Route{Prefix: "/v1"}, WithLimiter(s))
	usePrices2And8(t, e.relay)
	resp, _ := e.do(e.request("POST", "/v1/chat/completions", budgetBody()))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.NoError(t, e.relay.Flush(testkit.Context(t)))
	s.mu.Lock()
	defer s.mu.Unlock()
	require.Len(t, s.settled, 1)
	assert.Equal(t, []int64{300}, s.used)
	assert.Equal(t, Cost{Requests: 1, Tokens: 1100, Spend: 8200}, s.settled[0].Cost)
	assert.Equal(t, int64(1800), s.settled[0].UsedSpend)
}

// The nine quota headers, spend included, still cost two allocations;
// spend amounts are exact decimals of currency units.
func TestQuotaHeadersSpendCost(t *testing.T) {
	d := Decision{Requests: Quota{Limit: 600, Remaining: 599, Reset: 100 * time.Millisecond},
		Tokens: Quota{Limit: 150000, Remaining: 149000, Reset: 6 * time.Minute},
		Spend:  Quota{Limit: 10_000_000, Remaining: 9_991_800, Reset: 3 * time.Hour}}
	h := http.Header{}
	setQuotaHeaders(h, d)
	want := map[string]string{"X-Ratelimit-Limit-Requests": "600", "X-Ratelimit-Remaining-Requests": "599",
		"X-Ratelimit-Reset-Requests": "100ms", "X-Ratelimit-Limit-Tokens": "150000",
		"X-Ratelimit-Remaining-Tokens": "149000", "X-Ratelimit-Reset-Tokens": "6m0s",
		"X-Ratelimit-Limit-Spend": "10", "X-Ratelimit-Remaining-Spend": "9.9918", "X-Ratelimit-Reset-Spend": "3h0m0s"}
	assert.Len(t, h, len(want))
	for k, v := range want {
		assert.Equal(t, []string{v}, h[k], k)
	}
	spendOnly := http.Header{}
	setQuotaHeaders(spendOnly, Decision{Spend: d.Spend})
	assert.Len(t, spendOnly, 3)
	if raceEnabled {
		return
	}
	if n := testing.AllocsPerRun(100, func() { setQuotaHeaders(h, d) }); n > 2 {
		t.Errorf("setQuotaHeaders: %v allocations, want at most 2", n)
	}
}

func TestAppendMicros(t *testing.T) {
	for v, want := range map[int64]string{0: "0", 1: "0.000001", 8200: "0.0082", 10_000: "0.01",
		1_000_000: "1", 12_500_000: "12.5", 9_007_199_254_740_992: "9007199254.740992", -1500: "-0.0015"} {
		assert.Equal(t, want, string(appendMicros(nil, v)), "%d", v)
	}
}

// BenchmarkMemoryLimiterAllow is the admission cost of MemoryLimiter with
// token budgets only, and with spend budgets (minute, day and month) on
// top: the spend windows must add at most 1µs. Limits are high enough
// that every admission is admitted; 1,000 tenants, the clock moving 1µs a
// call.
//
//	go test -run '^$' -bench BenchmarkMemoryLimiterAllow -benchmem -count 6 .
func BenchmarkMemoryLimiterAllow(b *testing.B) {
	tokens := Limits{RequestsPerMinute: 1e9, Burst: 1e9, TokensPerMinute: 1e12}
	spend := tokens
	spend.SpendPerMinute, spend.SpendPerDay, spend.SpendPerMonth = 1<<50, 1<<50, 1<<50
	for _, bc := range []struct {
		name   string
		lim    Limits
		cost   Cost
		priced bool // the reservation is priced as admission prices it
	}{
		{"tokens", tokens, Cost{Requests: 1, Tokens: 1100}, false},
		{"tokens+spend", spend, Cost{Requests: 1, Tokens: 1100, Spend: 8200}, false},
		{"tokens+prices+spend", spend, Cost{Requests: 1, Tokens: 1100}, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			pt := benchPriceTable(b)
			m := NewMemoryLimiter(bc.lim)
			var tenants [1000]string
			for i := range tenants {
				tenants[i] = fmt.Sprintf("tenant-%d", i)
			}
			now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				req := LimitRequest{Identity: Identity{Tenant: tenants[i%len(tenants)]}, Cost: bc.cost}
				if bc.priced {
					m, _ := pt.Estimate(ProviderOpenAI, "gpt-4o-mini-2024-07-18", 100, 1000)
					req.Cost.Spend = int64(m)
				}
				now = now.Add(time.Microsecond)
				if !m.AllowAt(now, req).Allowed {
					b.Fatal("refused")
				}
				i++
			}
		})
	}
}

// TestWithPricesPricesSpend: WithPrices alone wires the spend budgets to
// the price table: the reservation is priced by its estimate, and the
// settlement at the record's Cost.
func TestWithPricesPricesSpend(t *testing.T) {
	clock := &fixedClock{now: time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)}
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, usageJSON(50, 200)) // $0.0001 + $0.0016
	}, Route{Prefix: "/v1"}, WithPrices(prices2And8(t)), WithClock(clock),
		WithRateLimit(Limits{SpendPerDay: 10_000}))
	resp, _ := e.do(e.request("POST", "/v1/chat/completions", budgetBody()))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "0.0018", resp.Header.Get("X-Ratelimit-Remaining-Spend"), "$0.0082 reserved from the table's estimate")
	require.NoError(t, e.relay.Flush(context.Background()))
	rec := e.lastRecord()
	assert.Equal(t, Charge{Known: true, Amount: 1700, Currency: "USD", PriceVersion: "test-1"}, rec.Cost)

	resp, _ = e.do(e.request("POST", "/v1/chat/completions", budgetBody()))
	require.Equal(t, http.StatusOK, resp.StatusCode, "settled at $0.0017: $0.0083 left admits $0.0082")
	assert.Equal(t, "0.0001", resp.Header.Get("X-Ratelimit-Remaining-Spend"))
}

// TestUnpricedModelUnderBudget: a tenant with a spend budget cannot use a
// model the price table does not know (it would reserve and settle
// nothing, so model names chosen to dodge the table would spend without
// bound); a tenant without a budget can, and its cost is unknown.
func TestUnpricedModelUnderBudget(t *testing.T) {
	pt, err := NewPriceTable("t", "USD", []PriceEntry{{Models: []string{"priced"},
		Price: ModelPrice{Input: 2 * MoneyUnit, Output: 8 * MoneyUnit}}})
	require.NoError(t, err)
	var calls atomic.Int32
	upstream := func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, usageJSON(100, 200000))
	}
	body := func(model string) string {
		return `{"model":"` + model + `","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
	}
	t.Run("budget", func(t *testing.T) {
		calls.Store(0)
		e := newEnv(t, upstream, Route{Prefix: "/v1"}, WithPrices(pt), WithRateLimit(Limits{SpendPerDay: 10_000}))
		resp, b := e.do(e.request("POST", "/v1/chat/completions", body("gpt-alias")))
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
		assert.Contains(t, string(b), "no price")
		assert.Zero(t, calls.Load(), "never sent upstream")
		assert.Equal(t, ErrTypeBadRequest, e.lastRecord().ErrorType)
		assert.Equal(t, "0.01", resp.Header.Get("X-Ratelimit-Remaining-Spend"), "nothing reserved or kept")

		resp, _ = e.do(e.request("GET", "/v1/models", ""))
		assert.Equal(t, http.StatusOK, resp.StatusCode, "a request naming no model has nothing to price")
		resp, _ = e.do(e.request("POST", "/v1/chat/completions", body("priced")))
		assert.Equal(t, http.StatusOK, resp.StatusCode)
	})
	t.Run("no budget", func(t *testing.T) {
		calls.Store(0)
		e := newEnv(t, upstream, Route{Prefix: "/v1"}, WithPrices(pt), WithRateLimit(Limits{RequestsPerMinute: 600}))
		resp, _ := e.do(e.request("POST", "/v1/chat/completions", body("gpt-alias")))
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		require.NoError(t, e.relay.Flush(context.Background()))
		assert.False(t, e.lastRecord().Cost.Known)
	})
}

// benchPriceTable is a price table of realistic size: forty models, exact
// names and prefixes, so that a lookup pays for a snapshot's date suffix
// and a prefix search.
func benchPriceTable(b *testing.B) *PriceTable {
	b.Helper()
	var entries []PriceEntry
	for i := range 20 {
		entries = append(entries,
			PriceEntry{Provider: ProviderOpenAI, Models: []string{fmt.Sprintf("model-%d", i)}, Price: ModelPrice{Input: 1, Output: 2}},
			PriceEntry{Provider: ProviderAnthropic, Models: []string{fmt.Sprintf("claude-%d*", i)}, Price: ModelPrice{Input: 1, Output: 2}})
	}
	entries = append(entries, PriceEntry{Provider: ProviderOpenAI, Models: []string{"gpt-4o-mini"},
		Price: ModelPrice{Input: 150_000, Output: 600_000}})
	pt, err := NewPriceTable("bench", "USD", entries)
	if err != nil {
		b.Fatal(err)
	}
	return pt
}
