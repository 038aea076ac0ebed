package relay

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Every route rule reports a *RouteError naming the route, the upstream
// and the field, with a reason that quotes no secret.
func TestRouteErrorNamesTheField(t *testing.T) {
	const secret = "SECRET-sk-7f3a"
	t.Setenv("RELAY_TEST_ROUTE_EMPTY", "")
	t.Setenv("RELAY_TEST_ROUTE_SPACE", secret+" ")
	ok := Route{Name: "ok", Prefix: "/ok", Upstream: "http://127.0.0.1:1"}
	route := func(f func(*Route)) Route {
		r := Route{Name: "r", Prefix: "/v1", Upstream: "http://127.0.0.1:1"}
		f(&r)
		return r
	}
	pool := func(u Upstream) func(*Route) {
		return func(r *Route) { r.Upstreams = []Upstream{{URL: "http://127.0.0.1:2"}, u} }
	}
	tests := []struct {
		name     string
		route    Route
		upstream int
		field    string
		key      string
		reason   string // Reason contains it
	}{
		{"no name", route(func(r *Route) { r.Name = "" }), -1, "Name", "", "a route needs a name"},
		{"name used twice", route(func(r *Route) { r.Name = "ok" }), -1, "Name", "", `route name "ok" is already used by routes[0]`},
		{"relative prefix", route(func(r *Route) { r.Prefix = "v1" }), -1, "Prefix", "", "starting with /"},
		{"dot segment in the prefix", route(func(r *Route) { r.Prefix = "/v1/../admin" }), -1, "Prefix", "", ". or .. segments"},
		{"prefix routed twice", route(func(r *Route) { r.Prefix = "/ok/" }), -1, "Prefix", "", `path "/ok" is already routed by routes[0]`},
		{"relative rewrite", route(func(r *Route) { r.RewritePrefix = "v2" }), -1, "RewritePrefix", "", "starting with /"},
		{"unknown kind", route(func(r *Route) { r.Kind = "video" }), -1, "Kind", "", `unknown kind "video"`},
		{"unknown provider", route(func(r *Route) { r.Provider = "bedrock" }), -1, "Provider", "", `unknown provider "bedrock" (want openai`},
		{"bad header name", route(func(r *Route) { r.Headers = map[string]string{"X Bad": "v"} }), -1, "Headers", "X Bad", "not a valid header name"},
		{"header value with a newline", route(func(r *Route) { r.Headers = map[string]string{"x-org": secret + "\n"} }), -1, "Headers", "x-org", "control character"},
		{"pass header that selects nothing", route(func(r *Route) { r.PassHeaders = []string{"OpenAI-Project", "X-Other"} }), -1, "PassHeaders", "1", `"X-Other" is not an account-selecting header`},
		{"negative max attempts", route(func(r *Route) { r.MaxAttempts = -1 }), -1, "MaxAttempts", "", "cannot be negative"},
		{"negative keep-alive", route(func(r *Route) { r.KeepAlive = -time.Second }), -1, "KeepAlive", "", "cannot be negative"},
		{"negative backoff", route(func(r *Route) { r.Backoff.Max = -1 }), -1, "Backoff", "", "cannot be negative"},
		{"no upstream", route(func(r *Route) { r.Upstream = "" }), -1, "Upstream", "", "needs an upstream"},
		{"relative URL", route(func(r *Route) { r.Upstream = "api.example.com/?key=" + secret }), 0, "URL", "", "want an absolute URL"},
		{"ftp URL", route(func(r *Route) { r.Upstream = "ftp://h/?key=" + secret }), 0, "URL", "", "scheme must be http or https"},
		{"AuthValue with a newline", route(func(r *Route) { r.AuthHeader, r.AuthValue = "Authorization", secret+"\n" }), 0, "AuthValue", "", "whitespace"},
		{"credential without a header", route(func(r *Route) { r.AuthValue = secret }), 0, "AuthHeader", "", "the auth header is not"},
		{"bad auth header", route(func(r *Route) { r.AuthHeader, r.AuthValue = "x key", "k" }), 0, "AuthHeader", "", `"x key" is not a valid header name`},
		{"empty AuthEnv", route(func(r *Route) { r.AuthHeader, r.AuthEnv = "api-key", "RELAY_TEST_ROUTE_EMPTY" }), 0, "AuthEnv", "", "RELAY_TEST_ROUTE_EMPTY is empty or unset"},
		{"AuthEnv with a space", route(func(r *Route) { r.AuthHeader, r.AuthEnv = "api-key", "RELAY_TEST_ROUTE_SPACE" }), 0, "AuthEnv", "", "whitespace"},
		{"empty pool key", route(pool(Upstream{URL: "http://h", AuthHeader: "x-api-key", Keys: []string{"k", ""}})), 1, "Keys", "1", "the credential is empty"},
		{"pool key with a tab", route(pool(Upstream{URL: "http://h", AuthHeader: "x-api-key", Keys: []string{"k\t" + secret}})), 1, "Keys", "0", "control character"},
		{"negative weight", route(pool(Upstream{Name: "b", URL: "http://h", Weight: -2})), 1, "Weight", "", "cannot be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewRouteTable([]Route{ok, tt.route}, nil)
			var re *RouteError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, 1, re.Index)
			assert.Equal(t, tt.route.Name, re.Route)
			assert.Equal(t, tt.upstream, re.Upstream)
			assert.Equal(t, tt.field, re.Field)
			assert.Equal(t, tt.key, re.Key)
			assert.Contains(t, re.Reason, tt.reason)
			assert.NotContains(t, re.Reason, secret)
			assert.NotContains(t, err.Error(), secret)
			// New returns the same error.
			_, err = New(WithAPIKeys(APIKey{Key: "k"}), WithRoutes(ok, tt.route))
			require.ErrorAs(t, err, &re)
			assert.Equal(t, tt.field, re.Field)
		})
	}
}

