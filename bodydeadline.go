package relay

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// ErrTypeNoReadDeadline counts, in relay_errors_total, requests whose body
// was read without connection read deadlines, because the host's
// ResponseWriter can set none (a wrapper with neither the deadline
// methods nor Unwrap). The request itself goes on; see bodyDeadline.
const ErrTypeNoReadDeadline ErrorType = "no_read_deadline"

// bodyDeadline keeps the read deadline that bounds one request body: the
// rate and time limits of WithRequestBodyRate and WithRequestBodyTimeout,
// never later than the host server's ReadTimeout allows.
//
// net/http sets a connection's read deadline to ReadTimeout from when it
// began reading the request (per stream on HTTP/2). The relay replaces it
// only with an earlier one, and moves its own no later than ReadTimeout
// from the handler's start (a little after the host's own start, by the
// time the request head took): a host's stricter ReadTimeout still bounds
// bodies.
//
// When the ResponseWriter cannot set read deadlines, the body is read
// through a cutReader, which enforces the same deadline, and Shutdown's
// cut, with a timer instead; that is logged once per relay and counted as
// ErrTypeNoReadDeadline.
type bodyDeadline struct {
	ex   *exchange
	host time.Time  // the latest deadline the host's ReadTimeout allows; zero: none
	set  time.Time  // the deadline in force (the relay's or, untouched, the host's); zero: none
	cut  *cutReader // not nil when the ResponseWriter cannot set read deadlines
}

// newBodyDeadline prepares the deadlines of ex's body.
func (ex *exchange) newBodyDeadline() bodyDeadline {
	bd := bodyDeadline{ex: ex}
	if srv, ok := ex.r.Context().Value(http.ServerContextKey).(*http.Server); ok && srv.ReadTimeout > 0 {
		bd.host = time.Unix(0, ex.arrived).Add(srv.ReadTimeout)
	}
	if !canSetReadDeadline(ex.client.w) {
		bd.fallback()
	}
	return bd
}

// begin sets the first deadline (zero: none of the relay's own) before
// the first read, and returns the reader to read the body through: the
// request's own, or the cutReader when the writer cannot set deadlines
// (found out here if its SetReadDeadline says so).
func (bd *bodyDeadline) begin(dl time.Time) io.Reader {
	switch {
	case bd.cut != nil:
		bd.cut.deadline = dl
		return bd.cut
	case dl.IsZero():
	case !bd.host.IsZero() && !dl.Before(bd.host):
		bd.set = bd.host // the host's own deadline is stricter: leave it
	default:
		err := bd.ex.client.rc.SetReadDeadline(dl)
		switch {
		case err == nil:
			bd.set = dl
		case errors.Is(err, http.ErrNotSupported):
			// A wrapper that claims the method but cannot.
			bd.fallback()
			bd.cut.deadline = dl
			return bd.cut
		}
	}
	return bd.ex.r.Body
}

// active reports whether a deadline is in force that reads may move.
func (bd *bodyDeadline) active() bool {
	return !bd.set.IsZero() || bd.cut != nil && !bd.cut.deadline.IsZero()
}

// extend moves the deadline later, to dl at most, within the host's
// bound. It reports whether it set a connection deadline, which may have
// undone a cut by Shutdown: the caller then checks the context.
func (bd *bodyDeadline) extend(dl time.Time) bool {
	if !bd.host.IsZero() && dl.After(bd.host) {
		dl = bd.host
	}
	if bd.cut != nil {
		if dl.After(bd.cut.deadline) {
			bd.cut.deadline = dl
		}
		return false
	}
	if !dl.After(bd.set) || bd.ex.client.rc.SetReadDeadline(dl) != nil {
		return false
	}
	bd.set = dl
	return true
}

// clear removes the deadline once the body is read (net/http's background
// read starts at the body's end, and a deadline left set would cut it and
// cancel the request mid-stream). It reports whether it did.
func (bd *bodyDeadline) clear() bool {
	if bd.cut != nil || bd.set.IsZero() {
		return false
	}
	_ = bd.ex.client.rc.SetReadDeadline(time.Time{})
	return true
}

// fallback switches to reading through a cutReader, warning once per
// relay and counting the request.
func (bd *bodyDeadline) fallback() {
	ex := bd.ex
	bd.cut = &cutReader{src: ex.r.Body, ctx: ex.ctx, res: make(chan cutRead, 1)}
	ex.rl.metrics.errors.WithLabelValues(ex.route, string(ErrTypeNoReadDeadline)).Inc()
	if !ex.rl.noDeadlineWarned.Swap(true) {
		ex.rl.log.Warn("relay: the ResponseWriter cannot set read deadlines (a wrapper without Unwrap?); "+
			"request bodies are bounded by timers instead, and a connection whose body read was cut "+
			"stays open until the client sends or the host server's ReadTimeout; "+
			"implement Unwrap on the wrapper (counted as error type no_read_deadline)",
			"request_id", ex.rec.RequestID)
	}
}

// canSetReadDeadline reports whether http.ResponseController can reach a
// SetReadDeadline method through w and its Unwrap chain.
func canSetReadDeadline(w http.ResponseWriter) bool {
	for range 16 { // a chain longer than any real one is taken as unable
		switch t := w.(type) {
		case interface{ SetReadDeadline(time.Time) error }:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return false
		}
	}
	return false
}

// cutReadSize bounds one read through a cutReader.
const cutReadSize = 8 << 10

// cutReader reads a request body whose connection deadlines cannot be set:
// each Read runs in a helper goroutine, into the reader's own buffer, and
// the caller stops waiting at the deadline (os.ErrDeadlineExceeded) or
// when ctx is done (Shutdown's cut, a client gone). An abandoned read
// ends when the client sends or the connection is closed, and the reader
// answers every later Read with the same error. Used by one goroutine.
type cutReader struct {
	src      io.Reader
	ctx      context.Context
	deadline time.Time // zero: none
	res      chan cutRead
	buf      []byte
	err      error // the reader was abandoned
}

type cutRead struct {
	n   int
	err error
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if c.buf == nil {
		c.buf = make([]byte, cutReadSize)
	}
	// Every Read starts a read of its own: one left under way has made
	// the reader abandoned.
	b := c.buf[:min(len(p), len(c.buf))]
	go func() {
		k, err := c.src.Read(b)
		c.res <- cutRead{k, err}
	}()
	var expire <-chan time.Time
	if !c.deadline.IsZero() {
		t := time.NewTimer(time.Until(c.deadline))
		defer t.Stop()
		expire = t.C
	}
	select {
	case r := <-c.res:
		return copy(p, b[:r.n]), r.err
	case <-expire:
		c.err = os.ErrDeadlineExceeded
	case <-c.ctx.Done():
		c.err = c.ctx.Err()
	}
	return 0, c.err
}
