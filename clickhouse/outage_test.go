package relayclickhouse_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamrelay/relay"
	relayclickhouse "github.com/streamrelay/relay/clickhouse"
	"github.com/streamrelay/relay/internal/testkit"
)

// These tests need no ClickHouse at all: they point the recorder at a port
// where none answers and check that streams are not affected.

const streamEvents = 50

// sseUpstream streams streamEvents content events and [DONE], flushing
// each one.
func sseUpstream(t *testing.T) *httptest.Server {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := range streamEvents {
			fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{\"content\":\"tok%d\"}}]}\n\n", i)
			if err := rc.Flush(); err != nil {
				return
			}
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	return up
}

// newRelay serves a relay recording through rec into the ClickHouse
// recorder, with metrics in reg.
func newRelay(t *testing.T, up string, rec relay.Recorder, queue relay.AsyncOptions, reg *prometheus.Registry) (*relay.Relay, *httptest.Server) {
	t.Helper()
	r, err := relay.New(
		relay.WithRoutes(relay.Route{Name: "chat", Prefix: "/v1", Upstream: up, Kind: relay.KindSSE}),
		relay.WithAPIKeys(relay.APIKey{Key: "sk-client-secret", ID: "k1", Tenant: "acme"}),
		relay.WithRecorder(rec),
		relay.WithRecordQueue(queue),
		relay.WithRegisterer(reg),
	)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(r)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = r.Shutdown(ctx)
	})
	return r, srv
}

// stream makes one streaming request and checks that every event and the
// final [DONE] arrived.
func stream(t *testing.T, srv *httptest.Server) {
	t.Helper()
	req, err := http.NewRequestWithContext(testkit.Context(t), "POST", srv.URL+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4o","stream":true,"messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer sk-client-secret")
	req.Header.Set("Content-Type", "application/json")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	events, done := 0, false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		switch line := sc.Text(); {
		case line == "data: [DONE]":
			done = true
		case strings.HasPrefix(line, "data: "):
			events++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading the stream: %v", err)
	}
	if events != streamEvents || !done {
		t.Fatalf("got %d events (done: %v), want %d and [DONE]", events, done, streamEvents)
	}
}

// blackhole accepts connections and never answers, like a hung server,
// until released.
type blackhole struct {
	t        *testing.T
	ln       net.Listener
	accepted chan net.Conn
	done     chan struct{}
	mu       sync.Mutex
	conns    []net.Conn
}

func newBlackhole(t *testing.T) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{t: t, ln: ln, accepted: make(chan net.Conn, 16), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns = append(b.conns, c)
			b.mu.Unlock()
			select {
			case b.accepted <- c:
			default:
			}
		}
	}()
	t.Cleanup(b.release)
	return b
}

// release stops listening and closes every connection, so that hung
// reads fail at once and new dials are refused. It is idempotent.
func (b *blackhole) release() {
	_ = b.ln.Close()
	testkit.Recv(b.t, b.done, "the blackhole's accept loop did not end")
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		_ = c.Close()
	}
	b.conns = nil
}

