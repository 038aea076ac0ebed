package main

import (
	"reflect"
	"strings"
	"testing"

	"github.com/streamrelay/relay"
)

// The route rules are the library's: each of its RouteErrors is reported
// at the key and line of the value it is about.
func TestRouteRulesAtTheirLine(t *testing.T) {
	const keys = "auth: {api_keys: [k]}\n"
	tests := []struct {
		name string
		src  string
		env  map[string]string
		want []string // each must appear in the error
	}{
		{"no name", "routes:\n  - path: /v1\n    upstream: https://x.example\n",
			nil, []string{"relay.yaml:2: routes[0].name: a route needs a name"}},
		{"relative path", "routes:\n  - name: r\n    path: v1\n    upstream: https://x.example\n",
			nil, []string{"relay.yaml:3: routes[0].path: want a path prefix starting with /"}},
		{"dot segment in the path", "routes:\n  - name: r\n    path: /v1/../admin\n    upstream: https://x.example\n",
			nil, []string{"relay.yaml:3: routes[0].path: a path prefix cannot contain . or .. segments"}},
		{"relative rewrite", "routes:\n  - name: r\n    path: /v1\n    rewrite_prefix: v2\n    upstream: https://x.example\n",
			nil, []string{"relay.yaml:4: routes[0].rewrite_prefix: want a path starting with /"}},
		{"unknown provider", "routes:\n  - name: r\n    path: /v1\n    upstream: https://x.example\n    provider: bedrock\n",
			nil, []string{`relay.yaml:5: routes[0].provider: unknown provider "bedrock" (want openai, azure, anthropic, azure-tts, elevenlabs or cartesia)`}},
		{"bad header name", "routes:\n  - name: r\n    path: /v1\n    upstream: https://x.example\n    headers:\n      x bad: v\n",
			nil, []string{`relay.yaml:6: routes[0].headers.x bad: "x bad" is not a valid header name`}},
		{"header value with a control character", "routes:\n  - name: r\n    path: /v1\n    upstream: https://x.example\n    headers:\n      x-note: \"a\\u0001b\"\n",
			nil, []string{"relay.yaml:6: routes[0].headers.x-note: a header value cannot contain a control character"}},
		{"pass header that selects nothing", "routes:\n  - name: r\n    path: /v1\n    upstream: https://x.example\n    pass_headers:\n      - OpenAI-Project\n      - X-Other\n",
			nil, []string{`relay.yaml:7: routes[0].pass_headers[1]: "X-Other" is not an account-selecting header`}},
		{"negative max_attempts", "routes:\n  - name: r\n    path: /v1\n    upstream: https://x.example\n    max_attempts: -1\n",
			nil, []string{"relay.yaml:5: routes[0].max_attempts: cannot be negative"}},
		{"negative backoff", "routes:\n  - name: r\n    path: /v1\n    upstream: https://x.example\n    backoff:\n      max: -1s\n",
			nil, []string{"relay.yaml:6: routes[0].backoff.max: a duration cannot be negative"}},
		{"no upstream", "routes:\n  - name: r\n    path: /v1\n",
			nil, []string{"relay.yaml:2: routes[0].upstream: a route needs an upstream"}},
		{"ftp upstream", "routes:\n  - name: r\n    path: /v1\n    upstream: ftp://x.example\n",
			nil, []string{"relay.yaml:4: routes[0].upstream: the URL scheme must be http or https"}},
		{"bad url in a list", "routes:\n  - name: r\n    path: /v1\n    upstreams:\n      - url: https://a.example\n      - url: b.example\n",
			nil, []string{"relay.yaml:6: routes[0].upstreams[1].url: want an absolute URL"}},
		{"empty pool key", "routes:\n  - name: r\n    path: /v1\n    upstreams:\n      - url: https://a.example\n        auth_header: x-api-key\n        keys:\n          - k1\n          - \"\"\n",
			nil, []string{"relay.yaml:9: routes[0].upstreams[0].keys[1]: the credential is empty"}},
		{"negative weight", "routes:\n  - name: r\n    path: /v1\n    upstreams:\n      - url: https://a.example\n      - url: https://b.example\n        weight: -2\n",
			nil, []string{"relay.yaml:7: routes[0].upstreams[1].weight: cannot be negative"}},
		{"auth_value with a newline", "routes:\n  - name: r\n    path: /v1\n    upstream: https://x.example\n    auth_header: Authorization\n    auth_value: \"sk-1\\n\"\n",
			nil, []string{"relay.yaml:6: routes[0].auth_value: the credential has leading or trailing whitespace"}},
		{"auth_env holding a newline", "routes:\n  - name: r\n    path: /v1\n    upstream: https://x.example\n    auth_header: Authorization\n    auth_env: K\n",
			map[string]string{"K": "sk-1\n"}, []string{"relay.yaml:6: routes[0].auth_env: the credential has leading or trailing whitespace"}},
		{"bad auth_header", "routes:\n  - name: r\n    path: /v1\n    upstream: https://x.example\n    auth_header: \"x key\"\n    auth_value: v\n",
			nil, []string{`relay.yaml:5: routes[0].auth_header: "x key" is not a valid header name`}},
		{"every route's problems at once", "routes:\n  - name: a\n    path: /a\n    upstream: https://x.example\n    kind: video\n  - name: b\n    path: /b\n    upstream: nope\n",
			nil, []string{`relay.yaml:5: routes[0].kind: unknown kind "video"`, "relay.yaml:8: routes[1].upstream: want an absolute URL"}},
		{"empty path is / and collides with /", "routes:\n  - name: all\n    upstream: https://x.example\n  - name: root\n    path: /\n    upstream: https://x.example\n",
			nil, []string{`relay.yaml:5: routes[1].path: path "/" is already routed by routes[0]`}},
		{"name from the environment is not echoed", "routes:\n  - {name: r, path: /a, upstream: https://x.example}\n  - {name: \"${N}\", path: /b, upstream: https://x.example}\n",
			map[string]string{"N": "r"}, []string{"relay.yaml:3: routes[1].name: route name (value from the environment) is already used by routes[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tt.src+keys), "relay.yaml", env(tt.env))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "relay: route") {
				t.Errorf("a library message was passed through unmapped: %v", err)
			}
		})
	}
}

