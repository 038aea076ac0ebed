package main

import (
	"errors"
	"net"
	"strconv"
	"strings"

	"github.com/streamrelay/relay"
)

// validate checks values the decoder cannot: ranges, names, URLs,
// duplicates and environment variables named by auth_env. Like the
// decoder's, its messages name the key and its line and never quote a
// secret.
func (c *fileConfig) validate(getenv func(string) (string, bool)) error {
	p := &problems{file: c.file}
	c.validateServer(p)
	c.validateRoutes(p, getenv)
	c.validateAuth(p)
	c.validateStorage(p)
	c.validateObservability(p)
	return p.err()
}

// line is the line of the value at path, or of its closest ancestor that
// the file wrote.
func (c *fileConfig) line(path string) int {
	for {
		if l, ok := c.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return 0
		}
		path = path[:i]
	}
}

// bad records a problem with the value at path.
func (c *fileConfig) bad(p *problems, path, format string, args ...any) {
	p.add(c.line(path), path, format, args...)
}

// show quotes a value for a message, unless it came from the environment.
// Only values of non-secret keys (kinds, providers, levels) are shown.
func (c *fileConfig) show(path, v string) string {
	if c.fromEnv[path] {
		return "(value from the environment)"
	}
	return strconv.Quote(printable(v))
}

func (c *fileConfig) validateServer(p *problems) {
	s := &c.Server
	if s.Addr != "" {
		_, port, err := net.SplitHostPort(s.Addr)
		if err != nil || !validPort(port, true) {
			c.bad(p, "server.addr", "want host:port (such as :8080 or 127.0.0.1:8080)")
		}
		if c.has("server.host") || c.has("server.port") {
			c.bad(p, "server.addr", "give either addr or host and port, not both")
		}
	} else if s.Port < 1 || s.Port > 65535 {
		c.bad(p, "server.port", "want a port from 1 to 65535")
	}
	if strings.ContainsAny(s.Host, " /") {
		c.bad(p, "server.host", "want a host name or IP address")
	}
	if s.MaxBodySize <= 0 {
		c.bad(p, "server.max_body_size", "want a positive number of bytes")
	}
	if s.ShutdownTimeout <= 0 {
		c.bad(p, "server.shutdown_timeout", "want a positive duration")
	}
	if s.ReadHeaderTimeout <= 0 {
		c.bad(p, "server.read_header_timeout", "want a positive duration")
	}
	if s.ClientWriteTimeout <= 0 {
		c.bad(p, "server.client_write_timeout", "want a positive duration")
	}
	if s.MaxHeaderBytes < 4096 || s.MaxHeaderBytes > 16<<20 {
		c.bad(p, "server.max_header_bytes", "want a number of bytes from 4096 to 16777216")
	}
	if s.BodyMinRate < 0 {
		c.bad(p, "server.body_min_rate", "want bytes per second, 0 for no minimum")
	}
	if s.BodyGrace < 0 {
		c.bad(p, "server.body_grace", "want a duration, 0 or more")
	}
	if s.BodyTimeout < 0 {
		c.bad(p, "server.body_timeout", "want a duration, 0 for no overall bound")
	}
	if c.has("server.body_budget") && s.BodyBudget < s.MaxBodySize {
		c.bad(p, "server.body_budget", "want a number of bytes no smaller than max_body_size")
	}
	if s.RefusalMemo < 0 {
		c.bad(p, "server.refusal_memo", "want a duration, 0 to ask the limiter every time")
	}
	if c.has("server.body_tenant_budget") && s.BodyTenantBudget < s.MaxBodySize {
		c.bad(p, "server.body_tenant_budget", "want a number of bytes no smaller than max_body_size")
	}
	if s.ObservationBudget < 0 {
		c.bad(p, "server.observation_budget", "want a number of bytes, 0 or more")
	}
	if t := s.TLS; t != nil {
		if t.CertFile == "" {
			c.bad(p, "server.tls.cert_file", "want the certificate file (PEM, the chain after the leaf)")
		}
		if t.KeyFile == "" {
			c.bad(p, "server.tls.key_file", "want the private key file (PEM)")
		}
		if s.H2C {
			c.bad(p, "server.h2c", "h2c is HTTP/2 without TLS; with tls, clients get HTTP/2 by ALPN")
		}
	}
}

func validPort(s string, zeroOK bool) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n <= 65535 && (n > 0 || zeroOK && n == 0)
}

