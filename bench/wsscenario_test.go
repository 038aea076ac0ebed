package bench

import (
	"context"
	"net"
	"net/http"
	"testing"
	"time"
)

// serveLoopback serves h on 127.0.0.1 until the test ends.
func serveLoopback(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newHTTPServer(h)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// TestWSCasesDirectAndBare runs every WebSocket fidelity case that applies
// to a plain proxy against the mock upstream directly and through the
// bare hijack-and-copy proxy, in this process: the frame layer, the mock
// upstream, the bare proxy and the driver's checks agree with each other.
func TestWSCasesDirectAndBare(t *testing.T) {
	u := newUpstream()
	t.Cleanup(u.close)
	upURL := serveLoopback(t, u)
	bare, err := bareServer(roleConfig{Role: roleBare, Upstream: upURL})
	if err != nil {
		t.Fatal(err)
	}
	bareURL := serveLoopback(t, bare.handler)
	h := &harness{d: newDriver(), fails: newFailures()}
	arms := []*arm{{name: armDirect, base: upURL, key: upstreamKey}, {name: armBare, base: bareURL, key: clientKey}}
	for _, a := range arms {
		for _, wc := range wsCases() {
			if wc.relayOnly {
				continue
			}
			t.Run(a.name+"/"+wc.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				if err := wc.run(ctx, h, a); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
	if got, want := arms[1].takeWSUsage(), sessionUsage(0, 0, 0); got == want {
		t.Errorf("no usage counted for the bare arm's realtime session")
	}
}

// TestWSHeldSessions holds sessions at the upstream, checks that the
// upstream counts them held, releases them and checks every one.
func TestWSHeldSessions(t *testing.T) {
	u := newUpstream()
	t.Cleanup(u.close)
	upURL := serveLoopback(t, u)
	bare, err := bareServer(roleConfig{Role: roleBare, Upstream: upURL})
	if err != nil {
		t.Fatal(err)
	}
	a := &arm{name: armBare, base: serveLoopback(t, bare.handler), key: clientKey}
	h := &harness{d: newDriver(), fails: newFailures()}
	set := &heldSet{arm: a.name, scenario: "ws-scale"}
	const n = 50
	if err := h.wsOpen(a, "g", n, set); err != nil {
		t.Fatal(err)
	}
	if got := u.held.Load(); got != n {
		t.Errorf("upstream holds %d sessions, want %d", got, n)
	}
	u.release("g")
	done := make(chan struct{})
	go func() { set.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("held sessions did not end within 30s of their release")
	}
	if set.ok.Load() != n || set.failed.Load() != 0 {
		_, _, ex := h.fails.summary()
		t.Fatalf("%d intact, %d failed: %v", set.ok.Load(), set.failed.Load(), ex)
	}
}
