package relay

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
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
	h["Accept-Encoding"] = acceptEncoding(h["Accept-Encoding"], ex.rl.constHdr.identity)
	if ex.stream.incl == inclSent || !ex.rl.observed.room(decoderMem) {
		// A plain answer: the usage chunk the relay's edit causes can only
		// be kept from the client in an uncompressed stream; and with no
		// room to decode a compressed answer, a plain one is still metered.
		h["Accept-Encoding"] = ex.rl.constHdr.identity
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
	if ex.session() {
		sessionHeaders(h, r) // websocket.go
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = ex.rl.constHdr.empty // keep Go's default agent off the wire
	}
	if ex.hk != nil { // the hooks add their headers, and may give the request's context
		ctx = ex.hookAttemptStart(ctx, b, h)
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
	ex.attemptBody(out, ex.stream.incl == inclSent)
	return out
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

// maxRetryAfter bounds what an upstream's Retry-After is read as, in
// both forms alike, so that a huge value cannot overflow a Duration; the
// key rest (maxRest) and the retry's Backoff.Max apply their own bounds.
const maxRetryAfter = 24 * time.Hour

// retryAfter is how long an upstream's answer asks to wait: its
// retry-after-ms (OpenAI, Azure; milliseconds, the finer of the two),
// else its Retry-After. The clock is read only for a Retry-After.
func retryAfter(h http.Header, clock Clock) time.Duration {
	if v := h["Retry-After-Ms"]; len(v) > 0 {
		if ms, err := strconv.ParseFloat(strings.TrimSpace(v[0]), 64); err == nil && ms > 0 { // NaN is not
			return time.Duration(min(ms, float64(maxRetryAfter/time.Millisecond)) * float64(time.Millisecond))
		}
	}
	if v := h["Retry-After"]; len(v) > 0 && v[0] != "" {
		return parseRetryAfter(v[0], clock.Now())
	}
	return 0
}

// parseRetryAfter reads a Retry-After in seconds or as an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 64); (err == nil || errors.Is(err, strconv.ErrRange)) && s > 0 {
		return time.Duration(min(s, int64(maxRetryAfter/time.Second))) * time.Second // out of range: the most
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
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
	return ex.idHdr[:]
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