// validateRoutes checks what is about the file: the shape of each route
// (upstream or upstreams, one way to give a credential, auth_env naming a
// set variable) and the paths the server answers itself. The route rules
// themselves are the library's: the routes are converted as for the relay
// and given to relay.NewRouteTable, whose RouteErrors are mapped back to
// their key and line.
func (c *fileConfig) validateRoutes(p *problems, getenv func(string) (string, bool)) {
	if len(c.Routes) == 0 {
		c.bad(p, "routes", "at least one route is required")
	}
	routes := make([]relay.Route, len(c.Routes))
	for i := range c.Routes {
		r := &c.Routes[i]
		at := "routes[" + strconv.Itoa(i) + "]"
		if len(r.Upstreams) > 0 {
			if r.Upstream != "" {
				c.bad(p, at+".upstream", "give either upstream or upstreams, not both")
			}
			for _, k := range []string{"auth_header", "auth_env", "auth_value"} {
				if c.has(at + "." + k) {
					c.bad(p, at+"."+k, "with upstreams, credentials belong to each upstream")
				}
			}
			for j := range r.Upstreams {
				u := &r.Upstreams[j]
				c.validateCredential(p, at+".upstreams["+strconv.Itoa(j)+"]", u.AuthHeader, u.AuthEnv, u.AuthValue, u.Keys, getenv)
			}
		} else {
			c.validateCredential(p, at, r.AuthHeader, r.AuthEnv, r.AuthValue, nil, getenv)
		}
		routes[i] = r.route(getenv)
	}
	table, err := relay.NewRouteTable(routes, nil)
	if err != nil {
		c.routeErrors(p, err)
	} else {
		c.validateReserved(p, table)
	}
	for i, m := range c.Models {
		if m == "" {
			c.bad(p, "models["+strconv.Itoa(i)+"]", "a model name cannot be empty")
		}
	}
}

// validateCredential checks how one upstream (at) gives its credential:
// by at most one of auth_env, auth_value and keys, with an auth_env that
// names a set variable, an auth_value written non-empty, and an
// auth_header only with a credential. What the credential and the header
// may hold is the library's rule.
func (c *fileConfig) validateCredential(p *problems, at, header, env, value string, keys []string, getenv func(string) (string, bool)) {
	credentials := 0
	if env != "" {
		credentials++
		if !validEnvName(env) {
			c.bad(p, at+".auth_env", "want the name of an environment variable")
		} else if v, _ := getenv(env); v == "" {
			c.bad(p, at+".auth_env", "environment variable %s is empty or unset", env)
		}
	}
	if c.has(at + ".auth_value") {
		credentials++
		if value == "" {
			c.bad(p, at+".auth_value", "the credential is empty")
		}
	}
	if len(keys) > 0 {
		credentials++
	}
	switch {
	case credentials > 1:
		c.bad(p, at, "give one of auth_env, auth_value or keys")
	case credentials == 0 && header != "":
		c.bad(p, at+".auth_header", "auth_header is set but no credential is (auth_env, auth_value or keys)")
	}
}

// validateReserved refuses routes whose path overlaps one the server
// answers itself. The paths compared are the table's, normalized by its
// rule (an empty path is /).
func (c *fileConfig) validateReserved(p *problems, table *relay.RouteTable) {
	reserved := []string{"/healthz", "/readyz"}
	if c.Observability.Prometheus.Enabled {
		reserved = append(reserved, c.Observability.Prometheus.Path)
	}
	for i, r := range c.Routes {
		np, _ := table.Prefix(r.Name)
		for _, rs := range reserved {
			if np == rs || strings.HasPrefix(rs, np+"/") && np != "/" || strings.HasPrefix(np, rs+"/") {
				c.bad(p, "routes["+strconv.Itoa(i)+"].path", "path %s overlaps %s, which the server answers itself", strconv.Quote(np), rs)
			}
		}
	}
}

// routeErrors reports the library's route problems at their keys.
func (c *fileConfig) routeErrors(p *problems, err error) {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var re *relay.RouteError
		if !errors.As(e, &re) || re.Index < 0 || re.Index >= len(c.Routes) {
			c.bad(p, "routes", "%s", e.Error())
			continue
		}
		path := c.routeErrorPath(re)
		reason := re.Reason
		if c.fromEnv[path] {
			reason = hideQuoted(reason)
		}
		c.bad(p, path, "%s", reason)
	}
}

