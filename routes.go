package relay

import (
	"fmt"
	"hash/maphash"
	"maps"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamrelay/relay/internal/provider"
)

// StreamKind says how a response body is relayed.
type StreamKind string

// Stream kinds.
const (
	// KindAuto picks by the response Content-Type: text/event-stream is SSE,
	// audio/* and application/octet-stream are audio, anything else JSON.
	KindAuto StreamKind = "auto"
	// KindSSE relays server-sent events, flushing after every read.
	KindSSE StreamKind = "sse"
	// KindAudio relays binary chunks (TTS audio), flushing after every read.
	KindAudio StreamKind = "audio"
	// KindJSON relays a complete body, keeping its Content-Length.
	KindJSON StreamKind = "json"
	// KindWebSocket is recorded for WebSocket sessions (Record.Kind); it
	// is not a route's kind: every route serves sessions unless it sets
	// NoWebSocket.
	KindWebSocket StreamKind = "websocket"
)

// Provider names the API family behind a route. It selects what cannot be
// read from the bytes themselves: the shape of the errors the relay
// answers, how requests are billed (tokens or characters), whether a
// streamed request is asked to report its usage (include_usage), and that
// a plain-text body is SSML. Everything else — the model, usage, in-band
// errors, time to first token — is recognised from the request and
// response themselves, so one route may carry several dialects (an
// "openai" route serves chat completions, the Responses API, speech, and
// Gemini's native API). Each family is one file of internal/provider; see
// "Adding a provider" in the README.
type Provider string

// Providers.
const (
	// ProviderOpenAI is OpenAI and every server speaking its API (DeepSeek,
	// Groq, OpenRouter, SiliconFlow, Gemini's OpenAI endpoint, ...), also
	// OpenAI speech and Gemini's native API. It is the default.
	ProviderOpenAI Provider = "openai"
	// ProviderAzure is Azure OpenAI: OpenAI's API, with the deployment in
	// the path naming the model when the body does not.
	ProviderAzure Provider = "azure"
	// ProviderAnthropic is Anthropic's Messages API; the relay's own errors
	// take Anthropic's shape.
	ProviderAnthropic Provider = "anthropic"
	// ProviderAzureTTS is Azure Speech REST text to speech: an SSML request
	// billed in characters, an audio response.
	ProviderAzureTTS Provider = "azure-tts"
	// ProviderElevenLabs is ElevenLabs text to speech: billed in
	// characters; on a WebSocket session (stream-input) the relay counts
	// the characters the client sends for synthesis.
	ProviderElevenLabs Provider = "elevenlabs"
	// ProviderCartesia is Cartesia text to speech: billed in characters;
	// on a WebSocket session (/tts/websocket) the relay counts the
	// characters of the transcripts the client sends.
	ProviderCartesia Provider = "cartesia"
)

// Timeouts bound an upstream exchange. A zero field takes the relay's
// value (WithTimeouts), then the default: Connect 10s, FirstByte 10m,
// FirstToken 15m, Idle 5m, Total none. A negative field means no limit.
//
// None of them is http.Client.Timeout, which would cut long streams: a
// healthy stream that keeps sending is bounded only by Total.
type Timeouts struct {
	// Connect bounds dialing and the TLS handshake.
	Connect time.Duration
	// FirstByte bounds the wait for the response headers, counted from
	// when the request is sent.
	FirstByte time.Duration
	// FirstToken bounds each read of an event stream before its first
	// content event (text, reasoning, tool call or audio: the event that
	// times TTFT), in place of Idle: a reasoning model may think for
	// minutes before it writes. While the relay holds a stream for
	// failover (Route.NoFirstContentHold), its running out moves on to
	// the next upstream; otherwise the stream ends with a timeout error
	// event. Streams the relay cannot read for content (compressed in a
	// coding it does not decode) and other bodies use Idle throughout.
	FirstToken time.Duration
	// Idle bounds each read of the response body: the upstream's silence,
	// not the time spent writing to a slow client. For an event stream it
	// applies from the first content event on (see FirstToken).
	Idle time.Duration
	// Total bounds the whole exchange, streaming included.
	Total time.Duration
}

// merge fills t's zero fields from d.
func (t Timeouts) merge(d Timeouts) Timeouts {
	if t.Connect == 0 {
		t.Connect = d.Connect
	}
	if t.FirstByte == 0 {
		t.FirstByte = d.FirstByte
	}
	if t.FirstToken == 0 {
		t.FirstToken = d.FirstToken
	}
	if t.Idle == 0 {
		t.Idle = d.Idle
	}
	if t.Total == 0 {
		t.Total = d.Total
	}
	return t
}

