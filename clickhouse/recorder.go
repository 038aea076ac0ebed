// Package relayclickhouse stores the relay's Records in ClickHouse, over
// the native protocol, with one batched insert per batch of records.
//
// Wire it in with relay.WithRecorder: the relay wraps it in an
// AsyncRecorder, so that inserts happen off the request path, in batches,
// with retries, and a slow or dead ClickHouse never slows a stream (records
// that cannot wait are dropped and counted in relay_records_dropped_total).
//
//	conn, err := relayclickhouse.Open("127.0.0.1:9000")
//	...
//	err = relayclickhouse.CreateTable(ctx, conn, "relay_requests")
//	rec, err := relayclickhouse.New(conn, "relay_requests")
//	r, err := relay.New(..., relay.WithRecorder(rec))
//
// The table layout (see CreateTable and the README) works on ClickHouse
// 18.16 and on current versions alike.
package relayclickhouse

import (
	"context"
	"errors"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/streamrelay/relay"
)

// Recorder writes Records to a ClickHouse table made by CreateTable. It
// implements relay.BatchRecorder and relay.HealthChecker.
//
// It holds no state but the connection, so it is safe for concurrent use,
// and it reconnects as the connection pool does: a connection that failed
// is discarded and the next write dials anew, so writes succeed again as
// soon as ClickHouse is back. Every call honours its ctx: the relay's
// AsyncRecorder bounds each batch with its WriteTimeout and cancels it on
// shutdown; dialing is bounded by the connection's DialTimeout, which
// should be shorter than that (DefaultOptions sets 5s).
//
// A batch is one INSERT, sent as one block, so a failed write stores
// nothing and can be retried whole. A write whose acknowledgement is lost
// after ClickHouse stored it is stored twice when retried: delivery is at
// least once, and request_id identifies duplicates.
type Recorder struct {
	conn   driver.Conn
	table  string // quoted
	insert string
}

// New returns a Recorder inserting into table (a name or database.name,
// letters, digits and underscores) over conn. The caller owns conn: its
// options (addresses, credentials, TLS, pool sizes, timeouts) and closing
// it, after the relay's Shutdown has written what was queued. New does not
// contact the server or create the table; see CreateTable.
func New(conn driver.Conn, table string) (*Recorder, error) {
	if conn == nil {
		return nil, errors.New("relayclickhouse: nil connection")
	}
	q, err := quoteTable(table)
	if err != nil {
		return nil, err
	}
	return &Recorder{conn: conn, table: q, insert: "INSERT INTO " + q + " (" + insertColumns + ")"}, nil
}

// Record implements relay.Recorder by inserting a batch of one. The relay
// calls RecordBatch instead.
func (r *Recorder) Record(ctx context.Context, rec relay.Record) error {
	return r.RecordBatch(ctx, []relay.Record{rec})
}

// RecordBatch implements relay.BatchRecorder: it inserts recs with one
// INSERT. An empty batch is a no-op. Errors name the table, never a
// credential.
func (r *Recorder) RecordBatch(ctx context.Context, recs []relay.Record) error {
	if len(recs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b, err := r.conn.PrepareBatch(ctx, r.insert)
	if err != nil {
		return fmt.Errorf("relayclickhouse: insert into %s: %w", r.table, err)
	}
	for i, col := range toColumns(recs).values() {
		if err := b.Column(i).Append(col); err != nil {
			// Abort closes the connection, which is mid-insert.
			_ = b.Abort()
			return fmt.Errorf("relayclickhouse: insert into %s: column %d: %w", r.table, i, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("relayclickhouse: insert into %s: %w", r.table, err)
	}
	return nil
}

// Healthy implements relay.HealthChecker by pinging the server. It returns
// when ctx ends even if the ping has not: the driver's handshake with a
// server that accepts but does not answer waits for the connection's
// DialTimeout whatever ctx says, and readiness probes must not. The ping
// then finishes in the background within DialTimeout.
func (r *Recorder) Healthy(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- r.conn.Ping(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("relayclickhouse: ping: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("relayclickhouse: ping: %w", ctx.Err())
	}
}
