package relayclickhouse

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// createTableSQL is the table's DDL; %s is the quoted table name.
//
// It sticks to what ClickHouse 18.16 already had, so that it runs there and
// on every later version: no DateTime64 (start is whole seconds plus
// start_us), no LowCardinality, no Map (labels are two parallel arrays), no
// Bool (flags are UInt8), no TTL clause (old months are dropped by
// partition). Durations are stored as integer microseconds; the *_ms ALIAS
// columns are computed on read and cost no storage.
const createTableSQL = `CREATE TABLE IF NOT EXISTS %s
(
    date                        Date,
    start                       DateTime('UTC'),
    start_us                    UInt32,
    request_id                  String,
    client_request_id           String,
    tenant                      String,
    key_id                      String,
    route                       String,
    upstream                    String,
    method                      String,
    path                        String,
    model                       String,
    response_model              String,
    provider                    String,
    kind                        String,
    stream                      UInt8,
    status                      UInt16,
    error_type                  String,
    bytes_in                    UInt64,
    bytes_out                   UInt64,
    events                      UInt64,
    ttfb_us                     UInt64,
    ttft_us                     UInt64,
    duration_us                 UInt64,
    client_gone                 UInt8,
    input_tokens                UInt64,
    output_tokens               UInt64,
    cached_input_tokens         UInt64,
    cache_creation_input_tokens UInt64,
    reasoning_tokens            UInt64,
    audio_input_tokens          UInt64,
    audio_output_tokens         UInt64,
    usage_estimated             UInt8,
    cost_known                  UInt8,
    cost_micros                 Int64,
    cost_currency               String,
    cost_price_version          String,
    attempts                    UInt16,
    attempt_upstreams           Array(String),
    attempt_statuses            Array(UInt16),
    attempt_error_types         Array(String),
    characters                  UInt64,
    label_keys                  Array(String),
    label_values                Array(String),
    truncated                   UInt8,
    frames_in                   UInt64,
    frames_out                  UInt64,
    close_code                  UInt16,
    closed_by                   String,
    ttfb_ms                     Float64 ALIAS ttfb_us / 1000,
    ttft_ms                     Float64 ALIAS ttft_us / 1000,
    duration_ms                 Float64 ALIAS duration_us / 1000,
    total_tokens                UInt64 ALIAS input_tokens + output_tokens
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (tenant, date, start)`

// insertColumns lists the stored columns in the order columns.values
// returns them. ClickHouse 18.16 needs the explicit list for native batch
// inserts, and it keeps the ALIAS columns out.
const insertColumns = "date, start, start_us, request_id, client_request_id, tenant, key_id, route, upstream, " +
	"method, path, model, response_model, provider, kind, stream, status, error_type, bytes_in, bytes_out, " +
	"events, ttfb_us, ttft_us, duration_us, client_gone, input_tokens, output_tokens, cached_input_tokens, " +
	"cache_creation_input_tokens, reasoning_tokens, audio_input_tokens, audio_output_tokens, usage_estimated, " +
	"cost_known, cost_micros, cost_currency, cost_price_version, " +
	"attempts, attempt_upstreams, attempt_statuses, attempt_error_types, characters, label_keys, label_values, truncated, " +
	"frames_in, frames_out, close_code, closed_by"

// addedColumn is a column added to the table after its first release:
// CreateTable adds it to a table that lacks it.
type addedColumn struct{ name, def string }

// addedColumns lists them in the order they were added. 18.16 has no
// ADD COLUMN IF NOT EXISTS, so CreateTable reads system.columns instead.
func addedColumns() []addedColumn {
	return []addedColumn{
		{"client_request_id", "client_request_id String AFTER request_id"},
		{"truncated", "truncated UInt8 AFTER label_values"},
		{"cache_creation_input_tokens", "cache_creation_input_tokens UInt64 AFTER cached_input_tokens"},
		{"audio_input_tokens", "audio_input_tokens UInt64 AFTER reasoning_tokens"},
		{"audio_output_tokens", "audio_output_tokens UInt64 AFTER audio_input_tokens"},
		{"usage_estimated", "usage_estimated UInt8 AFTER audio_output_tokens"},
		{"attempt_upstreams", "attempt_upstreams Array(String) AFTER attempts"},
		{"attempt_statuses", "attempt_statuses Array(UInt16) AFTER attempt_upstreams"},
		{"attempt_error_types", "attempt_error_types Array(String) AFTER attempt_statuses"},
		{"cost_known", "cost_known UInt8 AFTER usage_estimated"},
		{"cost_micros", "cost_micros Int64 AFTER cost_known"},
		{"cost_currency", "cost_currency String AFTER cost_micros"},
		{"cost_price_version", "cost_price_version String AFTER cost_currency"},
		{"frames_in", "frames_in UInt64 AFTER truncated"},
		{"frames_out", "frames_out UInt64 AFTER frames_in"},
		{"close_code", "close_code UInt16 AFTER frames_out"},
		{"closed_by", "closed_by String AFTER close_code"},
	}
}

