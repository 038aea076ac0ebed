package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The tests in this file walk Record by reflection, so that a field added
// to it later is covered without anyone remembering to: every encoder must
// write it, or the test names the field it missed.

// recordLeaf is one field of Record to fill: a field of a scalar type, a
// time, or a map; nested structs (Usage) are walked into.
type recordLeaf struct {
	index []int  // for reflect.Value.FieldByIndex
	name  string // JSON path, e.g. "usage.input_tokens"
}

// recordLeaves lists Record's leaves in declaration order.
func recordLeaves(t *testing.T) []recordLeaf {
	t.Helper()
	var leaves []recordLeaf
	var walk func(typ reflect.Type, index []int, prefix string)
	walk = func(typ reflect.Type, index []int, prefix string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			if !f.IsExported() {
				continue // encoding/json ignores it too
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			require.NotEmpty(t, name, "Record field %s has no JSON name", f.Name)
			require.NotEqual(t, "-", name, "Record field %s is left out of JSON", f.Name)
			idx := append(append([]int(nil), index...), i)
			if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Time]() {
				walk(f.Type, idx, prefix+name+".")
				continue
			}
			leaves = append(leaves, recordLeaf{idx, prefix + name})
		}
	}
	walk(reflect.TypeFor[Record](), nil, "")
	require.NotEmpty(t, leaves)
	return leaves
}

// setNonZero gives v a non-zero value derived from n (distinct per leaf),
// with strings that need escaping. A field of a kind it does not know
// fails the test: teach it the kind, and every encoder is tested again.
func setNonZero(t *testing.T, v reflect.Value, name string, n int) {
	t.Helper()
	switch {
	case v.Type() == reflect.TypeFor[time.Time]():
		v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 600700+n, time.FixedZone("x", 3600))))
		return
	case v.Type() == reflect.TypeFor[map[string]string]():
		v.Set(reflect.ValueOf(map[string]string{"b": "2", "a": "1 <&>", "é": "\\\"\u2028"}))
		return
	case v.Type() == reflect.TypeFor[[]AttemptInfo]():
		v.Set(reflect.ValueOf([]AttemptInfo{
			{Upstream: name + " <a> \"q\"\x01\xff\u2028", Status: 503 + n, ErrorType: ErrTypeUpstreamStatus},
			{Upstream: "b", Status: 200}, // no error type: omitted
		}))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(name + " <x> & \"q\"\n\t\x01é\xff\u2028\u2029")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(n) * 1001)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(n) * 1001)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(n) + 0.5)
	default:
		t.Fatalf("Record field %s has type %s, which the test cannot fill yet: teach setNonZero", name, v.Type())
	}
}

// fullRecord has every leaf non-zero.
func fullRecord(t *testing.T) Record {
	t.Helper()
	var rec Record
	v := reflect.ValueOf(&rec).Elem()
	for i, l := range recordLeaves(t) {
		setNonZero(t, v.FieldByIndex(l.index), l.name, i+1)
	}
	return rec
}

// TestRecordJSONEveryField: the hand-written encoder writes the very
// document json.Marshal does for a record with every field set, for the
// zero record, and for each field set alone (which checks its omitempty).
func TestRecordJSONEveryField(t *testing.T) {
	check := func(t *testing.T, rec Record) {
		t.Helper()
		want, err := json.Marshal(rec)
		require.NoError(t, err)
		assert.Equal(t, string(want), string(appendRecordJSON(nil, &rec)))
	}
	full := fullRecord(t)
	t.Run("every field", func(t *testing.T) { check(t, full) })
	t.Run("zero", func(t *testing.T) { check(t, Record{}) })
	for i, l := range recordLeaves(t) {
		t.Run("only "+l.name, func(t *testing.T) {
			var rec Record
			setNonZero(t, reflect.ValueOf(&rec).Elem().FieldByIndex(l.index), l.name, i+1)
			check(t, rec)
		})
	}
	// Appending after earlier output (as RecordBatch does) changes nothing.
	want, err := json.Marshal(full)
	require.NoError(t, err)
	got := appendRecordJSON([]byte("prefix"), &full)
	assert.Equal(t, "prefix"+string(want), string(got))
}

// slogKey is SlogRecorder's key for a Record JSON path (see its doc).
func slogKey(jsonPath string) string {
	switch jsonPath {
	case "ttfb_ns", "ttft_ns", "duration_ns":
		return strings.TrimSuffix(jsonPath, "_ns")
	case "usage.estimated":
		return "usage_estimated" // "estimated" alone would not say what
	}
	if rest, ok := strings.CutPrefix(jsonPath, "cost."); ok {
		return "cost_" + rest
	}
	return strings.TrimPrefix(jsonPath, "usage.")
}

// TestSlogRecorderEveryField: SlogRecorder writes every Record field, with
// the value json.Marshal gives it, under its documented key.
func TestSlogRecorderEveryField(t *testing.T) {
	full := fullRecord(t)
	var buf bytes.Buffer
	s := SlogRecorder{Logger: slog.New(slog.NewJSONHandler(&buf, nil))}
	require.NoError(t, s.Record(context.Background(), full))
	var logged map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &logged))
	assert.Equal(t, "relay request", logged["msg"])
	assert.Equal(t, "INFO", logged["level"])
	delete(logged, "msg")
	delete(logged, "level")
	delete(logged, "time") // the log line's own time, not Record.Start

	doc, err := json.Marshal(full)
	require.NoError(t, err)
	var asJSON map[string]any
	require.NoError(t, json.Unmarshal(doc, &asJSON))
	want := map[string]any{}
	for _, l := range recordLeaves(t) {
		var v any = asJSON
		for part := range strings.SplitSeq(l.name, ".") {
			m, ok := v.(map[string]any)
			require.True(t, ok, l.name)
			v = m[part]
		}
		require.NotNil(t, v, "%s missing from json.Marshal's output", l.name)
		key := slogKey(l.name)
		assert.Contains(t, logged, key, "SlogRecorder drops Record field %s", l.name)
		want[key] = v
	}
	assert.Equal(t, want, logged, "SlogRecorder writes every Record field and nothing else")
}

// TestSlogRecorderZeroRecord: a zero record logs zero values, never a
// missing key, except empty labels (an empty group is left out).
func TestSlogRecorderZeroRecord(t *testing.T) {
	var buf bytes.Buffer
	s := SlogRecorder{Logger: slog.New(slog.NewJSONHandler(&buf, nil))}
	require.NoError(t, s.Record(context.Background(), Record{}))
	var logged map[string]any
	require.NoError(t, json.Unmarshal(buf.Bytes(), &logged))
	for _, l := range recordLeaves(t) {
		if l.name == "labels" {
			assert.NotContains(t, logged, "labels")
			continue
		}
		assert.Contains(t, logged, slogKey(l.name), l.name)
	}
}

// SlogRecorder's Level and Message replace Info and "relay request"
// (cmd/relay's detailed_logs logs at Debug as "request").
func TestSlogRecorderLevelAndMessage(t *testing.T) {
	var buf bytes.Buffer
	lg := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	require.NoError(t, SlogRecorder{Logger: lg, Level: slog.LevelDebug, Message: "request"}.Record(context.Background(), Record{RequestID: "r1"}))
	require.NoError(t, SlogRecorder{Logger: lg}.Record(context.Background(), Record{RequestID: "r2"}))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 2)
	assert.Contains(t, lines[0], `"level":"DEBUG","msg":"request"`)
	assert.Contains(t, lines[1], `"level":"INFO","msg":"relay request"`)
}
