package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// env returns a getenv over a fixed map.
func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

const goodConfig = `
server: {port: 8080, timeout: 300s, max_body_size: 10485760}
routes:
  - {name: siliconflow, path: /v1/chat/completions, upstream: https://api.siliconflow.cn, auth_header: Authorization, auth_env: SILICONFLOW_API_KEY, kind: sse}
  - name: claude
    path: /anthropic
    strip_prefix: true
    provider: anthropic
    headers: {anthropic-version: "2023-06-01"}
    timeouts: {connect: 5s, first_byte: 2m, idle: 90s, total: 30m}
    upstreams:
      - {name: primary, url: https://api.anthropic.com, auth_header: x-api-key, keys: ["${ANTHROPIC_KEY_1}", "${ANTHROPIC_KEY_2}"], weight: 3}
      - {name: backup, url: "https://backup.example.com/base", auth_header: x-api-key, auth_env: BACKUP_KEY}
rate_limit: {enabled: true, default: 100, burst: 20, tokens_per_minute: 100000}
auth:
  api_keys:
    - plain-client-key
    - key: "${TEAM_KEY}"
      id: team-a
      tenant: acme
      limits: {requests_per_minute: 10, burst: 2, tokens_per_minute: 5000}
      labels: {plan: pro}
storage: {redis: {addr: "localhost:6379", password: "", db: 0}, jsonl: {path: "-"}, log: true}
observability: {prometheus: {enabled: true, path: /metrics}}
log: {level: debug, format: text}
models: [gpt-4o, claude-sonnet-4-5]
`

func goodEnv() map[string]string {
	return map[string]string{
		"SILICONFLOW_API_KEY": "sf-secret", "ANTHROPIC_KEY_1": "ak-1", "ANTHROPIC_KEY_2": "ak-2",
		"BACKUP_KEY": "bk", "TEAM_KEY": "team-secret",
	}
}

func TestParseGoodConfig(t *testing.T) {
	c, err := parseConfig([]byte(goodConfig), "relay.yaml", env(goodEnv()))
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.Port != 8080 || time.Duration(c.Server.Timeout) != 300*time.Second || c.Server.MaxBodySize != 10<<20 {
		t.Errorf("server = %+v", c.Server)
	}
	if time.Duration(c.Server.ShutdownTimeout) != defaultShutdownTimeout {
		t.Errorf("shutdown_timeout default = %v", time.Duration(c.Server.ShutdownTimeout))
	}
	if len(c.Routes) != 2 || c.Routes[0].Kind != "sse" || c.Routes[1].Upstreams[0].Keys[1] != "ak-2" ||
		c.Routes[1].Upstreams[0].Weight != 3 || time.Duration(c.Routes[1].Timeouts.Total) != 30*time.Minute ||
		c.Routes[1].Headers["anthropic-version"] != "2023-06-01" || !c.Routes[1].StripPrefix {
		t.Errorf("routes = %+v", c.Routes)
	}
	keys := c.Auth.APIKeys
	if len(keys) != 2 || keys[0].Key != "plain-client-key" || keys[1].Key != "team-secret" ||
		keys[1].Tenant != "acme" || keys[1].Limits.TokensPerMinute != 5000 || keys[1].Labels["plan"] != "pro" {
		t.Errorf("keys = %+v", keys)
	}
	if !c.RateLimit.Enabled || c.RateLimit.Default != 100 || c.RateLimit.Burst != 20 || !c.RateLimit.FailOpen {
		t.Errorf("rate_limit = %+v", c.RateLimit)
	}
	if r := c.Storage.Redis; r == nil || r.Addr != "localhost:6379" || !r.Records {
		t.Errorf("storage.redis = %+v", r)
	}
	if c.Storage.JSONL == nil || c.Storage.JSONL.Path != "-" || !c.Storage.Log {
		t.Errorf("storage = %+v", c.Storage)
	}
	if c.Log.Format != "text" || len(c.Models) != 2 || !c.Observability.Prometheus.Enabled {
		t.Errorf("log/models/prometheus = %+v %v %+v", c.Log, c.Models, c.Observability)
	}
	if got := c.listenAddr(); got != ":8080" {
		t.Errorf("listen address = %q, want :8080 (all interfaces)", got)
	}
	rt := c.Routes[0].route(env(goodEnv()))
	if rt.AuthValue != "sf-secret" || rt.Prefix != "/v1/chat/completions" {
		t.Errorf("route = %+v", rt)
	}
}

