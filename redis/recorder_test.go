package relayredis

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/relay"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newTestRecorder returns a recorder writing to a stream of the test's
// own, deleted when the test ends (streams, unlike limiter keys, do not
// expire).
func newTestRecorder(t *testing.T, c redis.UniversalClient, opts ...Option) *Recorder {
	t.Helper()
	rec, err := NewRecorder(c, append([]Option{WithPrefix(uniquePrefix(t))}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Del(context.Background(), rec.Stream()).Err() })
	return rec
}

func fullRecord() relay.Record {
	return relay.Record{
		RequestID:       "req-1",
		ClientRequestID: "client-1",
		Start:           time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.FixedZone("CET", 3600)),
		Tenant:          "acme",
		KeyID:           "key-1",
		Route:           "chat",
		Upstream:        "openai",
		Method:          "POST",
		Path:            "/v1/chat/completions",
		Model:           "gpt-x",
		ResponseModel:   "gpt-x-2025",
		Provider:        relay.ProviderOpenAI,
		Kind:            relay.KindSSE,
		Stream:          true,
		Status:          200,
		ErrorType:       relay.ErrTypeStreamInterrupted,
		BytesIn:         120,
		BytesOut:        4567,
		Events:          42,
		TTFB:            12*time.Millisecond + 345*time.Microsecond,
		TTFT:            250 * time.Millisecond,
		Duration:        3*time.Second + 500*time.Microsecond,
		ClientGone:      true,
		Usage: relay.Usage{InputTokens: 11, OutputTokens: 22, CachedInputTokens: 3, CacheCreationInputTokens: 5,
			ReasoningTokens: 4, AudioInputTokens: 6, AudioOutputTokens: 7, Estimated: true},
		Cost:     relay.Charge{Known: true, Amount: 12_345, Currency: "USD", PriceVersion: "2026-11-29"},
		Attempts: 2,
		AttemptLog: []relay.AttemptInfo{
			{Upstream: "azure", Status: 503, ErrorType: relay.ErrTypeUpstreamStatus},
			{Upstream: "openai", Status: 200},
		},
		Characters: 99,
		Labels:     map[string]string{"team": "search", "env": "prod"},
		Truncated:  true,
		FramesIn:   31,
		FramesOut:  32,
		CloseCode:  1000,
		ClosedBy:   "client",
	}
}

// TestFullRecordSetsEveryField guards the round trip below: when
// relay.Record gains a field, this fails until fullRecord sets it, and
// then the round trip fails until EncodeRecord and DecodeRecord carry it.
func TestFullRecordSetsEveryField(t *testing.T) {
	var walk func(v reflect.Value, path string)
	walk = func(v reflect.Value, path string) {
		for i := range v.NumField() {
			f, name := v.Field(i), path+v.Type().Field(i).Name
			if f.Kind() == reflect.Struct && f.Type() != reflect.TypeFor[time.Time]() {
				walk(f, name+".")
				continue
			}
			assert.False(t, f.IsZero(), "fullRecord leaves %s zero", name)
		}
	}
	walk(reflect.ValueOf(fullRecord()), "")
}

