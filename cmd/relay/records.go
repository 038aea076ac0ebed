package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/streamrelay/relay"
)

// store is one place records go, named for logs and /readyz.
type store struct {
	name string
	rec  relay.Recorder
}

// fanout sends each batch to every store in turn. Unlike
// relay.MultiRecorder it keeps a batch whole for stores that take batches
// (one INSERT, one MULTI/EXEC), so combining stores does not turn a batch
// into a round trip per record. A store's error fails the batch, which the
// relay's queue then retries on all of them: delivery is at least once, and
// request_id identifies duplicates. It is safe for concurrent use when its
// stores are: two configuration generations may write at once while the
// older one drains.
type fanout []store

// Record implements relay.Recorder.
func (f fanout) Record(ctx context.Context, rec relay.Record) error {
	return f.RecordBatch(ctx, []relay.Record{rec})
}

// RecordBatch implements relay.BatchRecorder.
func (f fanout) RecordBatch(ctx context.Context, recs []relay.Record) error {
	var errs []error
	for _, s := range f {
		if err := writeBatch(ctx, s.rec, recs); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
		}
	}
	return errors.Join(errs...)
}

func writeBatch(ctx context.Context, r relay.Recorder, recs []relay.Record) error {
	if br, ok := r.(relay.BatchRecorder); ok {
		return br.RecordBatch(ctx, recs)
	}
	for i := range recs {
		if err := r.Record(ctx, recs[i]); err != nil {
			return err
		}
	}
	return nil
}

// detailRecorder is observability.detailed_logs: one "request" line per
// request at level DEBUG, with every field of the record (the library's
// SlogRecorder). A Record holds no body, no credential and no query string,
// so neither does the line.
func detailRecorder(log *slog.Logger) relay.Recorder {
	return relay.SlogRecorder{Logger: log, Level: slog.LevelDebug, Message: "request"}
}