// Upstream is one backend of a route.
type Upstream struct {
	// Name labels the upstream in metrics and records. Empty means the URL's
	// host.
	Name string
	// URL is the base URL; the request path is appended to its path.
	URL string
	// AuthHeader is the header that carries the upstream credential, such
	// as "Authorization", "x-api-key", "api-key" or
	// "Ocp-Apim-Subscription-Key". An Authorization value gets "Bearer "
	// prepended. Empty means no credential is injected.
	AuthHeader string
	// AuthValue is the credential itself. It is a secret: it is never
	// logged, recorded or returned.
	AuthValue string
	// AuthEnv names an environment variable holding the credential, read
	// once by New. Used when AuthValue is empty.
	AuthEnv string
	// Keys is a pool of credentials used in turn, for spreading load over
	// several upstream accounts. When set, it replaces AuthValue/AuthEnv.
	Keys []string
	// Weight is the upstream's share in weighted selection. Zero means 1;
	// negative is an error.
	Weight int
	// MaxInFlight caps the requests in flight at once on each key of the
	// upstream (each of Keys, or its one credential), WebSocket sessions
	// included for their lifetime: the upstream never sees more. A request
	// whose chosen key is full takes another key of the route with a free
	// slot; when every key is full it waits up to the route's
	// QueueTimeout, then is refused with 429, reason
	// "upstream_concurrency" (README "Concurrency"). Counted in this
	// process unless WithKeySlots shares the count among replicas, and
	// per route: each route that lists the same key allows MaxInFlight.
	// Zero means no cap; negative is an error.
	MaxInFlight int
}

// Route maps a path prefix to upstreams.
type Route struct {
	// Name labels the route in metrics and records. Required and unique.
	Name string
	// Prefix is matched against the request path on whole segments: "/v1"
	// matches "/v1" and "/v1/chat" but not "/v1x". The longest match wins.
	// It starts with / and has no . or .. segments; a trailing / is
	// ignored, and an empty Prefix is "/", which serves every path no
	// longer prefix claims. (The standalone server's path follows the same
	// rule: NewRouteTable is its only check.)
	Prefix string
	// StripPrefix removes Prefix from the forwarded path.
	StripPrefix bool
	// RewritePrefix, when set, replaces Prefix in the forwarded path. It
	// starts with /.
	RewritePrefix string

	// Upstream, AuthHeader, AuthValue and AuthEnv describe a single upstream
	// in short form; they are ignored when Upstreams is set.
	Upstream   string
	AuthHeader string
	AuthValue  string
	AuthEnv    string
	// Upstreams lists the backends for failover, tried in order of
	// preference. See Upstream.
	Upstreams []Upstream

	// Kind says how responses are relayed. Empty means KindAuto.
	Kind StreamKind
	// Provider selects the error shape and usage extraction. Empty means
	// ProviderOpenAI.
	Provider Provider
	// Headers are set on every upstream request, after the client's own
	// (for example a default "anthropic-version"). Setting an account
	// header here (say OpenAI-Project) pins the account for the route.
	Headers map[string]string
	// PassHeaders names the account-selecting client headers this route
	// forwards: OpenAI-Organization, OpenAI-Project, X-Goog-User-Project,
	// X-HF-Bill-To and Azureml-Model-Deployment. By default the relay drops
	// them, since they would let a client choose which account or
	// deployment the relay's credential bills; Google's $userProject and
	// userProject query parameters, the same choice as X-Goog-User-Project,
	// are dropped from the forwarded query unless X-Goog-User-Project is
	// listed. Names are case-insensitive;
	// New rejects any other name (every other header passes anyway,
	// except credentials and hop-by-hop headers, which never do).
	PassHeaders []string
	// Timeouts override the relay's defaults field by field.
	Timeouts Timeouts
	// MaxAttempts bounds how many attempts one request may make before
	// the first byte reaches the client, counting each key of a pool. Zero
	// means one per upstream key, at most 3; negative is an error. Above
	// the number of upstream keys, the attempts left are retries of the
	// last backend tried, spaced by Backoff (see "Retries" in the README):
	// set it to 3 on a route with one upstream and one key to survive a
	// blip.
	MaxAttempts int
	// NoFirstContentHold turns off the hold of event streams until their
	// first content event. By default, when a request has an attempt left
	// to fail over to, the relay holds a successful event stream's
	// headers and leading non-content events (a role-only chunk,
	// message_start, ping, response.created, comments; at most 64 KiB)
	// until its first content event, and fails over invisibly when the
	// stream ends, breaks, carries an error event or times out
	// (Timeouts.FirstToken) before it. The first content event releases
	// what was held in the read that brought it. With the hold off, a
	// stream is relayed from its first byte, and never fails over.
	NoFirstContentHold bool
	// KeepAlive, when positive, sends the client an SSE comment
	// (": keep-alive") after each KeepAlive of upstream silence, so that
	// proxies and load balancers with idle timeouts keep an event stream
	// open while a model thinks. Comments go only between events, never
	// inside one, and only once the response's headers are sent; so a
	// route with KeepAlive is never held for failover (NoFirstContentHold),
	// since a held stream sends its client nothing at all. Zero means
	// none; negative is an error.
	KeepAlive time.Duration
	// Backoff spaces retries of one backend. Zero fields take the
	// defaults (Base 500ms, Max 10s); negative ones are an error.
	Backoff Backoff
	// NoWebSocket refuses WebSocket sessions on this route (404 in the
	// caller's shape, before any upstream is asked). By default a route
	// relays a WebSocket upgrade on its paths as a session to its upstream
	// (see "Realtime and WebSocket" in the README), whatever
	// WithAllowedMethods allows.
	NoWebSocket bool
	// QueueTimeout is how long a request waits for a free key when every
	// key of the route is at its upstream's MaxInFlight, before it is
	// refused with 429. At most four requests per slot wait at once;
	// more are refused at once. Zero: no wait; negative is an error.
	QueueTimeout time.Duration
	// Sticky pins each conversation to the upstream key that served it
	// last, for prompt cache hits (sticky.go, README "Sticky routing").
	// The zero value is off.
	Sticky Sticky
}

