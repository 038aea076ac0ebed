package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/redis/go-redis/v9"

	"github.com/streamrelay/relay/internal/testkit"
)

// serviceAddr returns the address of a test service from env, skipping the
// test when it is unset, or failing it in CI (see testkit.Missing).
func serviceAddr(t *testing.T, env string) string {
	t.Helper()
	addr := os.Getenv(env)
	if addr == "" {
		testkit.Missing(t, "%s is not set: source .ci/services.sh and start the service", env)
	}
	return addr
}

// jsonUpstream serves a small JSON answer on loopback.
func jsonUpstream(t *testing.T) string {
	t.Helper()
	return serveLoopback(t, &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	})})
}

func uniqueName(prefix string) string {
	return prefix + strconv.FormatInt(time.Now().UnixNano(), 36)
}

// Two replicas pointed at one Redis share their rate limits, and both
// write their records to the Redis stream.
func TestRedisStorageSharedAcrossReplicas(t *testing.T) {
	addr := serviceAddr(t, "RELAY_TEST_REDIS_ADDR")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis at %s: %v", addr, err)
	}
	prefix := uniqueName("relaycmdtest")
	stream := prefix + ":records"
	t.Cleanup(func() {
		keys, _ := client.Keys(context.Background(), "*"+prefix+"*").Result()
		if len(keys) > 0 {
			client.Del(context.Background(), keys...)
		}
	})
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
routes: [{name: up, path: /v1, upstream: "%s", kind: json}]
rate_limit: {enabled: true, default: 1, burst: 1}
auth: {api_keys: [{key: k1, tenant: %s}]}
storage:
  redis: {addr: "%s", prefix: %s, stream: "%s"}
`, jsonUpstream(t), prefix, addr, prefix, stream))

	a := startServer(t, []string{"-config", cfg}, hooks{})
	b := startServer(t, []string{"-config", cfg}, hooks{})
	if !strings.Contains(a.stderr.String(), `"rate_limit":"redis"`) {
		t.Errorf("replica a does not use the Redis limiter:\n%s", a.stderr)
	}
	for i, s := range []*server{a, b} {
		if code, body := get(t, s.base+"/readyz"); code != 200 {
			t.Errorf("replica %d /readyz = %d %s", i, code, body)
		}
	}
	resp := post(ctx, t, a.base+"/v1/chat/completions", "k1", `{}`)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("first request on replica a: %d", resp.StatusCode)
	}
	resp = post(ctx, t, b.base+"/v1/chat/completions", "k1", `{}`)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("second request on replica b: %d, want 429 from the shared budget", resp.StatusCode)
	}
	for _, s := range []*server{a, b} {
		if err := s.shutdown(t); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := client.XLen(ctx, stream).Result(); err != nil || n != 2 {
		t.Errorf("stream %s holds %d records (%v), want 2", stream, n, err)
	}
	if a.stdout.String() != "" {
		t.Errorf("records also went to stdout: %s", a.stdout)
	}
}

// storage.clickhouse creates the table and writes the records there.
func TestClickHouseStorage(t *testing.T) {
	addr := serviceAddr(t, "RELAY_TEST_CLICKHOUSE_ADDR")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("clickhouse at %s: %v", addr, err)
	}
	table := uniqueName("relay_cmd_test_")
	t.Cleanup(func() { _ = conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
routes: [{name: up, path: /v1, upstream: "%s", kind: json}]
auth: {api_keys: [{key: k1, tenant: acme}]}
storage:
  clickhouse: {addr: "%s", table: %s}
  queue: {flush_interval: 50ms}
`, jsonUpstream(t), addr, table))
	s := startServer(t, []string{"-config", cfg}, hooks{})
	for range 3 {
		resp := post(ctx, t, s.base+"/v1/chat/completions", "k1", `{}`)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
	if err := s.shutdown(t); err != nil {
		t.Fatal(err)
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+table+" WHERE tenant = 'acme'").Scan(&n); err != nil || n != 3 {
		t.Errorf("%s holds %d records of tenant acme (%v), want 3\nlogs:\n%s", table, n, err, s.stderr)
	}
}
