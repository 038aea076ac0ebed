package relayredis

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// need skips the test, or fails it when CI=true: in CI a missing service
// is a broken setup, not a reason to pass.
func need(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// sharedRedisAddr is the address of the Redis that tests share, from
// RELAY_TEST_REDIS_ADDR, checked to answer.
func sharedRedisAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("RELAY_TEST_REDIS_ADDR")
	if addr == "" {
		need(t, "RELAY_TEST_REDIS_ADDR is not set (host:port of a Redis for tests)")
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		need(t, "Redis at RELAY_TEST_REDIS_ADDR=%s does not answer: %v", addr, err)
	}
	return addr
}

// newClient returns a client of its own to addr, closed when the test
// ends. contextTimeouts selects whether go-redis applies context deadlines
// to socket I/O, which changes how the package enforces its timeouts.
func newClient(t testing.TB, addr string, contextTimeouts bool) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                  addr,
		ContextTimeoutEnabled: contextTimeouts,
		// One dial attempt per command: the outage tests kill Redis.
		MaxRetries: 1,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// uniquePrefix returns a key prefix of the test's own, so that tests
// sharing one Redis do not see each other's keys.
func uniquePrefix(t testing.TB) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := strings.NewReplacer("/", ".", " ", "_", "{", "(", "}", ")").Replace(t.Name())
	return "relaytest:" + name + ":" + hex.EncodeToString(b[:])
}

// redisNow reads Redis's clock.
func redisNow(t testing.TB, c redis.UniversalClient) time.Time {
	t.Helper()
	now, err := c.Time(context.Background()).Result()
	require.NoError(t, err)
	return now
}

// redisServer is a redis-server process of the test's own, for tests that
// stop and restart Redis.
type redisServer struct {
	t    testing.TB
	bin  string
	dir  string
	addr string

	cmd    *exec.Cmd     // nil when not running
	exited chan struct{} // closed when cmd has exited
}

// startRedisServer starts redis-server (RELAY_TEST_REDIS_SERVER, or the
// one on PATH) on a free loopback port, without persistence, and waits
// until it accepts connections. It is killed when the test ends.
func startRedisServer(t testing.TB) *redisServer {
	t.Helper()
	bin := os.Getenv("RELAY_TEST_REDIS_SERVER")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("redis-server"); err != nil {
			need(t, "no redis-server: set RELAY_TEST_REDIS_SERVER or put it on PATH")
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	s := &redisServer{t: t, bin: bin, dir: t.TempDir(), addr: addr}
	s.start()
	t.Cleanup(s.kill)
	return s
}

// start runs the server and waits for its "Ready to accept connections"
// log line.
func (s *redisServer) start() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.addr)
	w := newLineWatcher("Ready to accept connections")
	cmd := exec.Command(s.bin, "--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--logfile", "", "--dir", s.dir)
	cmd.Stdout, cmd.Stderr = w, w
	require.NoError(s.t, cmd.Start())
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-w.found:
	case <-exited:
		s.cmd = nil
		s.t.Fatalf("redis-server on %s exited; log:\n%s", s.addr, w.String())
	case <-t.C:
		s.kill()
		s.t.Fatalf("redis-server on %s did not become ready in 10s; log:\n%s", s.addr, w.String())
	}
}

// kill stops the server at once (SIGKILL), as a crash would, and waits
// for it to be gone.
func (s *redisServer) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// signal sends sig to the running server.
func (s *redisServer) signal(sig os.Signal) {
	s.t.Helper()
	require.NoError(s.t, s.cmd.Process.Signal(sig))
}

// lineWatcher collects a process's output and closes found when a line
// containing want appears.
type lineWatcher struct {
	want  string
	found chan struct{}

	mu   sync.Mutex
	buf  bytes.Buffer
	done bool
}

func newLineWatcher(want string) *lineWatcher {
	return &lineWatcher{want: want, found: make(chan struct{})}
}

func (w *lineWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if !w.done && strings.Contains(w.buf.String(), w.want) {
		w.done = true
		close(w.found)
	}
	return len(p), nil
}

func (w *lineWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
