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
    date                Date,
    start               DateTime('UTC'),
    start_us            UInt32,
    request_id          String,
    tenant              String,
    key_id              String,
    route               String,
    upstream            String,
    method              String,
    path                String,
    model               String,
    response_model      String,
    provider            String,
    kind                String,
    stream              UInt8,
    status              UInt16,
    error_type          String,
    bytes_in            UInt64,
    bytes_out           UInt64,
    events              UInt64,
    ttfb_us             UInt64,
    ttft_us             UInt64,
    duration_us         UInt64,
    client_gone         UInt8,
    input_tokens        UInt64,
    output_tokens       UInt64,
    cached_input_tokens UInt64,
    reasoning_tokens    UInt64,
    attempts            UInt16,
    characters          UInt64,
    label_keys          Array(String),
    label_values        Array(String),
    ttfb_ms             Float64 ALIAS ttfb_us / 1000,
    ttft_ms             Float64 ALIAS ttft_us / 1000,
    duration_ms         Float64 ALIAS duration_us / 1000,
    total_tokens        UInt64 ALIAS input_tokens + output_tokens
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (tenant, date, start)`

// insertColumns lists the stored columns in the order columns.values
// returns them. ClickHouse 18.16 needs the explicit list for native batch
// inserts, and it keeps the ALIAS columns out.
const insertColumns = "date, start, start_us, request_id, tenant, key_id, route, upstream, method, path, " +
	"model, response_model, provider, kind, stream, status, error_type, bytes_in, bytes_out, events, " +
	"ttfb_us, ttft_us, duration_us, client_gone, input_tokens, output_tokens, cached_input_tokens, " +
	"reasoning_tokens, attempts, characters, label_keys, label_values"

// CreateTable creates the records table unless it exists (CREATE TABLE IF
// NOT EXISTS; an existing table is left as it is, even if its columns
// differ). table is a name or database.name, of letters, digits and
// underscores. It works on ClickHouse 18.16 and later; see the README for
// the layout.
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
	return nil
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
