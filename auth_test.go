package relay

import (
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestUnusableKeysAreRejected: a key no request could ever present (or an
// upstream credential no request could carry) fails New, and the error
// names the key without printing it.
func TestUnusableKeysAreRejected(t *testing.T) {
	const secret = "sk-SECRET-4711"
	route := func(mod func(*Route)) Route {
		r := Route{Name: "chat", Prefix: "/v1", Upstream: "http://127.0.0.1:1", AuthHeader: "Authorization", AuthValue: "sk-ok"}
		mod(&r)
		return r
	}
	t.Setenv("RELAY_TEST_UPSTREAM_KEY_NL", secret+"\n")
	tests := []struct {
		name  string
		keys  []APIKey
		route Route
		want  string
	}{
		{"client key with a trailing newline", []APIKey{{Key: "sk-ok-1", ID: "a"}, {Key: secret + "\n", ID: "b"}}, route(func(*Route) {}),
			`API key 1 (id "b") has leading or trailing whitespace`},
		{"client key with CRLF", []APIKey{{Key: secret + "\r\n", ID: "a"}}, route(func(*Route) {}), `API key 0 (id "a") has leading`},
		{"client key with a leading space", []APIKey{{Key: " " + secret}}, route(func(*Route) {}), `API key 0 (id "") has leading`},
		{"client key with a NUL", []APIKey{{Key: "sk-\x00" + secret, ID: "n"}}, route(func(*Route) {}), `API key 0 (id "n") contains a control character`},
		{"client key with DEL", []APIKey{{Key: secret + "\x7fx", ID: "d"}}, route(func(*Route) {}), `contains a control character`},
		{"upstream AuthValue with a newline", nil, route(func(r *Route) { r.AuthValue = secret + "\n" }),
			`route "chat" upstream 0: AuthValue has leading or trailing whitespace`},
		{"upstream AuthEnv with a newline", nil, route(func(r *Route) { r.AuthValue, r.AuthEnv = "", "RELAY_TEST_UPSTREAM_KEY_NL" }),
			`the credential in environment variable RELAY_TEST_UPSTREAM_KEY_NL has leading or trailing whitespace`},
		{"upstream pool key with CR", nil, route(func(r *Route) {
			r.Upstreams = []Upstream{{Name: "openai", URL: "http://127.0.0.1:1", AuthHeader: "Authorization", Keys: []string{"sk-ok", secret + "\r"}}}
		}), `route "chat" upstream 0 ("openai"): key 1 has leading or trailing whitespace`},
		{"upstream pool key with a tab inside", nil, route(func(r *Route) {
			r.Upstreams = []Upstream{{URL: "http://127.0.0.1:1", AuthHeader: "Authorization", Keys: []string{"sk-\t" + secret}}}
		}), `key 0 contains a control character`},
		{"empty upstream pool key", nil, route(func(r *Route) {
			r.Upstreams = []Upstream{{URL: "http://127.0.0.1:1", AuthHeader: "Authorization", Keys: []string{""}}}
		}), `key 0 is empty`},
		{"route header with a newline", nil, route(func(r *Route) { r.Headers = map[string]string{"X-Org-Token": secret + "\r\nX-Evil: 1"} }),
			`route "chat": header X-Org-Token: value has a control character`},
		{"route header with a bad name", nil, route(func(r *Route) { r.Headers = map[string]string{"X Bad": "v"} }),
			`header name "X Bad" is not valid`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := tt.keys
			if keys == nil {
				keys = []APIKey{{Key: "sk-client"}}
			}
			_, err := New(WithAPIKeys(keys...), WithRoutes(tt.route))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.NotContains(t, err.Error(), "SECRET", "the error printed the key")
		})
	}

	// Well-formed keys are accepted, and a presented key is trimmed as
	// before.
	a, err := NewStaticKeys(APIKey{Key: "sk-fine", ID: "f"})
	require.NoError(t, err)
	req, _ := http.NewRequest("GET", "/", nil)
	req.Header.Set("Authorization", "Bearer  sk-fine ")
	id, err := a.Authenticate(req)
	require.NoError(t, err)
	assert.Equal(t, "f", id.KeyID)
}

// manyKeys returns n distinct keys; the last is "sk-key-<n-1>".
func manyKeys(n int) []APIKey {
	keys := make([]APIKey, n)
	for i := range keys {
		keys[i] = APIKey{Key: fmt.Sprintf("sk-key-%d", i), ID: fmt.Sprintf("id-%d", i)}
	}
	return keys
}

func keyRequest(key string) *http.Request {
	r, _ := http.NewRequest("POST", "/v1/chat/completions", nil)
	r.Header.Set("Authorization", "Bearer "+key)
	return r
}

// TestKeyLookupIsAMapLookup: the authenticator holds the keys in one map
// from digest to identity and nothing it iterates, so a lookup's work does
// not grow with the number of keys (BenchmarkStaticKeys measures it).
func TestKeyLookupIsAMapLookup(t *testing.T) {
	typ := reflect.TypeFor[staticKeys]()
	require.Equal(t, 1, typ.NumField(), "staticKeys holds only its map")
	f := typ.Field(0)
	require.Equal(t, reflect.Map, f.Type.Kind())
	assert.Equal(t, reflect.TypeFor[[32]byte](), f.Type.Key(), "keyed by SHA-256 digest")

	const n = 100_000
	a, err := NewStaticKeys(manyKeys(n)...)
	require.NoError(t, err)
	assert.Len(t, a.(*staticKeys).byHash, n)
	for _, i := range []int{0, n / 2, n - 1} {
		id, err := a.Authenticate(keyRequest(fmt.Sprintf("sk-key-%d", i)))
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("id-%d", i), id.KeyID)
	}
	_, err = a.Authenticate(keyRequest("sk-key-" + strings.Repeat("9", 7)))
	assert.ErrorIs(t, err, ErrUnauthenticated)
}

// BenchmarkStaticKeys compares a lookup with 1 and 100,000 keys, for a key
// that matches and one that does not: the figures are the same.
func BenchmarkStaticKeys(b *testing.B) {
	for _, n := range []int{1, 100_000} {
		a, err := NewStaticKeys(manyKeys(n)...)
		require.NoError(b, err)
		for _, c := range []struct{ name, key string }{{"known", "sk-key-0"}, {"unknown", "sk-nobody"}} {
			b.Run(fmt.Sprintf("keys=%d/%s", n, c.name), func(b *testing.B) {
				r := keyRequest(c.key)
				b.ReportAllocs()
				for b.Loop() {
					_, _ = a.Authenticate(r)
				}
			})
		}
	}
}
