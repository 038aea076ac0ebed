package relayclickhouse_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.uber.org/goleak"

	"github.com/streamrelay/relay"
	relayclickhouse "github.com/streamrelay/relay/clickhouse"
	"github.com/streamrelay/relay/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clickhouseAddr is where the test server listens: RELAY_TEST_CLICKHOUSE_ADDR,
// as exported by .ci/services.sh's start_clickhouse.
func clickhouseAddr() string {
	if a := os.Getenv("RELAY_TEST_CLICKHOUSE_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:9001"
}

// testConn connects to the test server, or fails or skips (see testkit.Missing).
func testConn(t *testing.T) driver.Conn {
	t.Helper()
	addr := clickhouseAddr()
	conn, err := relayclickhouse.Open(addr)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.Ping(ctx); err != nil {
		testkit.Missing(t, "ClickHouse at %s (RELAY_TEST_CLICKHOUSE_ADDR) is unreachable: %v", addr, err)
	}
	return conn
}

// testTable creates a table of its own for this test and drops it after.
func testTable(t *testing.T, conn driver.Conn) string {
	t.Helper()
	name := "relay_test_" + randomHex(t)
	ctx := context.Background()
	if err := relayclickhouse.CreateTable(ctx, conn, name); err != nil {
		t.Fatalf("CreateTable: %v", err)
	}
	t.Cleanup(func() {
		if err := conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+name); err != nil {
			t.Errorf("drop %s: %v", name, err)
		}
	})
	return name
}

func randomHex(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// openConn opens a pool with the given options tweaks, closed at cleanup.
func openConn(t *testing.T, addr string, tweak func(*clickhouse.Options)) driver.Conn {
	t.Helper()
	opt := relayclickhouse.DefaultOptions(addr)
	if tweak != nil {
		tweak(opt)
	}
	conn, err := clickhouse.Open(opt)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// readRecords reads a table back, ordered by request_id, rebuilding
// Records from the stored columns.
func readRecords(t *testing.T, conn driver.Conn, table string) []relay.Record {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT date, start, start_us, request_id, client_request_id,
		tenant, key_id, route, upstream, method, path, model, response_model, provider, kind, stream, status,
		error_type, bytes_in, bytes_out, events, ttfb_us, ttft_us, duration_us, client_gone, input_tokens,
		output_tokens, cached_input_tokens, cache_creation_input_tokens, reasoning_tokens, audio_input_tokens,
		audio_output_tokens, usage_estimated, cost_known, cost_micros, cost_currency, cost_price_version, attempts, attempt_upstreams, attempt_statuses, attempt_error_types,
		characters, label_keys, label_values, truncated, frames_in, frames_out, close_code, closed_by
		FROM `+table+` ORDER BY request_id`)
	if err != nil {
		t.Fatalf("select: %v", err)
	}
	defer rows.Close()
	var out []relay.Record
	for rows.Next() {
		var (
			r                                      relay.Record
			date, start                            time.Time
			startUS                                uint32
			provider, kind, errType                string
			stream, gone, truncated, estimated     uint8
			status, attempts                       uint16
			bin, bout, events, ttfb, ttft, dur     uint64
			in, outTok, cached, reasoning, charcnt uint64
			cacheWrite, audioIn, audioOut          uint64
			costKnown                              uint8
			costMicros                             int64
			keys, values                           []string
			atUps, atTypes                         []string
			atStatuses                             []uint16
			framesIn, framesOut                    uint64
			closeCode                              uint16
		)
		if err := rows.Scan(&date, &start, &startUS, &r.RequestID, &r.ClientRequestID, &r.Tenant, &r.KeyID,
			&r.Route, &r.Upstream, &r.Method, &r.Path, &r.Model, &r.ResponseModel, &provider, &kind, &stream,
			&status, &errType, &bin, &bout, &events, &ttfb, &ttft, &dur, &gone, &in, &outTok, &cached, &cacheWrite,
			&reasoning, &audioIn, &audioOut, &estimated, &costKnown, &costMicros, &r.Cost.Currency, &r.Cost.PriceVersion, &attempts, &atUps, &atStatuses, &atTypes, &charcnt, &keys, &values, &truncated,
			&framesIn, &framesOut, &closeCode, &r.ClosedBy); err != nil {
			t.Fatalf("scan: %v", err)
		}
		if want := start.UTC().Format(time.DateOnly); date.Format(time.DateOnly) != want {
			t.Errorf("record %s: date %s, want the UTC day of start %s", r.RequestID, date.Format(time.DateOnly), want)
		}
		r.Start = start.Add(time.Duration(startUS) * time.Microsecond).UTC()
		r.Provider, r.Kind, r.ErrorType = relay.Provider(provider), relay.StreamKind(kind), relay.ErrorType(errType)
		r.Stream, r.ClientGone, r.Truncated = stream == 1, gone == 1, truncated == 1
		r.Status, r.Attempts = int(status), int(attempts)
		r.BytesIn, r.BytesOut, r.Events = int64(bin), int64(bout), int64(events)
		r.TTFB = time.Duration(ttfb) * time.Microsecond
		r.TTFT = time.Duration(ttft) * time.Microsecond
		r.Duration = time.Duration(dur) * time.Microsecond
		r.Usage = relay.Usage{InputTokens: int64(in), OutputTokens: int64(outTok),
			CachedInputTokens: int64(cached), CacheCreationInputTokens: int64(cacheWrite),
			ReasoningTokens: int64(reasoning), AudioInputTokens: int64(audioIn),
			AudioOutputTokens: int64(audioOut), Estimated: estimated == 1}
		r.Cost.Known, r.Cost.Amount = costKnown == 1, relay.Money(costMicros)
		r.Characters = int64(charcnt)
		r.FramesIn, r.FramesOut, r.CloseCode = int64(framesIn), int64(framesOut), int(closeCode)
		if len(atUps) != len(atStatuses) || len(atUps) != len(atTypes) {
			t.Fatalf("record %s: attempt arrays of %d, %d and %d", r.RequestID, len(atUps), len(atStatuses), len(atTypes))
		}
		for i, u := range atUps {
			r.AttemptLog = append(r.AttemptLog, relay.AttemptInfo{Upstream: u, Status: int(atStatuses[i]), ErrorType: relay.ErrorType(atTypes[i])})
		}
		if len(keys) != len(values) {
			t.Fatalf("record %s: %d label keys, %d values", r.RequestID, len(keys), len(values))
		}
		if len(keys) > 0 {
			r.Labels = make(map[string]string, len(keys))
			for i, k := range keys {
				r.Labels[k] = values[i]
			}
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("rows: %v", err)
	}
	return out
}

// count returns the table's row count.
func count(t *testing.T, conn driver.Conn, table string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), "SELECT count() FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count: %v", err)
	}
	return n
}
