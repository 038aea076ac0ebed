package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Clock tells the time. The relay reads it for record timestamps,
// durations and limiter decisions; network deadlines and timeouts use the
// operating system's clock, since sockets do.
type Clock interface {
	Now() time.Time
}

// ClockFunc adapts a function to the Clock interface.
type ClockFunc func() time.Time

// Now calls f().
func (f ClockFunc) Now() time.Time { return f() }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Option configures a Relay. What zero, nil and negative arguments mean
// follows one rule, stated in the package documentation ("Zero values").
type Option func(*config) error

type config struct {
	routes        []Route
	resolver      UpstreamResolver
	keys          []APIKey
	auth          Authenticator
	limiter       Limiter
	failOpen      bool
	keySlots      KeySlotStore
	recorder      Recorder
	asyncOpt      AsyncOptions
	registerer    prometheus.Registerer
	transport     http.RoundTripper
	logger        *slog.Logger
	clock         Clock
	maxBody       int64
	timeouts      Timeouts
	shape         ErrorShape
	writeTimeout  time.Duration
	usage         usageOptions
	metricsModels []string
	prices        *PriceTable
	methods       []string
	body          bodyLimits
	observeBudget int64
	refusalMemo   time.Duration
	drain         time.Duration   // WithDrainOnClientGone; 0: off
	session       SessionTimeouts // WithSessionTimeouts
	hooks         *Hooks          // WithHooks; nil: none
	given         givenOptions    // options that exclude one another
}

// givenOptions records which of the mutually exclusive options were
// given (a nil argument counts as not given), so that New can refuse a
// pair.
type givenOptions uint8

const (
	givenRoutes givenOptions = 1 << iota
	givenResolver
	givenAPIKeys
	givenAuthenticator
	givenRateLimit
	givenLimiter
)

// checkConflicts refuses options that would silently override each other.
// It is the one place the exclusive pairs are listed.
func (c *config) checkConflicts() error {
	for _, p := range [...]struct {
		a, b         givenOptions
		aName, bName string
		why          string
	}{
		{givenRoutes, givenResolver, "WithRoutes", "WithResolver", "a resolver replaces the built-in route table"},
		{givenAPIKeys, givenAuthenticator, "WithAPIKeys", "WithAuthenticator", "an authenticator replaces the static keys"},
		{givenRateLimit, givenLimiter, "WithRateLimit", "WithLimiter", "WithRateLimit installs a MemoryLimiter of its own"},
	} {
		if c.given&p.a != 0 && c.given&p.b != 0 {
			return fmt.Errorf("relay: %w: %s and %s both given (%s); give one", ErrConflictingOptions, p.aName, p.bName, p.why)
		}
	}
	return nil
}

// ErrConflictingOptions is wrapped by the error New returns when two
// options that exclude each other are both given: WithRoutes and
// WithResolver, WithAPIKeys and WithAuthenticator, WithRateLimit and
// WithLimiter.
const ErrConflictingOptions = Error("conflicting options")

func defaultConfig() config {
	return config{
		failOpen:     true,
		maxBody:      10 << 20,
		writeTimeout: 30 * time.Second,
		shape:        ShapeAuto,
		usage:        usageOptions{includeUsage: true, defaultMaxTokens: 4096},
		methods:      defaultMethods(),
		body: bodyLimits{minRate: defaultBodyMinRate, grace: defaultBodyGrace,
			timeout: defaultBodyTimeout, budget: defaultBodyBudget},
		observeBudget: defaultObserveBudget,
		refusalMemo:   defaultRefusalMemo,
	}
}

// WithRoutes sets the routes of the built-in RouteTable; calls add up.
// New fails with ErrConflictingOptions when WithResolver is also given.
func WithRoutes(routes ...Route) Option {
	return func(c *config) error {
		c.routes = append(c.routes, routes...)
		c.given |= givenRoutes
		return nil
	}
}

