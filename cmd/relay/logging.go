package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// logs is the process's one log stream: JSON (or text) lines on stderr
// through a single slog handler, whose level a reload may change. Nothing
// logged by the server, the relay or the drivers carries a credential.
//
// Attribute keys are never repeated on one line: the libraries name their
// own part with "component" (relayredis: "limiter", "recorder"), so the
// loggers handed to them carry no "component" of their own; the drivers'
// loggers, which are leaves, get "component": "go-redis" or
// "clickhouse-go".
type logs struct {
	level *slog.LevelVar
	log   *slog.Logger
	// detail writes observability.detailed_logs' per-request lines, at
	// level DEBUG whatever the configured level.
	detail *slog.Logger
	// always writes the lines an operator must see whatever the level
	// (one per reload), at their own level.
	always *slog.Logger
}

func newLogs(c logConfig, w io.Writer) *logs {
	lv := new(slog.LevelVar)
	lv.Set(parseLevel(c.Level))
	opts := &slog.HandlerOptions{Level: lv}
	var h slog.Handler
	if strings.EqualFold(c.Format, "text") {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	always := slog.New(alwaysEnabled{h})
	return &logs{level: lv, log: slog.New(h), detail: always, always: always}
}

func parseLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "warn", "warning":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// alwaysEnabled passes every record to its handler, whatever the level:
// a handler's Handle does not look at levels, its Logger's Enabled check
// does.
type alwaysEnabled struct{ slog.Handler }

func (alwaysEnabled) Enabled(context.Context, slog.Level) bool { return true }

func (a alwaysEnabled) WithAttrs(attrs []slog.Attr) slog.Handler {
	return alwaysEnabled{a.Handler.WithAttrs(attrs)}
}

func (a alwaysEnabled) WithGroup(name string) slog.Handler {
	return alwaysEnabled{a.Handler.WithGroup(name)}
}

// redisLogger puts go-redis's log lines (plain Printf text such as
// "redis: connection pool: failed to dial after 5 attempts: …") into the
// process's log stream at level WARN, with "component": "go-redis".
// go-redis prints nothing that holds a password.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.Log(ctx, slog.LevelWarn, strings.TrimSpace(fmt.Sprintf(format, v...)))
}

// installRedisLogger routes go-redis's logs through log. go-redis has one
// logger for the whole process (redis.SetLogger), package-level state that
// a library must never set; this program owns its process, so it does,
// once it knows where its logs go. Until then, and for any other go-redis
// user in the process, nothing else would print to stderr.
func installRedisLogger(log *slog.Logger) {
	redis.SetLogger(redisLogger{log.With("component", "go-redis")})
}
