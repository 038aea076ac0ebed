package relay

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// AsyncOptions configure an AsyncRecorder. Zero fields take the defaults
// given in their comments.
type AsyncOptions struct {
	// QueueSize bounds the records waiting to be written. Default 10000.
	// When the queue is full, new records are dropped and counted.
	QueueSize int
	// MaxQueueBytes bounds the estimated memory of the records waiting to
	// be written (their strings and labels plus a fixed 512 bytes each).
	// Default 64 MiB. A record that would take the queue past it is
	// dropped and counted, like one that finds the queue full. Records the
	// worker has taken for a batch no longer count.
	MaxQueueBytes int64
	// BatchSize is the most records handed to the inner recorder at once.
	// Default 500.
	BatchSize int
	// FlushInterval is the longest a record waits for its batch to fill.
	// Default 1s.
	FlushInterval time.Duration
	// WriteTimeout bounds one batch write. Default 10s.
	WriteTimeout time.Duration
	// MaxRetries is how many times a failed batch is retried, with
	// exponential backoff from RetryBackoff, before it is dropped. Default 3;
	// negative means no retry.
	MaxRetries int
	// RetryBackoff is the first retry's delay; it doubles up to 30s.
	// Default 200ms.
	RetryBackoff time.Duration
	// Registerer receives the recorder's metrics: relay_records_dropped_total,
	// relay_records_retried_total, relay_records_queued,
	// relay_records_queued_bytes and relay_storage_write_ms. Nil means they
	// are kept but not registered. NewAsyncRecorder panics when the
	// registerer refuses them (another record queue's are there already:
	// wrap the registerer with a label), as prometheus.MustRegister does; a
	// record queue that New builds reports it as New's error instead. The
	// relay sets it to its own registerer.
	Registerer prometheus.Registerer
	// OnError, if not nil, is called (from the worker) with each failed
	// batch write. The relay uses it to count storage errors and log them.
	OnError func(err error)
}

// AsyncRecorder puts a Recorder behind a bounded queue and one worker, so
// that recording never blocks a request. Records are batched; a failed
// batch is retried with backoff while new records wait in the queue, and
// records that find the queue full, or whose batch exhausts its retries,
// are dropped and counted.
//
// It is safe for concurrent use. Close it (the relay's Shutdown does) to
// write what is queued.
type AsyncRecorder struct {
	inner Recorder
	opt   AsyncOptions

	// The queue is pending[head:], a slice that Record appends to and
	// the worker takes batches from. The worker is woken once per batch,
	// not once per record as a channel's receiver is; and the slice grows
	// only to what is pending (about a batch in the steady state, at most
	// QueueSize), where a channel of QueueSize records would be allocated
	// whole and scanned whole by the garbage collector at every cycle.
	mu      sync.Mutex // guards closed, pending and head
	closed  bool
	pending []Record
	head    int           // pending[:head] was taken, and cleared
	wake    chan struct{} // capacity 1: a batch is pending, or Close was called
	flush   chan chan struct{}
	done    chan struct{}

	ctx    context.Context // cancelled when Close gives up waiting
	cancel context.CancelFunc

	dropped atomic.Uint64
	retried atomic.Uint64
	failing atomic.Bool
	bytes   atomic.Int64 // estimated size of the queued records; written under mu

	droppedC prometheus.CounterFunc
	retriedC prometheus.CounterFunc
	queuedG  prometheus.GaugeFunc
	bytesG   prometheus.GaugeFunc
	writeMs  prometheus.Histogram
}

// defaultMaxQueueBytes is AsyncOptions.MaxQueueBytes's default.
const defaultMaxQueueBytes = 64 << 20

