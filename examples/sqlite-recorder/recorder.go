package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/streamrelay/relay"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver; pure Go, no cgo
)

// schema is the records table. request_id is the primary key so that a
// batch retried after a lost acknowledgement does not store a record twice
// (INSERT OR IGNORE below): the relay's delivery is at least once.
const schema = `
CREATE TABLE IF NOT EXISTS relay_requests (
	request_id          TEXT PRIMARY KEY,
	start               TEXT NOT NULL,   -- RFC 3339, UTC, nanoseconds
	tenant              TEXT NOT NULL,
	key_id              TEXT NOT NULL,
	route               TEXT NOT NULL,
	upstream            TEXT NOT NULL,
	method              TEXT NOT NULL,
	path                TEXT NOT NULL,
	model               TEXT NOT NULL,
	provider            TEXT NOT NULL,
	kind                TEXT NOT NULL,
	stream              INTEGER NOT NULL,
	status              INTEGER NOT NULL,
	error_type          TEXT NOT NULL,
	bytes_in            INTEGER NOT NULL,
	bytes_out           INTEGER NOT NULL,
	events              INTEGER NOT NULL,
	ttfb_ms             REAL NOT NULL,
	ttft_ms             REAL NOT NULL,
	duration_ms         REAL NOT NULL,
	client_gone         INTEGER NOT NULL,
	input_tokens        INTEGER NOT NULL,
	output_tokens       INTEGER NOT NULL,
	cached_input_tokens INTEGER NOT NULL,
	reasoning_tokens    INTEGER NOT NULL,
	cache_creation_input_tokens INTEGER NOT NULL DEFAULT 0,
	audio_input_tokens  INTEGER NOT NULL DEFAULT 0,
	audio_output_tokens INTEGER NOT NULL DEFAULT 0,
	usage_estimated     INTEGER NOT NULL DEFAULT 0, -- 1: the relay estimated a stream cut short
	cost_known          INTEGER NOT NULL DEFAULT 0, -- 0: unknown (no price), never free
	cost_micros         INTEGER NOT NULL DEFAULT 0, -- millionths of cost_currency
	cost_currency       TEXT NOT NULL DEFAULT '',
	cost_price_version  TEXT NOT NULL DEFAULT '',
	attempts            INTEGER NOT NULL,
	characters          INTEGER NOT NULL,
	labels              TEXT             -- JSON object, NULL when none
);
CREATE INDEX IF NOT EXISTS relay_requests_tenant_start ON relay_requests (tenant, start);
`

const insert = `INSERT OR IGNORE INTO relay_requests (
	request_id, start, tenant, key_id, route, upstream, method, path, model, provider, kind,
	stream, status, error_type, bytes_in, bytes_out, events, ttfb_ms, ttft_ms, duration_ms,
	client_gone, input_tokens, output_tokens, cached_input_tokens, reasoning_tokens,
	cache_creation_input_tokens, audio_input_tokens, audio_output_tokens, usage_estimated,
	cost_known, cost_micros, cost_currency, cost_price_version,
	attempts, characters, labels
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// spendPerTenantPerDay is the root README's SQLite query (section "Cost
// and budgets"): each tenant's spend per UTC day, in exact micro-units,
// with the requests whose cost is unknown counted apart.
const spendPerTenantPerDay = `SELECT tenant, substr(start, 1, 10) AS day, cost_currency AS currency,
       count(*) AS requests, sum(cost_micros) AS spend_micros,
       sum(cost_known = 0) AS unpriced