// CreateTable creates the records table unless it exists (CREATE TABLE IF
// NOT EXISTS), then adds the columns that later versions of this package
// added to a table that lacks them (ALTER TABLE … ADD COLUMN, which
// ClickHouse applies to existing parts without rewriting them: old rows
// read as empty strings and zeros). Other differences in an existing
// table are left as they are. table is a name or database.name, of
// letters, digits and underscores. It works on ClickHouse 18.16 and later;
// see the README for the layout. Call it before the Recorder's first
// insert, which names every column.
func CreateTable(ctx context.Context, conn driver.Conn, table string) error {
	if conn == nil {
		return errors.New("relayclickhouse: nil connection")
	}
	ddl, err := DDL(table)
	if err != nil {
		return err
	}
	if err := conn.Exec(ctx, ddl); err != nil {
		return fmt.Errorf("relayclickhouse: create table %s: %w", table, err)
	}
	return migrate(ctx, conn, table)
}

// migrate adds the missing addedColumns to an existing table.
func migrate(ctx context.Context, conn driver.Conn, table string) error {
	missing, err := missingColumns(ctx, conn, table)
	if err != nil || len(missing) == 0 {
		return err
	}
	q, _ := quoteTable(table) // validated by DDL
	alter := "ALTER TABLE " + q + " ADD COLUMN " + strings.Join(missing, ", ADD COLUMN ")
	if err := conn.Exec(ctx, alter); err != nil {
		// Another relay may have migrated the table at the same moment.
		if again, err2 := missingColumns(ctx, conn, table); err2 == nil && len(again) == 0 {
			return nil
		}
		return fmt.Errorf("relayclickhouse: add columns to %s: %w", table, err)
	}
	return nil
}

// missingColumns returns the definitions of the addedColumns table lacks.
func missingColumns(ctx context.Context, conn driver.Conn, table string) ([]string, error) {
	db, name, qualified := strings.Cut(table, ".")
	dbExpr := "currentDatabase()"
	if qualified {
		dbExpr = "'" + db + "'" // an identifier: nothing to escape
	} else {
		name = table
	}
	rows, err := conn.Query(ctx, "SELECT name FROM system.columns WHERE database = "+dbExpr+" AND table = '"+name+"'")
	if err != nil {
		return nil, fmt.Errorf("relayclickhouse: columns of %s: %w", table, err)
	}
	defer rows.Close()
	have := map[string]bool{}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, fmt.Errorf("relayclickhouse: columns of %s: %w", table, err)
		}
		have[c] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("relayclickhouse: columns of %s: %w", table, err)
	}
	var missing []string
	for _, c := range addedColumns() {
		if !have[c.name] {
			missing = append(missing, c.def)
		}
	}
	return missing, nil
}

// DDL returns the CREATE TABLE IF NOT EXISTS statement that CreateTable
// runs, for schema migration tools. It fails only for an invalid name.
func DDL(table string) (string, error) {
	q, err := quoteTable(table)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf(createTableSQL, q), nil
}

// quoteTable validates a table name, optionally qualified by a database,
// and quotes it with backticks. Only plain identifiers are accepted, so the
// name can be spliced into SQL without any escaping.
func quoteTable(table string) (string, error) {
	db, name, qualified := strings.Cut(table, ".")
	if !qualified {
		db, name = "", table
	}
	if (qualified && !isIdentifier(db)) || !isIdentifier(name) {
		return "", fmt.Errorf("relayclickhouse: invalid table name %q: want name or database.name of letters, digits and underscores", table)
	}
	if qualified {
		return "`" + db + "`.`" + name + "`", nil
	}
	return "`" + name + "`", nil
}

// isIdentifier reports whether s is a non-empty ASCII identifier that does
// not start with a digit.
func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
