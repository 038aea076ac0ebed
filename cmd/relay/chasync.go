package main

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/streamrelay/relay"
	relayclickhouse "github.com/streamrelay/relay/clickhouse"
)

// asyncInserts is storage.clickhouse.async: true. Each batch INSERT asks
// the server for an asynchronous insert (async_insert=1, and
// wait_for_async_insert=1 so that a batch is acknowledged only once
// stored, keeping retries meaningful). The settings travel with each
// insert, not the connection, so that the startup CREATE TABLE and
// readiness pings work on any server.
//
// Servers before 21.11 do not know async_insert and would refuse every
// insert that names it: the first time the server answers, the recorder
// asks system.settings whether it has the setting, and if not, logs so
// and inserts without it.
type asyncInserts struct {
	*relayclickhouse.Recorder
	conn driver.Conn
	log  *slog.Logger
	// state: 0 not known yet, 1 the server has async inserts, 2 it has not.
	state atomic.Int32
}

// asyncInsertSettings ask the server to buffer inserts and answer once
// they are written (a new map each time: settings maps are mutable).
func asyncInsertSettings() clickhouse.Settings {
	return clickhouse.Settings{"async_insert": 1, "wait_for_async_insert": 1}
}

func newAsyncInserts(rec *relayclickhouse.Recorder, conn driver.Conn, log *slog.Logger) *asyncInserts {
	return &asyncInserts{Recorder: rec, conn: conn, log: log}
}

// Record implements relay.Recorder.
func (a *asyncInserts) Record(ctx context.Context, rec relay.Record) error {
	return a.RecordBatch(ctx, []relay.Record{rec})
}

// RecordBatch implements relay.BatchRecorder.
func (a *asyncInserts) RecordBatch(ctx context.Context, recs []relay.Record) error {
	if a.supported(ctx) {
		ctx = clickhouse.Context(ctx, clickhouse.WithSettings(asyncInsertSettings()))
	}
	return a.Recorder.RecordBatch(ctx, recs)
}

// supported reports whether the server has async inserts, asking it once.
// When it cannot tell (the server is down), it says no for this batch,
// which then fails on its own account, and asks again next time.
func (a *asyncInserts) supported(ctx context.Context) bool {
	switch a.state.Load() {
	case 1:
		return true
	case 2:
		return false
	}
	var n uint64
	if err := a.conn.QueryRow(ctx, "SELECT count() FROM system.settings WHERE name = 'async_insert'").Scan(&n); err != nil {
		return false
	}
	if n == 0 {
		if a.state.CompareAndSwap(0, 2) {
			a.log.Warn("clickhouse: the server has no asynchronous inserts (ClickHouse 21.11+); storage.clickhouse.async is ignored and records are inserted in the relay's own batches")
		}
		return false
	}
	a.state.Store(1)
	return true
}