// An empty path is the library's rule: "/", the catch-all.
func TestRouteEmptyPathIsRoot(t *testing.T) {
	c, err := parseConfig([]byte("routes: [{name: all, upstream: https://x.example}, {name: v1, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [k]}\n"),
		"relay.yaml", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	table, err := relay.NewRouteTable([]relay.Route{c.Routes[0].route(env(nil))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := table.Prefix("all"); p != "/" {
		t.Errorf("prefix of a route without path = %q, want /", p)
	}
}

// Every field a RouteError can name maps to a key the file has, so that a
// rule added to the library lands on a line here too.
func TestRouteErrorPathCoversEveryField(t *testing.T) {
	c := &fileConfig{Routes: []routeConfig{
		{Name: "short"},
		{Name: "list", Upstreams: []upstreamConfig{{}, {AuthEnv: "K"}}},
	}}
	keysOf := func(v any) map[string]bool {
		m := map[string]bool{}
		rt := reflect.TypeOf(v)
		for i := range rt.NumField() {
			if k := rt.Field(i).Tag.Get("yaml"); k != "" {
				m[k] = true
			}
		}
		return m
	}
	routeKeys, upstreamKeys := keysOf(routeConfig{}), keysOf(upstreamConfig{})
	check := func(e *relay.RouteError, prefix string, valid map[string]bool) {
		t.Helper()
		path := c.routeErrorPath(e)
		rest, ok := strings.CutPrefix(path, prefix)
		key := strings.FieldsFunc(rest, func(r rune) bool { return r == '.' || r == '[' })
		if !ok || len(key) == 0 || !valid[key[0]] {
			t.Errorf("field %s (upstream %d) maps to %q, not a key under %s", e.Field, e.Upstream, path, prefix)
		}
	}
	for f := range reflect.TypeFor[relay.Route]().Fields() {
		check(&relay.RouteError{Index: 0, Upstream: -1, Field: f.Name, Key: "1"}, "routes[0].", routeKeys)
	}
	for f := range reflect.TypeFor[relay.Upstream]().Fields() {
		check(&relay.RouteError{Index: 1, Upstream: 1, Field: f.Name, Key: "1"}, "routes[1].upstreams[1].", upstreamKeys)
		if f.Name != "Name" && f.Name != "Keys" && f.Name != "Weight" && f.Name != "MaxInFlight" { // the short form has none of these
			check(&relay.RouteError{Index: 0, Upstream: 0, Field: f.Name, Key: "1"}, "routes[0].", routeKeys)
		}
	}
	if got := c.routeErrorPath(&relay.RouteError{Index: 1, Upstream: 1, Field: "AuthValue"}); got != "routes[1].upstreams[1].auth_env" {
		t.Errorf("a credential from auth_env maps to %q", got)
	}
	if got := c.routeErrorPath(&relay.RouteError{Index: 0, Upstream: -1, Field: "Timeouts.FirstByte"}); got != "routes[0].timeouts.first_byte" {
		t.Errorf("Timeouts.FirstByte maps to %q", got)
	}
}

func TestHideQuoted(t *testing.T) {
	for in, want := range map[string]string{
		`unknown kind "x" (want auto)`:    `unknown kind (value from the environment) (want auto)`,
		`"a\"b" and "c"`:                  `(value from the environment) and (value from the environment)`,
		`no quotes`:                       `no quotes`,
		`unterminated "sk-secret\" value`: `unterminated (value from the environment)`,
	} {
		if got := hideQuoted(in); got != want {
			t.Errorf("hideQuoted(%q) = %q, want %q", in, got, want)
		}
	}
}
