package relay

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// batchSink records batch sizes and fails the first `fail` writes.
type batchSink struct {
	mu      sync.Mutex
	batches []int
	fail    int
}

func (b *batchSink) Record(ctx context.Context, r Record) error {
	return b.RecordBatch(ctx, []Record{r})
}

func (b *batchSink) RecordBatch(_ context.Context, recs []Record) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail > 0 {
		b.fail--
		return errors.New("store down")
	}
	b.batches = append(b.batches, len(recs))
	return nil
}

func (b *batchSink) total() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, x := range b.batches {
		n += x
	}
	return n
}

func TestAsyncRecorderBatchesAndFlushes(t *testing.T) {
	s := &batchSink{}
	a := NewAsyncRecorder(s, AsyncOptions{BatchSize: 10, FlushInterval: time.Hour})
	for range 25 {
		require.NoError(t, a.Record(context.Background(), Record{}))
	}
	require.NoError(t, a.Flush(testkit.Context(t)))
	assert.Equal(t, 25, s.total())
	s.mu.Lock()
	assert.Equal(t, []int{10, 10, 5}, s.batches)
	s.mu.Unlock()
	require.NoError(t, a.Close(testkit.Context(t)))
	require.NoError(t, a.Close(testkit.Context(t)), "idempotent")
	_ = a.Record(context.Background(), Record{})
	assert.Equal(t, uint64(1), a.Dropped(), "records after Close are dropped and counted")
}

func TestAsyncRecorderRetriesThenDrops(t *testing.T) {
	errs := make(chan error, 10)
	reg := prometheus.NewRegistry()
	s := &batchSink{fail: 2}
	a := NewAsyncRecorder(s, AsyncOptions{BatchSize: 5, MaxRetries: 3, RetryBackoff: time.Millisecond,
		Registerer: reg, OnError: func(err error) { errs <- err }})
	for range 5 {
		_ = a.Record(context.Background(), Record{})
	}
	require.NoError(t, a.Flush(testkit.Context(t)))
	assert.Equal(t, 5, s.total(), "retried until stored")
	assert.Equal(t, uint64(2), a.Retried())
	assert.Len(t, errs, 2)
	assert.NoError(t, a.Healthy(context.Background()), "healthy again after a success")

	s.mu.Lock()
	s.fail = 100
	s.mu.Unlock()
	for range 5 {
		_ = a.Record(context.Background(), Record{})
	}
	require.NoError(t, a.Flush(testkit.Context(t)))
	assert.Equal(t, uint64(5), a.Dropped(), "a batch that exhausts its retries is dropped")
	assert.Error(t, a.Healthy(context.Background()))
	require.NoError(t, a.Close(testkit.Context(t)))

	mfs, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"relay_records_dropped_total", "relay_records_retried_total", "relay_records_queued", "relay_storage_write_ms"} {
		assert.True(t, names[n], n)
	}
}

func TestAsyncRecorderResumesPlainRecorder(t *testing.T) {
	var mu sync.Mutex
	var got []string
	failOnce := true
	plain := RecorderFunc(func(_ context.Context, r Record) error {
		mu.Lock()
		defer mu.Unlock()
		if r.RequestID == "b" && failOnce {
			failOnce = false
			return errors.New("hiccup")
		}
		got = append(got, r.RequestID)
		return nil
	})
	a := NewAsyncRecorder(plain, AsyncOptions{RetryBackoff: time.Millisecond})
	for _, id := range []string{"a", "b", "c"} {
		_ = a.Record(context.Background(), Record{RequestID: id})
	}
	require.NoError(t, a.Close(testkit.Context(t)))
	assert.Equal(t, []string{"a", "b", "c"}, got, "no duplicate of a after the retry")
}

func TestAsyncRecorderCloseGivesUp(t *testing.T) {
	br := &blockingRecorder{entered: make(chan struct{}, 1)}
	a := NewAsyncRecorder(br, AsyncOptions{BatchSize: 1, WriteTimeout: time.Hour})
	_ = a.Record(context.Background(), Record{})
	testkit.Recv(t, br.entered, "the recorder was never called")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, a.Close(ctx), context.Canceled, "a stuck store cannot hold Close past its deadline")
}

func TestMultiRecorder(t *testing.T) {
	a, b := &sink{}, &sink{}
	bad := RecorderFunc(func(context.Context, Record) error { return errors.New("x") })
	m := MultiRecorder(a, bad, b)
	err := m.Record(context.Background(), Record{RequestID: "1"})
	assert.Error(t, err)
	assert.Len(t, a.all(), 1)
	assert.Len(t, b.all(), 1, "one failing recorder does not stop the others")
}

// deafRecorder ignores its context and blocks until released.
type deafRecorder struct{ entered, release chan struct{} }

func (d *deafRecorder) Record(context.Context, Record) error {
	d.entered <- struct{}{}
	<-d.release
	return nil
}

