package relay

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// withoutRoutes undoes WithRoutes, for tests built on newEnv (which always
// gives its route) that install a resolver instead.
func withoutRoutes() Option {
	return func(c *config) error { c.routes, c.given = nil, c.given&^givenRoutes; return nil }
}

// TestConflictingOptionsFailNew: options that would silently override
// each other make New fail, in either order and whatever their arguments;
// each option alone, or repeated, is accepted.
func TestConflictingOptionsFailNew(t *testing.T) {
	route := WithRoutes(Route{Name: "r", Prefix: "/", Upstream: "http://127.0.0.1:1"})
	resolver := WithResolver(UpstreamResolverFunc(func(*http.Request) (*Target, error) { return nil, ErrNoRoute }))
	keys := WithAPIKeys(APIKey{Key: "k"})
	auth := WithAuthenticator(AllowAll("t"))
	rate := WithRateLimit(Limits{RequestsPerMinute: 60})
	lim := WithLimiter(LimiterFunc(func(context.Context, LimitRequest) (Decision, error) { return Decision{Allowed: true}, nil }))
	tests := []struct {
		name string
		opts []Option
		want string // "" means New succeeds
	}{
		{"routes and resolver", []Option{route, resolver, keys}, "WithRoutes and WithResolver"},
		{"resolver and routes", []Option{resolver, route, keys}, "WithRoutes and WithResolver"},
		{"nil resolver still conflicts", []Option{route, WithResolver(nil), keys}, "WithRoutes and WithResolver"},
		{"keys and authenticator", []Option{route, keys, auth}, "WithAPIKeys and WithAuthenticator"},
		{"authenticator and keys", []Option{route, auth, keys}, "WithAPIKeys and WithAuthenticator"},
		{"rate limit and limiter", []Option{route, keys, rate, lim}, "WithRateLimit and WithLimiter"},
		{"limiter and rate limit", []Option{route, keys, lim, rate}, "WithRateLimit and WithLimiter"},
		{"nil limiter still conflicts", []Option{route, keys, WithLimiter(nil), rate}, "WithRateLimit and WithLimiter"},
		{"routes and keys", []Option{route, keys}, ""},
		{"resolver and authenticator", []Option{resolver, auth}, ""},
		{"routes twice", []Option{route, WithRoutes(Route{Name: "s", Prefix: "/s", Upstream: "http://127.0.0.1:1"}), auth}, ""},
		{"rate limit twice", []Option{route, keys, rate, rate}, ""},
		{"limiter twice", []Option{route, keys, lim, lim}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rl, err := New(tt.opts...)
			if tt.want == "" {
				require.NoError(t, err)
				assert.NotNil(t, rl)
				return
			}
			require.ErrorIs(t, err, ErrConflictingOptions)
			assert.ErrorContains(t, err, tt.want+" both given")
			assert.Nil(t, rl)
		})
	}
}