// Backoff spaces the retries of one backend (see Route.MaxAttempts). The
// n-th retry waits a random duration between half and all of
// Base·2^(n-1), capped at Max (equal jitter). An answer with a
// Retry-After (or retry-after-ms) of at most Max is retried after exactly
// that; a longer one is not retried: it is relayed to the client.
type Backoff struct {
	Base time.Duration
	Max  time.Duration
}

// Target is a resolved request: where it goes and how it is relayed.
//
// A Target from RouteTable shares its PassHeaders and its backends'
// Header maps with the table (they are the same for every request): read
// them, and copy them before changing anything, as a resolver wrapping a
// RouteTable must.
type Target struct {
	// Route names the matched route; it is the metric label.
	Route    string
	Kind     StreamKind
	Provider Provider
	Timeouts Timeouts
	// Backends are tried in order until one answers with something other
	// than a connection error, a timeout, a 429 or a 5xx; at most
	// MaxAttempts of them. There is at least one.
	Backends []Backend
	// MaxAttempts bounds the attempts; above len(Backends), the attempts
	// left retry the last backend, spaced by Backoff (zero fields: 500ms
	// and 10s). Zero means one per backend.
	MaxAttempts int
	// NoFirstContentHold, KeepAlive and Backoff are the route's (see Route).
	NoFirstContentHold bool
	KeepAlive          time.Duration
	Backoff            Backoff
	// NoWebSocket refuses WebSocket sessions (see Route.NoWebSocket); a
	// resolver's zero Target allows them.
	NoWebSocket bool
	// PassHeaders names account-selecting client headers to forward (see
	// Route.PassHeaders); nil drops them all. Compared case-insensitively.
	PassHeaders []string

	// probe is the half-open upstream RouteTable put first, and probeSeen
	// its state then: the relay claims the probe just before the first
	// attempt (health.go), so that a request refused earlier (401, 429,
	// 413) never holds it.
	probe     *backendPool
	probeSeen int64
	// slots counts the requests in flight at the keys of the route's
	// pools with MaxInFlight (inflight.go); nil when none has it. queueWait
	// is the route's QueueTimeout.
	slots     *routeSlots
	queueWait time.Duration
	// sticky is the route's pin table, nil unless it is sticky; pin is the
	// hash of the request's pin key, when hasPin (sticky.go).
	sticky *stickyTable
	pin    uint64
	hasPin bool
	pinned pinRef // the pin applyPin found; zero when none
}

// Backend is one concrete upstream request.
type Backend struct {
	// Name labels the upstream in metrics and records.
	Name string
	// URL is the full URL to send the request to.
	URL *url.URL
	// Header is set on the upstream request after the client's headers,
	// replacing those of the same name. It carries credentials: never log it.
	// The relay only reads it; RouteTable's are shared (see Target).
	Header http.Header
	// Done, if not nil, is told how the attempt went, so that a resolver can
	// rest a failing key.
	Done func(AttemptResult)

	// pool and key are the RouteTable pool and key the backend uses;
	// pool is nil for a resolver's own backends.
	pool *backendPool
	key  int
}

// AttemptResult is the outcome of one upstream attempt.
type AttemptResult struct {
	// Status is the upstream's status, 0 when Err is not nil.
	Status int
	// Err is the transport error, if any, or ErrNoFirstContent for an
	// event stream that failed before its first content and was failed
	// over (hold.go). It may contain the upstream URL: do not show it to
	// clients.
	Err error
	// RetryAfter is how long the upstream asked to wait, when it said:
	// its retry-after-ms (OpenAI, Azure), else its Retry-After, at most 5
	// minutes for a retry-after-ms.
	RetryAfter time.Duration
}

