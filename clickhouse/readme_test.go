package relayclickhouse_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/streamrelay/relay"
	relayclickhouse "github.com/streamrelay/relay/clickhouse"
)

// sqlBlocks returns the ```sql blocks of a Markdown file.
func sqlBlocks(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```sql\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		blocks = append(blocks, strings.TrimSpace(m[1]))
	}
	return blocks
}

// readmeSQL returns this module's README's ```sql blocks: the DDL, then
// one query per block.
func readmeSQL(t *testing.T) []string {
	t.Helper()
	blocks := sqlBlocks(t, "README.md")
	if len(blocks) < 2 {
		t.Fatalf("README has %d sql blocks, want the DDL and queries", len(blocks))
	}
	return blocks
}

// readmeQuery is one query of a README, titled by its leading comment.
type readmeQuery struct {
	readme, title, sql string
}

// readmeQueries returns the queries of this module's README (one per
// block after the DDL) and of the root README (whose blocks hold several
// queries, each after a "-- title" line).
func readmeQueries(t *testing.T) []readmeQuery {
	t.Helper()
	var out []readmeQuery
	for _, q := range readmeSQL(t)[1:] {
		title, _, _ := strings.Cut(strings.TrimPrefix(q, "-- "), "\n")
		out = append(out, readmeQuery{"clickhouse/README.md", title, q})
	}
	root := 0
	for _, block := range sqlBlocks(t, filepath.Join("..", "README.md")) {
		var cur *readmeQuery
		for line := range strings.SplitSeq(block, "\n") {
			if title, ok := strings.CutPrefix(line, "-- "); ok {
				out = append(out, readmeQuery{readme: "README.md", title: title, sql: line})
				cur = &out[len(out)-1]
				root++
				continue
			}
			if cur == nil {
				t.Fatalf("README.md: a sql block does not start with a -- title line: %q", line)
			}
			cur.sql += "\n" + line
		}
	}
	if root == 0 {
		t.Fatal("the root README.md has no ClickHouse query: TestReadmeQueries checks them")
	}
	return out
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
		if i%6 != 5 {
			r.Cost = relay.Charge{Known: true, Amount: relay.Money(i*1234 + 7), Currency: "USD", PriceVersion: "v1"}
		} else {
			r.Cost = relay.Charge{Currency: "USD", PriceVersion: "v1"} // unknown: a model without a price
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

// TestReadmeQueries runs every query in this module's README and in the
// root README (section "Records in ClickHouse") on data it inserted, and
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
			// The root README's shorter version leaves out some columns:
			// compare those the query returns.
			cols := []string{"requests", "input", "output", "cached_input", "reasoning"}
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
				var g [5]uint64
				for i, c := range cols {
					if v, ok := row[c]; ok {
						g[i] = v.(uint64)
					}
				}
				got[k] = g
			}
			for i, c := range cols {
				if _, ok := rows[0][c]; ok {
					continue
				}
				if i < 3 {
					t.Errorf("the query has no %s column", c)
				}
				for k, w := range want {
					w[i] = 0
					want[k] = w
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %v\nwant %v", got, want)
			}
		},
		"Spend per tenant per day": func(t *testing.T, rows []map[string]any) {
			type spend struct {
				requests, unpriced uint64
				micros             int64
			}
			want := map[string]spend{}
			for _, r := range recs {
				k := r.Tenant + " " + r.Start.Format(time.DateOnly) + " " + r.Cost.Currency
				w := want[k]
				w.requests++
				w.micros += int64(r.Cost.Amount)
				if !r.Cost.Known {
					w.unpriced++
				}
				want[k] = w
			}
			got := map[string]spend{}
			for _, row := range rows {
				k := row["tenant"].(string) + " " + row["date"].(time.Time).Format(time.DateOnly) + " " + row["currency"].(string)
				g := spend{micros: row["spend_micros"].(int64), unpriced: row["unpriced"].(uint64)}
				if n, ok := row["requests"].(uint64); ok {
					g.requests = n
				} else {
					g.requests = want[k].requests // not in the root README's version
				}
				if f, ok := row["spend"].(float64); ok && math.Abs(f-float64(g.micros)/1e6) > 1e-9 {
					t.Errorf("%s: spend %v, want spend_micros / 1e6 = %v", k, f, float64(g.micros)/1e6)
				}
				got[k] = g
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
				p95 := row["p95_ttft_ms"].(float64)
				n, ok := row["requests"].(uint64) // not in the root README's version
				if !ok {
					n = w.n
				}
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
	for _, q := range readmeQueries(t) {
		title := q.title
		t.Run(q.readme+"/"+title, func(t *testing.T) {
			var check func(*testing.T, []map[string]any)
			for prefix, c := range checks {
				if strings.HasPrefix(strings.ToLower(title), strings.ToLower(prefix)) {
					check = c
				}
			}
			if check == nil {
				t.Fatalf("%s query %q has no check in this test: add one", q.readme, title)
			}
			if q.readme == "clickhouse/README.md" {
				ran++
			}
			sql := regexp.MustCompile(`\brelay_requests\b`).ReplaceAllString(q.sql, table)
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
		t.Errorf("ran %d queries of clickhouse/README.md, want %d: a query was removed or renamed", ran, len(checks))
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
