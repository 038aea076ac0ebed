package relay

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Default timeouts. None cuts a healthy stream: FirstByte allows for long
// non-streamed completions, whose headers come only when they are done.
const (
	defaultConnectTimeout   = 10 * time.Second
	defaultFirstByteTimeout = 10 * time.Minute
	defaultIdleTimeout      = 5 * time.Minute
)

// Causes of cancellation of an upstream attempt.
const (
	errConnectTimeout   = Error("upstream connect timeout")
	errFirstByteTimeout = Error("upstream first byte timeout")
	errIdleTimeout      = Error("upstream idle timeout")
	errTotalTimeout     = Error("upstream total timeout")
)

// NewTransport returns a new transport configured as the relay's default
// one: tuned for a gateway (many long-lived connections to few hosts),
// with no implicit compression (bodies pass through as the upstream
// encoded them), HTTP/2 where the upstream offers it, and a 10s dial
// timeout. Start from it to customise the transport given to
// WithTransport.
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			// The default Connect timeout, enforced here so that requests
			// with default timeouts need no per-request trace.
			Timeout:   defaultConnectTimeout,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1000,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// hopHeaders are meaningful only for one connection and are never
// forwarded, in either direction (RFC 9110, section 7.6.1).
func isHopHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// isClientCredential reports headers that carry the client's credentials
// for the relay; they must never reach an upstream.
func isClientCredential(k string) bool {
	switch k {
	case "Authorization", "X-Api-Key", "Api-Key", "Ocp-Apim-Subscription-Key",
		"X-Goog-Api-Key", "Cookie":
		return true
	}
	return false
}

// connectionListed reports whether k is named in the Connection header
// values conn. Tokens are compared case-insensitively in place, which
// allocates nothing (clients commonly send "Connection: keep-alive").
func connectionListed(conn []string, k string) bool {
	for _, v := range conn {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), k) {
				return true
			}
		}
	}
	return false
}

// copyHeaders copies end-to-end headers from src to dst.
func copyHeaders(dst, src http.Header, skip func(string) bool) {
	conn := src["Connection"]
	for k, vv := range src {
		if isHopHeader(k) || (skip != nil && skip(k)) || (len(conn) > 0 && connectionListed(conn, k)) {
			continue
		}
		dst[k] = vv
	}
}

// upstreamRequest builds the request for one attempt.
func (ex *exchange) upstreamRequest(ctx context.Context, b Backend) *http.Request {
	r := ex.r
	h := make(http.Header, len(r.Header)+len(b.Header)+3)
	copyHeaders(h, r.Header, func(k string) bool {
		// Expect: the body is already read; forwarding it would make the
		// transport wait for a 100 Continue the upstream may never send.
		return isClientCredential(k) || k == "Host" || k == "Content-Length" ||
			k == "X-Request-Id" || k == "Expect" || isMethodOverride(k) ||
			(isAccountHeader(k) && !ex.passes(k))
	})
	for k, v := range b.Header {
		h[k] = v
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := r.Header["X-Forwarded-For"]; len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		h.Set("X-Forwarded-For", ip)
	}
	if h.Get("X-Forwarded-Proto") == "" {
		h["X-Forwarded-Proto"] = ex.rl.constHdr.http
		if r.TLS != nil {
			h["X-Forwarded-Proto"] = ex.rl.constHdr.https
		}
	}
	h["X-Request-Id"] = ex.upstreamIDHdr()
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = ex.rl.constHdr.empty // keep Go's default agent off the wire
	}
	out := (&http.Request{
		Method:     r.Method,
		URL:        b.URL,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Host:       b.URL.Host,
	}).WithContext(ctx)
	ex.attemptBody(out)
	return out
}

// attempt is one upstream round trip with its timer, which bounds in turn
// the wait for a connection, the wait for the response headers, and each
// wait inside a body Read.
type attempt struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	phase  atomic.Int32  // changed only by compare-and-swap: see fire and headersIn
	reads  atomic.Uint64 // body phase: Reads that returned
	inRead atomic.Bool   // a Read is under way
	ended  atomic.Bool

	mu           sync.Mutex // the idle watch's state: startBody and the timer's ticks
	watching     bool
	lastReads    uint64
	lastProgress time.Time

	connect   time.Duration
	firstByte time.Duration
	idle      time.Duration
}

const (
	// phaseHeaders: before the transport reports a connection attempt. A
	// transport that fires no httptrace hooks, or a request without a trace,
	// stays here until the headers come, bounded by Connect+FirstByte.
	phaseHeaders int32 = iota
	phaseConnect
	phaseFirstByte
	phaseBody
	phaseFired // a header timer cancelled the attempt
)

// newAttempt starts an attempt in a context of its own, or, for the last
// attempt, in the exchange's: nothing follows it that the cancellation
// could harm, and one context fewer is one less registration with the
// parent per request.
func newAttempt(base context.Context, baseCancel context.CancelCauseFunc, to Timeouts) *attempt {
	a := &attempt{connect: to.Connect, firstByte: to.FirstByte, idle: to.Idle}
	if baseCancel != nil {
		a.ctx, a.cancel = base, baseCancel
	} else {
		a.ctx, a.cancel = context.WithCancelCause(base)
	}
	a.timer = time.AfterFunc(time.Hour, a.fire)
	a.arm(a.connect + a.firstByte)
	return a
}