// UpstreamResolver picks the target of a request.
//
// Resolve must be safe for concurrent use and must not read the body. It
// returns an error wrapping ErrNoRoute when nothing serves the path; the
// relay answers 404.
//
// The relay drops account-selecting and method-override headers from
// every upstream request, whatever the resolver, but the Backend URLs are
// the resolver's: RouteTable drops Google's $userProject and userProject
// query parameters from the client's query (unless the route passes
// X-Goog-User-Project); a resolver that copies the client's query into
// its URLs should do the same.
type UpstreamResolver interface {
	Resolve(r *http.Request) (*Target, error)
}

// UpstreamResolverFunc adapts a function to the UpstreamResolver interface.
type UpstreamResolverFunc func(r *http.Request) (*Target, error)

// Resolve calls f(r).
func (f UpstreamResolverFunc) Resolve(r *http.Request) (*Target, error) { return f(r) }

// ErrNoRoute is wrapped by resolver errors meaning no route serves a path.
const ErrNoRoute = Error("no route")

// RouteTable is the built-in UpstreamResolver. It is immutable after
// NewRouteTable and safe for concurrent use.
type RouteTable struct {
	routes []*compiledRoute // longest prefix first
	clock  Clock
}

type compiledRoute struct {
	Route
	prefix   string
	headers  http.Header // Route.Headers, canonical; shared values, never mutated
	pass     []string    // Route.PassHeaders, canonical; shared, never mutated
	backends []*backendPool
	maxTries int
	keys     int // keys over all the route's pools: the most backends a request gets
	weights  int // the sum of the backends' weights
	cursor   atomic.Uint64
	slots    *routeSlots  // nil unless a pool has MaxInFlight
	sticky   *stickyTable // nil unless the route is sticky
}

// backendPool is one Upstream with its key pool and resting state.
type backendPool struct {
	name   string
	base   *url.URL
	header string
	keys   []poolKey
	weight int

	// Precomputed once, so that building a request's backend copies no
	// header and trims no path: the base path and escaped path without
	// their trailing slash, and, for a pool without keys, the headers
	// every request gets (the route's; shared, never mutated).
	basePath, baseRaw string
	plain             http.Header

	clock Clock

	// maxInFlight is Upstream.MaxInFlight; slots, the route's counts,
	// guards the keys' inflight (inflight.go).
	maxInFlight int
	slots       *routeSlots

	// until is the upstream's health (health.go): 0 available; positive,
	// resting until then (Unix ns); negative, half open with a probe
	// claimed until its opposite.
	until   atomic.Int64
	metrics *poolMetrics // nil unless New instrumented the table

	mu       sync.Mutex // guards next, failures and keys' resting state
	next     int
	failures int // upstream failures in a row (connection errors, 5xx)
}

type poolKey struct {
	// header is the route's headers plus this key's credential, the
	// Backend.Header of every request that uses the key; shared, never
	// mutated.
	header    http.Header
	done      func(AttemptResult) // reports an attempt with this key; made once
	restUntil time.Time
	failures  int
	inflight  int    // requests in flight with this key, under the route's slots.mu
	slotID    string // "route/upstream/index": the key's name in a KeySlotStore
}

// NewRouteTable validates routes and compiles them into a resolver.
// Environment variables named by AuthEnv are read here, once.
//
// It checks every route and reports every problem: the error is a
// *RouteError, or an errors.Join of them (errors.As finds the first), each
// naming the route, the upstream and the field at fault. The rules:
// a Name, unique; a Prefix starting with / and without . or .. segments
// (empty is /), unique once normalized; a RewritePrefix empty or starting
// with /; a known Kind and Provider; Headers with token names and values
// without control characters (tab aside); PassHeaders naming
// account-selecting headers only; MaxAttempts not negative; at least one
// upstream, each with an absolute http(s) URL, a weight not negative, and
// credentials that can work (not empty, no surrounding whitespace or
// control characters) carried by a valid AuthHeader; a Sticky with a
// known Source, a valid Header for the header source only, and no
// negative bound (see Sticky).
func NewRouteTable(routes []Route, clock Clock) (*RouteTable, error) {
	if clock == nil {
		clock = systemClock{}
	}
	t := &RouteTable{clock: clock}
	seed := maphash.MakeSeed() // hashes the sticky routes' pin keys: random per table
	names := map[string]int{}
	prefixes := map[string]int{}
	p := &routeProblems{}
	for i, r := range routes {
		p.index, p.route, p.upstream, p.upName = i, r.Name, -1, ""
		cr := compileRoute(p, r, names, prefixes, seed, clock)
		if cr != nil && len(p.list) == 0 {
			t.routes = append(t.routes, cr)
		}
	}
	if err := p.err(); err != nil {
		return nil, err
	}
	sort.SliceStable(t.routes, func(i, j int) bool { return len(t.routes[i].prefix) > len(t.routes[j].prefix) })
	return t, nil
}

