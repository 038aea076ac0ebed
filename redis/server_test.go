package relayredis

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/require"
)

// sharedRedisAddr is the address of the Redis that tests share, from
// RELAY_TEST_REDIS_ADDR, checked to answer.
func sharedRedisAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("RELAY_TEST_REDIS_ADDR")
	if addr == "" {
		testkit.Missing(t, "RELAY_TEST_REDIS_ADDR is not set (host:port of a Redis for tests)")
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		testkit.Missing(t, "Redis at RELAY_TEST_REDIS_ADDR=%s does not answer: %v", addr, err)
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
	t     testing.TB
	bin   string
	dir   string
	addr  string
	args  []string
	ready string // the log line that says it serves

	cmd    *exec.Cmd     // nil when not running
	exited chan struct{} // closed when cmd has exited
}

// startRedisServer starts redis-server (RELAY_TEST_REDIS_SERVER, or the
// one on PATH) on a free loopback port, without persistence, with extra
// arguments, and waits until it accepts connections. It is killed when the
// test ends.
func startRedisServer(t testing.TB, extra ...string) *redisServer {
	t.Helper()
	s := newRedisServer(t)
	s.args = append(s.args, extra...)
	s.start()
	return s
}

// startSentinel starts a Sentinel watching the master at addr under the
// name "mymaster", and waits until it monitors it.
func startSentinel(t testing.TB, master string) *redisServer {
	t.Helper()
	s := newRedisServer(t)
	host, port, _ := net.SplitHostPort(master)
	conf := filepath.Join(s.dir, "sentinel.conf") // Sentinel rewrites it
	require.NoError(t, os.WriteFile(conf, []byte("sentinel monitor mymaster "+host+" "+port+" 1\n"), 0o600))
	s.args = append([]string{conf, "--sentinel"}, s.args...)
	s.ready = "+monitor master mymaster"
	s.start()
	return s
}

// newRedisServer prepares a server on a free port; start runs it.
func newRedisServer(t testing.TB) *redisServer {
	t.Helper()
	bin := os.Getenv("RELAY_TEST_REDIS_SERVER")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("redis-server"); err != nil {
			testkit.Missing(t, "no redis-server: set RELAY_TEST_REDIS_SERVER or put it on PATH")
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	_, port, _ := net.SplitHostPort(addr)
	s := &redisServer{t: t, bin: bin, dir: t.TempDir(), addr: addr, ready: "Ready to accept connections"}
	s.args = []string{"--port", port, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no",
		"--logfile", "", "--dir", s.dir}
	t.Cleanup(s.kill)
	return s
}

// start runs the server and waits for its readiness log line.
func (s *redisServer) start() {
	s.t.Helper()
	w := newLineWatcher(s.ready)
	cmd := exec.Command(s.bin, s.args...)
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
	testkit.Recv(s.t, s.exited, "redis-server did not exit after SIGKILL")
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
