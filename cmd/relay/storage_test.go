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

// storage.redis.ttl: records older than the TTL leave the stream at the
// next write, and the stream expires a TTL after the last one.
func TestRedisTTL(t *testing.T) {
	addr := serviceAddr(t, "RELAY_TEST_REDIS_ADDR")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := redis.NewClient(&redis.Options{Addr: addr})
	defer client.Close()
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis at %s: %v", addr, err)
	}
	prefix := uniqueName("relayttltest")
	stream := prefix + ":records"
	t.Cleanup(func() { client.Del(context.Background(), stream) })
	// An entry from long ago (ids are milliseconds since 1970).
	if err := client.XAdd(ctx, &redis.XAddArgs{Stream: stream, ID: "1000-0", Values: []string{"request_id", "ancient"}}).Err(); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
routes: [{name: up, path: /v1, upstream: "%s", kind: json}]
auth: {api_keys: [k1]}
storage:
  redis: {addr: "%s", prefix: %s, ttl: 3600}
`, jsonUpstream(t), addr, prefix))
	s := startServer(t, []string{"-config", cfg}, hooks{})
	if code := status(ctx, t, s.base+"/v1/x", "k1"); code != 200 {
		t.Fatalf("status %d", code)
	}
	if err := s.shutdown(t); err != nil {
		t.Fatal(err)
	}
	entries, err := client.XRange(ctx, stream, "-", "+").Result()
	if err != nil || len(entries) != 1 || entries[0].Values["request_id"] == "ancient" {
		t.Errorf("stream entries %v (%v), want only the new record", entries, err)
	}
	if ttl, err := client.PTTL(ctx, stream).Result(); err != nil || ttl <= 0 || ttl > time.Hour {
		t.Errorf("stream PTTL %v (%v), want up to 1h", ttl, err)
	}
	if !strings.Contains(s.stderr.String(), "redis:"+stream+"(ttl 1h0m0s)") {
		t.Errorf("the startup log does not show the ttl:\n%s", s.stderr)
	}
}

// storage.clickhouse.async: inserts ask for async inserts where the server
// has them; a server without them (18.16 here) gets plain batch inserts,
// said once in the log. Either way every record is stored.
func TestClickHouseAsync(t *testing.T) {
	addr := serviceAddr(t, "RELAY_TEST_CLICKHOUSE_ADDR")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := clickhouse.Open(&clickhouse.Options{Addr: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var has uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.settings WHERE name = 'async_insert'").Scan(&has); err != nil {
		t.Fatalf("clickhouse at %s: %v", addr, err)
	}
	table := uniqueName("relay_cmd_async_")
	t.Cleanup(func() { _ = conn.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
	cfg := filepath.Join(t.TempDir(), "relay.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
routes: [{name: up, path: /v1, upstream: "%s", kind: json}]
auth: {api_keys: [{key: k1, tenant: acme}]}
storage:
  clickhouse: {addr: "%s", table: %s, async: true}
  queue: {flush_interval: 20ms}
`, jsonUpstream(t), addr, table))
	s := startServer(t, []string{"-config", cfg}, hooks{})
	for range 2 {
		if code := status(ctx, t, s.base+"/v1/x", "k1"); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if err := s.shutdown(t); err != nil {
		t.Fatal(err)
	}
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+table+" WHERE tenant = 'acme'").Scan(&n); err != nil || n != 2 {
		t.Errorf("%s holds %d records (%v), want 2\nlogs:\n%s", table, n, err, s.stderr)
	}
	warned := strings.Count(s.stderr.String(), "the server has no asynchronous inserts")
	if has == 0 && warned != 1 || has > 0 && warned != 0 {
		t.Errorf("server has async_insert: %v; the fallback was logged %d times:\n%s", has > 0, warned, s.stderr)
	}
	if !strings.Contains(s.stderr.String(), "clickhouse:"+table+"(async inserts)") {
		t.Errorf("the startup log does not show async inserts:\n%s", s.stderr)
	}
}