// compileRoute checks route p.index, adding its problems to p; names and
// prefixes map those seen so far to their route's index. It returns nil
// when the route cannot be compiled.
func compileRoute(p *routeProblems, r Route, names, prefixes map[string]int, seed maphash.Seed, clock Clock) *compiledRoute {
	before := len(p.list)
	switch first, dup := names[r.Name]; {
	case r.Name == "":
		p.add("Name", "", "a route needs a name (it labels metrics and records)", "")
	case dup:
		p.add("Name", "", fmt.Sprintf("route name %q is already used by routes[%d]", r.Name, first), "")
	default:
		names[r.Name] = p.index
	}
	// An empty prefix is / (the route serves every path no other route
	// claims): the one rule, for the library and the YAML's path alike.
	pfx := normalizePrefix(r.Prefix)
	switch {
	case !strings.HasPrefix(pfx, "/"):
		p.add("Prefix", "", "want a path prefix starting with /",
			fmt.Sprintf("prefix %q must start with /", r.Prefix))
	case hasDotSegment(pfx):
		// Resolve refuses such request paths: the route could never match.
		p.add("Prefix", "", "a path prefix cannot contain . or .. segments",
			fmt.Sprintf("prefix %q cannot contain . or .. segments", r.Prefix))
	default:
		if first, dup := prefixes[pfx]; dup {
			p.add("Prefix", "", fmt.Sprintf("path %q is already routed by routes[%d]", pfx, first), "")
		} else {
			prefixes[pfx] = p.index
		}
	}
	if r.RewritePrefix != "" && !strings.HasPrefix(r.RewritePrefix, "/") {
		p.add("RewritePrefix", "", "want a path starting with /",
			fmt.Sprintf("rewrite prefix %q must start with /", r.RewritePrefix))
	}
	switch r.Kind {
	case "":
		r.Kind = KindAuto
	case KindAuto, KindSSE, KindAudio, KindJSON:
	default:
		p.add("Kind", "", fmt.Sprintf("unknown kind %q (want auto, sse, audio or json)", r.Kind), "")
	}
	if r.Provider == "" {
		r.Provider = ProviderOpenAI
	} else if _, ok := provider.Lookup(string(r.Provider)); !ok {
		names := provider.Names()
		want := strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
		p.add("Provider", "", fmt.Sprintf("unknown provider %q (want %s)", r.Provider, want), "")
	}
	if r.MaxAttempts < 0 {
		p.add("MaxAttempts", "", "cannot be negative", "MaxAttempts cannot be negative")
	}
	if r.KeepAlive < 0 {
		p.add("KeepAlive", "", "cannot be negative", "KeepAlive cannot be negative")
	}
	if r.Backoff.Base < 0 || r.Backoff.Max < 0 {
		p.add("Backoff", "", "cannot be negative", "Backoff cannot be negative")
	}
	if r.QueueTimeout < 0 {
		p.add("QueueTimeout", "", "cannot be negative", "QueueTimeout cannot be negative")
	}
	cr := &compiledRoute{Route: r, prefix: pfx, headers: make(http.Header, len(r.Headers))}
	cr.sticky = compileSticky(p, r.Sticky, seed, clock)
	for _, k := range slices.Sorted(maps.Keys(r.Headers)) { // sorted: the same report every time
		v := r.Headers[k]
		switch {
		case !isToken(k):
			p.add("Headers", k, fmt.Sprintf("%q is not a valid header name", k),
				fmt.Sprintf("header name %q is not valid", k))
		case !validHeaderValue(v):
			// The value may be a secret: name the header only.
			p.add("Headers", k, "a header value cannot contain a control character (tab aside)",
				fmt.Sprintf("header %s: value has a control character", k))
		default:
			cr.headers[http.CanonicalHeaderKey(k)] = []string{v}
		}
	}
	for j, h := range r.PassHeaders {
		ck := http.CanonicalHeaderKey(h)
		if !isAccountHeader(ck) {
			p.add("PassHeaders", strconv.Itoa(j),
				fmt.Sprintf("%q is not an account-selecting header (OpenAI-Organization, OpenAI-Project, "+
					"X-Goog-User-Project, X-HF-Bill-To or Azureml-Model-Deployment)", h),
				fmt.Sprintf("PassHeaders: %q is not an account-selecting header", h))
			continue
		}
		cr.pass = append(cr.pass, ck)
	}
	ups := r.Upstreams
	if len(ups) == 0 {
		if r.Upstream == "" {
			p.add("Upstream", "", "a route needs an upstream (or a list of upstreams)", "")
			return nil
		}
		ups = []Upstream{{URL: r.Upstream, AuthHeader: r.AuthHeader, AuthValue: r.AuthValue, AuthEnv: r.AuthEnv}}
	}
	for j, u := range ups {
		p.upstream, p.upName = j, u.Name
		if bp := compileUpstream(p, u, clock); bp != nil {
			cr.backends = append(cr.backends, bp)
		}
	}
	p.upstream, p.upName = -1, ""
	if len(p.list) > before {
		return nil
	}
	for _, b := range cr.backends {
		b.prepare(cr.headers)
		cr.weights += b.weight
	}
	for _, b := range cr.backends {
		cr.keys += len(b.keys) // an upstream without keys has one (compileUpstream)
	}
	if cr.sticky != nil {
		cr.sticky.pools = cr.backends
	}
	for _, b := range cr.backends {
		if b.maxInFlight > 0 {
			if cr.slots == nil {
				cr.slots = &routeSlots{}
			}
			b.slots = cr.slots
			cr.slots.capacity += queuePerSlot * b.maxInFlight * len(b.keys)
			for k := range b.keys { // names the key in a KeySlotStore
				b.keys[k].slotID = r.Name + "/" + b.name + "/" + strconv.Itoa(k)
			}
		}
	}
	cr.maxTries = r.MaxAttempts
	if cr.maxTries == 0 {
		cr.maxTries = min(3, cr.keys) // one try per upstream key, at most 3
	}
	return cr
}

