package relayredis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/streamrelay/relay"
)

// Concurrency caps (relay.Limits.MaxConcurrent, MaxSessions) shared by
// replicas: each tenant's leases are members of a sorted set, scored by
// when they expire,
//
//	{<prefix>:<tenant>}:conc   every lease (requests and sessions)
//	{<prefix>:<tenant>}:sess   session leases only
//
// in the tenant's hash slot. Acquire is one Lua script: it drops the
// expired members, counts the rest and adds the lease, atomically, on
// Redis's clock. A held lease is renewed (its score moved to now + TTL)
// every TTL/3 by the limiter's one renewer goroutine, which renews every
// lease the limiter holds in one pipeline and exits when none is held.
// Release removes the member. A replica that crashes stops renewing: its
// leases expire after the TTL and their slots come back.

// DefaultLeaseTTL is how long a lease outlives its last renewal when
// WithLeaseTTL is not given: how long a crashed replica's slots stay
// taken.
const DefaultLeaseTTL = 30 * time.Second

// leaseScript acquires a lease. KEYS[1] is the tenant's lease set,
// KEYS[2] its session set. ARGV: the lease id, the TTL in milliseconds,
// MaxConcurrent (0: none), MaxSessions (0: none), "1" for a session.
// It returns 0 when the lease is taken, 1 when refused for MaxConcurrent,
// 2 for MaxSessions. Every write extends the key's TTL to at least the
// lease's, so a set outlives its last lease by at most the TTL and idle
// tenants cost nothing.
const leaseScript = `
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local maxc, maxs, session = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if maxc > 0 and redis.call('ZCARD', KEYS[1]) >= maxc then
  return 1
end
if session then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if maxs > 0 and redis.call('ZCARD', KEYS[2]) >= maxs then
    return 2
  end
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
  if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 0
`

// Queue polling: a request waiting for a slot in Redis asks again after
// a backoff that doubles from queuePollMin to queuePollMax. Releases on
// other replicas send no notification; a poll is one script call.
const (
	queuePollMin = 10 * time.Millisecond
	queuePollMax = 250 * time.Millisecond
)

// leaseState is what a Limiter knows of the leases it holds, for the
// renewer, and of its requests waiting for a slot.
type leaseState struct {
	mu      sync.Mutex
	held    map[*lease]struct{}
	waiting map[string]int // tenant → requests of this limiter waiting
	// freed holds, per tenant with waiters, a channel closed (and
	// replaced) when this limiter releases one of the tenant's leases, so
	// that its waiters try again at once rather than at their next poll.
	freed   map[string]chan struct{}
	running bool          // the renewer goroutine runs
	wake    chan struct{} // tells the renewer that held emptied
	ttl     time.Duration
	script  *redis.Script
	// renewed, set by tests only, is told of each renewal round.
	renewed func(n int, err error)
}

// lease is a lease of the Redis limiter.
type lease struct {
	l        *Limiter
	tenant   string
	keys     []string // the sets holding it: conc, then sess for a session
	id       string
	released atomic.Bool
}

// Release implements relay.Lease: the lease's members are removed, in one
// round trip bounded by the limiter's timeout. It is idempotent. If Redis
// does not answer, the lease is no longer renewed and expires after the
// TTL.
func (ls *lease) Release() {
	if ls.released.Swap(true) {
		return
	}
	l := ls.l
	defer l.leases.forget(ls) // after the ZREM: local waiters retry then
	_, _ = call(l.calls, context.Background(), l.timeout, func(ctx context.Context) ([]redis.Cmder, error) {
		return l.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range ls.keys {
				p.ZRem(ctx, k, ls.id)
			}
			return nil
		})
	})
}

func (s *leaseState) forget(ls *lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.held, ls)
	if ch, ok := s.freed[ls.tenant]; ok {
		close(ch)
		s.freed[ls.tenant] = make(chan struct{})
	}
	if len(s.held) == 0 && s.running {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// leaseKeys are the tenant's lease sets, in the bucket keys' hash slot.
func (l *Limiter) leaseKeys(tenant string, session bool) []string {
	tag := "{" + l.prefix + ":" + tenant + "}"
	if session {
		return []string{tag + ":conc", tag + ":sess"}
	}
	return []string{tag + ":conc"}
}

// Acquire implements relay.ConcurrencyLimiter with leases in Redis (see
// DefaultLeaseTTL). A tenant without caps gets no lease and costs no
// call. A request over a cap polls for a slot (every 10ms, backing off to
// 250ms, and at once when this limiter releases one of the tenant's
// leases) up to Limits.QueueTimeout; at most Limits.QueueBound() of a
// tenant's requests wait at once in this limiter (each replica has its
// own queue). The error, when Redis fails or is too slow, wraps the cause;
// ctx's error when it ends while the request waits.
func (l *Limiter) Acquire(ctx context.Context, req relay.LeaseRequest) (relay.Lease, relay.Decision, error) {
	lim := l.limits(req.Identity)
	if lim.MaxConcurrent <= 0 && lim.MaxSessions <= 0 {
		return nil, relay.Decision{Allowed: true}, nil
	}
	id := req.ID
	if id == "" {
		var b [12]byte
		_, _ = rand.Read(b[:])
		id = hex.EncodeToString(b[:])
	}
	ls := &lease{l: l, tenant: req.Identity.Tenant, keys: l.leaseKeys(req.Identity.Tenant, req.Session), id: id}
	reason, err := l.tryLease(ctx, ls, lim, req.Session)
	if err != nil || reason == "" {
		return l.granted(ls, err, 0)
	}
	if lim.QueueTimeout <= 0 || !l.leases.enqueue(req.Identity.Tenant, lim.QueueBound()) {
		return nil, refused(reason), nil
	}
	defer l.leases.dequeue(req.Identity.Tenant)
	start := time.Now()
	deadline := time.NewTimer(lim.QueueTimeout)
	defer deadline.Stop()
	poll := time.NewTimer(queuePollMin)
	defer poll.Stop()
	for gap := queuePollMin; ; gap = min(2*gap, queuePollMax) {
		select {
		case <-l.leases.freedCh(req.Identity.Tenant):
		case <-ctx.Done():
			return nil, relay.Decision{}, ctx.Err()
		case <-deadline.C:
			d := refused(reason)
			d.Waited = time.Since(start)
			return nil, d, nil
		case <-poll.C:
		}
		if reason, err = l.tryLease(ctx, ls, lim, req.Session); err != nil || reason == "" {
			return l.granted(ls, err, max(time.Since(start), 1))
		}
		if !poll.Stop() {
			select { // the poll fired while a release woke this wait
			case <-poll.C:
			default:
			}
		}
		poll.Reset(gap)
	}
}

// freedCh is the channel closed when this limiter next releases one of
// tenant's leases (tenant has waiters, so it exists).
func (s *leaseState) freedCh(tenant string) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.freed[tenant]
}

