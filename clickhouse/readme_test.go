package relayclickhouse_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/streamrelay/relay"
	relayclickhouse "github.com/streamrelay/relay/clickhouse"
)

// readmeSQL returns the README's ```sql blocks.
func readmeSQL(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		blocks = append(blocks, strings.TrimSpace(m[1]))
	}
	if len(blocks) < 2 {
		t.Fatalf("README has %d sql blocks, want the DDL and queries", len(blocks))
	}
	return blocks
}

func TestReadmeDDLIsTheTable(t *testing.T) {
	ddl, err := relayclickhouse.DDL("relay_requests")
	if err != nil {
		t.Fatal(err)
	}
	if got := readmeSQL(t)[0]; got != ddl {
		t.Errorf("README's first sql block is not what CreateTable runs:\n%s\nwant\n%s", got, ddl)
	}
}

// queryRecords is the data the README queries are checked against.
func queryRecords(now time.Time) []relay.Record {
	var recs []relay.Record
	for i := range 100 {
		start := now
		if i%4 >= 2 {
			start = now.Add(-25 * time.Hour) // yesterday, outside the last 24 hours
		}
		r := relay.Record{
			RequestID: fmt.Sprintf("gpt-%03d", i), Start: start, Tenant: "acme", Route: "chat",
			Model: "gpt-x", Status: 200, TTFT: time.Duration(i+1) * time.Millisecond,
			Usage: relay.Usage{InputTokens: int64(i + 1), OutputTokens: int64(2 * i),
				CachedInputTokens: int64(i % 5), ReasoningTokens: int64(i % 7)},
		}
		if i%2 == 1 {
			r.Tenant = "globex"
		}
		if i%10 == 0 {
			r.Status, r.ErrorType = 502, relay.ErrTypeUpstreamStatus
		}
		switch {
		case i%10 == 9:
			// no labels: the team is ''
		case i%3 == 0:
			r.Labels = map[string]string{"team": "search", "env": "prod"}
		default:
			r.Labels = map[string]string{"env": "prod", "team": "ads"}
		}
		recs = append(recs, r)
	}
	for i := range 15 {
		r := relay.Record{RequestID: fmt.Sprintf("claude-%03d", i), Start: now, Tenant: "acme", Route: "messages",
			Model: "claude-y", Status: 200, TTFT: 200 * time.Millisecond,
			Usage: relay.Usage{InputTokens: 1000, OutputTokens: 3}}
		if i >= 10 {
			r.TTFT, r.Status, r.ErrorType = 0, 499, relay.ErrTypeClientCanceled // no first token
		}
		recs = append(recs, r)
	}
	return recs
}

