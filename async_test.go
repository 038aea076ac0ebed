package relay

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
