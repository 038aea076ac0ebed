package main

import (
	"fmt"
	"os"
	"time"

	"github.com/streamrelay/relay"
)

// fileConfig is the YAML configuration file. Field tags name the keys; the
// decoder (decode.go) refuses any key not listed here. Zero values are
// replaced by defaultConfig's before decoding, so a key that is absent
// keeps its default.
type fileConfig struct {
	Server        serverConfig        `yaml:"server"`
	Routes        []routeConfig       `yaml:"routes"`
	RateLimit     rateLimitConfig     `yaml:"rate_limit"`
	Auth          authConfig          `yaml:"auth"`
	Storage       storageConfig       `yaml:"storage"`
	Observability observabilityConfig `yaml:"observability"`
	Log           logConfig           `yaml:"log"`
	// Models get their own metric label; others are labelled "other".
	Models []string `yaml:"models"`
	// Prices names a price file (prices.go; relative to this file's
	// directory) that prices every request's usage. No prices: costs are
	// recorded as unknown.
	Prices string `yaml:"prices"`

	// prices is the table read from Prices, nil without it.
	prices *relay.PriceTable

	// lines maps a key path ("routes[0].kind") to the line it is on, so that
	// validation can point at the line of a bad value.
	lines map[string]int
	// fromEnv holds the paths whose values came from ${VAR} expansion; such
	// values are never echoed in messages.
	fromEnv map[string]bool
	// file names the configuration in messages.
	file string
}

type serverConfig struct {
	// Host is the interface to listen on; empty means all of them.
	Host string `yaml:"host"`
	// Addr is a full listen address (host:port); it replaces Host and Port.
	Addr string `yaml:"addr"`
	Port int    `yaml:"port"`
	// Timeout bounds the wait for an upstream's response headers. It is the
	// routes' default Timeouts.FirstByte: it bounds a non-streamed request
	// as a whole (its headers come when it is done) but never cuts a stream
	// that has started.
	Timeout            duration `yaml:"timeout"`
	MaxBodySize        int64    `yaml:"max_body_size"`
	ShutdownTimeout    duration `yaml:"shutdown_timeout"`
	ReadHeaderTimeout  duration `yaml:"read_header_timeout"`
	KeepaliveTimeout   duration `yaml:"keepalive_timeout"`
	ClientWriteTimeout duration `yaml:"client_write_timeout"`
	// MaxHeaderBytes bounds a request's header (http.Server.MaxHeaderBytes;
	// HTTP/2 header lists too).
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// Request-body and observation bounds (the library's Limits and
	// abuse); unset keys keep the library's defaults.
	BodyMinRate       int64    `yaml:"body_min_rate"`
	BodyGrace         duration `yaml:"body_grace"`
	BodyTimeout       duration `yaml:"body_timeout"`
	BodyBudget        int64    `yaml:"body_budget"`
	BodyTenantBudget  int64    `yaml:"body_tenant_budget"`
	RefusalMemo       duration `yaml:"refusal_memo"`
	ObservationBudget int64    `yaml:"observation_budget"`
	Methods           []string `yaml:"methods"`
	// DrainOnClientGone keeps reading an upstream this long after its
	// client left mid-stream, for the provider's final usage (metering).
	DrainOnClientGone duration `yaml:"drain_on_client_gone"`
	// TLS, when present, serves HTTPS (and HTTP/2) on the listen address.
	TLS *tlsConfig `yaml:"tls"`
	// H2C serves HTTP/2 without TLS (prior knowledge), for a proxy in front
	// that speaks it.
	H2C bool `yaml:"h2c"`
	// WatchInterval re-reads the configuration file this often and reloads
	// it when its content changed; 0 reloads on SIGHUP only.
	WatchInterval duration `yaml:"watch_interval"`
}

type tlsConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

type routeConfig struct {
	Name          string            `yaml:"name"`
	Path          string            `yaml:"path"`
	StripPrefix   bool              `yaml:"strip_prefix"`
	RewritePrefix string            `yaml:"rewrite_prefix"`
	Upstream      string            `yaml:"upstream"`
	AuthHeader    string            `yaml:"auth_header"`
	AuthEnv       string            `yaml:"auth_env"`
	AuthValue     string            `yaml:"auth_value"`
	Upstreams     []upstreamConfig  `yaml:"upstreams"`
	Kind          string            `yaml:"kind"`
	Provider      string            `yaml:"provider"`
	Headers       map[string]string `yaml:"headers"`
	Timeouts      timeoutsConfig    `yaml:"timeouts"`
	MaxAttempts   int               `yaml:"max_attempts"`
	Backoff       backoffConfig     `yaml:"backoff"`
	PassHeaders   []string          `yaml:"pass_headers"`
	// NoFirstContentHold, KeepAlive and NoWebSocket are relay.Route's.
	NoFirstContentHold bool     `yaml:"no_first_content_hold"`
	KeepAlive          duration `yaml:"keep_alive"`
	NoWebSocket        bool     `yaml:"no_websocket"`
	// QueueTimeout is relay.Route's: the wait for a free key when every
	// key is at its upstream's max_in_flight.
	QueueTimeout duration `yaml:"queue_timeout"`
}

