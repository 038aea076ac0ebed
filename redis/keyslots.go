package relayredis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/relay"
)

// Per-key in-flight caps (relay.Upstream.MaxInFlight) shared by replicas
// (relay.WithKeySlots): each upstream key's leases are members of a
// sorted set scored by when they expire,
//
//	{<prefix>:keys}:<route>/<upstream>/<index>
//
// all in one hash slot, so that one script looks at every candidate of a
// request, in Redis Cluster as well. The key is named by the relay's
// KeyCandidate.ID, never by its secret. The leases are renewed by the
// limiter's renewer, with the tenants' leases, and expire after the
// lease TTL (WithLeaseTTL) when a replica crashes.

// keySlotScript takes a slot on the first key with room. KEYS are the
// candidates' sets in order; ARGV: the lease id, the TTL in milliseconds,
// then each candidate's cap. It returns the 1-based index of the key
// taken, 0 when every one is full.
const keySlotScript = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
for i, k in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
  if redis.call('ZCARD', k) < tonumber(ARGV[i + 2]) then
    redis.call('ZADD', k, now + ttl, ARGV[1])
    if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
    return i
  end
end
return 0
`

// keySlotTenant marks key leases in the renewer's state: no tenant's
// waiters are woken by their release (the relay wakes its own).
const keySlotTenant = "\x00keyslot"

// AcquireKey implements relay.KeySlotStore: one script call takes a
// slot on the first candidate with room, on Redis's clock. The Lease is
// renewed with the limiter's other leases and Release removes it; it
// expires after the lease TTL when not renewed. The error, when Redis
// fails or is too slow, wraps the cause (the relay then counts in its
// own process).
func (l *Limiter) AcquireKey(ctx context.Context, req relay.KeySlotRequest) (int, relay.Lease, error) {
	if len(req.Keys) == 0 {
		return -1, nil, nil
	}
	id := req.ID
	if id == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	keys := make([]string, len(req.Keys))
	args := make([]any, 0, 2+len(req.Keys))
	args = append(args, id, l.leases.ttl.Milliseconds())
	for i, k := range req.Keys {
		keys[i] = l.keySlotKey(k.ID)
		args = append(args, k.Max)
	}
	res, err := call(l.calls, ctx, l.timeout, func(ctx context.Context) (int64, error) {
		return l.keySlots.Run(ctx, l.client, keys, args...).Int64()
	})
	if err != nil {
		if ctx.Err() != nil { // the script may have run: give back what it took
			l.releaseKeys(keys, id)
		}
		return -1, nil, fmt.Errorf("relayredis: acquire key slot: %w", err)
	}
	if res <= 0 || int(res) > len(keys) {
		return -1, nil, nil
	}
	ls := &lease{l: l, tenant: keySlotTenant, keys: []string{keys[res-1]}, id: id}
	l.leases.hold(l, ls)
	return int(res - 1), ls, nil
}

// keySlotKey is the set of a key's leases.
func (l *Limiter) keySlotKey(id string) string {
	return "{" + l.prefix + ":keys}:" + id
}

// releaseKeys removes id from every set of keys, bounded by the
// limiter's timeout.
func (l *Limiter) releaseKeys(keys []string, id string) {
	_, _ = call(l.calls, context.Background(), l.timeout, func(ctx context.Context) ([]redis.Cmder, error) {
		return l.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.ZRem(ctx, k, id)
			}
			return nil
		})
	})
}

// KeySlots reports the leases held on the upstream key named id (a
// relay.KeyCandidate.ID) by every replica, for tests and monitoring.
func (l *Limiter) KeySlots(ctx context.Context, id string) (int64, error) {
	n, err := l.client.ZCard(ctx, l.keySlotKey(id)).Result()
	if err != nil {
		return 0, fmt.Errorf("relayredis: key slots: %w", err)
	}
	return n, nil
}
