package relay

import (
	"context"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/streamrelay/relay/internal/provider"
)

// Error types of the request-body bounds.
const (
	ErrTypeBodyTimeout ErrorType = "body_timeout" // 408: the request body came too slowly (WithRequestBodyRate, WithRequestBodyTimeout)
	ErrTypeOverloaded  ErrorType = "overloaded"   // 503: the budget for buffered request bodies, or the tenant's share of it, is spent (WithRequestBodyBudget, WithRequestBodyTenantBudget)
)

// Defaults of the request-body bounds. The rate and its grace are
// Kestrel's (MinRequestBodyDataRate).
const (
	defaultBodyMinRate = 240 // bytes per second
	defaultBodyGrace   = 5 * time.Second
	defaultBodyTimeout = 60 * time.Second
	defaultBodyBudget  = 128 << 20
)

// refusedBodyLinger is how long the server may go on reading (and
// discarding) the body of a request refused before its body was read,
// after the answer is sent and before the connection closes: a client
// that sent its whole body at once then sees a clean close rather than a
// reset (net/http's rstAvoidanceDelay is the same).
const refusedBodyLinger = 500 * time.Millisecond

// bodyLimits bound reading request bodies.
type bodyLimits struct {
	minRate   int64         // bytes per second after grace; 0: none
	grace     time.Duration // before minRate applies
	timeout   time.Duration // for the whole body; 0: none
	budget    int64         // bytes of bodies buffered at once, relay-wide
	budgetSet bool          // budget was given, not defaulted
	tenant    int64         // bytes of bodies one tenant may buffer at once; 0: the default
}

// deadline is when the body read must end if it has read n bytes by then:
// the average rate since start must not fall below minRate once grace is
// over, and the whole body must arrive within timeout. Zero means none.
func (l bodyLimits) deadline(start time.Time, n int64) time.Time {
	d := time.Duration(-1)
	if l.minRate > 0 {
		d = max(l.grace, time.Duration(float64(n)/float64(l.minRate)*float64(time.Second)))
	}
	if l.timeout > 0 && (d < 0 || d > l.timeout) {
		d = l.timeout
	}
	if d < 0 {
		return time.Time{}
	}
	return start.Add(d)
}

// hasBody reports whether the request may carry a body.
func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// readBody reads the request body up to the size limit, within the time
// limits and the relay's body budget. The body is held in memory so that
// it can be sent with a Content-Length (which also sidesteps
// golang/go#40747) and resent on failover.
func (ex *exchange) readBody() error {
	r, rl := ex.r, ex.rl
	maxBody := rl.cfg.maxBody
	if r.ContentLength > maxBody {
		return &rl.answers.tooLarge
	}
	if !hasBody(r) {
		ex.bodyRead = true
		return nil
	}
	// The buffer grows to limit: the declared length, or the size limit
	// for a body of unknown length (one more byte read then tells a body
	// over the limit). A declared length is a hint, not a promise: the
	// buffer starts at bodyFirst and doubles only once full, so it never
	// holds more than twice the bytes that arrived (or bodyFirst), each
	// growth taken from the budget and the tenant's share of it.
	limit := maxBody
	if r.ContentLength > 0 {
		limit = r.ContentLength
	}
	ex.waiting.Store(waitBody)
	defer ex.waiting.Store(waitNone)
	lim := rl.cfg.body
	start := time.Now()
	bd := ex.newBodyDeadline()
	body := bd.begin(lim.deadline(start, 0))
	if ex.ctx.Err() != nil { // cut before its deadline could be set
		return ex.failed(readingBody, context.Cause(ex.ctx), ex.ctx.Err())
	}
	first := min(limit, bodyFirst)
	var buf []byte
	var n int64
	for {
		var k int
		var err error
		switch {
		case len(buf) < cap(buf):
			k, err = body.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+k]
		case int64(len(buf)) < limit:
			nb, refused := ex.growBody(buf, first, limit)
			if refused != nil {
				ex.rec.BytesIn = n
				ex.client.header()["Retry-After"] = rl.constHdr.one
				return refused
			}
			buf = nb
			continue
		default:
			k, err = body.Read(ex.scratch[:])
			if k > 0 {
				ex.rec.BytesIn = n + int64(k)
				return &rl.answers.tooLarge
			}
		}
		n += int64(k)
		if k > 0 && bd.active() && bd.extend(lim.deadline(start, n)) {
			// Shutdown cancels, then sets a past deadline: a cut this
			// move may have undone is seen here.
			if err == nil && ex.ctx.Err() != nil {
				err = ex.ctx.Err()
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			ex.rec.BytesIn = n
			return ex.failed(readingBody, context.Cause(ex.ctx), err)
		}
	}
	ex.rec.BytesIn = n
	ex.bodyRead = true
	ex.src.b = buf // no attempt reads it yet: no lock needed
	// net/http's background read starts at the body's end: a deadline
	// left set would cut it, and cancel the request, mid-stream.
	ex.readCleared = bd.clear()
	return nil
}

// bodyFirst is the capacity a request body's buffer starts with (or its
// declared length, if smaller): a connection that sends headers and a few
// bytes holds no more.
const bodyFirst = 4 << 10

// growBody doubles buf's capacity (from first), up to limit, within the
// tenant's share of the body budget and the budget itself. When either
// refuses it returns the error to answer with.
func (ex *exchange) growBody(buf []byte, first, limit int64) ([]byte, *relayError) {
	c := min(max(2*int64(cap(buf)), first), limit)
	d := c - int64(cap(buf))
	rl, tenant := ex.rl, ex.ident.Tenant
	if !rl.bodies.take(d) {
		return buf, &rl.answers.overloaded
	}
	if !rl.perTenant.take(tenant, d) {
		rl.bodies.give(d)
		return buf, &rl.answers.tenantOverloaded
	}
	ex.bodyHeld.Add(d)
	nb := make([]byte, len(buf), c)
	copy(nb, buf)
	return nb, nil
}

