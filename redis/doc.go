// Package relayredis lets several relay replicas share one Redis: a
// distributed rate limiter (relay.Limiter, relay.TokenSettler and
// relay.HealthChecker) and a Redis Streams recorder (relay.Recorder,
// relay.BatchRecorder and relay.HealthChecker).
//
// Both take any redis.UniversalClient from github.com/redis/go-redis/v9:
// a single node, a Cluster or a Sentinel-managed failover client.
//
// The limiter keeps two token buckets per tenant, one for requests and one
// for LLM tokens, in keys that share a Cluster hash slot:
//
//	{<prefix>:<tenant>}:req
//	{<prefix>:<tenant>}:tok
//
// Every admission is one Lua script (EVALSHA, falling back to EVAL) that
// reads Redis's own clock with TIME, so replicas whose clocks disagree
// still share one budget, and that sets a TTL on every key it writes, so a
// bucket disappears once it has refilled. The semantics mirror
// relay.MemoryLimiter: the same Limits, the same Decision fields (and so
// the same x-ratelimit-* headers), and a refusal for tokens does not spend
// a request.
//
// The recorder appends one stream entry per relay.Record with XADD,
// trimming the stream to an approximate maximum length.
//
// Tenant names appear in Redis key names and records; client keys and
// upstream credentials never reach Redis.
package relayredis