// The shipped example and the docker-compose configuration must load.
func TestShippedConfigsLoad(t *testing.T) {
	e := env(map[string]string{"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "ak-x",
		"SILICONFLOW_API_KEY": "sf-x", "RELAY_DEMO_KEY": "demo", "RELAY_CLIENT_KEY": "ck", "RELAY_TEAM_KEY": "tk",
		"OPENAI_KEY_2": "sk-2", "ELEVENLABS_API_KEY": "el", "REDIS_PASSWORD": "pw"})
	for _, path := range []string{"relay.example.yaml", "../../deployments/relay.yaml"} {
		t.Run(path, func(t *testing.T) {
			if _, err := loadConfig(path, e); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	const base = "routes: [{name: r, path: /v1, upstream: https://api.example.com}]\nauth: {api_keys: [k]}\n"
	tests := []struct {
		name string
		src  string
		env  map[string]string
		want []string // each must appear in the error
	}{
		{"unknown top-level key", base + "servr: {port: 1}\n", nil,
			[]string{"relay.yaml:3:", `unknown key "servr" in the top level`, "server"}},
		{"unknown nested key", "server:\n  port: 8080\n  timout: 5s\n" + base, nil,
			[]string{"relay.yaml:3:", `unknown key "timout" in server`, "timeout"}},
		{"unknown key in a route", "routes:\n  - name: r\n    path: /v1\n    upstream: https://x.example\n    stream: true\nauth: {api_keys: [k]}\n", nil,
			[]string{"relay.yaml:5:", `unknown key "stream" in routes[0]`}},
		{"unknown key in key limits", "routes: [{name: r, path: /v1, upstream: https://x.example}]\nrate_limit: {enabled: true, default: 1}\nauth:\n  api_keys:\n    - key: k\n      limits: {rpm: 3}\n", nil,
			[]string{"relay.yaml:6:", `unknown key "rpm" in auth.api_keys[0].limits`}},
		{"duplicated key", base + "log: {level: info}\nlog: {level: debug}\n", nil,
			[]string{"relay.yaml:4:", `key "log" appears twice (first at line 3)`}},
		{"port not a number", "server: {port: eighty}\n" + base, nil,
			[]string{"relay.yaml:1:", "server.port: want a whole number"}},
		{"port out of range", "server:\n  port: 70000\n" + base, nil,
			[]string{"relay.yaml:2:", "server.port: want a port from 1 to 65535"}},
		{"duration without unit", "server:\n  timeout: 300\n" + base, nil,
			[]string{"relay.yaml:2:", "server.timeout: want a duration with a unit"}},
		{"negative duration", "server:\n  shutdown_timeout: -1s\n" + base, nil,
			[]string{"relay.yaml:2:", "server.shutdown_timeout: a duration cannot be negative"}},
		{"bad kind", "routes:\n  - name: r\n    path: /v1\n    upstream: https://x.example\n    kind: ssee\nauth: {api_keys: [k]}\n", nil,
			[]string{"relay.yaml:5:", `routes[0].kind: unknown kind "ssee"`}},
		{"bad URL", "routes:\n  - name: r\n    path: /v1\n    upstream: api.example.com\nauth: {api_keys: [k]}\n", nil,
			[]string{"relay.yaml:4:", "routes[0].upstream: want an absolute URL"}},
		{"duplicated route name", "routes:\n  - {name: r, path: /a, upstream: https://x.example}\n  - {name: r, path: /b, upstream: https://x.example}\nauth: {api_keys: [k]}\n", nil,
			[]string{"relay.yaml:3:", `routes[1].name: route name "r" is already used by routes[0]`}},
		{"duplicated route path", "routes:\n  - {name: a, path: /v1/, upstream: https://x.example}\n  - {name: b, path: /v1, upstream: https://x.example}\nauth: {api_keys: [k]}\n", nil,
			[]string{"relay.yaml:3:", `routes[1].path: path "/v1" is already routed by routes[0]`}},
		{"auth_env unset", "routes:\n  - name: r\n    path: /v1\n    upstream: https://x.example\n    auth_header: Authorization\n    auth_env: NOPE_KEY\nauth: {api_keys: [k]}\n", nil,
			[]string{"relay.yaml:6:", "routes[0].auth_env: environment variable NOPE_KEY is empty or unset"}},
		{"credential without header", "routes:\n  - name: r\n    path: /v1\n    upstream: https://x.example\n    auth_env: K\nauth: {api_keys: [k]}\n", map[string]string{"K": "v"},
			[]string{"relay.yaml:2:", "routes[0].auth_header: a credential is set but the auth header is not"}},
		{"no keys", "routes: [{name: r, path: /v1, upstream: https://x.example}]\n", nil,
			[]string{"auth.api_keys: at least one client key is required"}},
		{"list where a mapping belongs", "server: [8080]\n" + base, nil,
			[]string{"relay.yaml:1:", "server: want a mapping of keys, not a list"}},
		{"unset variable", "server:\n  port: ${PORT}\n" + base, nil,
			[]string{"relay.yaml:2:", "server.port: environment variable PORT is not set"}},
		{"bad log level", base + "log:\n  level: loud\n", nil,
			[]string{"relay.yaml:4:", `log.level: unknown level "loud"`}},
		{"limits without rate limiting", "routes: [{name: r, path: /v1, upstream: https://x.example}]\nauth:\n  api_keys:\n    - {key: k, limits: {requests_per_minute: 5}}\n", nil,
			[]string{"relay.yaml:4:", "limits are set but rate_limit.enabled is false"}},
		{"route on the metrics path", "routes: [{name: r, path: /metrics, upstream: https://x.example}]\nauth: {api_keys: [k]}\n", nil,
			[]string{"relay.yaml:1:", "overlaps /metrics"}},
		{"syntax error", "server: {port: 8080\n" + base, nil,
			[]string{"relay.yaml: line"}},
		{"several problems at once", "server: {port: x, timeout: y}\n" + base, nil,
			[]string{"server.port", "server.timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tt.src), "relay.yaml", env(tt.env))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

func TestEnvExpansion(t *testing.T) {
	src := `
server:
  port: ${PORT}
  host: ${HOST:-127.0.0.1}
routes:
  - name: r
    path: /v1
    upstream: https://${UPSTREAM_HOST}/base
    headers: {x-literal: "$${NOT_A_VAR}", x-dollar: "a$b"}
auth:
  api_keys: ["${WEIRD_KEY}", ${TEAM_KEY}]
rate_limit: {enabled: true, default: ${RPM}, burst: ${BURST:-5}}
`
	e := env(map[string]string{"PORT": "9090", "UPSTREAM_HOST": "api.example.com",
		// YAML syntax in a value stays a value: expansion runs after parsing.
		"WEIRD_KEY": `k: #[]{}"' -- !!str &x *y`, "TEAM_KEY": "team", "RPM": "120"})
	c, err := parseConfig([]byte(src), "relay.yaml", e)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.Port != 9090 || c.Server.Host != "127.0.0.1" {
		t.Errorf("server = %+v", c.Server)
	}
	if c.Routes[0].Upstream != "https://api.example.com/base" {
		t.Errorf("upstream = %q", c.Routes[0].Upstream)
	}
	if h := c.Routes[0].Headers; h["x-literal"] != "${NOT_A_VAR}" || h["x-dollar"] != "a$b" {
		t.Errorf("headers = %q", h)
	}
	if k := c.Auth.APIKeys[0].Key; k != `k: #[]{}"' -- !!str &x *y` {
		t.Errorf("key = %q", k)
	}
	// Unquoted references work in flow style too.
	if c.Auth.APIKeys[1].Key != "team" || c.RateLimit.Default != 120 || c.RateLimit.Burst != 5 {
		t.Errorf("flow-style references: keys %q, rate_limit %+v", c.Auth.APIKeys[1].Key, c.RateLimit)
	}
	if c.listenAddr() != "127.0.0.1:9090" {
		t.Errorf("listen = %q", c.listenAddr())
	}
}

func TestExpandEnv(t *testing.T) {
	e := env(map[string]string{"A": "1", "EMPTY": ""})
	tests := []struct {
		in, want string
		err      string
	}{
		{in: "plain", want: "plain"},
		{in: "${A}${A}", want: "11"},
		{in: "x${EMPTY:-def}y", want: "xdefy"},
		{in: "${UNSET:-}", want: ""},
		{in: "${EMPTY}", want: ""},
		{in: "$${A}", want: "${A}"},
		{in: "$A ${A}", want: "$A 1"},
		{in: "${UNSET}", err: "environment variable UNSET is not set"},
		{in: "${A", err: "unterminated"},
		{in: "${1A}", err: "not a valid"},
	}
	for _, tt := range tests {
		got, _, err := expandEnv(tt.in, e)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("expandEnv(%q) error = %v, want %q", tt.in, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("expandEnv(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// No error message may quote a secret, wherever the secret was put.
func TestConfigErrorsHideSecrets(t *testing.T) {
	const secret = "sk-live-7f3a9c2e5b1d"
	e := env(map[string]string{"SECRET": secret, "OTHER": "x"})
	srcs := map[string]string{
		"key where a list belongs":     "routes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: " + secret + "}\n",
		"secret in an int field":       "server: {port: ${SECRET}}\nroutes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [k]}\n",
		"secret in a duration":         "server: {timeout: \"${SECRET}\"}\nroutes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [k]}\n",
		"secret in an enum":            "routes: [{name: r, path: /v1, upstream: https://x.example, kind: \"${SECRET}\"}]\nauth: {api_keys: [k]}\n",
		"secret in a bad URL":          "routes: [{name: r, path: /v1, upstream: \"ftp://x.example/?key=" + secret + "\"}]\nauth: {api_keys: [k]}\n",
		"secret in a relative URL":     "routes: [{name: r, path: /v1, upstream: \"" + secret + "\"}]\nauth: {api_keys: [k]}\n",
		"duplicated client key":        "routes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [" + secret + ", \"${SECRET}\"]}\n",
		"secret as a bool":             "routes: [{name: r, path: /v1, upstream: https://x.example, strip_prefix: " + secret + "}]\nauth: {api_keys: [k]}\n",
		"secret as a keys entry map":   "routes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [{key: [" + secret + "]}]}\n",
		"credential but no header":     "routes: [{name: r, path: /v1, upstream: https://x.example, auth_value: " + secret + "}]\nauth: {api_keys: [k]}\n",
		"secret header value":          "routes: [{name: r, path: /v1, upstream: https://x.example, headers: {x-key: \"" + secret + "\\n\"}}]\nauth: {api_keys: [k]}\n",
		"secret as an alias":           "routes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [*" + secret + "]}\n",
		"secret as a client key's key": "routes: [{name: r, path: /v1, upstream: https://x.example}]\nauth:\n  api_keys:\n  - " + secret + ": x\n",
		"secret twice as a key":        "routes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [{" + secret + ": x, " + secret + ": y}]}\n",
		"secret as a label name":       "routes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [{key: k, labels: {" + secret + ": [x]}}]}\n",
		"secret as an upstream's key":  "routes: [{name: r, path: /v1, upstreams: [{url: https://x.example, keys: [k], " + secret + ": x}]}]\nauth: {api_keys: [k]}\n",
		"secret as a redis key":        "routes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [k]}\nstorage:\n  redis: {addr: 127.0.0.1:6379, password: x, " + secret + ": x}\n",
		"secret as a route's key":      "routes: [{name: r, path: /v1, upstream: https://x.example, " + secret + ": x}]\nauth: {api_keys: [k]}\n",
		"bare password as a key":       "routes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [k]}\nstorage:\n  redis: {addr: 127.0.0.1:6379, \"" + secret + "Q9\": x}\n",
		"secret in a bad reference":    "routes: [{name: r, path: /v1, upstream: https://x.example}]\nauth: {api_keys: [\"${" + secret + "}\"]}\n",
	}
	for name, src := range srcs {
		t.Run(name, func(t *testing.T) {
			_, err := parseConfig([]byte(src), "relay.yaml", e)
			if err == nil {
				t.Fatal("no error")
			}
			if strings.Contains(err.Error(), secret[:7]) || strings.Contains(err.Error(), secret[len(secret)-6:]) {
				t.Errorf("error quotes the secret: %v", err)
			}
			if !regexp.MustCompile(`relay\.yaml(:|: line )\d+:`).MatchString(err.Error()) {
				t.Errorf("error names no line: %v", err)
			}
		})
	}
}

// The Go defaults and the example's documented defaults must agree.
func TestExampleMentionsDefaults(t *testing.T) {
	b, err := os.ReadFile("relay.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"shutdown_timeout: 30s", "read_header_timeout: 10s", "keepalive_timeout: 2m",
		"client_write_timeout: 30s", "max_body_size: 10485760", "path: /metrics"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("relay.example.yaml does not show the default %q", want)
		}
	}
}

// Every key the decoder accepts is shown in the example, commented or not.
func TestExampleDocumentsEveryKey(t *testing.T) {
	b, err := os.ReadFile("relay.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	var walk func(rt reflect.Type, path string)
	walk = func(rt reflect.Type, path string) {
		for rt.Kind() == reflect.Pointer || rt.Kind() == reflect.Slice {
			rt = rt.Elem()
		}
		if rt.Kind() != reflect.Struct {
			return
		}
		for i := range rt.NumField() {
			f := rt.Field(i)
			key := f.Tag.Get("yaml")
			if key == "" {
				continue
			}
			if !strings.Contains(text, key+":") {
				t.Errorf("relay.example.yaml does not show %s", join(path, key))
			}
			walk(f.Type, join(path, key))
		}
	}
	walk(reflect.TypeFor[fileConfig](), "")
}

// The keys added for operators and for the original format are checked
// like the others: each problem names its key and line.
func TestOperatorKeysErrors(t *testing.T) {
	const base = "routes: [{name: r, path: /v1, upstream: https://api.example.com}]\nauth: {api_keys: [k]}\n"
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"tls without a key file", base + "server:\n  tls: {cert_file: c.pem}\n", []string{"relay.yaml:4:", "server.tls.key_file: want the private key file"}},
		{"h2c with tls", base + "server:\n  tls: {cert_file: c.pem, key_file: k.pem}\n  h2c: true\n", []string{"relay.yaml:5:", "server.h2c: h2c is HTTP/2 without TLS"}},
		{"tiny header limit", base + "server:\n  max_header_bytes: 100\n", []string{"relay.yaml:4:", "server.max_header_bytes: want a number of bytes from 4096"}},
		{"log twice", base + "log: {level: info}\nobservability:\n  logging: {level: debug}\n", []string{"relay.yaml:5:", "give either log or observability.logging"}},
		{"original log level", base + "observability:\n  logging:\n    level: loud\n", []string{"relay.yaml:5:", `observability.logging.level: unknown level "loud"`}},
		{"ttl not a duration", base + "storage:\n  redis: {addr: r:6379, ttl: soon}\n", []string{"relay.yaml:4:", "storage.redis.ttl: want a number of seconds or a duration"}},
		{"ttl negative", base + "storage:\n  redis: {addr: r:6379, ttl: -5}\n", []string{"relay.yaml:4:", "storage.redis.ttl: want a positive number of seconds"}},
		{"metrics addr is the main one", base + "server: {addr: \"127.0.0.1:8080\"}\nobservability:\n  prometheus: {addr: \"127.0.0.1:8080\"}\n", []string{"relay.yaml:5:", "observability.prometheus.addr: is the main listen address"}},
		{"metrics addr not host:port", base + "observability:\n  prometheus: {addr: localhost}\n", []string{"relay.yaml:4:", "observability.prometheus.addr: want host:port"}},
		{"metrics addr with metrics off", base + "observability:\n  prometheus: {enabled: false, addr: \":9091\"}\n", []string{"relay.yaml:4:", "prometheus.enabled is false"}},
		{"unknown key under observability", base + "observability:\n  detailed_log: true\n", []string{"relay.yaml:4:", `unknown key "detailed_log" in observability`, "detailed_logs"}},
		{"unknown key under clickhouse", base + "storage:\n  clickhouse: {addr: c:9000, asynch: true}\n", []string{"relay.yaml:4:", `unknown key "asynch" in storage.clickhouse`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tt.src), "relay.yaml", env(nil))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
	// A TTL is a duration or, as the original wrote it, seconds.
	for src, want := range map[string]time.Duration{"3600": time.Hour, "90m": 90 * time.Minute, "0": 0} {
		c, err := parseConfig([]byte(base+"storage: {redis: {addr: r:6379, ttl: "+src+"}}\n"), "relay.yaml", env(nil))
		if err != nil || time.Duration(c.Storage.Redis.TTL) != want {
			t.Errorf("ttl: %s = %v, %v; want %v", src, err, c, want)
		}
	}
}

// The configuration in the Kubernetes manifest's ConfigMap loads.
func TestKubernetesConfigLoads(t *testing.T) {
	const path = "../../deployments/kubernetes/relay.yaml"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for doc := range strings.SplitSeq(string(b), "\n---\n") {
		var cm struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if err := yaml.Unmarshal([]byte(doc), &cm); err != nil {
			t.Fatal(err)
		}
		if cm.Kind != "ConfigMap" {
			continue
		}
		found = true
		c, err := parseConfig([]byte(cm.Data["config.yaml"]), path+" (ConfigMap config.yaml)",
			env(map[string]string{"OPENAI_API_KEY": "sk-x", "RELAY_CLIENT_KEY": "ck"}))
		if err != nil {
			t.Fatal(err)
		}
		if time.Duration(c.Server.WatchInterval) == 0 {
			t.Error("the ConfigMap's configuration does not watch itself: edits would need a restart")
		}
	}
	if !found {
		t.Fatalf("%s has no ConfigMap", path)
	}
}