func normalizePrefix(p string) string {
	if p == "" {
		return "/"
	}
	if len(p) > 1 {
		p = strings.TrimRight(p, "/")
		if p == "" {
			p = "/"
		}
	}
	return p
}

// Prefix returns the path prefix the table matches for the named route,
// normalized (an empty Prefix is "/", a trailing slash is dropped), and
// whether the table has that route.
func (t *RouteTable) Prefix(route string) (string, bool) {
	for _, r := range t.routes {
		if r.Name == route {
			return r.prefix, true
		}
	}
	return "", false
}

// compileUpstream checks upstream p.upstream of the current route, adding
// its problems to p, and returns nil if it has any.
func compileUpstream(p *routeProblems, u Upstream, clock Clock) *backendPool {
	before := len(p.list)
	// The URL may hold a secret (a key in the query): never echo it.
	base, err := url.Parse(u.URL)
	switch {
	case err != nil || base.Scheme == "" || base.Host == "":
		p.add("URL", "", "want an absolute URL such as https://api.openai.com",
			"upstream URL is not an absolute http(s) URL")
	case base.Scheme != "http" && base.Scheme != "https":
		p.add("URL", "", "the URL scheme must be http or https",
			fmt.Sprintf("upstream URL scheme %q is not http or https", base.Scheme))
	}
	if u.Weight < 0 {
		p.add("Weight", "", "cannot be negative", "Weight cannot be negative")
	}
	if u.MaxInFlight < 0 {
		p.add("MaxInFlight", "", "cannot be negative", "MaxInFlight cannot be negative")
	}
	header := http.CanonicalHeaderKey(u.AuthHeader)
	if u.AuthHeader != "" && !isToken(u.AuthHeader) {
		p.add("AuthHeader", "", fmt.Sprintf("%q is not a valid header name", u.AuthHeader),
			fmt.Sprintf("AuthHeader %q is not a valid header name", u.AuthHeader))
	}
	secrets := u.Keys
	if len(secrets) == 0 {
		v := u.AuthValue
		if v == "" && u.AuthEnv != "" {
			v = os.Getenv(u.AuthEnv)
			if v == "" {
				p.add("AuthEnv", "", fmt.Sprintf("environment variable %s is empty or unset", u.AuthEnv), "")
			} else if err := checkSecret(v); err != nil {
				p.add("AuthEnv", "", fmt.Sprintf("the credential in environment variable %s %v", u.AuthEnv, err), "")
			}
		} else if err := checkSecret(v); err != nil {
			p.add("AuthValue", "", "the credential "+err.Error(), "AuthValue "+err.Error())
		}
		if v != "" {
			secrets = []string{v}
		}
	} else {
		for i, k := range secrets {
			key := strconv.Itoa(i)
			if k == "" {
				p.add("Keys", key, "the credential is empty", "key "+key+" is empty")
			} else if err := checkSecret(k); err != nil {
				p.add("Keys", key, "the credential "+err.Error(), "key "+key+" "+err.Error())
			}
		}
	}
	if len(secrets) > 0 && header == "" {
		p.add("AuthHeader", "", "a credential is set but the auth header is not (Authorization, x-api-key, api-key…)",
			"a credential is set but auth header is empty")
	}
	if len(p.list) > before {
		return nil
	}
	bp := &backendPool{name: u.Name, base: base, header: header, weight: max(1, u.Weight), clock: clock,
		maxInFlight: u.MaxInFlight}
	if bp.name == "" {
		bp.name = base.Host
	}
	for _, s := range secrets {
		if bp.header == "Authorization" && !strings.HasPrefix(s, "Bearer ") {
			s = "Bearer " + s
		}
		// The value alone for now: prepare adds the route's headers.
		bp.keys = append(bp.keys, poolKey{header: http.Header{bp.header: {s}}})
	}
	if len(bp.keys) == 0 {
		// A pool without credentials has one key all the same, carrying
		// no header: its state is the upstream's health.
		bp.keys = []poolKey{{}}
	}
	return bp
}