func TestAsyncRecorderCloseDoesNotWaitForDeafRecorder(t *testing.T) {
	d := &deafRecorder{entered: make(chan struct{}, 1), release: make(chan struct{})}
	a := NewAsyncRecorder(d, AsyncOptions{BatchSize: 1})
	for range 3 {
		_ = a.Record(context.Background(), Record{})
	}
	testkit.Recv(t, d.entered, "the recorder was never called")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, a.Close(ctx), context.Canceled, "returns although the write hangs")
	close(d.release)
	testkit.Recv(t, a.done, "the queue's worker did not end after the write was released")
	assert.Equal(t, uint64(2), a.Dropped(), "what was left is dropped, not written")
}

// tokenStore writes one record per token and reports each call (entered
// must have room for every call).
type tokenStore struct {
	entered chan struct{}
	tokens  chan struct{}
	mu      sync.Mutex
	ids     []string
}

func (s *tokenStore) Record(ctx context.Context, r Record) error {
	s.entered <- struct{}{}
	select {
	case <-s.tokens:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids = append(s.ids, r.RequestID)
	return nil
}

// TestAsyncRecorderHoldsWhatItBounds: with its store slow, the recorder
// holds at most a batch in the worker and QueueSize records in the queue;
// the rest are dropped and counted. Every held record is written, in the
// order recorded, and the queue lets go of the memory a backlog grew.
// Mutations it kills: a worker that takes the whole queue (holding more
// than the bound), a queue bound that counts taken records, lost order.
func TestAsyncRecorderHoldsWhatItBounds(t *testing.T) {
	s := &tokenStore{entered: make(chan struct{}, 1000), tokens: make(chan struct{}, 1000)}
	const batch, queue = 3, 40
	a := NewAsyncRecorder(s, AsyncOptions{QueueSize: queue, BatchSize: batch, FlushInterval: time.Hour, WriteTimeout: time.Minute})
	t.Cleanup(func() { _ = a.Close(testkit.Context(t)) })
	n := 0
	record := func(k int) {
		for range k {
			require.NoError(t, a.Record(context.Background(), Record{RequestID: strconv.Itoa(n)}))
			n++
		}
	}
	record(batch)
	testkit.Recv(t, s.entered, "the first batch's write")
	record(100)
	assert.Equal(t, uint64(100-queue), a.Dropped(), "one batch in the worker, a full queue, the rest dropped")
	assert.Equal(t, float64(queue), testutil.ToFloat64(a.queuedG))

	// The first batch is written; the worker takes the next one, and only
	// that one: the queue has room for a batch again, no more.
	for range batch {
		s.tokens <- struct{}{}
	}
	for range batch { // the first batch's other two, then the next batch's first
		testkit.Recv(t, s.entered, "the next write")
	}
	assert.Equal(t, float64(queue-batch), testutil.ToFloat64(a.queuedG))
	record(10)
	assert.Equal(t, uint64(100-queue+10-batch), a.Dropped())

	for range 2 * queue {
		s.tokens <- struct{}{}
	}
	require.NoError(t, a.Flush(testkit.Context(t)))
	s.mu.Lock()
	ids := s.ids
	s.mu.Unlock()
	require.Len(t, ids, batch+queue+batch)
	for i, id := range ids[:batch+queue] {
		assert.Equal(t, strconv.Itoa(i), id, "record %d", i)
	}
	assert.Zero(t, a.QueuedBytes())
	a.mu.Lock()
	assert.Nil(t, a.pending, "the backlog's slice is released")
	a.mu.Unlock()
}

// TestAsyncRecorderWritesPartialBatchesInOrder: records arriving in
// bursts smaller than a batch are written in order, in full batches
// while they come and the rest on Flush, whatever the burst sizes.
func TestAsyncRecorderWritesPartialBatchesInOrder(t *testing.T) {
	g := newGate()
	close(g.open)
	a := NewAsyncRecorder(g, AsyncOptions{BatchSize: 7, FlushInterval: time.Hour})
	t.Cleanup(func() { _ = a.Close(testkit.Context(t)) })
	n := 0
	for _, burst := range []int{1, 5, 9, 2, 13, 7, 4} {
		for range burst {
			require.NoError(t, a.Record(context.Background(), Record{RequestID: strconv.Itoa(n)}))
			n++
		}
	}
	require.NoError(t, a.Flush(testkit.Context(t)))
	got := g.all()
	require.Len(t, got, n)
	for i, r := range got {
		assert.Equal(t, strconv.Itoa(i), r.RequestID)
	}
	assert.Zero(t, a.Dropped())
}

// BenchmarkAsyncRecorder queues one request's record per op, the worker
// writing batches to a store that keeps nothing. Each op yields the
// processor once, as a request's handler does while it waits for I/O, so
// that the worker keeps up on one processor too.
func BenchmarkAsyncRecorder(b *testing.B) {
	a := NewAsyncRecorder(RecorderFunc(func(context.Context, Record) error { return nil }), AsyncOptions{})
	rec := Record{RequestID: "0123456789abcdef0123456789abcdef", Tenant: "t", KeyID: "k", Route: "r",
		Upstream: "u", Method: "POST", Path: "/v1/chat/completions", Model: "m", Status: 200}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		_ = a.Record(ctx, rec)
		runtime.Gosched()
	}
	if err := a.Close(ctx); err != nil {
		b.Fatal(err)
	}
	if d := a.Dropped(); d > 0 {
		b.Fatalf("%d records dropped", d)
	}
}
