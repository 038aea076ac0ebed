package main

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/relay"
	relayredis "github.com/streamrelay/relay/redis"
)

// expiringStream is storage.redis.ttl, the original project's record
// lifetime: after each batch is appended, entries older than ttl are
// trimmed from the stream (XTRIM MINID) and the stream is set to expire
// ttl after this last write (PEXPIRE), so records live about ttl whatever
// the traffic. Age is measured by Redis's own clock, the one its entry ids
// come from. XTRIM MINID needs Redis 6.2 or later.
//
// The trim is a second round trip after the append has succeeded; a failed
// trim is logged (once per failing spell), never retried with the batch,
// so that it cannot duplicate records.
type expiringStream struct {
	*relayredis.Recorder
	client  redis.UniversalClient
	ttl     time.Duration
	log     *slog.Logger
	failing atomic.Bool
}

// trimScript trims by age and renews the stream's expiry in one call. TIME
// is Redis's clock; replicate_commands lets a script write after reading
// it on Redis before 5 (a no-op since).
var trimScript = redis.NewScript(`
pcall(redis.replicate_commands)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('XTRIM', KEYS[1], 'MINID', tostring(now - ttl))
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
`)

func newExpiringStream(rec *relayredis.Recorder, client redis.UniversalClient, ttl time.Duration, log *slog.Logger) *expiringStream {
	return &expiringStream{Recorder: rec, client: client, ttl: ttl, log: log}
}

// Record implements relay.Recorder.
func (e *expiringStream) Record(ctx context.Context, rec relay.Record) error {
	return e.RecordBatch(ctx, []relay.Record{rec})
}

// RecordBatch implements relay.BatchRecorder.
func (e *expiringStream) RecordBatch(ctx context.Context, recs []relay.Record) error {
	if err := e.Recorder.RecordBatch(ctx, recs); err != nil {
		return err
	}
	e.trim(ctx)
	return nil
}

// trim applies the ttl to the stream.
func (e *expiringStream) trim(ctx context.Context) {
	ms := strconv.FormatInt(e.ttl.Milliseconds(), 10)
	err := trimScript.Run(ctx, e.client, []string{e.Stream()}, ms).Err()
	switch {
	case err != nil && !e.failing.Swap(true):
		e.log.Warn("redis: trimming records by storage.redis.ttl failed (XTRIM MINID needs Redis 6.2+)",
			"stream", e.Stream(), "error", err.Error())
	case err == nil && e.failing.Swap(false):
		e.log.Info("redis: trimming records by storage.redis.ttl works again", "stream", e.Stream())
	}
}
