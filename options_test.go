package relay

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// withoutRoutes undoes WithRoutes, for tests built on newEnv (which always
// gives its route) that install a resolver instead.
func withoutRoutes() Option {
	return func(c *config) error { c.routes, c.given = nil, c.given&^givenRoutes; return nil }
}

// TestConflictingOptionsFailNew: options that would silently override
// each other make New fail, in either order; each option alone, or
// repeated, is accepted, and a nil argument counts as not given.
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
		{"nil resolver is not given", []Option{route, WithResolver(nil), keys}, ""},
		{"nil authenticator is not given", []Option{route, keys, WithAuthenticator(nil)}, ""},
		{"keys and authenticator", []Option{route, keys, auth}, "WithAPIKeys and WithAuthenticator"},
		{"authenticator and keys", []Option{route, auth, keys}, "WithAPIKeys and WithAuthenticator"},
		{"rate limit and limiter", []Option{route, keys, rate, lim}, "WithRateLimit and WithLimiter"},
		{"limiter and rate limit", []Option{route, keys, lim, rate}, "WithRateLimit and WithLimiter"},
		{"nil limiter is not given", []Option{route, keys, rate, WithLimiter(nil)}, ""},
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
	// A nil limiter leaves WithRateLimit's in place, in either order.
	for _, opts := range [][]Option{{route, keys, rate, WithLimiter(nil)}, {route, keys, WithLimiter(nil), rate}} {
		rl, err := New(opts...)
		require.NoError(t, err)
		assert.IsType(t, &MemoryLimiter{}, rl.limiter)
	}
}

// TestZeroValueRule: every option given zero, nil or a negative number
// does what the package documentation's "Zero values" rule says: nil is
// the default, zero switches off what the option controls (or is an error
// where that would unbound body memory), a negative time limit is no
// limit, and any other negative number is an error.
func TestZeroValueRule(t *testing.T) {
	def := defaultConfig()
	tests := []struct {
		name    string
		opt     Option
		wantErr bool
		got     func(c *config) any // the setting the option changed
		want    any
	}{
		// nil: the default; for the exclusive options, not given at all.
		{"nil resolver", WithResolver(nil), false, func(c *config) any { return c.resolver }, nil},
		{"nil authenticator", WithAuthenticator(nil), false, func(c *config) any { return c.auth }, nil},
		{"nil limiter", WithLimiter(nil), false, func(c *config) any { return c.limiter }, nil},
		{"nil recorder", WithRecorder(nil), false, func(c *config) any { return c.recorder }, nil},
		{"no recorder", WithRecorder(), false, func(c *config) any { return c.recorder }, nil},
		{"nil registerer", WithRegisterer(nil), false, func(c *config) any { return c.registerer }, nil},
		{"nil transport", WithTransport(nil), false, func(c *config) any { return c.transport }, nil},
		{"nil logger", WithLogger(nil), false, func(c *config) any { return c.logger == nil }, true},
		{"nil clock", WithClock(nil), false, func(c *config) any { return c.clock }, nil},
		{"auto error shape", WithErrorShape(0), false, func(c *config) any { return c.shape }, ShapeAuto},
		// Zero struct fields: the default (resolved where they are used).
		{"zero timeouts", WithTimeouts(Timeouts{}), false, func(c *config) any { return c.timeouts }, Timeouts{}},
		{"zero record queue", WithRecordQueue(AsyncOptions{}), false, func(c *config) any { return c.asyncOpt.QueueSize }, 0},
		{"zero rate limits", WithRateLimit(Limits{}), false, func(c *config) any { return c.limiter != nil }, true},
		// Zero arguments: off.
		{"zero write timeout", WithClientWriteTimeout(0), false, func(c *config) any { return c.writeTimeout }, time.Duration(0)},
		{"zero body timeout", WithRequestBodyTimeout(0), false, func(c *config) any { return c.body.timeout }, time.Duration(0)},
		{"zero body rate", WithRequestBodyRate(0, 0), false, func(c *config) any { return [2]int64{c.body.minRate, int64(c.body.grace)} }, [2]int64{0, 0}},
		{"zero observation budget", WithObservationBudget(0), false, func(c *config) any { return c.observeBudget }, int64(0)},
		{"zero default max tokens", WithDefaultMaxTokens(0), false, func(c *config) any { return c.usage.defaultMaxTokens }, int64(0)},
		{"zero refusal memo", WithRefusalMemo(0), false, func(c *config) any { return c.refusalMemo }, time.Duration(0)},
		{"zero drain on client gone", WithDrainOnClientGone(0), false, func(c *config) any { return c.drain }, time.Duration(0)},
		// ... except where body memory would be unbounded.
		{"zero max body", WithMaxBodyBytes(0), true, nil, nil},
		{"zero body budget", WithRequestBodyBudget(0), true, nil, nil},
		{"zero tenant body budget", WithRequestBodyTenantBudget(0), true, nil, nil},
		// Negative time limits: no limit.
		{"negative write timeout", WithClientWriteTimeout(-time.Second), false, func(c *config) any { return c.writeTimeout > 0 }, false},
		{"negative body timeout", WithRequestBodyTimeout(-time.Second), false, func(c *config) any { return c.body.timeout }, time.Duration(0)},
		{"negative timeouts", WithTimeouts(Timeouts{Idle: -1}), false, func(c *config) any { return c.timeouts.Idle }, time.Duration(-1)},
		// Any other negative number: an error.
		{"negative max body", WithMaxBodyBytes(-1), true, nil, nil},
		{"negative body budget", WithRequestBodyBudget(-1), true, nil, nil},
		{"negative tenant body budget", WithRequestBodyTenantBudget(-1), true, nil, nil},
		{"negative body rate", WithRequestBodyRate(-1, 0), true, nil, nil},
		{"negative grace", WithRequestBodyRate(0, -time.Second), true, nil, nil},
		{"negative observation budget", WithObservationBudget(-1), true, nil, nil},
		{"negative default max tokens", WithDefaultMaxTokens(-1), true, nil, nil},
		{"negative refusal memo", WithRefusalMemo(-time.Second), true, nil, nil},
		{"negative drain on client gone", WithDrainOnClientGone(-time.Second), true, nil, nil},
		{"negative rate limit", WithRateLimit(Limits{TokenBurst: -1}), true, nil, nil},
		// Empty lists: nothing added, or an error where nothing is unusable.
		{"no models", WithModels(), false, func(c *config) any { return len(c.metricsModels) }, 0},
		{"no methods", WithAllowedMethods(), true, nil, nil},
	}
	base := []Option{WithRoutes(Route{Name: "r", Prefix: "/", Upstream: "http://127.0.0.1:1"}), WithAPIKeys(APIKey{Key: "k"})}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := def
			err := tt.opt(&c)
			_, newErr := New(append(slices.Clone(base), tt.opt)...)
			if tt.wantErr {
				assert.Error(t, err)
				assert.Error(t, newErr, "New fails too")
				return
			}
			require.NoError(t, err)
			require.NoError(t, newErr)
			assert.Equal(t, tt.want, tt.got(&c))
		})
	}
}