// closedAddr returns an address on which nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func newRecorderFor(t *testing.T, conn driver.Conn, table string) *relayclickhouse.Recorder {
	t.Helper()
	rec, err := relayclickhouse.New(conn, table)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestStreamsUnaffectedByRefusedStorage: ClickHouse is down (connection
// refused). Every stream completes, and every record is retried, dropped
// and counted.
func TestStreamsUnaffectedByRefusedStorage(t *testing.T) {
	reg := prometheus.NewRegistry()
	rec := newRecorderFor(t, openConn(t, closedAddr(t), nil), "relay_requests")
	const streams, retries = 10, 2
	r, srv := newRelay(t, sseUpstream(t).URL, rec, relay.AsyncOptions{
		QueueSize: 100, BatchSize: 1, MaxRetries: retries, RetryBackoff: time.Millisecond,
	}, reg)
	for range streams {
		stream(t, srv)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Recorder().Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	// Each record is its own batch (BatchSize 1): written once and
	// retried twice, then dropped.
	checkMetrics(t, reg, map[string]float64{
		"relay_records_dropped_total": streams,
		"relay_records_retried_total": streams * retries,
		"relay_errors_total":          streams * (1 + retries),
		"relay_records_queued":        0,
	})
	if got := histogramCount(t, reg, "relay_storage_write_ms"); got != streams*(1+retries) {
		t.Errorf("relay_storage_write_ms counted %d writes, want %d", got, streams*(1+retries))
	}
	if err := r.Ready(ctx); err == nil || !strings.Contains(err.Error(), "recorder") {
		t.Errorf("Ready = %v, want a recorder error", err)
	}
}

// TestStreamsUnaffectedByHungStorage: ClickHouse accepts connections but
// never answers, so the recorder's write hangs. Streams still complete;
// records beyond the queue are dropped; once the server goes away the hung
// write fails and the queued records are retried and dropped.
func TestStreamsUnaffectedByHungStorage(t *testing.T) {
	reg := prometheus.NewRegistry()
	hole := newBlackhole(t)
	// The handshake waits for DialTimeout: make it outlast the test, so
	// that only release ends the hung write.
	conn := openConn(t, hole.ln.Addr().String(), func(o *clickhouse.Options) { o.DialTimeout = 10 * time.Minute })
	const queue, streams = 8, 20
	r, srv := newRelay(t, sseUpstream(t).URL, newRecorderFor(t, conn, "relay_requests"), relay.AsyncOptions{
		QueueSize: queue, BatchSize: 1, WriteTimeout: 10 * time.Minute, MaxRetries: 1, RetryBackoff: time.Millisecond,
	}, reg)
	// Cleanups run last first: release the hung write before the relay's
	// Shutdown waits for it.
	t.Cleanup(hole.release)

	stream(t, srv)
	// The worker has taken the first record and is now stuck writing it.
	select {
	case <-hole.accepted:
	case <-time.After(30 * time.Second):
		t.Fatal("the recorder never connected")
	}
	for range streams {
		stream(t, srv)
	}
	if got := metricValue(t, reg, "relay_records_dropped_total", nil); got != streams-queue {
		t.Errorf("while the write hangs: relay_records_dropped_total = %v, want %d (queue full)", got, streams-queue)
	}
	if got := metricValue(t, reg, "relay_records_queued", nil); got != queue {
		t.Errorf("while the write hangs: relay_records_queued = %v, want %d", got, queue)
	}
	if got := metricValue(t, reg, "relay_errors_total", map[string]string{"type": "storage"}); got != 0 {
		t.Errorf("while the write hangs: %v storage errors, want 0", got)
	}

	hole.release()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Recorder().Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	batches := float64(1 + queue) // the hung one and the queued ones
	checkMetrics(t, reg, map[string]float64{
		"relay_records_dropped_total": 1 + streams,
		"relay_records_retried_total": batches,
		"relay_errors_total":          2 * batches,
		"relay_records_queued":        0,
	})
}

// checkMetrics compares counters and gauges; relay_errors_total is read
// for type="storage".
func checkMetrics(t *testing.T, reg *prometheus.Registry, want map[string]float64) {
	t.Helper()
	for name, w := range want {
		var labels map[string]string
		if name == "relay_errors_total" {
			labels = map[string]string{"type": "storage"}
		}
		if got := metricValue(t, reg, name, labels); got != w {
			t.Errorf("%s = %v, want %v", name, got, w)
		}
	}
}

// TestHealthyHonoursContextWhileServerHangs: a readiness probe gets its
// answer when its context ends, not when the driver's dial timeout does.
func TestHealthyHonoursContextWhileServerHangs(t *testing.T) {
	hole := newBlackhole(t)
	conn := openConn(t, hole.ln.Addr().String(), func(o *clickhouse.Options) { o.DialTimeout = 10 * time.Minute })
	rec := newRecorderFor(t, conn, "relay_requests")
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- rec.Healthy(ctx) }()
	testkit.Recv(t, hole.accepted, "the probe did not connect") // the ping is now stuck in the handshake
	cancel()
	if err := testkit.Recv(t, errc, "Healthy did not return when its context ended"); !errors.Is(err, context.Canceled) {
		t.Errorf("Healthy = %v, want context.Canceled", err)
	}
}