// tryLease runs the lease script once: "" when the lease is taken, else
// the reason of the refusal.
func (l *Limiter) tryLease(ctx context.Context, ls *lease, lim relay.Limits, session bool) (string, error) {
	keys := ls.keys
	if !session {
		keys = []string{keys[0], keys[0]} // the script names two keys; the second is unused
	}
	sess := "0"
	if session {
		sess = "1"
	}
	args := []any{ls.id, l.leases.ttl.Milliseconds(), lim.MaxConcurrent, lim.MaxSessions, sess}
	res, err := call(l.calls, ctx, l.timeout, func(ctx context.Context) (int64, error) {
		return l.leases.script.Run(ctx, l.client, keys, args...).Int64()
	})
	switch {
	case err != nil:
		return "", fmt.Errorf("relayredis: acquire: %w", err)
	case res == 1:
		return relay.ReasonConcurrency, nil
	case res == 2:
		return relay.ReasonSessions, nil
	}
	return "", nil
}

// granted registers a taken lease with the renewer, unless err.
func (l *Limiter) granted(ls *lease, err error, waited time.Duration) (relay.Lease, relay.Decision, error) {
	if err != nil {
		return nil, relay.Decision{}, err
	}
	l.leases.hold(l, ls)
	return ls, relay.Decision{Allowed: true, Waited: waited}, nil
}

func refused(reason string) relay.Decision {
	return relay.Decision{Reason: reason, RetryAfter: relay.ConcurrencyRetryAfter}
}

// enqueue counts a waiting request of tenant, unless bound are waiting.
func (s *leaseState) enqueue(tenant string, bound int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiting[tenant] >= bound {
		return false
	}
	if s.waiting == nil {
		s.waiting = make(map[string]int)
		s.freed = make(map[string]chan struct{})
	}
	if s.waiting[tenant]++; s.freed[tenant] == nil {
		s.freed[tenant] = make(chan struct{})
	}
	return true
}

func (s *leaseState) dequeue(tenant string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiting[tenant]--; s.waiting[tenant] <= 0 {
		delete(s.waiting, tenant)
		delete(s.freed, tenant)
	}
}

// hold adds a lease to those renewed, starting the renewer if it is not
// running.
func (s *leaseState) hold(l *Limiter, ls *lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held == nil {
		s.held = make(map[*lease]struct{})
	}
	s.held[ls] = struct{}{}
	if !s.running {
		s.running = true
		go l.renew()
	}
}

// renew is the limiter's renewer: every TTL/3 it moves the expiry of
// every held lease to now + TTL, in one pipeline (ZADD XX, so a lease
// that expired and was dropped is never brought back), on Redis's clock.
// It returns once no lease is held.
func (l *Limiter) renew() {
	s := &l.leases
	t := time.NewTimer(s.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-s.wake:
		}
		s.mu.Lock()
		if len(s.held) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		batch := make([]*lease, 0, len(s.held))
		for ls := range s.held {
			batch = append(batch, ls)
		}
		s.mu.Unlock()
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		err := l.renewAll(batch)
		if s.renewed != nil {
			s.renewed(len(batch), err)
		}
		t.Reset(s.ttl / 3)
	}
}

// renewAll renews batch: one TIME, then one pipeline of ZADD XX.
func (l *Limiter) renewAll(batch []*lease) error {
	_, err := call(l.calls, context.Background(), l.timeout, func(ctx context.Context) ([]redis.Cmder, error) {
		now, err := l.client.Time(ctx).Result()
		if err != nil {
			return nil, err
		}
		score := float64(now.UnixMilli() + l.leases.ttl.Milliseconds())
		ttl := strconv.FormatInt(l.leases.ttl.Milliseconds(), 10)
		return l.client.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, ls := range batch {
				for _, k := range ls.keys {
					p.ZAddXX(ctx, k, redis.Z{Score: score, Member: ls.id})
					p.Do(ctx, "PEXPIRE", k, ttl)
				}
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("relayredis: renewing leases: %w", err)
	}
	return nil
}

// Leases reports how many leases this limiter holds (renewed by it), for
// tests and monitoring.
func (l *Limiter) Leases() int {
	l.leases.mu.Lock()
	defer l.leases.mu.Unlock()
	return len(l.leases.held)
}