func TestRecorderWritesFlatFields(t *testing.T) {
	client := newClient(t, sharedRedisAddr(t), true)
	rec := newTestRecorder(t, client)
	ctx := context.Background()
	full := fullRecord()
	bare := relay.Record{RequestID: "req-2", Start: time.Unix(1700000000, 0), Status: 429, ErrorType: relay.ErrTypeRateLimited}
	require.NoError(t, rec.RecordBatch(ctx, []relay.Record{full, bare}))
	require.NoError(t, rec.Record(ctx, relay.Record{RequestID: "req-3"}))

	msgs, err := client.XRange(ctx, rec.Stream(), "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, msgs, 3)
	want := map[string]any{
		"request_id": "req-1", "client_request_id": "client-1", "start": "2025-03-04T04:06:07.123456789Z",
		"tenant": "acme", "key_id": "key-1", "route": "chat", "upstream": "openai",
		"method": "POST", "path": "/v1/chat/completions", "model": "gpt-x",
		"response_model": "gpt-x-2025", "provider": "openai", "kind": "sse",
		"stream": "true", "status": "200", "error_type": "stream_interrupted",
		"bytes_in": "120", "bytes_out": "4567", "events": "42",
		"ttfb_ms": "12.345", "ttft_ms": "250", "duration_ms": "3000.5",
		"client_gone": "true", "input_tokens": "11", "output_tokens": "22",
		"cached_input_tokens": "3", "cache_creation_input_tokens": "5", "reasoning_tokens": "4",
		"audio_input_tokens": "6", "audio_output_tokens": "7", "usage_estimated": "true",
		"cost_known": "true", "cost_micros": "12345", "cost_currency": "USD", "cost_price_version": "2026-11-29",
		"attempts":    "2",
		"attempt_log": `[{"upstream":"azure","status":503,"error_type":"upstream_status"},{"upstream":"openai","status":200}]`,
		"characters":  "99", "labels": `{"env":"prod","team":"search"}`, "truncated": "true",
		"frames_in": "31", "frames_out": "32", "close_code": "1000", "closed_by": "client",
	}
	assert.Equal(t, want, msgs[0].Values)
	assert.Equal(t, "{}", msgs[1].Values["labels"])
	assert.Equal(t, "[]", msgs[1].Values["attempt_log"])
	assert.Equal(t, "false", msgs[1].Values["stream"])
	assert.Len(t, msgs[1].Values, len(want), "every field, even when empty")

	// Round trip: what a consumer decodes is what was recorded (Start in
	// UTC, durations to the microsecond).
	for i, orig := range []relay.Record{full, bare} {
		got, err := DecodeRecord(msgs[i].Values)
		require.NoError(t, err)
		orig.Start = orig.Start.UTC()
		assert.Equal(t, orig, got)
	}
}

func TestDecodeRecordRejectsMalformed(t *testing.T) {
	tests := map[string]map[string]any{
		"start":       {"start": "yesterday"},
		"status":      {"status": "ok"},
		"stream":      {"stream": "perhaps"},
		"cost_micros": {"cost_micros": "0.01"},
		"duration_ms": {"duration_ms": "NaN"},
		"labels":      {"labels": "[1,2]"},
		"attempt_log": {"attempt_log": `{"upstream":"a"}`},
	}
	for field, values := range tests {
		t.Run(field, func(t *testing.T) {
			_, err := DecodeRecord(values)
			assert.ErrorContains(t, err, field)
		})
	}
	rec, err := DecodeRecord(map[string]any{"request_id": "r", "future_field": "x"})
	require.NoError(t, err)
	assert.Equal(t, relay.Record{RequestID: "r"}, rec, "missing fields are zero, unknown ones ignored")
}

// TestRecorderCapsTheStream: MAXLEN ~ trims whole macro nodes (100
// entries by default), so the stream stays within a node of the cap.
func TestRecorderCapsTheStream(t *testing.T) {
	client := newClient(t, sharedRedisAddr(t), true)
	ctx := context.Background()
	batch := make([]relay.Record, 100)
	for i := range batch {
		batch[i] = relay.Record{RequestID: "r" + strings.Repeat("x", i%7)}
	}
	tests := []struct {
		name     string
		maxLen   int64
		min, max int64
	}{
		{"capped at about 150", 150, 150, 250},
		{"uncapped", 0, 1000, 1000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := newTestRecorder(t, client, WithMaxLen(tc.maxLen))
			for range 10 {
				require.NoError(t, rec.RecordBatch(ctx, batch))
			}
			n, err := client.XLen(ctx, rec.Stream()).Result()
			require.NoError(t, err)
			t.Logf("%d entries after 1000 appends", n)
			assert.GreaterOrEqual(t, n, tc.min)
			assert.LessOrEqual(t, n, tc.max)
		})
	}
}

// TestRecorderThroughRelay wires limiter and recorder into a relay, as a
// host would, and finds each request, refused ones included, in the
// stream, without the client's key.
func TestRecorderThroughRelay(t *testing.T) {
	addr := sharedRedisAddr(t)
	upstream := startUpstream(t)
	client := newClient(t, addr, true)
	rec := newTestRecorder(t, client)
	lim, err := NewLimiter(client, WithPrefix(uniquePrefix(t)), WithTimeout(5*time.Second))
	require.NoError(t, err)
	r := newReplica(t, upstream.URL, "acme", &relay.Limits{RequestsPerMinute: 2, Burst: 2},
		relay.WithLimiter(lim), relay.WithRecorder(rec))
	hc := newHTTPClient(t)
	var statuses []int
	for range 3 {
		statuses = append(statuses, r.mustPost(t, hc).StatusCode)
	}
	require.Equal(t, []int{http.StatusOK, http.StatusOK, http.StatusTooManyRequests}, statuses)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, r.relay.Recorder().Flush(ctx))
	require.NoError(t, r.relay.Ready(ctx), "limiter and recorder healthy")

	msgs, err := client.XRange(ctx, rec.Stream(), "-", "+").Result()
	require.NoError(t, err)
	require.Len(t, msgs, 3)
	for i, m := range msgs {
		got, err := DecodeRecord(m.Values)
		require.NoError(t, err)
		assert.Equal(t, statuses[i], got.Status)
		assert.Equal(t, "acme", got.Tenant)
		assert.Equal(t, "key-1", got.KeyID)
		assert.Equal(t, "chat", got.Route)
		assert.Equal(t, http.MethodPost, got.Method)
		assert.Equal(t, "/v1/chat/completions", got.Path)
		assert.NotEmpty(t, got.RequestID)
		for k, v := range m.Values {
			assert.NotContains(t, v, clientKey, "field %s", k)
		}
	}
	assert.Equal(t, string(relay.ErrTypeRateLimited), msgs[2].Values["error_type"])
}