// releaseBody gives the body's bytes back to the budget. It is
// idempotent and safe from any goroutine.
func (ex *exchange) releaseBody() {
	if n := ex.bodyHeld.Swap(0); n != 0 {
		ex.rl.bodies.give(n)
		ex.rl.perTenant.give(ex.ident.Tenant, n)
	}
}

// bodyPending reports whether the request's body was not read to its end.
func (ex *exchange) bodyPending() bool {
	return !ex.bodyRead && hasBody(ex.r)
}

// closeUnread makes a refusal sent before the body was read the
// connection's last answer on HTTP/1.x, so that net/http does not wait for
// (up to 256 KiB of) the body before or after sending it. It sets the
// header; lingerUnread, after the answer is written, bounds the server's
// discard read. HTTP/2 needs neither (a Connection header is illegal
// there): the server resets the stream.
func (ex *exchange) closeUnread() bool {
	if ex.client.h2 || !ex.bodyPending() {
		return false
	}
	ex.client.header()["Connection"] = ex.rl.constHdr.close
	return true
}

func (ex *exchange) lingerUnread(e *relayError) {
	switch e.typ {
	case ErrTypeBodyTimeout, ErrTypeShuttingDown:
		// Slow or cut: nothing worth waiting for; the deadline is past.
		_ = ex.client.rc.SetReadDeadline(aLongTimeAgo())
	default:
		_ = ex.client.rc.SetReadDeadline(time.Now().Add(refusedBodyLinger))
	}
}

// aLongTimeAgo is a deadline in the past, which cuts a blocked read or
// write at once.
func aLongTimeAgo() time.Time { return time.Unix(1, 0) }

// bodySrc holds a request body for the attempts' readers, so that
// dropping it frees the bytes however long the transport keeps a request
// (a response keeps its request, and the request its body). An attempt
// reads the body as the client sent it or with edit applied (the
// include_usage edit, includeusage.go): one buffer serves both.
type bodySrc struct {
	ex      *exchange
	mu      sync.Mutex
	b       []byte
	open    int32         // readers the transport has not closed or read to the end
	edit    provider.Edit // set by inspectRequest; zero: none
	drained bool          // drop b once no reader is open
}

// errBodyDropped is what a reader returns once its body was dropped; only
// an attempt already given up on can see it.
const errBodyDropped = Error("relay: request body already released")

// bodyReader is one attempt's reader of the body.
type bodyReader struct {
	src    *bodySrc
	off    int
	edited bool // the body is read with src.edit applied
	done   bool // read to the end or closed
}

func (r *bodyReader) Read(p []byte) (int, error) {
	s := r.src
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case r.done:
		return 0, io.EOF
	case s.b == nil:
		return 0, errBodyDropped
	case len(p) == 0:
		return 0, nil
	}
	n := 0
	if r.edited {
		head, ins, rest := s.edit.Parts(s.b)
		n = copyFrom(p, r.off, head, ins, rest)
	} else {
		n = copyFrom(p, r.off, s.b, "", nil)
	}
	if n == 0 {
		r.finish()
		return 0, io.EOF
	}
	r.off += n
	return n, nil
}

// copyFrom copies into p what follows offset off in the concatenation of
// a, b and c, and returns how many bytes it copied.
func copyFrom(p []byte, off int, a []byte, b string, c []byte) int {
	n := 0
	if off < len(a) {
		n = copy(p, a[off:])
	}
	if off -= len(a); n < len(p) && off+n < len(b) {
		n += copy(p[n:], b[max(off, 0):])
	}
	if off -= len(b); n < len(p) && off+n < len(c) {
		n += copy(p[n:], c[max(off, 0):])
	}
	return n
}

func (r *bodyReader) Close() error {
	r.src.mu.Lock()
	defer r.src.mu.Unlock()
	r.finish()
	return nil
}

// finish marks the reader done; called with src.mu held.
func (r *bodyReader) finish() {
	if r.done {
		return
	}
	r.done = true
	if r.src.open--; r.src.open == 0 && r.src.drained {
		r.src.drop()
	}
}

// newReader returns a reader of the body from its start, edited or not.
func (s *bodySrc) newReader(edited bool) *bodyReader {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open++
	return &bodyReader{src: s, edited: edited}
}

// drop frees the body and gives its budget back; called with mu held.
func (s *bodySrc) drop() {
	s.b = nil
	s.ex.releaseBody()
}

// dropBody says the body cannot be resent: the final attempt's response
// headers are in, and the transport retries nothing after them. The body
// is dropped as soon as the transport has finished reading it, which it
// normally has (an upstream reads a request before answering it). Finish
// drops it in any case.
func (ex *exchange) dropBody(force bool) {
	s := &ex.src
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drained = true
	if s.open == 0 || force {
		s.b = nil
		ex.releaseBody()
	}
}

// attemptBody sets req's body for one attempt, with the include_usage
// edit applied or not. readBody left the body in ex.src; its readers
// take s.mu from the first attempt on.
func (ex *exchange) attemptBody(req *http.Request, edited bool) {
	s := &ex.src
	if s.ex == nil {
		s.ex = ex
	}
	req.ContentLength = int64(len(s.b))
	if edited {
		req.ContentLength = int64(s.edit.Len(len(s.b)))
	}
	if req.ContentLength == 0 {
		req.Body = http.NoBody
		return
	}
	req.Body = s.newReader(edited)
	req.GetBody = func() (io.ReadCloser, error) { return s.newReader(edited), nil }
}
