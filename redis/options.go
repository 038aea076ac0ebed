package relayredis

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/streamrelay/relay"
)

// Defaults of the options.
const (
	// DefaultPrefix namespaces keys and the stream when WithPrefix is not
	// given.
	DefaultPrefix = "relay"
	// DefaultTimeout bounds each limiter call and health check when
	// WithTimeout is not given. An admission is one round trip, normally
	// well under a millisecond; a Redis that takes longer than this is
	// treated as down.
	DefaultTimeout = 100 * time.Millisecond
	// DefaultMaxLen is the stream's approximate cap when WithMaxLen is not
	// given. A record takes some 500 bytes in a stream, so this is about
	// 50 MB.
	DefaultMaxLen = 100_000
)

// Option configures a Limiter or a Recorder. Each option says which of the
// two it applies to; the other ignores it.
type Option func(*settings) error

type settings struct {
	prefix   string
	defaults relay.Limits
	timeout  time.Duration
	logger   *slog.Logger
	stream   string
	maxLen   int64
	leaseTTL time.Duration
}

func newSettings(opts []Option) (settings, error) {
	s := settings{prefix: DefaultPrefix, timeout: DefaultTimeout, maxLen: DefaultMaxLen, leaseTTL: DefaultLeaseTTL}
	for _, o := range opts {
		if err := o(&s); err != nil {
			return settings{}, err
		}
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.stream == "" {
		s.stream = s.prefix + ":records"
	}
	return s, nil
}

// WithPrefix namespaces the limiter's keys ("{prefix:tenant}:req") and the
// recorder's default stream ("prefix:records"), so that several
// deployments can share one Redis. Default "relay". The prefix must not be
// empty nor contain '{' or '}', which would break the Cluster hash tag.
// Replicas that share budgets must use the same prefix.
func WithPrefix(p string) Option {
	return func(s *settings) error {
		if p == "" || strings.ContainsAny(p, "{}") {
			return fmt.Errorf("relayredis: prefix %q is empty or contains a brace", p)
		}
		s.prefix = p
		return nil
	}
}

// WithDefaultLimits sets the limiter's per-tenant limits; an Identity's own
// Limits replace them. The zero value, the default, limits nothing (only
// tenants with their own Limits are limited). Limiter only.
//
// Replicas sharing a prefix should use the same defaults: the buckets in
// Redis hold levels, and each replica applies its own rates and bursts to
// them.
func WithDefaultLimits(l relay.Limits) Option {
	return func(s *settings) error {
		if err := validLimits(l); err != nil {
			return err
		}
		s.defaults = l
		return nil
	}
}

// WithTimeout bounds each limiter call (Allow, Settle) and each health
// check (Healthy, of both the limiter and the recorder). Default
// DefaultTimeout. The bound holds whatever the client's own timeouts are.
func WithTimeout(d time.Duration) Option {
	return func(s *settings) error {
		if d <= 0 {
			return fmt.Errorf("relayredis: timeout %v is not positive", d)
		}
		s.timeout = d
		return nil
	}
}

// WithLogger sets where the limiter and recorder log when Redis becomes
// unreachable and when it is back (once per change, not per call). The
// default discards logs. Logs hold Redis errors, never keys or records.
func WithLogger(l *slog.Logger) Option {
	return func(s *settings) error { s.logger = l; return nil }
}

// WithStream names the stream records are appended to. Default
// "<prefix>:records". Recorder only. In a Cluster, the whole stream lives
// in one slot.
func WithStream(key string) Option {
	return func(s *settings) error {
		if key == "" {
			return errors.New("relayredis: empty stream name")
		}
		s.stream = key
		return nil
	}
}

// WithMaxLen caps the stream at about n entries (XADD MAXLEN ~ n): Redis
// trims whole macro nodes, so the stream may briefly hold somewhat more.
// Zero means no cap, and the stream grows until something else trims it.
// Default DefaultMaxLen. Recorder only.
func WithMaxLen(n int64) Option {
	return func(s *settings) error {
		if n < 0 {
			return fmt.Errorf("relayredis: max length %d is negative", n)
		}
		s.maxLen = n
		return nil
	}
}

// WithLeaseTTL sets how long a concurrency lease (relay.Limits
// MaxConcurrent, MaxSessions) lives past its last renewal. Held leases
// are renewed every TTL/3, so it is also how long the slots of a replica
// that crashed stay taken. Default DefaultLeaseTTL; at least 30ms (three
// renewals must fit in it with room for a round trip). Replicas sharing a
// prefix should use the same TTL. Limiter only.
func WithLeaseTTL(d time.Duration) Option {
	return func(s *settings) error {
		if d < 30*time.Millisecond {
			return fmt.Errorf("relayredis: lease TTL %v is under 30ms", d)
		}
		s.leaseTTL = d
		return nil
	}
}

func validLimits(l relay.Limits) error {
	if l.RequestsPerMinute < 0 || l.TokensPerMinute < 0 || l.Burst < 0 || l.TokenBurst < 0 ||
		l.SpendPerMinute < 0 || l.SpendPerDay < 0 || l.SpendPerMonth < 0 {
		return errors.New("relayredis: negative rate limit")
	}
	if l.MaxConcurrent < 0 || l.MaxSessions < 0 || l.MaxQueued < 0 || l.QueueTimeout < 0 {
		return errors.New("relayredis: negative concurrency limit")
	}
	return nil
}
