package relayclickhouse_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
)

// switchProxy forwards TCP connections to the real ClickHouse while up.
// Taken down, it cuts every connection and closes new ones at once, as a
// server that went away would; brought up again, it forwards anew.
type switchProxy struct {
	t      *testing.T
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
}

func newSwitchProxy(t *testing.T, target string) *switchProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &switchProxy{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *switchProxy) addr() string { return p.ln.Addr().String() }

func (p *switchProxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(up, c)
		go p.pipe(c, up)
	}
}

func (p *switchProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
}

// setDown cuts every connection and refuses new ones, or lifts that.
func (p *switchProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			_ = c.Close()
		}
		clear(p.conns)
	}
}

func (p *switchProxy) close() {
	_ = p.ln.Close()
	p.setDown(true)
	testkit.Wait(p.t, p.wg.Wait, "the proxy's connections did not end")
}

func records(prefix string, n int) []relay.Record {
	out := make([]relay.Record, n)
	for i := range out {
		out[i] = relay.Record{RequestID: fmt.Sprintf("%s-%03d", prefix, i), Start: time.Now(), Tenant: "acme",
			Usage: relay.Usage{InputTokens: 10, OutputTokens: 1}}
	}
	return out
}

// TestReconnectsWhenServerReturns: a write while ClickHouse is away fails
// at once; writes after it returns succeed on the same Recorder.
func TestReconnectsWhenServerReturns(t *testing.T) {
	direct := testConn(t)
	table := testTable(t, direct)
	proxy := newSwitchProxy(t, clickhouseAddr())
	rec := newRecorderFor(t, openConn(t, proxy.addr(), nil), table)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if err := rec.RecordBatch(ctx, records("a", 10)); err != nil {
		t.Fatalf("before the outage: %v", err)
	}
	proxy.setDown(true) // the pooled connection dies with it
	if err := rec.RecordBatch(ctx, records("b", 10)); err == nil {
		t.Fatal("write during the outage succeeded")
	}
	if err := rec.Healthy(ctx); err == nil {
		t.Error("Healthy during the outage = nil")
	}
	proxy.setDown(false)
	if err := rec.RecordBatch(ctx, records("c", 10)); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
	if err := rec.Healthy(ctx); err != nil {
		t.Errorf("Healthy after the outage: %v", err)
	}
	var a, b, c uint64
	if err := direct.QueryRow(ctx, `SELECT countIf(startsWith(request_id, 'a-')),
		countIf(startsWith(request_id, 'b-')), countIf(startsWith(request_id, 'c-')) FROM `+table).
		Scan(&a, &b, &c); err != nil {
		t.Fatal(err)
	}
	if a != 10 || b != 0 || c != 10 {
		t.Errorf("stored %d, %d, %d records of batches a, b, c; want 10, 0, 10", a, b, c)
	}
}

// TestAsyncRetriesLandAfterOutage: records written while ClickHouse is
// away are retried by the AsyncRecorder and all land once it is back.
func TestAsyncRetriesLandAfterOutage(t *testing.T) {
	direct := testConn(t)
	table := testTable(t, direct)
	proxy := newSwitchProxy(t, clickhouseAddr())
	rec := newRecorderFor(t, openConn(t, proxy.addr(), nil), table)
	failed := make(chan error, 1)
	async := relay.NewAsyncRecorder(rec, relay.AsyncOptions{
		BatchSize: 100, MaxRetries: 1000, RetryBackoff: time.Millisecond,
		OnError: func(err error) {
			select {
			case failed <- err:
			default:
			}
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	defer func() { _ = async.Close(ctx) }()

	proxy.setDown(true)
	for _, r := range records("x", 250) {
		_ = async.Record(ctx, r)
	}
	select {
	case err := <-failed:
		t.Logf("write during the outage failed as expected: %v", err)
	case <-ctx.Done():
		t.Fatal("no write failed during the outage")
	}
	proxy.setDown(false)
	if err := async.Flush(ctx); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if n := count(t, direct, table); n != 250 {
		t.Errorf("stored %d records, want 250", n)
	}
	if d := async.Dropped(); d != 0 {
		t.Errorf("%d records dropped", d)
	}
	if async.Retried() == 0 {
		t.Error("no retry counted")
	}
}
