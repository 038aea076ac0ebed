package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/relay"
	relayclickhouse "github.com/streamrelay/relay/clickhouse"
	relayredis "github.com/streamrelay/relay/redis"
)

// storage is what the storage section opened, once for the life of the
// process: every configuration generation writes to the same stores and
// asks the same limiters, so that a reload loses neither records nor
// rate-limit state. What to close at exit is closed after every
// generation has written its queued records.
type storage struct {
	stores []store
	// memory keeps rate limits in this process; redis, when
	// storage.redis is configured, in Redis, shared by replicas.
	memory *relay.MemoryLimiter
	redis  relay.Limiter
	// checks are the stores /readyz asks, by name.
	checks  []check
	closers []func() error
	names   []string // for the startup log
}

// check is a store's health check, named for /readyz.
type check struct {
	name string
	hc   relay.HealthChecker
}

// limiter is the limiter for c: nil when rate limiting is off, Redis's when
// storage.redis is configured, else the in-memory one.
func (s *storage) limiter(c *fileConfig) relay.Limiter {
	switch {
	case !c.RateLimit.Enabled:
		return nil
	case s.redis != nil:
		return s.redis
	default:
		return s.memory
	}
}

// keySlots is the store of the upstream keys' in-flight slots
// (max_in_flight): Redis's limiter when it limits (rate_limit.enabled
// with storage.redis), so that replicas share one cap per key; nil, per
// process, otherwise.
func (s *storage) keySlots(c *fileConfig) relay.KeySlotStore {
	if ks, ok := s.limiter(c).(relay.KeySlotStore); ok && s.redis != nil {
		return ks
	}
	return nil
}

// close releases files and connections, reporting the first error.
func (s *storage) close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	return errors.Join(errs...)
}

// startupProbe bounds the checks made at start (a Redis ping, a ClickHouse
// CREATE TABLE): a backend that is down is reported but does not stop the
// relay, since records are retried and then dropped, never waited for.
const startupProbe = 5 * time.Second

// openStorage opens the configured recorders. With none configured,
// records go to stdout as JSON lines (logs go to stderr, so the two do not
// mix); storage.discard turns records off.
func openStorage(ctx context.Context, c *fileConfig, stdout io.Writer, log *slog.Logger) (_ *storage, err error) {
	st := &storage{memory: relay.NewMemoryLimiter(relay.Limits{})}
	defer func() {
		if err != nil {
			_ = st.close()
		}
	}()
	sc := &c.Storage
	if j := sc.JSONL; j != nil {
		if j.Path == "-" {
			st.stores = append(st.stores, store{"jsonl", relay.NewJSONLinesRecorder(stdout)})
			st.names = append(st.names, "jsonl:stdout")
		} else {
			f, err := os.OpenFile(j.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: storage.jsonl.path: %w", c.file, c.line("storage.jsonl.path"), err)
			}
			st.closers = append(st.closers, f.Close)
			st.stores = append(st.stores, store{"jsonl", relay.NewJSONLinesRecorder(f)})
			st.names = append(st.names, "jsonl:"+j.Path)
		}
	}
	if sc.Log {
		st.stores = append(st.stores, store{"log", relay.SlogRecorder{Logger: log}})
		st.names = append(st.names, "log")
	}
	if r := sc.Redis; r != nil {
		if err := st.openRedis(ctx, c, r, log); err != nil {
			return nil, err
		}
	}
	if ch := sc.ClickHouse; ch != nil {
		if err := st.openClickHouse(ctx, c, ch, log); err != nil {
			return nil, err
		}
	}
	if len(st.stores) == 0 && !sc.Discard {
		st.stores = append(st.stores, store{"jsonl", relay.NewJSONLinesRecorder(stdout)})
		st.names = append(st.names, "jsonl:stdout")
	}
	return st, nil
}