// TestReadmeQueries runs every query in the README on data it inserted and
// checks each result against what Go computes from the same records.
func TestReadmeQueries(t *testing.T) {
	conn := testConn(t)
	table := testTable(t, conn)
	rec, err := relayclickhouse.New(conn, table)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	recs := queryRecords(now)
	ctx := context.Background()
	if err := rec.RecordBatch(ctx, recs); err != nil {
		t.Fatal(err)
	}

	checks := map[string]func(t *testing.T, rows []map[string]any){
		"Tokens per tenant per day": func(t *testing.T, rows []map[string]any) {
			want := map[string][5]uint64{}
			for _, r := range recs {
				k := r.Tenant + " " + r.Start.Format(time.DateOnly)
				w := want[k]
				w[0]++
				w[1] += uint64(r.Usage.InputTokens)
				w[2] += uint64(r.Usage.OutputTokens)
				w[3] += uint64(r.Usage.CachedInputTokens)
				w[4] += uint64(r.Usage.ReasoningTokens)
				want[k] = w
			}
			got := map[string][5]uint64{}
			for _, row := range rows {
				k := row["tenant"].(string) + " " + row["date"].(time.Time).Format(time.DateOnly)
				got[k] = [5]uint64{row["requests"].(uint64), row["input"].(uint64), row["output"].(uint64),
					row["cached_input"].(uint64), row["reasoning"].(uint64)}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %v\nwant %v", got, want)
			}
		},
		"p95 time to first token per model": func(t *testing.T, rows []map[string]any) {
			// gpt-x has TTFTs of 1..100 ms, claude-y ten of 200 ms (and five
			// without a first token, which must not count).
			want := map[string]struct {
				n        uint64
				p95, tol float64
			}{"gpt-x": {100, 95.05, 1}, "claude-y": {10, 200, 0.001}}
			if len(rows) != len(want) {
				t.Fatalf("%d rows, want %d: %v", len(rows), len(want), rows)
			}
			for _, row := range rows {
				w := want[row["model"].(string)]
				n, p95 := row["requests"].(uint64), row["p95_ttft_ms"].(float64)
				if n != w.n || math.Abs(p95-w.p95) > w.tol {
					t.Errorf("%v: %d requests, p95 %v; want %d and %v±%v", row["model"], n, p95, w.n, w.p95, w.tol)
				}
			}
			if rows[0]["model"] != "claude-y" {
				t.Errorf("first row is %v, want the slowest model first", rows[0]["model"])
			}
		},
		"Errors per route and type per hour": func(t *testing.T, rows []map[string]any) {
			want := map[string]uint64{}
			for _, r := range recs {
				if r.ErrorType != "" && r.Start.Equal(now) {
					want[r.Route+" "+string(r.ErrorType)]++
				}
			}
			got := map[string]uint64{}
			for _, row := range rows {
				got[row["route"].(string)+" "+row["error_type"].(string)] += row["errors"].(uint64)
				if h := row["hour"].(time.Time); !h.Equal(now.Truncate(time.Hour)) {
					t.Errorf("hour %v, want %v", h, now.Truncate(time.Hour))
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		},
		"Tokens per value of the \"team\" label": func(t *testing.T, rows []map[string]any) {
			month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
			want := map[string]uint64{}
			for _, r := range recs {
				if !r.Start.Before(month) {
					want[r.Labels["team"]] += uint64(r.Usage.Total())
				}
			}
			got := map[string]uint64{}
			for _, row := range rows {
				got[row["team"].(string)] = row["tokens"].(uint64)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
		},
		"Retention: drop a month of records": func(t *testing.T, _ []map[string]any) {
			// 2024-01 holds nothing here: every record must survive.
			if n := count(t, conn, table); n != uint64(len(recs)) {
				t.Errorf("%d records left, want %d", n, len(recs))
			}
		},
	}

	ran := 0
	for _, q := range readmeSQL(t)[1:] {
		title, _, _ := strings.Cut(strings.TrimPrefix(q, "-- "), "\n")
		t.Run(title, func(t *testing.T) {
			var check func(*testing.T, []map[string]any)
			for prefix, c := range checks {
				if strings.HasPrefix(title, prefix) {
					check = c
				}
			}
			if check == nil {
				t.Fatalf("README query %q has no check in this test: add one", title)
			}
			ran++
			sql := regexp.MustCompile(`\brelay_requests\b`).ReplaceAllString(q, table)
			var rows []map[string]any
			if strings.Contains(sql, "\nSELECT") {
				rows = queryMaps(t, conn, sql)
				if len(rows) == 0 {
					t.Fatal("no rows")
				}
			} else if err := conn.Exec(ctx, sql); err != nil {
				t.Fatalf("exec: %v", err)
			}
			check(t, rows)
		})
	}
	if ran != len(checks) {
		t.Errorf("ran %d README queries, want %d: a query was removed or renamed", ran, len(checks))
	}
}

// queryMaps runs a query and returns its rows as column name → value.
func queryMaps(t *testing.T, conn driver.Conn, sql string) []map[string]any {
	t.Helper()
	rows, err := conn.Query(context.Background(), sql)
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	defer rows.Close()
	types := rows.ColumnTypes()
	var out []map[string]any
	for rows.Next() {
		dest := make([]any, len(types))
		for i, ct := range types {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			t.Fatalf("scan: %v", err)
		}
		row := make(map[string]any, len(types))
		for i, ct := range types {
			row[ct.Name()] = reflect.ValueOf(dest[i]).Elem().Interface()
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("rows: %v", err)
	}
	return out
}