type backoffConfig struct {
	Base duration `yaml:"base"`
	Max  duration `yaml:"max"`
}

type upstreamConfig struct {
	Name       string   `yaml:"name"`
	URL        string   `yaml:"url"`
	AuthHeader string   `yaml:"auth_header"`
	AuthEnv    string   `yaml:"auth_env"`
	AuthValue  string   `yaml:"auth_value"`
	Keys       []string `yaml:"keys"`
	Weight     int      `yaml:"weight"`
	// MaxInFlight is relay.Upstream's: requests in flight per key.
	MaxInFlight int `yaml:"max_in_flight"`
}

type timeoutsConfig struct {
	Connect    duration `yaml:"connect"`
	FirstByte  duration `yaml:"first_byte"`
	FirstToken duration `yaml:"first_token"`
	Idle       duration `yaml:"idle"`
	Total      duration `yaml:"total"`
}

type rateLimitConfig struct {
	Enabled bool `yaml:"enabled"`
	// Default is the requests per minute of each tenant.
	Default         float64 `yaml:"default"`
	Burst           int     `yaml:"burst"`
	TokensPerMinute int64   `yaml:"tokens_per_minute"`
	TokenBurst      int64   `yaml:"token_burst"`
	// Spend budgets per UTC calendar window, in currency units ("10.00").
	SpendPerMinute money `yaml:"spend_per_minute"`
	SpendPerDay    money `yaml:"spend_per_day"`
	SpendPerMonth  money `yaml:"spend_per_month"`
	FailOpen       bool  `yaml:"fail_open"`
	// The concurrency caps of relay.Limits.
	MaxConcurrent int      `yaml:"max_concurrent"`
	MaxSessions   int      `yaml:"max_sessions"`
	QueueTimeout  duration `yaml:"queue_timeout"`
	MaxQueued     int      `yaml:"max_queued"`
}

type authConfig struct {
	APIKeys []apiKeyConfig `yaml:"api_keys"`
}

// apiKeyConfig is a client key: a plain string, or an object.
type apiKeyConfig struct {
	Key    string            `yaml:"key"`
	ID     string            `yaml:"id"`
	Tenant string            `yaml:"tenant"`
	Limits *limitsConfig     `yaml:"limits"`
	Labels map[string]string `yaml:"labels"`
}

// fromScalar lets a key be written as a bare string.
func (k *apiKeyConfig) fromScalar(s string) { k.Key = s }

type limitsConfig struct {
	RequestsPerMinute float64  `yaml:"requests_per_minute"`
	Burst             int      `yaml:"burst"`
	TokensPerMinute   int64    `yaml:"tokens_per_minute"`
	TokenBurst        int64    `yaml:"token_burst"`
	SpendPerMinute    money    `yaml:"spend_per_minute"`
	SpendPerDay       money    `yaml:"spend_per_day"`
	SpendPerMonth     money    `yaml:"spend_per_month"`
	MaxConcurrent     int      `yaml:"max_concurrent"`
	MaxSessions       int      `yaml:"max_sessions"`
	QueueTimeout      duration `yaml:"queue_timeout"`
	MaxQueued         int      `yaml:"max_queued"`
}

type storageConfig struct {
	JSONL      *jsonlConfig      `yaml:"jsonl"`
	Log        bool              `yaml:"log"`
	Discard    bool              `yaml:"discard"`
	Redis      *redisConfig      `yaml:"redis"`
	ClickHouse *clickhouseConfig `yaml:"clickhouse"`
	Queue      queueConfig       `yaml:"queue"`
}

type jsonlConfig struct {
	// Path is a file to append to, or "-" for standard output.
	Path string `yaml:"path"`
}

type redisConfig struct {
	Addr     string `yaml:"addr"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	DB       int    `yaml:"db"`
	// Records says whether records go to a Redis stream. Default true.
	Records bool `yaml:"records"`
	// Stream names that stream; empty means the recorder's default.
	Stream string `yaml:"stream"`
	// MaxLen caps the stream's length (approximately); 0 means the
	// recorder's default.
	MaxLen int64 `yaml:"max_len"`
	// Prefix namespaces the limiter's keys and the default stream name;
	// empty means the module's default ("relay").
	Prefix string `yaml:"prefix"`
	// TTL is how long records stay in the stream (the original project's
	// key: records older than this are trimmed at each write, and the
	// stream expires when nothing was written for this long); 0 keeps
	// them until max_len trims them. A bare number is seconds.
	TTL seconds `yaml:"ttl"`
}

type clickhouseConfig struct {
	Addr     string `yaml:"addr"`
	Database string `yaml:"database"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// Table is the table records go to. Default "relay_requests".
	Table string `yaml:"table"`
	// CreateTable creates the table at start unless it exists. Default
	// true.
	CreateTable bool `yaml:"create_table"`
	// Async asks ClickHouse for asynchronous inserts (async_insert=1,
	// wait_for_async_insert=1) when the server has them. Records are
	// batched off the request path either way.
	Async bool `yaml:"async"`
}

