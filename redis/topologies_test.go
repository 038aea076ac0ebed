package relayredis

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/relay"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startRedisCluster starts n redis-servers of the test's own in cluster
// mode, splits the slots between them, joins them and waits until each
// reports the cluster healthy. It returns their addresses.
func startRedisCluster(t *testing.T, n int) []string {
	t.Helper()
	ctx := context.Background()
	addrs := make([]string, n)
	nodes := make([]*redis.Client, n)
	for i := range n {
		s := startRedisServer(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
		addrs[i] = s.addr
		nodes[i] = newClient(t, s.addr, true)
		lo, hi := i*16384/n, (i+1)*16384/n-1
		require.NoError(t, nodes[i].ClusterAddSlotsRange(ctx, lo, hi).Err())
	}
	for _, addr := range addrs[1:] {
		host, port, _ := net.SplitHostPort(addr)
		require.NoError(t, nodes[0].ClusterMeet(ctx, host, port).Err())
	}
	// Gossip spreads the news within a second or two; bounded wait.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(20 * time.Second)
	for _, c := range nodes {
		for {
			info, err := c.ClusterInfo(ctx).Result()
			require.NoError(t, err)
			if strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(n)+"\r\n") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster not ready after 20s:\n%s", info)
			}
			<-tick.C
		}
	}
	return addrs
}

// TestCluster runs the limiter and recorder on a three-node Redis
// Cluster: a script's keys must share a slot (the hash tag sees to it) and
// tenants must spread over the nodes.
func TestCluster(t *testing.T) {
	addrs := startRedisCluster(t, 3)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = cc.Close() })
	ctx := context.Background()
	lim, err := NewLimiter(cc, WithPrefix("cluster"), WithTimeout(5*time.Second))
	require.NoError(t, err)
	require.NoError(t, lim.Healthy(ctx))
	limits := &relay.Limits{RequestsPerMinute: 6, Burst: 3, TokensPerMinute: 600}

	masters := map[string]bool{}
	for i := range 12 {
		tenant := "tenant-" + strconv.Itoa(i)
		for j := range 4 {
			d, err := lim.Allow(ctx, limitReq(tenant, limits, 100))
			require.NoError(t, err)
			assert.Equal(t, j < 3, d.Allowed, "%s request %d", tenant, j)
		}
		require.NoError(t, lim.Settle(ctx, limitReq(tenant, limits, 100), 10))

		keys := lim.keys(tenant)
		reqSlot, err := cc.ClusterKeySlot(ctx, keys[0]).Result()
		require.NoError(t, err)
		tokSlot, err := cc.ClusterKeySlot(ctx, keys[1]).Result()
		require.NoError(t, err)
		assert.Equal(t, reqSlot, tokSlot, "a tenant's keys share a slot")
		m, err := cc.MasterForKey(ctx, keys[0])
		require.NoError(t, err)
		masters[m.Options().Addr] = true
	}
	assert.Greater(t, len(masters), 1, "tenants spread over the nodes")

	rec, err := NewRecorder(cc, WithPrefix("cluster"))
	require.NoError(t, err)
	require.NoError(t, rec.Healthy(ctx))
	batch := make([]relay.Record, 10)
	for i := range batch {
		batch[i] = relay.Record{RequestID: "r" + strconv.Itoa(i), Tenant: "acme"}
	}
	require.NoError(t, rec.RecordBatch(ctx, batch))
	n, err := cc.XLen(ctx, rec.Stream()).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(10), n)
}

// TestSentinel runs the limiter and recorder through a Sentinel-managed
// failover client, built as a host would with NewUniversalClient.
func TestSentinel(t *testing.T) {
	master := startRedisServer(t)
	sentinel := startSentinel(t, master.addr)
	client := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 []string{sentinel.addr},
		MasterName:            "mymaster",
		ContextTimeoutEnabled: true,
	})
	t.Cleanup(func() { _ = client.Close() })
	ctx := context.Background()

	lim, err := NewLimiter(client, WithPrefix(uniquePrefix(t)), WithTimeout(5*time.Second))
	require.NoError(t, err)
	require.NoError(t, lim.Healthy(ctx))
	limits := &relay.Limits{RequestsPerMinute: 6, Burst: 2}
	for j := range 3 {
		d, err := lim.Allow(ctx, limitReq("acme", limits, 0))
		require.NoError(t, err)
		assert.Equal(t, j < 2, d.Allowed, "request %d", j)
	}
	// The buckets are on the master Sentinel named.
	direct := newClient(t, master.addr, true)
	n, err := direct.Exists(ctx, lim.keys("acme")[0]).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)

	rec, err := NewRecorder(client, WithPrefix(uniquePrefix(t)))
	require.NoError(t, err)
	require.NoError(t, rec.RecordBatch(ctx, []relay.Record{{RequestID: "a"}, {RequestID: "b"}}))
	l, err := direct.XLen(ctx, rec.Stream()).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(2), l)
}
