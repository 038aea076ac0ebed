package relay

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCapRecord(t *testing.T) {
	long := "/v1/x" + strings.Repeat("é", 3000) // two-byte runes, odd offset: the cut must back up
	tests := []struct {
		name          string
		in            Record
		uri           string
		wantTruncated bool
	}{
		{"short strings are kept", Record{Method: "POST", Path: "/v1/chat", Model: "gpt-4o", ResponseModel: "gpt-4o-1"}, "/v1/chat", false},
		{"long path", Record{Method: "GET", Path: long}, long, true},
		{"long model", Record{Method: "POST", Path: "/v1/x", Model: strings.Repeat("m", 1000)}, "/v1/x", true},
		{"long response model", Record{Method: "POST", Path: "/v1/x", ResponseModel: strings.Repeat("r", 300)}, "/v1/x", true},
		{"long unknown method", Record{Method: strings.Repeat("X", 100), Path: "/"}, "/", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := tt.in
			capRecord(&rec, &http.Request{RequestURI: tt.uri})
			assert.Equal(t, tt.wantTruncated, rec.Truncated)
			for _, c := range []struct {
				got, in string
				max     int
			}{
				{rec.Path, tt.in.Path, recordMaxPath},
				{rec.Model, tt.in.Model, recordMaxModel},
				{rec.ResponseModel, tt.in.ResponseModel, recordMaxModel},
				{rec.Method, tt.in.Method, recordMaxMeth},
			} {
				assert.LessOrEqual(t, len(c.got), c.max)
				assert.True(t, strings.HasPrefix(c.in, c.got), "a cut keeps the start")
				assert.True(t, utf8.ValidString(c.got), "a cut never splits a character")
				if len(c.in) <= c.max {
					assert.Equal(t, c.in, c.got)
				} else {
					assert.Greater(t, len(c.got), c.max-utf8.UTFMax)
				}
			}
		})
	}
}

// TestCapRecordDetachesFromTheRequestLine: a queued record must not keep
// a huge request line alive through a short substring of it.
func TestCapRecordDetachesFromTheRequestLine(t *testing.T) {
	line := "POST /v1/chat?q=" + strings.Repeat("a", 1<<20) // as net/http slices it
	method, uri := line[:4], line[5:]
	path := uri[:len("/v1/chat")]
	rec := Record{Method: method, Path: path, Model: path[4:]}
	capRecord(&rec, &http.Request{RequestURI: uri})
	assert.Equal(t, "/v1/chat", rec.Path)
	assert.Equal(t, "POST", rec.Method)
	assert.False(t, rec.Truncated)
	assert.NotSame(t, unsafe.StringData(path), unsafe.StringData(rec.Path), "the path was copied")
	assert.NotSame(t, unsafe.StringData(path[4:]), unsafe.StringData(rec.Model), "the model was copied")
	assert.NotSame(t, unsafe.StringData(line), unsafe.StringData(rec.Method), "the method is a constant")

	// An ordinary request pays no copy.
	short := "/v1/chat"
	rec = Record{Method: "POST", Path: short}
	capRecord(&rec, &http.Request{RequestURI: short})
	assert.Same(t, unsafe.StringData(short), unsafe.StringData(rec.Path))
}

func TestRecordJSONNewFieldsMatchEncodingJSON(t *testing.T) {
	rec := Record{RequestID: "r1", ClientRequestID: "client-1", Path: "/v1/x", Truncated: true}
	want, err := json.Marshal(rec)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(appendRecordJSON(nil, &rec)))
	assert.Contains(t, string(want), `"client_request_id":"client-1"`)
	assert.Contains(t, string(want), `"truncated":true`)
}

// gate is a recorder whose writes wait until it is opened.
type gate struct {
	entered chan struct{}
	open    chan struct{}
	mu      sync.Mutex
	recs    []Record
}

func newGate() *gate { return &gate{entered: make(chan struct{}, 1), open: make(chan struct{})} }

func (g *gate) Record(ctx context.Context, r Record) error {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	select {
	case <-g.open:
	case <-ctx.Done():
		return ctx.Err()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.recs = append(g.recs, r)
	return nil
}

func (g *gate) all() []Record {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]Record(nil), g.recs...)
}

func awaitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// TestAsyncRecorderBoundsBytes: records beyond MaxQueueBytes are dropped
// and counted; the count goes down as the worker takes records.
func TestAsyncRecorderBoundsBytes(t *testing.T) {
	g := newGate()
	rec := Record{RequestID: "x", Path: strings.Repeat("p", 1000)}
	size := recordSize(&rec)
	a := NewAsyncRecorder(g, AsyncOptions{QueueSize: 1000, BatchSize: 1, MaxQueueBytes: 5 * size, WriteTimeout: time.Minute})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = a.Close(ctx)
	})

	require.NoError(t, a.Record(context.Background(), rec))
	awaitClosed(t, g.entered, "the worker to take the first record")
	assert.Zero(t, a.QueuedBytes(), "a record the worker took no longer counts")

	for range 20 {
		require.NoError(t, a.Record(context.Background(), rec))
		assert.LessOrEqual(t, a.QueuedBytes(), 5*size)
	}
	assert.Equal(t, 5*size, a.QueuedBytes(), "five records fit")
	assert.Equal(t, uint64(15), a.Dropped(), "the rest were dropped and counted")
	assert.Equal(t, 15.0, testutil.ToFloat64(a.droppedC))
	assert.Equal(t, float64(5*size), testutil.ToFloat64(a.bytesG))

	close(g.open)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, a.Flush(ctx))
	assert.Zero(t, a.QueuedBytes())
	assert.Len(t, g.all(), 6)
}

// TestStalledRecorderWithHugePaths: unauthenticated requests with huge
// paths against a stalled record sink hold a bounded number of bytes, and
// the records that get through hold capped paths.
func TestStalledRecorderWithHugePaths(t *testing.T) {
	const maxBytes = 32 << 10
	g := newGate()
	var upstreamHits atomic.Int32
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) { upstreamHits.Add(1) }, Route{Prefix: "/"},
		WithRecorder(g), WithRecordQueue(AsyncOptions{QueueSize: 10000, BatchSize: 1, MaxQueueBytes: maxBytes, WriteTimeout: time.Minute}))
	path := "/v1/" + strings.Repeat("a", 200<<10) // 200 KiB: the whole queue's budget, 6 times over

	const n = 40
	for i := range n {
		req := e.request("GET", path, "")
		req.Header.Del("Authorization")
		resp, _ := e.do(req)
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
		if i == 0 {
			awaitClosed(t, g.entered, "the stalled write")
		}
		require.LessOrEqual(t, e.relay.Recorder().QueuedBytes(), int64(maxBytes))
	}
	assert.Zero(t, upstreamHits.Load())
	dropped := e.relay.Recorder().Dropped()
	assert.Greater(t, dropped, uint64(0), "the byte bound dropped records")
	assert.Equal(t, float64(dropped), testutil.ToFloat64(e.relay.Recorder().droppedC))
	// Capped records are small: several fit where one uncapped would not.
	queued := uint64(n-1) - dropped
	assert.GreaterOrEqual(t, queued, uint64(5))

	close(g.open)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, e.relay.Recorder().Flush(ctx))
	recs := g.all()
	require.Len(t, recs, int(queued)+1)
	for _, r := range recs {
		assert.Equal(t, ErrTypeAuth, r.ErrorType)
		assert.True(t, r.Truncated)
		assert.Len(t, r.Path, recordMaxPath)
		assert.True(t, strings.HasPrefix(path, r.Path))
	}
}

// TestRequestIDsAreTheRelays: a client repeating one X-Request-ID gets a
// distinct relay id per request; its own id is kept beside it and is what
// the upstream sees.
func TestRequestIDsAreTheRelays(t *testing.T) {
	var mu sync.Mutex
	var upstreamIDs []string
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		upstreamIDs = append(upstreamIDs, r.Header.Get("X-Request-Id"))
		mu.Unlock()
		_, _ = w.Write([]byte(`{}`))
	}, Route{Prefix: "/v1"})

	seen := map[string]bool{}
	var responseIDs []string
	for range 5 {
		req := e.request("POST", "/v1/chat/completions", `{}`)
		req.Header.Set("X-Request-Id", "fixed-id-1")
		resp, _ := e.do(req)
		require.Equal(t, 200, resp.StatusCode)
		responseIDs = append(responseIDs, resp.Header.Get("X-Request-Id"))
	}
	recs := e.records()
	require.Len(t, recs, 5)
	for i, r := range recs {
		assert.Len(t, r.RequestID, 32)
		assert.False(t, seen[r.RequestID], "request ids are unique")
		seen[r.RequestID] = true
		assert.Equal(t, "fixed-id-1", r.ClientRequestID)
		assert.Equal(t, responseIDs[i], r.RequestID, "the client gets the relay's id back")
	}
	assert.Equal(t, []string{"fixed-id-1", "fixed-id-1", "fixed-id-1", "fixed-id-1", "fixed-id-1"}, upstreamIDs)

	// Without a client id, the relay's goes upstream.
	resp, _ := e.do(e.request("POST", "/v1/chat/completions", `{}`))
	assert.Equal(t, resp.Header.Get("X-Request-Id"), upstreamIDs[5])
	assert.Empty(t, e.lastRecord().ClientRequestID)
}

// A recorder must also be given the client id in JSON lines.
func TestJSONLinesRecorderKeepsClientRequestID(t *testing.T) {
	var b strings.Builder
	j := NewJSONLinesRecorder(&b)
	require.NoError(t, j.Record(context.Background(), Record{RequestID: "r", ClientRequestID: "c"}))
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(b.String()), &m))
	assert.Equal(t, "c", m["client_request_id"])
}