// WithResolver replaces the built-in RouteTable. New fails with
// ErrConflictingOptions when WithRoutes is also given. Nil counts as not
// given.
func WithResolver(r UpstreamResolver) Option {
	return func(c *config) error {
		if r != nil {
			c.resolver, c.given = r, c.given|givenResolver
		}
		return nil
	}
}

// WithAPIKeys accepts these static client keys (see NewStaticKeys); calls
// add up. New fails with ErrConflictingOptions when WithAuthenticator is
// also given.
func WithAPIKeys(keys ...APIKey) Option {
	return func(c *config) error {
		c.keys = append(c.keys, keys...)
		c.given |= givenAPIKeys
		return nil
	}
}

// WithAuthenticator sets how callers are identified. New fails when neither
// this nor WithAPIKeys is given (there is no unauthenticated default; nil
// counts as not given), and with ErrConflictingOptions when both are. Use
// AllowAll deliberately where the host authenticates before the relay.
func WithAuthenticator(a Authenticator) Option {
	return func(c *config) error {
		if a != nil {
			c.auth, c.given = a, c.given|givenAuthenticator
		}
		return nil
	}
}

// WithLimiter sets the rate limiter. The default admits everything. New
// fails with ErrConflictingOptions when WithRateLimit is also given: wrap
// NewMemoryLimiter(limits) instead. Nil counts as not given. A limiter
// that also implements ConcurrencyLimiter (MemoryLimiter and the Redis
// limiter do) enforces the concurrency caps of Limits as well.
func WithLimiter(l Limiter) Option {
	return func(c *config) error {
		if l != nil {
			c.limiter, c.given = l, c.given|givenLimiter
		}
		return nil
	}
}

// WithRateLimit installs a MemoryLimiter with these default per-tenant
// limits (zero fields: see Limits). An Identity's own Limits replace them.
// Negative limits are an error. New fails with ErrConflictingOptions when
// WithLimiter is also given.
func WithRateLimit(l Limits) Option {
	return func(c *config) error {
		if l.RequestsPerMinute < 0 || l.TokensPerMinute < 0 || l.Burst < 0 || l.TokenBurst < 0 ||
			l.SpendPerMinute < 0 || l.SpendPerDay < 0 || l.SpendPerMonth < 0 {
			return errors.New("relay: negative rate limit")
		}
		if l.MaxConcurrent < 0 || l.MaxSessions < 0 || l.MaxQueued < 0 || l.QueueTimeout < 0 {
			return errors.New("relay: negative concurrency limit")
		}
		c.limiter = NewMemoryLimiter(l)
		c.given |= givenRateLimit
		return nil
	}
}

// WithLimiterFailOpen says what happens when the Limiter returns an error:
// admit the request (true, the default) or refuse it with 503 (false).
// Either way the error is counted as type "limiter" and logged.
func WithLimiterFailOpen(open bool) Option {
	return func(c *config) error { c.failOpen = open; return nil }
}

// WithRecorder sets where records go; several recorders are combined with
// MultiRecorder. Unless it is already an *AsyncRecorder, the recorder is
// wrapped in one built from WithRecordQueue's options, so it is never
// called on the request path. The default, and nil, discard records.
func WithRecorder(recs ...Recorder) Option {
	return func(c *config) error {
		switch len(recs) {
		case 0:
			c.recorder = nil
		case 1:
			c.recorder = recs[0]
		default:
			c.recorder = MultiRecorder(recs...)
		}
		return nil
	}
}

// WithRecordQueue sets the options of the AsyncRecorder that New wraps
// around the recorder; zero (and negative) fields keep their defaults (see
// AsyncOptions). Its Registerer is the relay's; an OnError given here
// is called after the relay has counted and logged the error.
func WithRecordQueue(o AsyncOptions) Option {
	return func(c *config) error { c.asyncOpt = o; return nil }
}

// WithRegisterer sets where metrics are registered. The default is a new
// registry of the relay's own (nil too), served by (*Relay).MetricsHandler;
// the global default registry is never used unless passed here.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(c *config) error { c.registerer = r; return nil }
}

