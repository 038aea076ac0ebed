package relayclickhouse_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamrelay/relay"
	relayclickhouse "github.com/streamrelay/relay/clickhouse"
)

func TestNewAndCreateTableRejectBadInput(t *testing.T) {
	// Open does not dial, so no server is needed here.
	conn, err := relayclickhouse.Open("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tests := []struct {
		name, table string
		nilConn     bool
		wantErr     string // "" means accepted
	}{
		{name: "plain", table: "relay_requests"},
		{name: "qualified", table: "analytics.relay_requests"},
		{name: "digits after first", table: "t2024_q1"},
		{name: "nil conn", table: "t", nilConn: true, wantErr: "nil connection"},
		{name: "empty", table: "", wantErr: "invalid table name"},
		{name: "leading digit", table: "1t", wantErr: "invalid table name"},
		{name: "injection", table: "t; DROP TABLE x", wantErr: "invalid table name"},
		{name: "backtick", table: "t`x", wantErr: "invalid table name"},
		{name: "empty database", table: ".t", wantErr: "invalid table name"},
		{name: "two dots", table: "a.b.c", wantErr: "invalid table name"},
		{name: "non-ASCII", table: "tablé", wantErr: "invalid table name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := conn
			if tt.nilConn {
				c = nil
			}
			_, err := relayclickhouse.New(c, tt.table)
			checkErr(t, "New", err, tt.wantErr)
			if tt.wantErr != "" {
				// CreateTable must refuse before sending anything.
				checkErr(t, "CreateTable", relayclickhouse.CreateTable(context.Background(), c, tt.table), tt.wantErr)
			}
			if !tt.nilConn {
				_, err := relayclickhouse.DDL(tt.table)
				checkErr(t, "DDL", err, tt.wantErr)
			}
		})
	}
}

func checkErr(t *testing.T, what string, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("%s: unexpected error %v", what, err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("%s: error %v, want one containing %q", what, err, want)
	}
}

// TestEveryRecordFieldIsStored fails when relay.Record gains a field, so
// that the table gains a column for it.
func TestEveryRecordFieldIsStored(t *testing.T) {
	stored := map[string]bool{
		"RequestID": true, "Start": true, "Tenant": true, "KeyID": true, "Route": true, "Upstream": true,
		"Method": true, "Path": true, "Model": true, "ResponseModel": true, "Provider": true, "Kind": true,
		"Stream": true, "Status": true, "ErrorType": true, "BytesIn": true, "BytesOut": true, "Events": true,
		"TTFB": true, "TTFT": true, "Duration": true, "ClientGone": true, "Usage": true, "Attempts": true, "AttemptLog": true,
		"Characters": true, "Labels": true, "ClientRequestID": true, "Truncated": true,
		"FramesIn": true, "FramesOut": true, "CloseCode": true, "ClosedBy": true,
		"Usage.InputTokens": true, "Usage.OutputTokens": true, "Usage.CachedInputTokens": true,
		"Usage.ReasoningTokens": true, "Usage.CacheCreationInputTokens": true, "Usage.AudioInputTokens": true,
		"Usage.AudioOutputTokens": true, "Usage.Estimated": true,
		"Cost": true, "Cost.Known": true, "Cost.Amount": true, "Cost.Currency": true, "Cost.PriceVersion": true,
	}
	check := func(prefix string, typ reflect.Type) {
		for f := range typ.Fields() {
			if !stored[prefix+f.Name] {
				t.Errorf("relay.Record field %s%s has no column: add one to the table, columns.go and the README", prefix, f.Name)
			}
		}
	}
	check("", reflect.TypeFor[relay.Record]())
	check("Usage.", reflect.TypeFor[relay.Usage]())
	check("Cost.", reflect.TypeFor[relay.Charge]())
}