// hideQuoted replaces each Go-quoted string in a RouteError's Reason,
// where it quotes the value it is about, for a value that came from the
// environment and so is never echoed.
func hideQuoted(reason string) string {
	var b strings.Builder
	for {
		i := strings.IndexByte(reason, '"')
		if i < 0 {
			return b.String() + reason
		}
		b.WriteString(reason[:i])
		end := len(reason)
		for k := i + 1; k < len(reason); k++ {
			if reason[k] == '\\' {
				k++
			} else if reason[k] == '"' {
				end = k + 1
				break
			}
		}
		b.WriteString("(value from the environment)")
		reason = reason[end:]
	}
}

// routeErrorPath is the key path of the value a RouteError is about,
// such as routes[2].upstreams[0].keys[1]. Fields are the library's
// names; route (build.go) is the conversion this maps back.
func (c *fileConfig) routeErrorPath(e *relay.RouteError) string {
	r := &c.Routes[e.Index]
	at := "routes[" + strconv.Itoa(e.Index) + "]"
	fromEnv := r.AuthEnv != ""
	short := len(r.Upstreams) == 0
	if e.Upstream >= 0 && !short && e.Upstream < len(r.Upstreams) {
		at += ".upstreams[" + strconv.Itoa(e.Upstream) + "]"
		fromEnv = r.Upstreams[e.Upstream].AuthEnv != ""
	}
	switch e.Field {
	case "Prefix":
		return at + ".path"
	case "URL":
		if short {
			return at + ".upstream"
		}
		return at + ".url"
	case "AuthValue", "AuthEnv": // auth_env is resolved before the library sees it
		if fromEnv {
			return at + ".auth_env"
		}
		return at + ".auth_value"
	case "Headers":
		return at + ".headers." + e.Key
	case "NoWebSocket": // WebSocket is one word in the file
		return at + ".no_websocket"
	case "PassHeaders", "Keys":
		return at + "." + snakeCase(e.Field) + "[" + e.Key + "]"
	}
	return at + "." + snakeCase(e.Field) // Name, Kind, MaxAttempts, Timeouts.FirstByte…
}

// snakeCase turns a Go field path into its YAML key path: MaxAttempts is
// max_attempts, Timeouts.FirstByte timeouts.first_byte.
func snakeCase(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if 'A' <= ch && ch <= 'Z' {
			if i > 0 && s[i-1] != '.' {
				b.WriteByte('_')
			}
			ch += 'a' - 'A'
		}
		b.WriteByte(ch)
	}
	return b.String()
}

func (c *fileConfig) validateAuth(p *problems) {
	rl := &c.RateLimit
	if rl.Default < 0 {
		c.bad(p, "rate_limit.default", "cannot be negative")
	}
	if rl.Burst < 0 {
		c.bad(p, "rate_limit.burst", "cannot be negative")
	}
	if rl.TokensPerMinute < 0 {
		c.bad(p, "rate_limit.tokens_per_minute", "cannot be negative")
	}
	if rl.TokenBurst < 0 {
		c.bad(p, "rate_limit.token_burst", "cannot be negative")
	}
	for _, f := range []struct {
		key string
		neg bool
	}{
		{"max_concurrent", rl.MaxConcurrent < 0}, {"max_sessions", rl.MaxSessions < 0},
		{"queue_timeout", rl.QueueTimeout < 0}, {"max_queued", rl.MaxQueued < 0},
	} {
		if f.neg {
			c.bad(p, "rate_limit."+f.key, "cannot be negative")
		}
	}
	if len(c.Auth.APIKeys) == 0 {
		c.bad(p, "auth.api_keys", "at least one client key is required (the relay has no unauthenticated mode)")
	}
	keys := map[string]string{}
	ids := map[string]string{}
	perKey := false
	for i, k := range c.Auth.APIKeys {
		at := "auth.api_keys[" + strconv.Itoa(i) + "]"
		if k.Key == "" {
			c.bad(p, at, "the key is empty")
		} else if first, dup := keys[k.Key]; dup {
			c.bad(p, at, "this key is the same as %s", first)
		} else {
			keys[k.Key] = at
		}
		if k.ID != "" {
			if first, dup := ids[k.ID]; dup {
				c.bad(p, at+".id", "id %s is already used by %s", strconv.Quote(k.ID), first)
			}
			ids[k.ID] = at
		}
		if l := k.Limits; l != nil {
			perKey = true
			if l.RequestsPerMinute < 0 || l.Burst < 0 || l.TokensPerMinute < 0 || l.TokenBurst < 0 ||
				l.MaxConcurrent < 0 || l.MaxSessions < 0 || l.QueueTimeout < 0 || l.MaxQueued < 0 {
				c.bad(p, at+".limits", "limits cannot be negative")
			}
			if !rl.Enabled {
				c.bad(p, at+".limits", "limits are set but rate_limit.enabled is false")
			}
		}
	}
	spend := rl.SpendPerMinute > 0 || rl.SpendPerDay > 0 || rl.SpendPerMonth > 0
	if rl.Enabled && rl.Default == 0 && rl.TokensPerMinute == 0 && !spend && rl.MaxConcurrent == 0 && rl.MaxSessions == 0 && !perKey {
		c.bad(p, "rate_limit.enabled", "rate limiting is enabled but no limit is set (default, tokens_per_minute, a spend_per_* budget, max_concurrent, max_sessions or a key's limits)")
	}
}