// arm restarts the timer, or stops it for a zero (unlimited) duration.
func (a *attempt) arm(d time.Duration) {
	if d > 0 {
		a.timer.Reset(d)
	} else {
		a.timer.Stop()
	}
}

// advance moves between header phases unless a timer has fired or the
// headers are in; it reports whether it did.
func (a *attempt) advance(from []int32, to int32) bool {
	for {
		p := a.phase.Load()
		if !slices.Contains(from, p) {
			return false
		}
		if a.phase.CompareAndSwap(p, to) {
			return true
		}
	}
}

func (a *attempt) fire() {
	for {
		p := a.phase.Load()
		if p == phaseFired {
			return
		}
		if p == phaseBody {
			a.tick()
			return
		}
		// A header phase: the timer wins only if the phase is unchanged,
		// so a response that arrives at the same moment is either relayed
		// (headersIn won) or timed out (fire won), never both.
		if a.phase.CompareAndSwap(p, phaseFired) {
			if p == phaseConnect {
				a.cancel(errConnectTimeout)
			} else {
				a.cancel(errFirstByteTimeout)
			}
			return
		}
	}
}

// tick is the body phase's idle watch. The timer ticks every idle/4 and
// the read loop only counts its reads, which keeps clock readings and
// timer resets off the per-event path. A Read under way with no Read
// returned for idle is upstream silence: cut it, between idle and
// idle+idle/4 after the Read began.
func (a *attempt) tick() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.watching || a.idle <= 0 || a.ended.Load() || a.ctx.Err() != nil {
		return // a stale header-phase firing, no idle limit, or over
	}
	now := time.Now()
	switch n := a.reads.Load(); {
	case n != a.lastReads:
		a.lastReads, a.lastProgress = n, now
	case !a.inRead.Load():
		// Writing to the client, not waiting on the upstream: the next
		// Read may begin up to a tick from now.
		a.lastProgress = now.Add(a.idle / 4)
	case now.Sub(a.lastProgress) >= a.idle:
		a.cancel(errIdleTimeout)
		return
	}
	a.timer.Reset(a.idle / 4)
}

func (a *attempt) trace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		GetConn: func(string) {
			if a.advance([]int32{phaseHeaders}, phaseConnect) {
				a.arm(a.connect)
			}
		},
		GotConn: func(httptrace.GotConnInfo) {
			if a.advance([]int32{phaseHeaders, phaseConnect}, phaseFirstByte) {
				a.arm(a.firstByte)
			}
		},
	}
}

// headersIn stops the header timers. It reports false when a timer fired
// first, which left the attempt's context cancelled: the response must
// then be treated as timed out, not relayed.
func (a *attempt) headersIn() bool {
	a.timer.Stop()
	if !a.advance([]int32{phaseHeaders, phaseConnect, phaseFirstByte}, phaseBody) {
		return false
	}
	return a.ctx.Err() == nil
}

// startBody arms the idle watch for the body phase.
func (a *attempt) startBody() {
	if a.idle <= 0 {
		return
	}
	a.mu.Lock()
	a.watching = true
	a.lastProgress = time.Now()
	a.mu.Unlock()
	a.timer.Reset(a.idle / 4)
}

// reading and read bracket a body Read, so that only upstream silence
// counts: time spent writing to a slow client does not.
func (a *attempt) reading() { a.inRead.Store(true) }

func (a *attempt) read() {
	a.reads.Add(1)
	a.inRead.Store(false)
}

func (a *attempt) end() {
	a.ended.Store(true)
	a.timer.Stop()
	a.cancel(nil)
}

// effective resolves a route's timeouts: zero takes the relay's option,
// then the default; negative means no limit.
func effective(route, relay Timeouts) Timeouts {
	to := route.merge(relay).merge(Timeouts{
		Connect: defaultConnectTimeout, FirstByte: defaultFirstByteTimeout, Idle: defaultIdleTimeout,
	})
	for _, d := range []*time.Duration{&to.Connect, &to.FirstByte, &to.Idle, &to.Total} {
		*d = max(*d, 0)
	}
	return to
}

// upstream is what roundTrip hands to relayResponse: the response and
// the attempt that got it, whose context the body is read in.
type upstream struct {
	a         *attempt
	resp      *http.Response
	stopTotal context.CancelFunc // the Total timeout's, when there is one
}

// end ends the last attempt and the total timeout; serve defers it, so
// that it runs on every exit, a panic while relaying included. It is
// idempotent, as attempt.end is.
func (u *upstream) end() {
	if u.a != nil {
		u.a.end()
	}
	if u.stopTotal != nil {
		u.stopTotal()
	}
}