// fullRecord sets every field, each to a value no other field has, so that
// a column mix-up cannot go unseen.
func fullRecord(id string) relay.Record {
	return relay.Record{
		RequestID:       id,
		ClientRequestID: "client-" + id,
		Start:           time.Date(2025, 3, 14, 23, 9, 26, 535897932, time.FixedZone("UTC-2", -2*3600)),
		Tenant:          "acme",
		KeyID:           "key-0a1b2c3d",
		Route:           "openai-chat",
		Upstream:        "api.openai.com",
		Method:          "POST",
		Path:            "/v1/chat/completions",
		Model:           "gpt-4o",
		ResponseModel:   "gpt-4o-2024-08-06",
		Provider:        relay.ProviderOpenAI,
		Kind:            relay.KindSSE,
		Stream:          true,
		Status:          499,
		ErrorType:       relay.ErrTypeClientCanceled,
		BytesIn:         1001,
		BytesOut:        20002,
		Events:          303,
		TTFB:            123456789 * time.Nanosecond,
		TTFT:            234567891 * time.Nanosecond,
		Duration:        3*time.Second + 456789123*time.Nanosecond,
		ClientGone:      true,
		Usage: relay.Usage{InputTokens: 404, OutputTokens: 505, CachedInputTokens: 66, CacheCreationInputTokens: 55,
			ReasoningTokens: 77, AudioInputTokens: 88, AudioOutputTokens: 99, Estimated: true},
		Cost:     relay.Charge{Known: true, Amount: 9_876_543, Currency: "EUR", PriceVersion: "prices-2026-11-29"},
		Attempts: 2,
		AttemptLog: []relay.AttemptInfo{
			{Upstream: "api.anthropic.com", Status: 529, ErrorType: relay.ErrTypeUpstreamStatus},
			{Upstream: "api.openai.com", Status: 200},
		},
		Characters: 808,
		Labels:     map[string]string{"team": "search", "env": "prod", "cost_center": "42", "empty": ""},
		Truncated:  true,
		FramesIn:   909,
		FramesOut:  1010,
		CloseCode:  4000,
		ClosedBy:   "upstream",
	}
}

func TestRoundTrip(t *testing.T) {
	conn := testConn(t)
	table := testTable(t, conn)
	rec, err := relayclickhouse.New(conn, table)
	if err != nil {
		t.Fatal(err)
	}
	full := fullRecord("a-full")
	fullWant := full
	fullWant.Start = time.Date(2025, 3, 15, 1, 9, 26, 535897000, time.UTC) // to µs, in UTC: the next day
	fullWant.TTFB = 123456 * time.Microsecond
	fullWant.TTFT = 234567 * time.Microsecond
	fullWant.Duration = 3456789 * time.Microsecond

	tests := []struct {
		name string
		in   relay.Record
		want relay.Record
	}{
		{name: "every field", in: full, want: fullWant},
		{
			name: "zero record",
			in:   relay.Record{RequestID: "b-zero"},
			// The zero time is before DateTime's range: it becomes the epoch.
			want: relay.Record{RequestID: "b-zero", Start: time.Unix(0, 0).UTC()},
		},
		{
			name: "out of range values are clamped",
			in: relay.Record{RequestID: "c-clamped", Start: time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC),
				Status: 70000, Attempts: -1, BytesIn: -5, TTFB: -time.Second,
				Usage: relay.Usage{InputTokens: -1, OutputTokens: 1 << 62}, Labels: map[string]string{}},
			want: relay.Record{RequestID: "c-clamped", Start: time.Unix(1<<32-1, 0).UTC(), Status: 65535,
				Usage: relay.Usage{OutputTokens: 1 << 62}},
		},
		{
			name: "unicode and quotes survive",
			in: relay.Record{RequestID: "d-text", Start: time.Date(2024, 2, 29, 12, 0, 0, 1000, time.UTC),
				Tenant: "ténant 'quoted' \"x\"", Path: "/v1/ünïcode\\path", Labels: map[string]string{"k\x00": "v\n"}},
			want: relay.Record{RequestID: "d-text", Start: time.Date(2024, 2, 29, 12, 0, 0, 1000, time.UTC),
				Tenant: "ténant 'quoted' \"x\"", Path: "/v1/ünïcode\\path", Labels: map[string]string{"k\x00": "v\n"}},
		},
	}
	ctx := context.Background()
	// The first record goes through Record, the rest through one batch.
	if err := rec.Record(ctx, tests[0].in); err != nil {
		t.Fatalf("Record: %v", err)
	}
	var batch []relay.Record
	for _, tt := range tests[1:] {
		batch = append(batch, tt.in)
	}
	if err := rec.RecordBatch(ctx, batch); err != nil {
		t.Fatalf("RecordBatch: %v", err)
	}
	if err := rec.RecordBatch(ctx, nil); err != nil {
		t.Fatalf("RecordBatch(nil): %v", err)
	}
	got := readRecords(t, conn, table)
	if len(got) != len(tests) {
		t.Fatalf("read %d records, want %d", len(got), len(tests))
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(got[i], tt.want) {
				t.Errorf("read back\n%+v\nwant\n%+v", got[i], tt.want)
			}
		})
	}
	if err := rec.Healthy(ctx); err != nil {
		t.Errorf("Healthy: %v", err)
	}
	// CreateTable is idempotent.
	if err := relayclickhouse.CreateTable(ctx, conn, table); err != nil {
		t.Errorf("second CreateTable: %v", err)
	}
}

