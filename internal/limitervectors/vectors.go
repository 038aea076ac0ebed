// Package limitervectors runs the shared limiter test vectors (token
// buckets and spend windows)
// (testdata/limiter_vectors.json in the root module) against a limiter, so
// that relay.MemoryLimiter and the Redis limiter are held to the same
// decisions by one runner. It is for tests only.
package limitervectors

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/streamrelay/relay"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Limiter is a limiter driven at explicit times.
type Limiter interface {
	AllowAt(now time.Time, req relay.LimitRequest) (relay.Decision, error)
	SettleAt(now time.Time, req relay.LimitRequest, used int64) error
}

type vectors struct {
	About []string `json:"about"`
	Cases []struct {
		Name   string       `json:"name"`
		Limits relay.Limits `json:"limits"`
		Steps  []struct {
			AtMS      int64         `json:"at_ms"`
			Limits    *relay.Limits `json:"limits"`
			Requests  int64         `json:"requests"`
			Tokens    int64         `json:"tokens"`
			Spend     int64         `json:"spend"`
			Settle    bool          `json:"settle"`
			Used      int64         `json:"used"`
			UsedSpend int64         `json:"used_spend"`
			Want      *struct {
				Allowed        bool   `json:"allowed"`
				Reason         string `json:"reason"`
				RetryAfterS    int64  `json:"retry_after_s"`
				ReqRemaining   int64  `json:"req_remaining"`
				ReqResetMS     int64  `json:"req_reset_ms"`
				TokRemaining   int64  `json:"tok_remaining"`
				TokResetMS     int64  `json:"tok_reset_ms"`
				SpendLimit     int64  `json:"spend_limit"`
				SpendRemaining int64  `json:"spend_remaining"`
				SpendResetMS   int64  `json:"spend_reset_ms"`
			} `json:"want"`
		} `json:"steps"`
	} `json:"cases"`
}

// Run reads the vectors at path and runs each case as a subtest on a
// limiter from fresh (a new tenant each time), step by step at the steps'
// times, comparing every decision with the one the case wants.
func Run(t *testing.T, path string, fresh func(t *testing.T) Limiter) {
	t.Helper()
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields() // a misspelt field must not pass as zero
	var v vectors
	require.NoError(t, dec.Decode(&v))
	require.NotEmpty(t, v.Cases)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range v.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			lim := fresh(t)
			for i, s := range tc.Steps {
				limits := tc.Limits
				if s.Limits != nil {
					limits = *s.Limits
				}
				now := t0.Add(time.Duration(s.AtMS) * time.Millisecond)
				req := relay.LimitRequest{
					Identity: relay.Identity{Tenant: "t", Limits: &limits},
					Cost:     relay.Cost{Requests: s.Requests, Tokens: s.Tokens, Spend: s.Spend},
					Now:      now,
				}
				if s.Settle {
					require.Nil(t, s.Want, "step %d: a settlement has no decision", i)
					req.UsedSpend = s.UsedSpend
					require.NoError(t, lim.SettleAt(now, req, s.Used), "step %d", i)
					continue
				}
				require.NotNil(t, s.Want, "step %d: an admission needs want", i)
				w := s.Want
				want := relay.Decision{Allowed: w.Allowed, Reason: w.Reason, RetryAfter: time.Duration(w.RetryAfterS) * time.Second}
				if limits.RequestsPerMinute > 0 {
					want.Requests = relay.Quota{Limit: int64(limits.RequestsPerMinute), Remaining: w.ReqRemaining, Reset: time.Duration(w.ReqResetMS) * time.Millisecond}
				}
				if limits.TokensPerMinute > 0 {
					want.Tokens = relay.Quota{Limit: limits.TokensPerMinute, Remaining: w.TokRemaining, Reset: time.Duration(w.TokResetMS) * time.Millisecond}
				}
				if limits.SpendPerMinute > 0 || limits.SpendPerDay > 0 || limits.SpendPerMonth > 0 {
					want.Spend = relay.Quota{Limit: w.SpendLimit, Remaining: w.SpendRemaining, Reset: time.Duration(w.SpendResetMS) * time.Millisecond}
				}
				got, err := lim.AllowAt(now, req)
				require.NoError(t, err, "step %d", i)
				got.Requests.Reset = got.Requests.Reset.Round(time.Millisecond)
				got.Tokens.Reset = got.Tokens.Reset.Round(time.Millisecond)
				got.Spend.Reset = got.Spend.Reset.Round(time.Millisecond)
				assert.Equal(t, want, got, "step %d at %dms", i, s.AtMS)
			}
		})
	}
}