// The message keeps its form: the route by name (or index), the upstream
// by index (and name), then the problem.
func TestRouteErrorMessage(t *testing.T) {
	_, err := NewRouteTable([]Route{{Prefix: "/a", Upstream: "http://h"}}, nil)
	assert.EqualError(t, err, "relay: route 0: a route needs a name (it labels metrics and records)")
	_, err = NewRouteTable([]Route{{Name: "r", Upstreams: []Upstream{{Name: "main", URL: "http://h", Weight: -1}}}}, nil)
	assert.EqualError(t, err, `relay: route "r" upstream 0 ("main"): Weight cannot be negative`)
}

// Every problem is reported, not only the first, in route order.
func TestRouteErrorsAll(t *testing.T) {
	_, err := NewRouteTable([]Route{
		{Name: "a", Prefix: "/a", Upstream: "http://h", Kind: "video", MaxAttempts: -1},
		{Name: "b", Prefix: "/b", Upstreams: []Upstream{{URL: "http://h"}, {URL: "nope"}}},
		{Name: "c", Prefix: "/c", Upstream: "http://h"},
	}, nil)
	var multi interface{ Unwrap() []error }
	require.ErrorAs(t, err, &multi)
	var got []string
	for _, e := range multi.Unwrap() {
		var re *RouteError
		require.ErrorAs(t, e, &re)
		got = append(got, re.Route+"."+re.Field)
	}
	assert.Equal(t, []string{"a.Kind", "a.MaxAttempts", "b.URL"}, got)
	var first *RouteError
	require.ErrorAs(t, err, &first)
	assert.Equal(t, "Kind", first.Field)
	assert.True(t, errors.Is(err, first))
}

// One rule for an empty prefix: it is "/", the catch-all, and it collides
// with an explicit "/".
func TestRoutePrefixEmptyIsRoot(t *testing.T) {
	table, err := NewRouteTable([]Route{{Name: "all", Upstream: "http://h"}, {Name: "v1", Prefix: "/v1/", Upstream: "http://h"}}, nil)
	require.NoError(t, err)
	p, ok := table.Prefix("all")
	assert.True(t, ok)
	assert.Equal(t, "/", p)
	p, _ = table.Prefix("v1")
	assert.Equal(t, "/v1", p)
	_, ok = table.Prefix("none")
	assert.False(t, ok)

	_, err = NewRouteTable([]Route{{Name: "all", Upstream: "http://h"}, {Name: "root", Prefix: "/", Upstream: "http://h"}}, nil)
	var re *RouteError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, RouteError{Index: 1, Route: "root", Upstream: -1, Field: "Prefix",
		Reason: `path "/" is already routed by routes[0]`}, *re)
}
