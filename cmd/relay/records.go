package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

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
// into a round trip per record.
//
// A store's error fails the batch, which the relay's queue then retries;
// fanout remembers which stores already took the batch and retries it on
// the others only, so that one store down (ClickHouse, say) does not write
// the batch to Redis and to detailed_logs again on every retry. A batch
// exhausting its retries is counted in relay_records_dropped_total
// although the stores that took it keep it: the count is of records that
// at least one store lacks, and the error logged with each failed write
// names the store. Delivery to each store is at least once (a write that
// fails after storing is retried), and request_id identifies duplicates.
//
// The relay's queue has one worker, which retries a batch before it takes
// the next, so fanout tracks one batch. It is safe for concurrent use when
// its stores are.
type fanout struct {
	stores []store

	mu sync.Mutex
	// pending is the batch last failed on some store, and done which
	// stores took it.
	pending batchID
	done    []bool
}

// batchID tells a retried batch from the next one, which the queue may
// build in the same buffer: the same slice (first element and length)
// holding the same first and last records.
type batchID struct {
	first     *relay.Record
	n         int
	firstID   string
	lastID    string
	firstTime time.Time
	lastTime  time.Time
}

func idOf(recs []relay.Record) batchID {
	if len(recs) == 0 {
		return batchID{}
	}
	first, last := &recs[0], &recs[len(recs)-1]
	return batchID{first, len(recs), first.RequestID, last.RequestID, first.Start, last.Start}
}

func newFanout(stores []store) *fanout { return &fanout{stores: stores} }

// Record implements relay.Recorder.
func (f *fanout) Record(ctx context.Context, rec relay.Record) error {
	return f.RecordBatch(ctx, []relay.Record{rec})
}

// RecordBatch implements relay.BatchRecorder.
func (f *fanout) RecordBatch(ctx context.Context, recs []relay.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := idOf(recs)
	if id != f.pending || f.done == nil {
		f.pending, f.done = id, make([]bool, len(f.stores))
	}
	var errs []error
	for i, s := range f.stores {
		if f.done[i] {
			continue
		}
		if err := writeBatch(ctx, s.rec, recs); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
			continue
		}
		f.done[i] = true
	}
	if len(errs) == 0 {
		f.pending, f.done = batchID{}, nil
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