// NewAsyncRecorder starts a worker that writes records to inner.
func NewAsyncRecorder(inner Recorder, opt AsyncOptions) *AsyncRecorder {
	if opt.QueueSize <= 0 {
		opt.QueueSize = 10000
	}
	if opt.MaxQueueBytes <= 0 {
		opt.MaxQueueBytes = defaultMaxQueueBytes
	}
	if opt.BatchSize <= 0 {
		opt.BatchSize = 500
	}
	if opt.FlushInterval <= 0 {
		opt.FlushInterval = time.Second
	}
	if opt.WriteTimeout <= 0 {
		opt.WriteTimeout = 10 * time.Second
	}
	if opt.MaxRetries == 0 {
		opt.MaxRetries = 3
	}
	if opt.RetryBackoff <= 0 {
		opt.RetryBackoff = 200 * time.Millisecond
	}
	a := &AsyncRecorder{
		inner: inner,
		opt:   opt,
		wake:  make(chan struct{}, 1),
		flush: make(chan chan struct{}),
		done:  make(chan struct{}),
	}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	a.droppedC = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "relay_records_dropped_total",
		Help: "Usage records dropped because the record queue was full or a batch exhausted its retries.",
	}, func() float64 { return float64(a.dropped.Load()) })
	a.retriedC = prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "relay_records_retried_total",
		Help: "Record batch writes retried after a storage error.",
	}, func() float64 { return float64(a.retried.Load()) })
	a.queuedG = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "relay_records_queued",
		Help: "Usage records waiting to be written.",
	}, func() float64 { return float64(a.queued()) })
	a.bytesG = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "relay_records_queued_bytes",
		Help: "Estimated memory of the usage records waiting to be written, in bytes.",
	}, func() float64 { return float64(a.bytes.Load()) })
	a.writeMs = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "relay_storage_write_ms",
		Help:    "Time to write one batch of usage records, in milliseconds.",
		Buckets: []float64{1, 5, 10, 50, 100, 500, 1000},
	})
	if opt.Registerer != nil {
		if err := register(opt.Registerer, a.collectors()...); err != nil {
			panic(err) // as prometheus.MustRegister does; New returns it as an error instead
		}
	}
	go a.run()
	return a
}

// Record queues rec and returns at once. It never blocks and never fails:
// a record that finds the queue full (in count or in bytes) or the
// recorder closed is dropped and counted.
func (a *AsyncRecorder) Record(_ context.Context, rec Record) error {
	size := recordSize(&rec)
	a.mu.Lock()
	n := len(a.pending) - a.head
	if a.closed || n >= a.opt.QueueSize || a.bytes.Load()+size > a.opt.MaxQueueBytes {
		a.mu.Unlock()
		a.dropped.Add(1)
		return nil
	}
	a.bytes.Add(size)
	if len(a.pending) == cap(a.pending) {
		a.makeRoom()
	}
	a.pending = append(a.pending, rec)
	a.mu.Unlock()
	// A batch's worth, or a full queue when that is smaller: the worker
	// then takes what is queued into its batch, which may wait to fill.
	if n+1 == min(a.opt.BatchSize, a.opt.QueueSize) {
		a.signal()
	}
	return nil
}

// makeRoom makes room in pending for one more record, by moving the queue
// to the front or to a larger slice, never larger than QueueSize. Called
// with mu held, when pending is full.
func (a *AsyncRecorder) makeRoom() {
	live := a.pending[a.head:]
	if a.head > 0 && len(live) <= cap(a.pending)/2 {
		n := copy(a.pending, live)
		clear(a.pending[n:])
		a.pending, a.head = a.pending[:n], 0
		return
	}
	grown := make([]Record, len(live), min(max(2*len(live), 64), a.opt.QueueSize))
	copy(grown, live)
	a.pending, a.head = grown, 0
}

// signal wakes the worker, unless a wake-up is already pending.
func (a *AsyncRecorder) signal() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// queued reports how many records wait for the worker.
func (a *AsyncRecorder) queued() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.pending) - a.head
}

// take moves pending records to batch until it holds BatchSize; the moved
// records no longer count against QueueSize or MaxQueueBytes. It reports
// whether records are still pending, and whether Close was called (then
// nothing more will be queued).
func (a *AsyncRecorder) take(batch []Record) (_ []Record, more, closed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := min(a.opt.BatchSize-len(batch), len(a.pending)-a.head)
	taken := a.pending[a.head : a.head+n]
	var size int64
	for i := range taken {
		size += recordSize(&taken[i])
	}
	a.bytes.Add(-size)
	batch = append(batch, taken...)
	clear(taken) // the queue keeps no record alive
	a.head += n
	if a.head == len(a.pending) {
		a.pending, a.head = a.pending[:0], 0
		if cap(a.pending) > 4*a.opt.BatchSize {
			a.pending = nil // grown by a backlog: let it go
		}
	}
	return batch, a.head < len(a.pending), a.closed
}

