package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
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
	for _, col := range []string{"cache_creation_input_tokens", "audio_input_tokens", "audio_output_tokens", "usage_estimated"} {
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