// roundTrip sends the request upstream, failing over between backends
// until one answers or the attempts run out. The response it got is left
// in ex.up for relayResponse.
func (ex *exchange) roundTrip() error {
	rl, t := ex.rl, ex.target
	to := effective(t.Timeouts, rl.cfg.timeouts)

	base, baseCancel := ex.ctx, ex.cancel
	if to.Total > 0 {
		base, ex.up.stopTotal = context.WithTimeoutCause(base, to.Total, errTotalTimeout)
		baseCancel = nil // a cancel of base's parent would not carry the total's cause
	}

	tries := t.MaxAttempts
	if tries <= 0 || tries > len(t.Backends) {
		tries = len(t.Backends)
	}
	for i := range tries {
		b := t.Backends[i]
		ex.rec.Attempts = i + 1
		ex.rec.Upstream = b.Name
		last := i == tries-1
		if b.URL == nil {
			rl.log.Error("relay: resolver returned a backend without a URL", "route", ex.route, "upstream", b.Name)
			return &rl.answers.noURL
		}

		var own context.CancelCauseFunc
		if last {
			own = baseCancel
		}
		a := newAttempt(base, own, to)
		ex.up.a = a // ended by serve's deferred ex.up.end, a panic included
		ctx := a.ctx
		if rl.cfg.transport != nil || to.Connect != defaultConnectTimeout || to.FirstByte != defaultFirstByteTimeout {
			// Timeouts of the route's own, or a transport whose dialer the
			// relay does not know: watch the connection phase, so that
			// Connect and FirstByte each bound their own wait. With the
			// defaults the dialer bounds the connect (10s) and the header
			// timer both together (10m10s), and the trace is saved.
			ctx = httptrace.WithClientTrace(ctx, a.trace())
		}
		req := ex.upstreamRequest(ctx, b)
		resp, err := rl.transport.RoundTrip(req)
		if !a.headersIn() && err == nil {
			resp.Body.Close()
			resp, err = nil, context.Cause(a.ctx)
		}
		cause := context.Cause(a.ctx)
		// A client that left, or a shutdown, says nothing about the upstream.
		ours := ex.r.Context().Err() != nil || cause == errShutdown

		res := AttemptResult{Err: err}
		if err == nil {
			res.Status = resp.StatusCode
			res.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), rl.clock.Now())
		}
		if b.Done != nil && !ours {
			b.Done(res)
		}
		status := upstreamStatus(res.Status, err)
		if ours && err != nil {
			status = "canceled"
		}
		rl.metrics.upstreamReqs.WithLabelValues(ex.route, b.Name, status).Inc()

		if err != nil {
			a.end()
			if ex.r.Context().Err() != nil {
				return ex.clientGone()
			}
			e := rl.answers.classify(beforeResponse, cause, err)
			if cause == errShutdown {
				last = true
			}
			rl.log.Warn("relay: upstream request failed", "request_id", ex.rec.RequestID,
				"route", ex.route, "upstream", b.Name, "attempt", i+1, "error", safeError(err, cause))
			if !last && cause != errTotalTimeout {
				continue
			}
			return e
		}
		if !last && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500) {
			// Drain a short known-length body so the connection can be
			// reused; anything else is closed rather than waited for.
			if resp.ContentLength >= 0 && resp.ContentLength <= 4<<10 {
				a.startBody()
				a.reading()
				_, _ = io.Copy(io.Discard, resp.Body)
			}
			resp.Body.Close()
			a.end()
			continue
		}
		ex.dropBody(false) // no attempt follows: the body is not needed again
		ex.up.resp = resp
		return nil
	}
	// Not reached: the last attempt always returns (resolve refused a
	// target without backends).
	return &rl.answers.noURL
}

// safeError describes a transport error for logs without a URL, whose
// query may hold a credential (Gemini's ?key=).
func safeError(err, cause error) string {
	if cause != nil && !errors.Is(cause, context.Canceled) {
		return cause.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// parseRetryAfter reads a Retry-After in seconds or as an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// upstreamIDHdr is the X-Request-Id sent upstream: the client's own id
// when it sent a well-formed one, so that its traces join the provider's,
// else the relay's.
func (ex *exchange) upstreamIDHdr() []string {
	if ex.rec.ClientRequestID != "" {
		// The client's header value itself (its first value, which is the
		// one checked), capped so that nothing appends to the client's slice.
		return ex.r.Header["X-Request-Id"][:1:1]
	}
	return ex.idHdr
}

// clientRequestID returns the client's X-Request-ID when it is well formed
// (1 to 128 characters of letters, digits and -_.:), else "".
func clientRequestID(r *http.Request) string {
	if v := r.Header.Get("X-Request-Id"); len(v) > 0 && len(v) <= 128 && wellFormedID(v) {
		return v
	}
	return ""
}

// newRequestID returns a new random request id: 32 hex digits, 128 bits,
// so that ids are unique without coordination between relays.
func newRequestID() string {
	var b [32]byte
	const hex = "0123456789abcdef"
	x, y := rand.Uint64(), rand.Uint64()
	for i := range 16 {
		b[i] = hex[x>>(60-4*i)&0xf]
		b[16+i] = hex[y>>(60-4*i)&0xf]
	}
	return string(b[:])
}

func wellFormedID(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}
