package relayclickhouse_test

import (
	"context"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/streamrelay/relay"
	relayclickhouse "github.com/streamrelay/relay/clickhouse"
)

// firstReleaseDDL is the table as the first release created it, before
// client_request_id, truncated and the usage columns for billing
// (cache_creation_input_tokens, audio_input_tokens, audio_output_tokens,
// usage_estimated) were added.
const firstReleaseDDL = `CREATE TABLE %s
(
    date Date, start DateTime('UTC'), start_us UInt32, request_id String, tenant String, key_id String,
    route String, upstream String, method String, path String, model String, response_model String,
    provider String, kind String, stream UInt8, status UInt16, error_type String, bytes_in UInt64,
    bytes_out UInt64, events UInt64, ttfb_us UInt64, ttft_us UInt64, duration_us UInt64, client_gone UInt8,
    input_tokens UInt64, output_tokens UInt64, cached_input_tokens UInt64, reasoning_tokens UInt64,
    attempts UInt16, characters UInt64, label_keys Array(String), label_values Array(String),
    ttfb_ms Float64 ALIAS ttfb_us / 1000, ttft_ms Float64 ALIAS ttft_us / 1000,
    duration_ms Float64 ALIAS duration_us / 1000, total_tokens UInt64 ALIAS input_tokens + output_tokens
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(date)
ORDER BY (tenant, date, start)`

// beforeUsageDDL is the table as it was before the usage columns for
// billing were added: the first release's, plus client_request_id and
// truncated.
var beforeUsageDDL = strings.NewReplacer(
	"request_id String,", "request_id String, client_request_id String,",
	"label_values Array(String),", "label_values Array(String), truncated UInt8,",
).Replace(firstReleaseDDL)

// beforeCostDDL is the table as it was before the cost columns
// (cost_known, cost_micros, cost_currency, cost_price_version) were
// added: today's, without them.
func beforeCostDDL(t *testing.T) string {
	t.Helper()
	ddl, err := relayclickhouse.DDL("relay_placeholder")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for line := range strings.SplitSeq(ddl, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "cost_") {
			lines = append(lines, line)
		}
	}
	out := strings.Replace(strings.Join(lines, "\n"), "relay_placeholder", "%s", 1)
	if strings.Contains(out, "cost_") || out == ddl {
		t.Fatalf("the cost columns were not cut from the DDL:\n%s", out)
	}
	return out
}

// beforeSessionsDDL is the table as it was before the WebSocket session
// columns (frames_in, frames_out, close_code, closed_by) were added:
// today's, without them.
func beforeSessionsDDL(t *testing.T) string {
	t.Helper()
	ddl, err := relayclickhouse.DDL("relay_placeholder")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for line := range strings.SplitSeq(ddl, "\n") {
		if f := strings.TrimSpace(line); !strings.HasPrefix(f, "frames_") && !strings.HasPrefix(f, "close_code") && !strings.HasPrefix(f, "closed_by") {
			lines = append(lines, line)
		}
	}
	out := strings.Replace(strings.Join(lines, "\n"), "relay_placeholder", "%s", 1)
	if strings.Contains(out, "frames_in") || out == ddl {
		t.Fatalf("the session columns were not cut from the DDL:\n%s", out)
	}
	return out
}

// TestCreateTableMigratesAnExistingTable: CreateTable adds the new columns
// to a table made by an earlier release, keeping its rows, after which the
// recorder writes every field; running it again changes nothing.
func TestCreateTableMigratesAnExistingTable(t *testing.T) {
	t.Run("first release", func(t *testing.T) { testMigration(t, firstReleaseDDL) })
	t.Run("before the usage columns", func(t *testing.T) { testMigration(t, beforeUsageDDL) })
	t.Run("before the cost columns", func(t *testing.T) { testMigration(t, beforeCostDDL(t)) })
	t.Run("before the session columns", func(t *testing.T) { testMigration(t, beforeSessionsDDL(t)) })
}

func testMigration(t *testing.T, oldDDL string) {
	conn := testConn(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	table := "relay_test_" + randomHex(t)
	if err := conn.Exec(ctx, strings.Replace(oldDDL, "%s", table, 1)); err != nil {
		t.Fatalf("create the old table: %v", err)
	}
	t.Cleanup(func() {
		if err := conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+table); err != nil {
			t.Errorf("drop %s: %v", table, err)
		}
	})
	old := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	// INSERT … SELECT runs on the server: a native VALUES insert would wait
	// for data blocks.
	if err := conn.Exec(ctx, "INSERT INTO "+table+" (date, start, request_id, tenant, status) "+
		"SELECT toDate('2024-05-06'), toDateTime('2024-05-06 07:08:09', 'UTC'), 'a-old', 'acme', 200"); err != nil {
		t.Fatalf("insert an old row: %v", err)
	}
	// The old table refuses the new insert: this is what the migration mends.
	rec, err := relayclickhouse.New(conn, table)
	if err != nil {
		t.Fatal(err)
	}
	if err := rec.RecordBatch(ctx, []relay.Record{fullRecord("b-before")}); err == nil {
		t.Fatal("an insert naming the new columns succeeded on the old table")
	}

	for range 2 { // the second run finds nothing to add
		if err := relayclickhouse.CreateTable(ctx, conn, table); err != nil {
			t.Fatalf("CreateTable on the old table: %v", err)
		}
	}
	full := fullRecord("b-new")
	if err := rec.RecordBatch(ctx, []relay.Record{full}); err != nil {
		t.Fatalf("insert after the migration: %v", err)
	}
	got := readRecords(t, conn, table)
	if len(got) != 2 {
		t.Fatalf("read %d rows, want 2", len(got))
	}
	wantOld := relay.Record{RequestID: "a-old", Start: old, Tenant: "acme", Status: 200}
	if !reflect.DeepEqual(got[0], wantOld) {
		t.Errorf("old row read back\n%+v\nwant\n%+v", got[0], wantOld)
	}
	if got[1].ClientRequestID != full.ClientRequestID || !got[1].Truncated {
		t.Errorf("new row: client_request_id %q, truncated %v; want %q, true", got[1].ClientRequestID, got[1].Truncated, full.ClientRequestID)
	}
	if got[1].Usage != full.Usage {
		t.Errorf("new row: usage %+v, want %+v", got[1].Usage, full.Usage)
	}
	if got[1].Cost != full.Cost {
		t.Errorf("new row: cost %+v, want %+v", got[1].Cost, full.Cost)
	}

	// The migrated table has the columns a new one has, in the same order.
	fresh := testTable(t, conn)
	if a, b := columnNames(t, table), columnNames(t, fresh); !reflect.DeepEqual(a, b) {
		t.Errorf("migrated columns\n%v\nwant those of a new table\n%v", a, b)
	}
}

func columnNames(t *testing.T, table string) []string {
	t.Helper()
	rows := queryMaps(t, testConn(t), "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = '"+table+"'")
	var names []string
	for _, r := range rows {
		names = append(names, r["name"].(string))
	}
	return names
}