func (c *fileConfig) validateStorage(p *problems) {
	s := &c.Storage
	if s.JSONL != nil && s.JSONL.Path == "" {
		c.bad(p, "storage.jsonl.path", "want a file name, or - for standard output")
	}
	if s.Redis != nil && s.Redis.Addr == "" {
		c.bad(p, "storage.redis.addr", "want the Redis address, host:port")
	}
	if s.Redis != nil && s.Redis.MaxLen < 0 {
		c.bad(p, "storage.redis.max_len", "cannot be negative")
	}
	if s.Redis != nil && strings.ContainsAny(s.Redis.Prefix, "{}") {
		c.bad(p, "storage.redis.prefix", "cannot contain { or }")
	}
	if s.ClickHouse != nil && s.ClickHouse.Addr == "" {
		c.bad(p, "storage.clickhouse.addr", "want the ClickHouse native-protocol address, host:port")
	}
	if s.Discard && (s.JSONL != nil || s.Log || s.ClickHouse != nil || s.Redis != nil && s.Redis.Records) {
		c.bad(p, "storage.discard", "discard cannot be combined with a recorder")
	}
	q := &s.Queue
	if q.Size < 0 || q.BatchSize < 0 {
		c.bad(p, "storage.queue", "sizes cannot be negative")
	}
}

func (c *fileConfig) validateObservability(p *problems) {
	if pr := c.Observability.Prometheus; pr.Enabled {
		if !strings.HasPrefix(pr.Path, "/") || pr.Path == "/" {
			c.bad(p, "observability.prometheus.path", "want a path such as /metrics")
		}
		if pr.Path == "/healthz" || pr.Path == "/readyz" {
			c.bad(p, "observability.prometheus.path", "%s is taken by the health checks", pr.Path)
		}
	}
	if a := c.Observability.Prometheus.Addr; a != "" {
		if _, port, err := net.SplitHostPort(a); err != nil || !validPort(port, true) {
			c.bad(p, "observability.prometheus.addr", "want host:port (such as 127.0.0.1:9091)")
		} else if a == c.listenAddr() && port != "0" {
			c.bad(p, "observability.prometheus.addr", "is the main listen address; give another port, or leave addr out to serve metrics there")
		}
		if !c.Observability.Prometheus.Enabled {
			c.bad(p, "observability.prometheus.addr", "is set but prometheus.enabled is false")
		}
	}
	c.validateOTLP(p)
	logKey := c.logKey()
	if c.Observability.Logging != nil && c.has("log") {
		c.bad(p, "observability.logging", "give either log or observability.logging, not both")
	}
	switch strings.ToLower(c.Log.Level) {
	case "debug", "info", "warn", "warning", "error":
	default:
		c.bad(p, logKey+".level", "unknown level %s (want debug, info, warn or error)", c.show(logKey+".level", c.Log.Level))
	}
	switch strings.ToLower(c.Log.Format) {
	case "json", "text":
	default:
		c.bad(p, logKey+".format", "unknown format %s (want json or text)", c.show(logKey+".format", c.Log.Format))
	}
}

// logKey is where the file sets the log settings: log, or the original
// project's observability.logging.
func (c *fileConfig) logKey() string {
	if c.Observability.Logging != nil {
		return "observability.logging"
	}
	return "log"
}
