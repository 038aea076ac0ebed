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

// storage is what the storage section opened: the recorders, the Redis
// limiter when rate limits are shared through Redis, and what to close at
// exit, after the relay has written its queued records.
type storage struct {
	recorders []relay.Recorder
	limiter   relay.Limiter // nil: limits, if any, are kept in memory
	closers   []func() error
	names     []string // for the startup log
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
	st := &storage{}
	defer func() {
		if err != nil {
			_ = st.close()
		}
	}()
	sc := &c.Storage
	if j := sc.JSONL; j != nil {
		if j.Path == "-" {
			st.recorders = append(st.recorders, relay.NewJSONLinesRecorder(stdout))
			st.names = append(st.names, "jsonl:stdout")
		} else {
			f, err := os.OpenFile(j.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: storage.jsonl.path: %w", c.file, c.line("storage.jsonl.path"), err)
			}
			st.closers = append(st.closers, f.Close)
			st.recorders = append(st.recorders, relay.NewJSONLinesRecorder(f))
			st.names = append(st.names, "jsonl:"+j.Path)
		}
	}
	if sc.Log {
		st.recorders = append(st.recorders, relay.SlogRecorder{Logger: log})
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
	if len(st.recorders) == 0 && !sc.Discard {
		st.recorders = append(st.recorders, relay.NewJSONLinesRecorder(stdout))
		st.names = append(st.names, "jsonl:stdout")
	}
	return st, nil
}

// openRedis connects the Redis limiter (when rate limiting is enabled) and
// the Redis Streams recorder (unless records: false). Replicas pointed at
// the same Redis share their budgets.
func (st *storage) openRedis(ctx context.Context, c *fileConfig, r *redisConfig, log *slog.Logger) error {
	client := redis.NewClient(&redis.Options{Addr: r.Addr, Username: r.Username, Password: r.Password, DB: r.DB})
	st.closers = append(st.closers, client.Close)
	opts := []relayredis.Option{relayredis.WithLogger(log.With("component", "redis"))}
	if r.Prefix != "" {
		opts = append(opts, relayredis.WithPrefix(r.Prefix))
	}
	wrap := func(key string, err error) error {
		return fmt.Errorf("%s:%d: %s: %w", c.file, c.line(key), key, err)
	}
	if c.RateLimit.Enabled {
		l, err := relayredis.NewLimiter(client, append(opts, relayredis.WithDefaultLimits(c.RateLimit.limits()))...)
		if err != nil {
			return wrap("storage.redis", err)
		}
		st.limiter = l
	}
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
		st.recorders = append(st.recorders, rec)
		st.names = append(st.names, "redis:"+rec.Stream())
	}
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
	st.recorders = append(st.recorders, rec)
	st.names = append(st.names, "clickhouse:"+ch.Table)
	return nil
}

// limits are the default per-tenant limits of the rate_limit section.
func (r rateLimitConfig) limits() relay.Limits {
	return relay.Limits{RequestsPerMinute: r.Default, Burst: r.Burst,
		TokensPerMinute: r.TokensPerMinute, TokenBurst: r.TokenBurst}
}
