package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestJSONLinesRecorder(t *testing.T) {
	var buf bytes.Buffer
	j := NewJSONLinesRecorder(&buf)
	rec := Record{RequestID: "r1", Tenant: "acme", Status: 200, Duration: 1500 * time.Millisecond,
		Usage: Usage{InputTokens: 3, OutputTokens: 4}, Labels: map[string]string{"plan": "pro"}}
	require.NoError(t, j.Record(context.Background(), rec))
	require.NoError(t, j.RecordBatch(context.Background(), []Record{{RequestID: "r2"}, {RequestID: "r3"}}))
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	require.Len(t, lines, 3)
	var got Record
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &got))
	assert.Equal(t, rec.RequestID, got.RequestID)
	assert.Equal(t, rec.Usage, got.Usage)
	assert.Equal(t, rec.Duration, got.Duration)
	assert.Equal(t, "pro", got.Labels["plan"])
	assert.Contains(t, lines[2], `"request_id":"r3"`)
}

func TestSlogRecorder(t *testing.T) {
	var buf bytes.Buffer
	s := SlogRecorder{Logger: slog.New(slog.NewJSONHandler(&buf, nil))}
	require.NoError(t, s.Record(context.Background(), Record{RequestID: "r1", Tenant: "acme", Status: 429, ErrorType: ErrTypeRateLimited}))
	var m map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &m))
	assert.Equal(t, "relay request", m["msg"])
	assert.Equal(t, "acme", m["tenant"])
	assert.Equal(t, float64(429), m["status"])
	assert.Equal(t, "rate_limited", m["error_type"])
}

// TestRecordJSONMatchesEncodingJSON: the hand-written encoder produces the
// very document json.Marshal does, awkward strings included.
func TestRecordJSONMatchesEncodingJSON(t *testing.T) {
	full := Record{RequestID: "r\"1", Start: time.Date(2026, 1, 2, 3, 4, 5, 600700, time.FixedZone("x", 3600)),
		Tenant: "<acme> & co\n\t\x01\b\f", KeyID: "k\u2028\u2029", Route: "r", Upstream: "u", Method: "POST",
		Path: "/v1/ünï\xff", Model: "m", ResponseModel: "m2", Provider: ProviderAnthropic, Kind: KindSSE,
		Stream: true, Status: 499, ErrorType: ErrTypeClientCanceled, BytesIn: 1, BytesOut: 2, Events: 3,
		TTFB: 4, TTFT: 5, Duration: 6, ClientGone: true, Usage: Usage{1, 2, 3, 4, 5, 6, 7, true}, Attempts: 2,
		Characters: 9, Labels: map[string]string{"b": "2", "a": "1", "é": "\\"}}
	for _, rec := range []Record{full, {}} {
		want, err := json.Marshal(rec)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(appendRecordJSON(nil, &rec)))
	}
}

func BenchmarkRecordJSON(b *testing.B) {
	rec := Record{RequestID: "0123456789abcdef0123456789abcdef", Start: time.Now(), Tenant: "acme", KeyID: "k1",
		Route: "openai", Upstream: "api.openai.com", Method: "POST", Path: "/v1/chat/completions", Model: "gpt-4o-mini",
		Kind: KindSSE, Stream: true, Status: 200, BytesIn: 300, BytesOut: 20000, Events: 200, TTFB: 1e6, TTFT: 2e6,
		Duration: 3e9, Usage: Usage{InputTokens: 10, OutputTokens: 200}, Attempts: 1}
	b.Run("reflection", func(b *testing.B) {
		for b.Loop() {
			_, _ = json.Marshal(rec)
		}
	})
	b.Run("appender", func(b *testing.B) {
		buf := make([]byte, 0, 1024)
		for b.Loop() {
			buf = appendRecordJSON(buf[:0], &rec)
		}
	})
}