FROM relay_requests
WHERE start >= strftime('%Y-%m-%dT%H:%M:%S', 'now', '-30 days')
GROUP BY tenant, day, currency
ORDER BY tenant, day, currency;`

// SQLiteRecorder stores the relay's records in a SQLite database. It
// implements relay.BatchRecorder and relay.HealthChecker.
//
// The relay wraps it in an AsyncRecorder, so it is called from one worker
// goroutine, off the request path, with batches of records; it need not
// be fast, and a slow disk never slows a stream. It is nevertheless safe
// for concurrent use, as database/sql is.
type SQLiteRecorder struct {
	db *sql.DB
}

// OpenSQLiteRecorder opens (creating if need be) the database file at path
// and its table. WAL mode lets readers query the table while records are
// written; busy_timeout makes a writer wait for a reader's lock instead of
// failing at once. Use a file: each connection to ":memory:" would see a
// database of its own.
func OpenSQLiteRecorder(ctx context.Context, path string) (*SQLiteRecorder, error) {
	dsn := "file:" + url.PathEscape(path) + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(NORMAL)"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	if _, err := db.ExecContext(ctx, schema); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("creating the records table: %w", err)
	}
	// Bring a table made by an earlier version of this example up to the
	// schema; a column that exists already is left as it is.
	for _, m := range [...]string{
		`ALTER TABLE relay_requests ADD COLUMN cache_creation_input_tokens INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE relay_requests ADD COLUMN audio_input_tokens INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE relay_requests ADD COLUMN audio_output_tokens INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE relay_requests ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE relay_requests ADD COLUMN cost_known INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE relay_requests ADD COLUMN cost_micros INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE relay_requests ADD COLUMN cost_currency TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE relay_requests ADD COLUMN cost_price_version TEXT NOT NULL DEFAULT ''`,
	} {
		if _, err := db.ExecContext(ctx, m); err != nil && !strings.Contains(err.Error(), "duplicate column") {
			_ = db.Close()
			return nil, fmt.Errorf("migrating the records table: %w", err)
		}
	}
	return &SQLiteRecorder{db: db}, nil
}

// Record implements relay.Recorder; the relay calls RecordBatch instead.
func (s *SQLiteRecorder) Record(ctx context.Context, rec relay.Record) error {
	return s.RecordBatch(ctx, []relay.Record{rec})
}

// RecordBatch implements relay.BatchRecorder: one transaction and one
// prepared statement per batch, so a batch is stored whole or not at all
// and the relay can retry it whole.
func (s *SQLiteRecorder) RecordBatch(ctx context.Context, recs []relay.Record) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, tx.Rollback())
		}
	}()
	stmt, err := tx.PrepareContext(ctx, insert)
	if err != nil {
		return err
	}
	defer stmt.Close()
	for i := range recs {
		r := &recs[i]
		var labels any // NULL unless the key has labels
		if len(r.Labels) > 0 {
			b, err := json.Marshal(r.Labels)
			if err != nil {
				return err
			}
			labels = string(b)
		}
		_, err = stmt.ExecContext(ctx,
			r.RequestID, r.Start.UTC().Format("2006-01-02T15:04:05.000000000Z07:00"), r.Tenant, r.KeyID,
			r.Route, r.Upstream, r.Method, r.Path, r.Model, string(r.Provider), string(r.Kind),
			r.Stream, r.Status, string(r.ErrorType), r.BytesIn, r.BytesOut, r.Events,
			ms(r.TTFB.Seconds()), ms(r.TTFT.Seconds()), ms(r.Duration.Seconds()),
			r.ClientGone, r.Usage.InputTokens, r.Usage.OutputTokens, r.Usage.CachedInputTokens,
			r.Usage.ReasoningTokens, r.Usage.CacheCreationInputTokens, r.Usage.AudioInputTokens,
			r.Usage.AudioOutputTokens, r.Usage.Estimated,
			r.Cost.Known, int64(r.Cost.Amount), r.Cost.Currency, r.Cost.PriceVersion,
			r.Attempts, r.Characters, labels)
		if err != nil {
			return fmt.Errorf("inserting record %s: %w", r.RequestID, err)
		}
	}
	return tx.Commit()
}

func ms(seconds float64) float64 { return seconds * 1000 }

// Healthy implements relay.HealthChecker, so that /readyz reports a broken
// database.
func (s *SQLiteRecorder) Healthy(ctx context.Context) error { return s.db.PingContext(ctx) }

// DB gives access to the database, for queries.
func (s *SQLiteRecorder) DB() *sql.DB { return s.db }

// Close closes the database. Call it after the relay's Shutdown, which
// writes the records still queued.
func (s *SQLiteRecorder) Close() error { return s.db.Close() }
