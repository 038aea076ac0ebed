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
	// relay_records_queued_bytes and relay_storage_write_ms. Nil means they are kept but not registered.
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

	mu     sync.RWMutex // guards closed against sends on a closed queue
	closed bool
	queue  chan queuedRecord
	flush  chan chan struct{}
	done   chan struct{}

	ctx    context.Context // cancelled when Close gives up waiting
	cancel context.CancelFunc

	dropped atomic.Uint64
	retried atomic.Uint64
	failing atomic.Bool
	bytes   atomic.Int64 // estimated size of the queued records

	droppedC prometheus.CounterFunc
	retriedC prometheus.CounterFunc
	queuedG  prometheus.GaugeFunc
	bytesG   prometheus.GaugeFunc
	writeMs  prometheus.Histogram
}

// queuedRecord is a record with the size it was counted at, so that the
// worker takes off exactly what Record added.
type queuedRecord struct {
	rec  Record
	size int64
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
		queue: make(chan queuedRecord, opt.QueueSize),
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
	}, func() float64 { return float64(len(a.queue)) })
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
		for _, c := range []prometheus.Collector{a.droppedC, a.retriedC, a.queuedG, a.bytesG, a.writeMs} {
			registerOrReuse(opt.Registerer, c)
		}
	}
	go a.run()
	return a
}

// Record queues rec and returns at once. It never blocks and never fails:
// a record that finds the queue full (in count or in bytes) or the
// recorder closed is dropped and counted.
func (a *AsyncRecorder) Record(_ context.Context, rec Record) error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		a.dropped.Add(1)
		return nil
	}
	size := recordSize(&rec)
	// Reserve first, so that concurrent callers never overshoot the bound
	// together; a refused reservation is given back.
	if a.bytes.Add(size) > a.opt.MaxQueueBytes {
		a.bytes.Add(-size)
		a.dropped.Add(1)
		return nil
	}
	select {
	case a.queue <- queuedRecord{rec, size}:
	default:
		a.bytes.Add(-size)
		a.dropped.Add(1)
	}
	return nil
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
	if !a.closed {
		a.closed = true
		close(a.queue)
	}
	a.mu.Unlock()
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
	batch := make([]Record, 0, a.opt.BatchSize)
	tick := time.NewTicker(a.opt.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case q, ok := <-a.queue:
			if !ok {
				a.write(batch)
				return
			}
			batch = a.take(batch, q)
			if len(batch) >= a.opt.BatchSize {
				a.write(batch)
				batch = batch[:0]
			}
		case <-tick.C:
			if len(batch) > 0 {
				a.write(batch)
				batch = batch[:0]
			}
		case ack := <-a.flush:
			// Take what is queued now, then write it all.
			for drained := false; !drained; {
				select {
				case q, ok := <-a.queue:
					if !ok {
						drained = true
						break
					}
					batch = a.take(batch, q)
					if len(batch) >= a.opt.BatchSize {
						a.write(batch)
						batch = batch[:0]
					}
				default:
					drained = true
				}
			}
			a.write(batch)
			batch = batch[:0]
			close(ack)
		}
	}
}

// take moves a queued record into the batch: it no longer counts against
// MaxQueueBytes.
func (a *AsyncRecorder) take(batch []Record, q queuedRecord) []Record {
	a.bytes.Add(-q.size)
	return append(batch, q.rec)
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

// registerOrReuse registers c, tolerating an identical collector that is
// already registered (two relays sharing one registry and recorder).
func registerOrReuse(reg prometheus.Registerer, c prometheus.Collector) prometheus.Collector {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector
		}
		// Only a programming error (an invalid metric) gets here.
		panic(err)
	}
	return c
}