type queueConfig struct {
	Size          int      `yaml:"size"`
	BatchSize     int      `yaml:"batch_size"`
	FlushInterval duration `yaml:"flush_interval"`
	WriteTimeout  duration `yaml:"write_timeout"`
	MaxRetries    int      `yaml:"max_retries"`
	MaxBytes      int64    `yaml:"max_bytes"`
}

type observabilityConfig struct {
	Prometheus prometheusConfig `yaml:"prometheus"`
	// Logging is the original project's place for log settings; it is
	// the same as the top-level log (give one of them).
	Logging *logConfig `yaml:"logging"`
	// DetailedLogs logs one line per request (metadata only) at level
	// DEBUG, whatever the log level.
	DetailedLogs bool `yaml:"detailed_logs"`
	// OTLP exports OpenTelemetry traces and metrics (otlp.go); off by
	// default.
	OTLP otlpConfig `yaml:"otlp"`
}

type prometheusConfig struct {
	Enabled bool   `yaml:"enabled"`
	Path    string `yaml:"path"`
	// Addr, when set, serves the metrics (and /healthz and /readyz) on a
	// listener of their own instead of the main one.
	Addr string `yaml:"addr"`
}

type logConfig struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json or text.
	Format string `yaml:"format"`
}

// duration is a time.Duration written as Go does ("300s", "1m30s").
type duration time.Duration

// seconds is a time.Duration written as Go does or as a bare whole number
// of seconds ("3600"), as the original project wrote its TTL.
type seconds time.Duration

// Defaults, in one place so that the README's table can be checked
// against them.
const (
	defaultPort               = 8080
	defaultMaxBodySize        = 10 << 20
	defaultShutdownTimeout    = 30 * time.Second
	defaultReadHeaderTimeout  = 10 * time.Second
	defaultKeepaliveTimeout   = 2 * time.Minute
	defaultClientWriteTimeout = 30 * time.Second
	defaultMaxHeaderBytes     = 64 << 10
	defaultMetricsPath        = "/metrics"
)

// defaultConfig is the configuration an empty file would give (less the
// routes and keys, which have no defaults).
func defaultConfig() fileConfig {
	return fileConfig{
		Server: serverConfig{
			Port:               defaultPort,
			MaxBodySize:        defaultMaxBodySize,
			ShutdownTimeout:    duration(defaultShutdownTimeout),
			ReadHeaderTimeout:  duration(defaultReadHeaderTimeout),
			KeepaliveTimeout:   duration(defaultKeepaliveTimeout),
			ClientWriteTimeout: duration(defaultClientWriteTimeout),
			MaxHeaderBytes:     defaultMaxHeaderBytes,
		},
		RateLimit:     rateLimitConfig{FailOpen: true},
		Observability: observabilityConfig{Prometheus: prometheusConfig{Enabled: true, Path: defaultMetricsPath}},
		Log:           logConfig{Level: "info", Format: "json"},
	}
}

// defaultsFor fills in the defaults of optional sections that exist only
// when written (pointers), after decoding.
func (c *fileConfig) defaultsFor() {
	if l := c.Observability.Logging; l != nil {
		// observability.logging stands for log; validate refuses both.
		if c.has("observability.logging.level") {
			c.Log.Level = l.Level
		}
		if c.has("observability.logging.format") {
			c.Log.Format = l.Format
		}
	}
	if r := c.Storage.Redis; r != nil && !c.has("storage.redis.records") {
		r.Records = true
	}
	if ch := c.Storage.ClickHouse; ch != nil {
		if ch.Table == "" {
			ch.Table = "relay_requests"
		}
		if !c.has("storage.clickhouse.create_table") {
			ch.CreateTable = true
		}
	}
}

// has reports whether the file set the key at path.
func (c *fileConfig) has(path string) bool {
	_, ok := c.lines[path]
	return ok
}

// loadConfig reads, decodes and validates a configuration file. getenv
// resolves ${VAR} references and auth_env names.
func loadConfig(path string, getenv func(string) (string, bool)) (*fileConfig, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	return parseConfig(src, path, getenv)
}

// parseConfig decodes and validates a configuration. Every error names
// the file, the line and the key, and none quotes a secret.
func parseConfig(src []byte, name string, getenv func(string) (string, bool)) (*fileConfig, error) {
	c := defaultConfig()
	c.file = name
	if err := decodeYAML(src, name, &c, getenv); err != nil {
		return nil, err
	}
	c.defaultsFor()
	if err := c.validate(getenv); err != nil {
		return nil, err
	}
	if c.Prices != "" {
		t, err := loadPrices(pricesPath(name, c.Prices))
		if err != nil {
			return nil, err
		}
		c.prices = t
	}
	return &c, nil
}
