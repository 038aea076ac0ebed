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
