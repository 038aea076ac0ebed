package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/examples/internal/streamtest"
	"github.com/streamrelay/relay/internal/testkit"
)

// Requests through a relay end up as rows, failures included, once the
// relay has shut down.
func TestRequestsBecomeRows(t *testing.T) {
	ctx := testkit.Context(t)
	rec, err := OpenSQLiteRecorder(ctx, filepath.Join(t.TempDir(), "relay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()

	upstream := streamtest.Serve(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"x","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}`)
	})})
	rl, err := newRelay(upstream, streamtest.UpstreamKey, streamtest.ClientKey, rec, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	base := streamtest.Serve(t, &http.Server{Handler: rl})
	for _, key := range []string{streamtest.ClientKey, streamtest.ClientKey, "wrong-key"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/chat/completions",
			strings.NewReader(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rl.Shutdown(sctx); err != nil { // writes what is queued
		t.Fatal(err)
	}

	rows, err := rec.DB().QueryContext(ctx,
		`SELECT tenant, key_id, route, status, error_type, labels, duration_ms FROM relay_requests ORDER BY status`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	type row struct {
		tenant, keyID, route string
		status               int
		errType              string
		labels               *string
		durationMs           float64
	}
	var got []row
	for rows.Next() {
		var r row
		if err := rows.Scan(&r.tenant, &r.keyID, &r.route, &r.status, &r.errType, &r.labels, &r.durationMs); err != nil {
			t.Fatal(err)
		}
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d rows, want 3: %+v", len(got), got)
	}
	for _, r := range got[:2] {
		if r.tenant != "acme" || r.keyID != "example" || r.route != "openai" || r.status != 200 ||
			r.labels == nil || *r.labels != `{"plan":"pro"}` || r.durationMs <= 0 {
			t.Errorf("row %+v", r)
		}
	}
	if r := got[2]; r.status != 401 || r.errType != "auth" || r.tenant != "" {
		t.Errorf("rejected request's row %+v", r)
	}
}

// A batch retried after a lost acknowledgement stores nothing twice, and a
// batch is stored whole or not at all.
func TestRecordBatch(t *testing.T) {
	ctx := context.Background()
	rec, err := OpenSQLiteRecorder(ctx, filepath.Join(t.TempDir(), "relay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	batch := []relay.Record{
		{RequestID: "a", Start: now, Tenant: "t", Status: 200, Usage: relay.Usage{InputTokens: 3, OutputTokens: 4,
			CacheCreationInputTokens: 1, AudioOutputTokens: 2, Estimated: true}},
		{RequestID: "b", Start: now, Tenant: "t", Status: 200},
	}
	for range 2 {
		if err := rec.RecordBatch(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := rec.RecordBatch(canceled, []relay.Record{{RequestID: "c", Start: now}}); err == nil {
		t.Error("a batch with a cancelled context reported success")
	}
	var n, tokens int64
	var start string
	if err := rec.DB().QueryRowContext(ctx,
		`SELECT count(*), sum(input_tokens + output_tokens), min(start) FROM relay_requests`).Scan(&n, &tokens, &start); err != nil {
		t.Fatal(err)
	}
	if n != 2 || tokens != 7 || start != "2026-01-02T03:04:05.000000006Z" {
		t.Errorf("count %d, tokens %d, start %s; want 2, 7, 2026-01-02T03:04:05.000000006Z", n, tokens, start)
	}
	var creation, audioOut, estimated int64
	if err := rec.DB().QueryRowContext(ctx, `SELECT cache_creation_input_tokens, audio_output_tokens, usage_estimated
		FROM relay_requests WHERE request_id = 'a'`).Scan(&creation, &audioOut, &estimated); err != nil {
		t.Fatal(err)
	}
	if creation != 1 || audioOut != 2 || estimated != 1 {
		t.Errorf("cache creation %d, audio output %d, estimated %d; want 1, 2, 1", creation, audioOut, estimated)
	}
	if err := rec.Healthy(ctx); err != nil {
		t.Error(err)
	}
}

// A table made by the example before the billing columns gets them.
func TestMigratesAnOlderTable(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "relay.db")
	old, err := OpenSQLiteRecorder(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	for _, col := range []string{"cache_creation_input_tokens", "audio_input_tokens", "audio_output_tokens", "usage_estimated",
		"cost_known", "cost_micros", "cost_currency", "cost_price_version"} {
		if _, err := old.DB().ExecContext(ctx, "ALTER TABLE relay_requests DROP COLUMN "+col); err != nil {
			t.Fatal(err)
		}
	}
	old.Close()
	rec, err := OpenSQLiteRecorder(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	if err := rec.Record(ctx, relay.Record{RequestID: "x", Start: time.Now(), Usage: relay.Usage{Estimated: true}}); err != nil {
		t.Fatal(err)
	}
	var estimated int64
	if err := rec.DB().QueryRowContext(ctx, `SELECT usage_estimated FROM relay_requests`).Scan(&estimated); err != nil || estimated != 1 {
		t.Errorf("usage_estimated %d, %v; want 1", estimated, err)
	}
}

// The cost columns hold Record.Cost, and the root README's query sums
// them per tenant per day, exactly, with unknown costs counted apart.
func TestSpendPerTenantPerDay(t *testing.T) {
	ctx := context.Background()
	rec, err := OpenSQLiteRecorder(ctx, filepath.Join(t.TempDir(), "relay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	today := time.Now().UTC()
	yesterday := today.Add(-24 * time.Hour)
	usd := func(n relay.Money) relay.Charge {
		return relay.Charge{Known: true, Amount: n, Currency: "USD", PriceVersion: "v1"}
	}
	batch := []relay.Record{
		{RequestID: "a", Start: today, Tenant: "acme", Cost: usd(8200)},
		{RequestID: "b", Start: today, Tenant: "acme", Cost: usd(1)},
		{RequestID: "c", Start: today, Tenant: "acme", Cost: relay.Charge{Currency: "USD", PriceVersion: "v1"}}, // unknown
		{RequestID: "d", Start: yesterday, Tenant: "acme", Cost: usd(5_000_000)},
		{RequestID: "e", Start: today, Tenant: "globex", Cost: usd(123)},
		{RequestID: "f", Start: today.Add(-40 * 24 * time.Hour), Tenant: "globex", Cost: usd(999)}, // too old
	}
	if err := rec.RecordBatch(ctx, batch); err != nil {
		t.Fatal(err)
	}
	rows, err := rec.DB().QueryContext(ctx, spendPerTenantPerDay)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var tenant, day, currency string
		var requests, micros, unpriced int64
		if err := rows.Scan(&tenant, &day, &currency, &requests, &micros, &unpriced); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s %s %d %d %d", tenant, day, currency, requests, micros, unpriced))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	d := func(t time.Time) string { return t.Format(time.DateOnly) }
	want := []string{
		"acme " + d(yesterday) + " USD 1 5000000 0",
		"acme " + d(today) + " USD 3 8201 1", // 8200 + 1; the unknown one counted, not summed
		"globex " + d(today) + " USD 1 123 0",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), spendPerTenantPerDay) {
		t.Error("the root README does not show the query tested here (section Cost and budgets)")
	}
}