func TestRecordHonoursContext(t *testing.T) {
	conn := testConn(t)
	table := testTable(t, conn)
	rec, err := relayclickhouse.New(conn, table)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := rec.RecordBatch(ctx, []relay.Record{fullRecord("x")}); err != context.Canceled {
		t.Errorf("RecordBatch with a cancelled context: %v, want context.Canceled", err)
	}
	if n := count(t, conn, table); n != 0 {
		t.Errorf("%d rows stored by a cancelled write", n)
	}
}

// TestHundredThousandThroughAsyncRecorder sends 100,000 records through
// the relay's AsyncRecorder and checks that every one arrived.
func TestHundredThousandThroughAsyncRecorder(t *testing.T) {
	conn := testConn(t)
	table := testTable(t, conn)
	rec, err := relayclickhouse.New(conn, table)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		errs    []error
		reg     = prometheus.NewRegistry()
		tenants = []string{"acme", "globex", "initech", "umbrella", "hooli", "stark", "wayne"}
	)
	async := relay.NewAsyncRecorder(rec, relay.AsyncOptions{
		QueueSize: 200000, BatchSize: 5000, WriteTimeout: time.Minute, Registerer: reg,
		OnError: func(err error) { mu.Lock(); errs = append(errs, err); mu.Unlock() },
	})
	const n = 100000
	type sums struct{ count, in, out, cached, reasoning int64 }
	want := map[string]*sums{}
	var total sums
	base := time.Now()
	ctx := context.Background()
	for i := range n {
		r := relay.Record{
			RequestID: fmt.Sprintf("req-%06d", i),
			Start:     base.Add(time.Duration(i) * time.Millisecond),
			Tenant:    tenants[i%len(tenants)],
			Model:     "model-" + fmt.Sprint(i%3),
			Status:    200,
			Usage: relay.Usage{InputTokens: int64(i%1000 + 1), OutputTokens: int64(i % 500),
				CachedInputTokens: int64(i % 3), ReasoningTokens: int64(i % 11)},
		}
		s := want[r.Tenant]
		if s == nil {
			s = &sums{}
			want[r.Tenant] = s
		}
		for _, acc := range []*sums{s, &total} {
			acc.count++
			acc.in += r.Usage.InputTokens
			acc.out += r.Usage.OutputTokens
			acc.cached += r.Usage.CachedInputTokens
			acc.reasoning += r.Usage.ReasoningTokens
		}
		if err := async.Record(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	if err := async.Close(cctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	mu.Lock()
	if len(errs) > 0 {
		t.Errorf("%d write errors, first: %v", len(errs), errs[0])
	}
	mu.Unlock()
	if d := async.Dropped(); d != 0 {
		t.Errorf("%d records dropped", d)
	}

	var c, in, out, cached, reasoning, ids uint64
	if err := conn.QueryRow(ctx, `SELECT count(), sum(input_tokens), sum(output_tokens),
		sum(cached_input_tokens), sum(reasoning_tokens), uniqExact(request_id) FROM `+table).
		Scan(&c, &in, &out, &cached, &reasoning, &ids); err != nil {
		t.Fatal(err)
	}
	if got := (sums{int64(c), int64(in), int64(out), int64(cached), int64(reasoning)}); got != total || ids != n {
		t.Errorf("stored %+v with %d distinct ids, want %+v with %d", got, ids, total, n)
	}
	rows, err := conn.Query(ctx, `SELECT tenant, count(), sum(input_tokens), sum(output_tokens),
		sum(cached_input_tokens), sum(reasoning_tokens) FROM `+table+` GROUP BY tenant`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var tenant string
		if err := rows.Scan(&tenant, &c, &in, &out, &cached, &reasoning); err != nil {
			t.Fatal(err)
		}
		seen++
		w, ok := want[tenant]
		if got := (sums{int64(c), int64(in), int64(out), int64(cached), int64(reasoning)}); !ok || got != *w {
			t.Errorf("tenant %q: stored %+v, want %+v", tenant, got, w)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if seen != len(want) {
		t.Errorf("%d tenants stored, want %d", seen, len(want))
	}
	if got := histogramCount(t, reg, "relay_storage_write_ms"); got < n/5000 {
		t.Errorf("relay_storage_write_ms observed %d writes, want at least %d", got, n/5000)
	}
}
