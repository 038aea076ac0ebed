package relayredis

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/relay"
)

// Recorder appends each relay.Record to a Redis stream as one entry of
// flat fields (see EncodeRecord), trimming the stream to about WithMaxLen
// entries. It implements relay.Recorder, relay.BatchRecorder and
// relay.HealthChecker.
//
// The relay calls it from its AsyncRecorder, never on the request path,
// and retries failed batches with backoff. A batch is one MULTI/EXEC
// round trip, so it is stored whole or not at all; but a batch whose reply
// was lost is stored again on retry, so consumers should treat
// request_id as the key (delivery is at least once).
//
// It is safe for concurrent use. The client is not closed by the
// Recorder.
type Recorder struct {
	client  redis.UniversalClient
	stream  string
	maxLen  int64
	timeout time.Duration
	calls   *caller
}

// NewRecorder returns a Recorder using client, configured by WithStream,
// WithMaxLen, WithPrefix (which names the default stream), WithTimeout
// (for Healthy) and WithLogger. It does not contact Redis.
func NewRecorder(client redis.UniversalClient, opts ...Option) (*Recorder, error) {
	if client == nil {
		return nil, errors.New("relayredis: nil client")
	}
	s, err := newSettings(opts)
	if err != nil {
		return nil, err
	}
	return &Recorder{
		client:  client,
		stream:  s.stream,
		maxLen:  s.maxLen,
		timeout: s.timeout,
		calls:   newCaller(client, "recorder", s.logger),
	}, nil
}

// Stream returns the name of the stream records are appended to.
func (r *Recorder) Stream() string { return r.stream }

// Record implements relay.Recorder with one XADD.
func (r *Recorder) Record(ctx context.Context, rec relay.Record) error {
	return r.RecordBatch(ctx, []relay.Record{rec})
}

// RecordBatch implements relay.BatchRecorder: all the XADDs go in one
// MULTI/EXEC round trip. It honours ctx's deadline whatever the client's
// timeouts.
func (r *Recorder) RecordBatch(ctx context.Context, recs []relay.Record) error {
	if len(recs) == 0 {
		return nil
	}
	_, err := call(r.calls, ctx, 0, func(ctx context.Context) ([]redis.Cmder, error) {
		return r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for i := range recs {
				p.XAdd(ctx, &redis.XAddArgs{
					Stream: r.stream,
					MaxLen: r.maxLen,
					Approx: true,
					Values: EncodeRecord(recs[i]),
				})
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("relayredis: writing %d records: %w", len(recs), err)
	}
	return nil
}

// Healthy implements relay.HealthChecker: it fails while Redis does not
// answer a PING within the timeout. The relay consults it through its
// AsyncRecorder, which also reports failing writes.
func (r *Recorder) Healthy(ctx context.Context) error {
	if err := r.calls.ping(ctx, r.timeout); err != nil {
		return fmt.Errorf("relayredis: %w", err)
	}
	return nil
}