// WithTransport sets the RoundTripper for upstream requests. The default
// (nil too) is an http.Transport tuned for many long streams, with its own
// connection pool and with transparent decompression disabled so that
// compressed bodies pass through byte for byte. Connect timeouts are
// enforced by the relay, whatever the transport.
func WithTransport(t http.RoundTripper) Option {
	return func(c *config) error { c.transport = t; return nil }
}

// WithLogger sets the logger. The default, and nil, discard logs. Logs never
// contain credentials, request bodies or upstream URLs' queries.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error { c.logger = l; return nil }
}

// WithClock sets the clock. The default (nil too) is the system clock.
func WithClock(k Clock) Option {
	return func(c *config) error { c.clock = k; return nil }
}

// WithMaxBodyBytes bounds request bodies; larger ones get 413. Default
// 10 MiB. Zero or negative is an error rather than "no limit": the relay
// holds bodies in memory, which stays bounded.
func WithMaxBodyBytes(n int64) Option {
	return func(c *config) error {
		if n <= 0 {
			return fmt.Errorf("relay: max body size %d is not positive", n)
		}
		c.maxBody = n
		return nil
	}
}

// WithTimeouts sets default upstream timeouts; routes override them field
// by field. Zero fields keep the built-in defaults (Connect 10s, FirstByte
// 10m, FirstToken 15m, Idle 5m, Total none); negative ones mean no limit.
func WithTimeouts(t Timeouts) Option {
	return func(c *config) error { c.timeouts = t; return nil }
}

// WithClientWriteTimeout bounds how long one write to a client may block.
// The relay extends the host server's write deadline as a stream
// progresses, so a server WriteTimeout never cuts a healthy stream; a
// client that stops reading is dropped within this time (on HTTP/1 after
// between half of it and all of it: the deadline is renewed at half-life
// so that most writes touch no timer). Default 30s. Zero or negative
// means the relay sets no write deadlines of its own: a host server's
// WriteTimeout then applies unchanged, cutting long streams, and without
// one a client that stops reading holds its stream until the upstream
// ends.
func WithClientWriteTimeout(d time.Duration) Option {
	return func(c *config) error { c.writeTimeout = d; return nil }
}

// WithErrorShape sets the shape of the errors the relay itself emits.
// The default, ShapeAuto, uses the route's provider (Anthropic style on
// Anthropic routes, OpenAI style elsewhere) and, before a route is known,
// the request's own signals (an anthropic-version header).
func WithErrorShape(s ErrorShape) Option {
	return func(c *config) error { c.shape = s; return nil }
}

// WithIncludeUsage says whether streaming OpenAI-style chat requests get
// "stream_options": {"include_usage": true} added, so that their usage is
// always known. On by default. It is added only where the upstream takes
// it (not to Azure api-versions before 2024-09-01-preview), and a request
// an upstream refuses for it (400 naming stream_options) is sent once
// more without it. The usage-only chunk it causes (with empty "choices")
// is observed but not sent to a client that did not ask for it. See the
// README's "Usage reporting (include_usage)".
func WithIncludeUsage(on bool) Option {
	return func(c *config) error { c.usage.includeUsage = on; return nil }
}

// WithDefaultMaxTokens is the output budget reserved against token limits
// for a request that names no max_tokens. Default 4096; zero reserves
// only the prompt's estimate; negative is an error.
func WithDefaultMaxTokens(n int64) Option {
	return func(c *config) error {
		if n < 0 {
			return fmt.Errorf("relay: default max tokens %d is negative", n)
		}
		c.usage.defaultMaxTokens = n
		return nil
	}
}

// WithModels names the models that get their own metric label; any other
// model is labelled "other", which keeps label cardinality bounded.
func WithModels(models ...string) Option {
	return func(c *config) error { c.metricsModels = append(c.metricsModels, models...); return nil }
}

// WithPrices prices every request's usage with t when it ends: the
// record's Cost, and the relay_cost_total and relay_cost_unknown_total
// metrics. Nil (the default) prices nothing: Record.Cost stays unknown,
// with no currency. The relay ships no prices: they change, and stale
// ones would bill wrongly; the operator supplies them (cmd/relay reads
// them from a file, see its example prices).
func WithPrices(t *PriceTable) Option {
	return func(c *config) error { c.prices = t; return nil }
}

