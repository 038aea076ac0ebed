package relayredis

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/streamrelay/relay"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// limiterVectors are the root module's testdata/limiter_vectors.json,
// which relay.MemoryLimiter's tests run too: see the file's "about".
type limiterVectors struct {
	About []string `json:"about"`
	Cases []struct {
		Name   string       `json:"name"`
		Limits relay.Limits `json:"limits"`
		Steps  []struct {
			AtMS     int64         `json:"at_ms"`
			Limits   *relay.Limits `json:"limits"`
			Requests int64         `json:"requests"`
			Tokens   int64         `json:"tokens"`
			Settle   bool          `json:"settle"`
			Used     int64         `json:"used"`
			Want     *struct {
				Allowed      bool   `json:"allowed"`
				Reason       string `json:"reason"`
				RetryAfterS  int64  `json:"retry_after_s"`
				ReqRemaining int64  `json:"req_remaining"`
				ReqResetMS   int64  `json:"req_reset_ms"`
				TokRemaining int64  `json:"tok_remaining"`
				TokResetMS   int64  `json:"tok_reset_ms"`
			} `json:"want"`
		} `json:"steps"`
	} `json:"cases"`
}

// TestLimiterVectors runs the shared vectors through the real script on a
// real Redis, with the script's clock set to each step's time (testNow),
// so that the decisions must equal relay.MemoryLimiter's exactly.
func TestLimiterVectors(t *testing.T) {
	raw, err := os.ReadFile("../testdata/limiter_vectors.json")
	require.NoError(t, err)
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields() // a misspelt field must not pass as zero
	var v limiterVectors
	require.NoError(t, dec.Decode(&v))
	require.NotEmpty(t, v.Cases)

	client := newClient(t, sharedRedisAddr(t), true)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range v.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			lim := newTestLimiter(t, client) // a prefix of its own: a fresh tenant
			var now time.Time
			lim.testNow = func() time.Time { return now }
			ctx := context.Background()
			for i, s := range tc.Steps {
				limits := tc.Limits
				if s.Limits != nil {
					limits = *s.Limits
				}
				now = t0.Add(time.Duration(s.AtMS) * time.Millisecond)
				req := relay.LimitRequest{
					Identity: relay.Identity{Tenant: "t", Limits: &limits},
					Cost:     relay.Cost{Requests: s.Requests, Tokens: s.Tokens},
					Now:      now,
				}
				if s.Settle {
					require.Nil(t, s.Want, "step %d: a settlement has no decision", i)
					require.NoError(t, lim.Settle(ctx, req, s.Used), "step %d", i)
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
				got, err := lim.Allow(ctx, req)
				require.NoError(t, err, "step %d", i)
				got.Requests.Reset = got.Requests.Reset.Round(time.Millisecond)
				got.Tokens.Reset = got.Tokens.Reset.Round(time.Millisecond)
				assert.Equal(t, want, got, "step %d at %dms", i, s.AtMS)
			}
		})
	}
}