// QueuedBytes reports the estimated memory of the records now waiting in
// the queue.
func (a *AsyncRecorder) QueuedBytes() int64 { return a.bytes.Load() }

// Dropped reports how many records have been dropped so far.
func (a *AsyncRecorder) Dropped() uint64 { return a.dropped.Load() }

// Retried reports how many batch writes have been retried so far.
func (a *AsyncRecorder) Retried() uint64 { return a.retried.Load() }

// Healthy implements HealthChecker: it fails while the last batch write
// failed, or when the inner recorder reports itself unhealthy.
func (a *AsyncRecorder) Healthy(ctx context.Context) error {
	if a.failing.Load() {
		return errors.New("relay: record storage is failing")
	}
	if hc, ok := a.inner.(HealthChecker); ok {
		return hc.Healthy(ctx)
	}
	return nil
}

// Flush waits until every record queued before the call has been written
// (or dropped), or until ctx ends.
func (a *AsyncRecorder) Flush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case a.flush <- ack:
	case <-a.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops accepting records and writes those queued. If ctx ends
// first, the write under way is cancelled, what remains is counted as
// dropped, and ctx's error is returned at once: a recorder that ignores
// its context finishes its last write in the background, but gets no
// more. Close is idempotent.
func (a *AsyncRecorder) Close(ctx context.Context) error {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.signal()
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		a.cancel()
		return ctx.Err()
	}
}

func (a *AsyncRecorder) run() {
	defer close(a.done)
	defer a.cancel()
	// batch may wait, not full, for more records, the tick, a Flush or
	// Close: the worker holds at most BatchSize records.
	batch := make([]Record, 0, a.opt.BatchSize)
	tick := time.NewTicker(a.opt.FlushInterval)
	defer tick.Stop()
	for {
		var ack chan struct{}
		all := true // write every record, a batch that is not full included
		select {
		case <-a.wake:
			all = false
		case <-tick.C:
		case ack = <-a.flush:
		}
		for more, closed := true, false; more; {
			batch, more, closed = a.take(batch)
			if len(batch) == a.opt.BatchSize || (len(batch) > 0 && (all || closed)) {
				a.write(batch)
				clear(batch)
				batch = batch[:0]
			}
			if closed && !more {
				if ack != nil {
					close(ack)
				}
				return
			}
		}
		if ack != nil {
			close(ack)
		}
	}
}

// write stores one batch, retrying with backoff; a batch that cannot be
// stored is counted as dropped, and so is every batch once Close has
// given up.
func (a *AsyncRecorder) write(batch []Record) {
	if len(batch) == 0 {
		return
	}
	if a.ctx.Err() != nil {
		a.dropped.Add(uint64(len(batch)))
		return
	}
	backoff := a.opt.RetryBackoff
	for attempt := 0; ; attempt++ {
		n, err := a.writeOnce(batch)
		batch = batch[n:] // a plain Recorder resumes after what it stored
		if err == nil {
			a.failing.Store(false)
			return
		}
		a.failing.Store(true)
		if a.opt.OnError != nil {
			a.opt.OnError(err)
		}
		if attempt >= a.opt.MaxRetries || a.ctx.Err() != nil {
			a.dropped.Add(uint64(len(batch)))
			return
		}
		a.retried.Add(1)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-a.ctx.Done():
			t.Stop()
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// writeOnce makes one attempt and reports how many records it stored.
func (a *AsyncRecorder) writeOnce(batch []Record) (int, error) {
	ctx, cancel := context.WithTimeout(a.ctx, a.opt.WriteTimeout)
	defer cancel()
	start := time.Now()
	defer func() { a.writeMs.Observe(float64(time.Since(start).Microseconds()) / 1000) }()
	if br, ok := a.inner.(BatchRecorder); ok {
		if err := br.RecordBatch(ctx, batch); err != nil {
			return 0, err
		}
		return len(batch), nil
	}
	for i := range batch {
		if err := a.inner.Record(ctx, batch[i]); err != nil {
			return i, err
		}
	}
	return len(batch), nil
}

// collectors are the recorder's metrics, for its Registerer.
func (a *AsyncRecorder) collectors() []prometheus.Collector {
	return []prometheus.Collector{a.droppedC, a.retriedC, a.queuedG, a.bytesG, a.writeMs}
}