// WithAllowedMethods sets the request methods the relay forwards. Others
// are answered 405 with an Allow header, counted as "method_not_allowed",
// before authentication, and never reach an upstream. The default is GET,
// HEAD, POST, PUT, PATCH and DELETE: what LLM and TTS APIs use. CONNECT
// and TRACE cannot be allowed. Methods are case-sensitive.
func WithAllowedMethods(methods ...string) Option {
	return func(c *config) error {
		if err := checkMethods(methods); err != nil {
			return err
		}
		c.methods = slices.Clone(methods)
		return nil
	}
}

// WithRequestBodyRate sets the slowest a request body may arrive: once
// grace has passed since the relay began reading it, its average rate
// must stay at or above minBytesPerSecond, or the request gets 408
// (error type "body_timeout") and its connection is closed. Default 240
// bytes/s after 5s (Kestrel's). A zero rate removes the minimum (the
// overall WithRequestBodyTimeout still applies); a zero grace enforces it
// from the first byte. Negative values are an error: the grace is a delay,
// not a limit, so "negative means no limit" does not apply to it. The bound is enforced with
// read deadlines (http.ResponseController), which net/http's HTTP/1 and
// HTTP/2 servers support, and never later than the host server's
// ReadTimeout allows. Behind a ResponseWriter wrapper with neither the
// deadline methods nor Unwrap, it is enforced with timers instead (logged
// once, counted as error type "no_read_deadline"), and a connection whose
// body read was cut stays open until the client sends or the host's
// ReadTimeout: give such wrappers an Unwrap method.
func WithRequestBodyRate(minBytesPerSecond int64, grace time.Duration) Option {
	return func(c *config) error {
		if minBytesPerSecond < 0 || grace < 0 {
			return errors.New("relay: negative request body rate or grace")
		}
		c.body.minRate, c.body.grace = minBytesPerSecond, grace
		return nil
	}
}

// WithRequestBodyTimeout bounds the time to receive a whole request body;
// past it the request gets 408 ("body_timeout") and its connection is
// closed. Default 60s; zero or negative means no overall bound (the
// minimum rate of WithRequestBodyRate still applies).
func WithRequestBodyTimeout(d time.Duration) Option {
	return func(c *config) error { c.body.timeout = max(d, 0); return nil }
}

// WithRequestBodyBudget bounds the bytes of request bodies the relay holds
// in memory at once, over all requests. A body that would exceed it gets
// 503 with Retry-After (error type "overloaded") instead of memory growth.
// A body's buffer starts at 4 KiB (or its declared length, if smaller) and
// doubles, up to its declared length, only once the bytes that arrived
// fill it, so it holds at most twice what arrived; each growth is reserved
// from the budget. Bodies give their bytes back once no attempt can resend
// them (once the final attempt's response headers are in and the
// transport has read the body; an HTTP/2 transport may resend it until
// then). Default 128 MiB, or WithMaxBodyBytes if larger; New fails when n
// is below WithMaxBodyBytes. Zero or negative is an error, as for
// WithMaxBodyBytes. See also WithRequestBodyTenantBudget.
func WithRequestBodyBudget(n int64) Option {
	return func(c *config) error {
		if n <= 0 {
			return fmt.Errorf("relay: request body budget %d is not positive", n)
		}
		c.body.budget, c.body.budgetSet = n, true
		return nil
	}
}