// prepare precomputes what every request to the pool shares: its paths,
// each key's headers (the route's, extra, then the credential) and each
// key's report function.
func (b *backendPool) prepare(extra http.Header) {
	b.basePath = strings.TrimRight(b.base.Path, "/")
	b.baseRaw = strings.TrimRight(b.base.EscapedPath(), "/")
	b.plain = make(http.Header, len(extra))
	maps.Copy(b.plain, extra)
	for i := range b.keys {
		k := &b.keys[i]
		h := make(http.Header, len(extra)+1)
		maps.Copy(h, extra)
		if b.header != "" {
			h[b.header] = k.header[b.header]
		}
		k.header = h
		k.done = func(a AttemptResult) { b.report(i, a) }
	}
}

// match returns the route serving path, or nil.
func (t *RouteTable) match(path string) *compiledRoute {
	for _, r := range t.routes {
		if r.prefix == "/" || path == r.prefix ||
			(strings.HasPrefix(path, r.prefix) && path[len(r.prefix)] == '/') {
			return r
		}
	}
	return nil
}

// Resolve implements UpstreamResolver.
func (t *RouteTable) Resolve(r *http.Request) (*Target, error) {
	path := r.URL.Path
	if hasDotSegment(path) {
		return nil, fmt.Errorf("%w: path has dot segments", ErrNoRoute)
	}
	cr := t.match(path)
	if cr == nil {
		return nil, fmt.Errorf("%w for %s", ErrNoRoute, path)
	}
	fwd := r.URL.EscapedPath()
	if cr.StripPrefix || cr.RewritePrefix != "" {
		// Work on the escaped path to keep the client's escaping. When the
		// client escaped part of the prefix itself (/v%31), rebuild the rest
		// from the decoded path instead.
		var rest string
		switch {
		case cr.prefix == "/":
			rest = fwd
		case strings.HasPrefix(fwd, cr.prefix) && (len(fwd) == len(cr.prefix) || fwd[len(cr.prefix)] == '/'):
			rest = fwd[len(cr.prefix):]
		default:
			rest = (&url.URL{Path: path[len(cr.prefix):]}).EscapedPath()
		}
		fwd = strings.TrimRight(cr.RewritePrefix, "/") + rest
		if !strings.HasPrefix(fwd, "/") {
			fwd = "/" + fwd
		}
	}
	query := r.URL.RawQuery
	if !slices.Contains(cr.pass, "X-Goog-User-Project") {
		query = dropAccountParams(query) // the parameter form of the header
	}
	tg, out, urls := newResolved(max(len(cr.backends), min(cr.maxTries, cr.keys)))
	*tg = Target{
		Route:       cr.Name,
		Kind:        cr.Kind,
		Provider:    cr.Provider,
		Timeouts:    cr.Timeouts,
		MaxAttempts: cr.maxTries,
		Backoff:     cr.Backoff,
		PassHeaders: cr.pass,

		NoFirstContentHold: cr.NoFirstContentHold,
		KeepAlive:          cr.KeepAlive,
		NoWebSocket:        cr.NoWebSocket,

		slots:     cr.slots,
		queueWait: cr.QueueTimeout,
		sticky:    cr.sticky,
	}
	now := lazyNow{clock: t.clock}
	tg.Backends = cr.pick(&now, tg, fwd, query, out, urls)
	return tg, nil
}

// newResolved returns a Target with room for n backends and their URLs.
// For the usual routes (at most three attempts) the three are one
// allocation, which every request makes.
func newResolved(n int) (*Target, []Backend, []url.URL) {
	switch {
	case n <= 1:
		r := new(struct {
			t Target
			b [1]Backend
			u [1]url.URL
		})
		return &r.t, r.b[:0], r.u[:]
	case n <= 3:
		r := new(struct {
			t Target
			b [3]Backend
			u [3]url.URL
		})
		return &r.t, r.b[:0], r.u[:]
	}
	return new(Target), make([]Backend, 0, n), make([]url.URL, n)
}

