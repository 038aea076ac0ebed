package relay

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
)

// The upstream's rate-limit headers describe the operator's account: when
// the relay limits the caller, its own quota headers are the ones the
// client gets, and the upstream's never reach it; without a relay limit
// they pass (TestHeaders).
func TestUpstreamQuotaHeadersGiveWayToTheRelays(t *testing.T) {
	upstream := func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("X-Ratelimit-Limit-Requests", "10000")
		h.Set("X-Ratelimit-Remaining-Requests", "9999")
		h.Set("X-Ratelimit-Limit-Tokens", "30000000")
		h.Set("Anthropic-Ratelimit-Requests-Limit", "4000")
		h.Set("Ratelimit-Policy", "10000;w=60")
		h.Set("Ratelimit", "limit=10000")
		h.Set("Retry-After", "3")
		h.Set("Anthropic-Organization-Id", "org")
		_, _ = io.WriteString(w, `{}`)
	}
	for _, tc := range []struct {
		name    string
		opts    []Option
		limited bool
	}{
		{"relay limits the caller", []Option{WithRateLimit(Limits{RequestsPerMinute: 60, Burst: 5})}, true},
		{"no relay limit", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, upstream, Route{Prefix: "/v1"}, tc.opts...)
			resp, _ := e.do(e.request("POST", "/v1/x", `{}`))
			assert.Equal(t, 200, resp.StatusCode)
			h := resp.Header
			assert.Equal(t, "3", h.Get("Retry-After"), "not a quota header: always passes")
			assert.Equal(t, "org", h.Get("Anthropic-Organization-Id"), "other provider metadata passes")
			if tc.limited {
				assert.Equal(t, "60", h.Get("X-Ratelimit-Limit-Requests"), "the relay's quota, not the account's")
				assert.Equal(t, "4", h.Get("X-Ratelimit-Remaining-Requests"))
				for _, k := range []string{"X-Ratelimit-Limit-Tokens", "Anthropic-Ratelimit-Requests-Limit", "Ratelimit-Policy", "Ratelimit"} {
					assert.Empty(t, h.Values(k), k)
				}
				return
			}
			assert.Equal(t, "10000", h.Get("X-Ratelimit-Limit-Requests"))
			assert.Equal(t, "9999", h.Get("X-Ratelimit-Remaining-Requests"))
			assert.Equal(t, "4000", h.Get("Anthropic-Ratelimit-Requests-Limit"))
			assert.Equal(t, "limit=10000", h.Get("Ratelimit"))
		})
	}
}