// WithRequestBodyTenantBudget bounds the bytes of request bodies one
// tenant (Identity.Tenant) holds in memory at once: its share of
// WithRequestBodyBudget. Bodies are read before the limiter is asked (it
// needs their token estimate), so without a share one tenant, a hostile
// or rate-limited one included, could hold the whole budget with slow
// bodies and have every other tenant's requests refused. A body that
// would exceed its tenant's share gets the same answer as one that would
// exceed the budget: 503 with Retry-After (error type "overloaded"), the
// message naming the tenant's share. Default a quarter of the body
// budget, but never less than WithMaxBodyBytes, so that any tenant can
// always send a body of the largest size allowed; a single-tenant
// deployment may set it to the whole budget. A share above the budget is
// the budget. New fails when n is below WithMaxBodyBytes; zero or
// negative is an error.
func WithRequestBodyTenantBudget(n int64) Option {
	return func(c *config) error {
		if n <= 0 {
			return fmt.Errorf("relay: request body tenant budget %d is not positive", n)
		}
		c.body.tenant = n
		return nil
	}
}

// WithObservationBudget bounds the memory used to observe large responses,
// over all requests. Each response observes through buffers of its own up
// to 16 KiB: 12 KiB for an event or JSON body, which ordinary ones fit,
// and 4 KiB kept for a window over the last 2-4 KiB of a larger one,
// where providers put usage. A larger SSE event is observed through its
// first 64 KiB and a window over its last 32-64 KiB, a larger JSON body
// through the same head and a 16-32 KiB tail, and that growth is taken
// from this budget; a stream of consecutive large events keeps its share
// until its first small event or its end. When the budget is spent, large
// events and bodies are observed through what their response holds on
// its own: usage, which is small and comes last, is still found, but a
// model name or an error past the first 12 KiB may not be; the bytes sent
// to clients are never affected. Each gzip or deflate response also takes
// 64 KiB of it for its decoder while it lasts; when the budget refuses,
// that response is relayed unchanged but not observed (its usage is
// unknown). Default 64 MiB; zero leaves only each response's own 16 KiB,
// and no compressed response is observed.
func WithObservationBudget(n int64) Option {
	return func(c *config) error {
		if n < 0 {
			return fmt.Errorf("relay: observation budget %d is negative", n)
		}
		c.observeBudget = n
		return nil
	}
}

// WithRefusalMemo sets how long, at most, the relay remembers that the
// limiter refused a caller (tenant, key and route) for its request budget.
// While it remembers, that caller's requests on that route are refused
// with 429 and the limiter's Retry-After (counted down) before their
// bodies are read and without asking the limiter, so that a refused
// caller cannot make the relay buffer bodies or query a remote limiter.
// A refusal is remembered until its Retry-After or for d, whichever is
// sooner, and the next refusal renews it; refusals for tokens are never
// remembered. Default 5s: a limiter topped up or an Identity whose Limits
// changed is asked again within 5s. Zero switches the memo off; negative
// is an error.
//
// The memo assumes the limiter counts requests per tenant, key and route
// or more coarsely, as MemoryLimiter and the Redis limiter do. A limiter
// that counts more finely (on Identity.Labels, say, behind an
// Authenticator that gives many callers one KeyID) needs
// WithRefusalMemo(0): otherwise one caller's refusal refuses the group.
func WithRefusalMemo(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("relay: refusal memo %v is negative", d)
		}
		c.refusalMemo = d
		return nil
	}
}

// WithDrainOnClientGone keeps reading a streamed response for at most d
// after its client has left, so that the record gets the provider's final
// usage (OpenAI and Anthropic report it only at the end of a stream)
// instead of an estimate. The relay sends the client nothing more; it
// reads and observes the upstream until the response ends, d has passed,
// the route's Idle or Total timeout fires, or Shutdown cuts it. A client
// that leaves before the response begins is given the same time: the
// relay waits for the response's headers to drain it, but never tries
// another upstream for it. The record says 499 and client_canceled, with
// the provider's usage when the response ended within d (else the
// estimate); BytesOut counts what the client got, Events every event read.
//
// Off by default, and it has a cost: the provider keeps generating, and
// bills, the rest of the response (up to d of it) for a client that will
// never read it, and the relay holds the upstream connection meanwhile.
// Without it, a client that leaves cancels the upstream request at once
// and the record carries what was reported so far plus an estimate
// (Usage.Estimated). Zero switches it off; negative is an error.
func WithDrainOnClientGone(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("relay: drain on client gone %v is negative", d)
		}
		c.drain = d
		return nil
	}
}