// lazyNow reads the clock once, when first asked: only pools with several
// keys need the time (to skip resting keys).
type lazyNow struct {
	clock Clock
	t     time.Time
	read  bool
}

func (l *lazyNow) now() time.Time {
	if !l.read {
		l.t, l.read = l.clock.Now(), true
	}
	return l.t
}

// A route's backends for one request: the first choice by weighted round
// robin, then the other upstreams, then further keys of the same pools,
// up to maxTries, so that a pool of keys on one upstream fails over too.

// pick orders the route's backends for one request: weighted round robin
// for the first choice, then the others in order, each with its next
// non-resting key; a half-open upstream's probe goes first and resting
// upstreams last (order, health.go). It appends them to out (with room for max(backends,
// maxTries)), their URLs in urls.
func (cr *compiledRoute) pick(now *lazyNow, tg *Target, path, query string, out []Backend, urls []url.URL) []Backend {
	n := len(cr.backends)
	first := 0
	if n > 1 {
		slot := int((cr.cursor.Add(1) - 1) % uint64(cr.weights))
		for i, b := range cr.backends {
			if slot < b.weight {
				first = i
				break
			}
			slot -= b.weight
		}
	}
	// Round 0 tries every upstream once; later rounds try further keys of
	// pools that have them, one round per key at most, until maxTries.
	var fk, ob [4]int
	var firstKey, ord []int // the key each pool gave this request in round 0; the pools' order
	if n <= len(fk) {
		firstKey, ord = fk[:n], ob[:0]
	} else {
		firstKey, ord = make([]int, n), make([]int, 0, n)
	}
	ord = cr.order(now, tg, first, ord)
	for round := 0; round == 0 || len(out) < cr.maxTries; round++ {
		added := false
		for k := 0; k < n && (round == 0 || len(out) < cr.maxTries); k++ {
			i := ord[k]
			b := cr.backends[i]
			if round > 0 && round >= len(b.keys) {
				continue
			}
			be, key := b.backend(now, path, query, &urls[len(out)], round, firstKey[i])
			if round == 0 {
				firstKey[i] = key
			}
			out = append(out, be)
			added = true
		}
		if !added {
			break
		}
	}
	return out
}

// backend builds the request to this upstream for the round'th use of the
// pool in one request and reports the key it chose. Round 0 takes the
// pool's next free key and advances the pool; round r takes the r'th free
// key after the one this request got in round 0 (firstKey), so concurrent
// requests moving the pool do not make a failover repeat a key.
// The URL is written to u.
func (b *backendPool) backend(now *lazyNow, path, query string, u *url.URL, round, firstKey int) (Backend, int) {
	*u = *b.base
	unescaped := mustUnescape(path)
	u.Path = b.basePath + unescaped
	// RawPath keeps the client's escaping (%2F stays %2F); url.URL uses it
	// only while it is a valid encoding of Path. Without escapes it is Path
	// itself, and shares its bytes.
	u.RawPath = u.Path
	if b.baseRaw != b.basePath || unescaped != path {
		u.RawPath = b.baseRaw + path
	}
	switch {
	case b.base.RawQuery == "":
		u.RawQuery = query
	case query != "":
		u.RawQuery = b.base.RawQuery + "&" + query
	}
	be := Backend{Name: b.name, URL: u, Header: b.plain, pool: b} // the key, below
	switch len(b.keys) {
	case 0:
		return be, 0
	case 1:
		// The one key, resting or not (a resting key is still the last
		// resort): no clock reading, no lock.
		be.Header, be.Done = b.keys[0].header, b.keys[0].done
		return be, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	nk := len(b.keys)
	start, want, span := b.next, 0, nk
	if round > 0 {
		start, want, span = firstKey+1, round-1, nk-1 // never firstKey itself
	}
	idx, seen := -1, 0
	for k := range span {
		i := (start + k) % nk
		if !b.keys[i].restUntil.After(now.now()) {
			if seen == want {
				idx = i
				break
			}
			seen++
		}
	}
	switch {
	case idx >= 0:
	case round > 0:
		idx = (firstKey + round) % nk // all resting: take the next one anyway
	default:
		idx = 0 // all resting: the one resting least long
		for i := range b.keys {
			if b.keys[i].restUntil.Before(b.keys[idx].restUntil) {
				idx = i
			}
		}
	}
	if round == 0 {
		b.next = idx + 1
	}
	be.Header, be.Done, be.key = b.keys[idx].header, b.keys[idx].done, idx
	return be, idx
}

func hasDotSegment(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

func mustUnescape(p string) string {
	u, err := url.PathUnescape(p)
	if err != nil {
		return p
	}
	return u
}