// openRedis connects the Redis limiter (used while rate_limit.enabled) and
// the Redis Streams recorder (unless records: false). Replicas pointed at
// the same Redis share their budgets. The limiter is made whether or not
// rate limiting is on now, so that a reload can turn it on; it does not
// contact Redis until asked.
func (st *storage) openRedis(ctx context.Context, c *fileConfig, r *redisConfig, log *slog.Logger) error {
	installRedisLogger(log)
	client := redis.NewClient(&redis.Options{Addr: r.Addr, Username: r.Username, Password: r.Password, DB: r.DB,
		// Fail fast: the limiter bounds each call (and fails open), and
		// record batches are retried with backoff by the relay's queue, so
		// the driver's own retries (5 dials per try, 4 tries) would only
		// stretch a Redis outage into seconds per batch. One retry still
		// covers a pooled connection that Redis closed.
		DialerRetries: 2,
		MaxRetries:    1,
	})
	st.closers = append(st.closers, client.Close)
	// relayredis names its part ("component": "limiter" or "recorder"), so
	// its logger carries no component of its own.
	opts := []relayredis.Option{relayredis.WithLogger(log)}
	if r.Prefix != "" {
		opts = append(opts, relayredis.WithPrefix(r.Prefix))
	}
	wrap := func(key string, err error) error {
		return fmt.Errorf("%s:%d: %s: %w", c.file, c.line(key), key, err)
	}
	// Limits come with each key (relayOptions gives every key the
	// defaults it has no limits of its own for), so that a reload changes
	// them; the limiter's own defaults stay zero.
	l, err := relayredis.NewLimiter(client, opts...)
	if err != nil {
		return wrap("storage.redis", err)
	}
	st.redis = l
	var health relay.HealthChecker = l
	if r.Records {
		ropts := opts
		if r.Stream != "" {
			ropts = append(ropts, relayredis.WithStream(r.Stream))
		}
		if c.has("storage.redis.max_len") {
			ropts = append(ropts, relayredis.WithMaxLen(r.MaxLen))
		}
		rec, err := relayredis.NewRecorder(client, ropts...)
		if err != nil {
			return wrap("storage.redis", err)
		}
		name := "redis:" + rec.Stream()
		var sr relay.Recorder = rec
		if r.TTL > 0 {
			sr = newExpiringStream(rec, client, time.Duration(r.TTL), log)
			name += "(ttl " + time.Duration(r.TTL).String() + ")"
		}
		st.stores = append(st.stores, store{"redis", sr})
		st.names = append(st.names, name)
		health = rec
	}
	st.checks = append(st.checks, check{"redis", health})
	pctx, cancel := context.WithTimeout(ctx, startupProbe)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		// go-redis errors name the address, never the password.
		log.Warn("redis is not reachable yet; the limiter fails open and records are retried",
			"addr", r.Addr, "error", err.Error())
	}
	return nil
}

// openClickHouse connects the ClickHouse recorder and creates its table.
func (st *storage) openClickHouse(ctx context.Context, c *fileConfig, ch *clickhouseConfig, log *slog.Logger) error {
	o := relayclickhouse.DefaultOptions(ch.Addr)
	o.Auth = clickhouse.Auth{Database: ch.Database, Username: ch.Username, Password: ch.Password}
	// The driver logs through slog: into the one log stream, as a leaf.
	o.Logger = log.With("component", "clickhouse-go")
	conn, err := clickhouse.Open(o)
	if err != nil {
		return fmt.Errorf("%s:%d: storage.clickhouse: %w", c.file, c.line("storage.clickhouse"), err)
	}
	st.closers = append(st.closers, conn.Close)
	rec, err := relayclickhouse.New(conn, ch.Table)
	if err != nil {
		return fmt.Errorf("%s:%d: storage.clickhouse.table: %w", c.file, c.line("storage.clickhouse.table"), err)
	}
	if ch.CreateTable {
		cctx, cancel := context.WithTimeout(ctx, startupProbe)
		defer cancel()
		if err := relayclickhouse.CreateTable(cctx, conn, ch.Table); err != nil {
			log.Warn("clickhouse: could not create the records table; records are retried and then dropped",
				"addr", ch.Addr, "table", ch.Table, "error", err.Error())
		}
	}
	var sr relay.Recorder = rec
	name := "clickhouse:" + ch.Table
	if ch.Async {
		sr = newAsyncInserts(rec, conn, log)
		name += "(async inserts)"
	}
	st.stores = append(st.stores, store{"clickhouse", sr})
	st.checks = append(st.checks, check{"clickhouse", rec})
	st.names = append(st.names, name)
	return nil
}

// limits are the default per-tenant limits of the rate_limit section.
func (r rateLimitConfig) limits() relay.Limits {
	return relay.Limits{RequestsPerMinute: r.Default, Burst: r.Burst,
		TokensPerMinute: r.TokensPerMinute, TokenBurst: r.TokenBurst,
		SpendPerMinute: int64(r.SpendPerMinute), SpendPerDay: int64(r.SpendPerDay),
		SpendPerMonth: int64(r.SpendPerMonth),
		MaxConcurrent: r.MaxConcurrent, MaxSessions: r.MaxSessions,
		QueueTimeout: time.Duration(r.QueueTimeout), MaxQueued: r.MaxQueued}
}
