package relay

import (
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/streamrelay/relay/internal/provider"
)

// clientWriter writes the response to the client. Before each write it
// sets a write deadline, so that the host server's WriteTimeout does not
// cut a healthy stream while a client that stops reading is still
// dropped; it flushes what must reach the client at once; and it follows
// HTTP/2's rule, where an expired deadline resets the stream even between
// writes. Shutdown reaches it from its own goroutine, through rc and
// aborted, only while the exchange is live (so w is still the handler's).
type clientWriter struct {
	w        http.ResponseWriter
	rc       http.ResponseController // w's
	timeout  time.Duration           // the write timeout (WithClientWriteTimeout); 0: none
	deadline time.Time               // the write deadline last set
	aborted  atomic.Bool             // Shutdown gave up on the client: deadlines stay past

	noDeadline bool // w cannot set deadlines: stop trying
	h2         bool // the client speaks HTTP/2 or later
	flushEach  bool // every write of the response is flushed at once
}

// init starts the writer of r's response to w.
func (c *clientWriter) init(w http.ResponseWriter, r *http.Request, timeout time.Duration) {
	c.w, c.rc = w, *http.NewResponseController(w)
	c.timeout = timeout
	c.h2 = r.ProtoMajor >= 2
}

// header is the response's header map, until the header is written.
func (c *clientWriter) header() http.Header { return c.w.Header() }

// writeHeader sends the status line and headers. A response flushed write
// by write (flushEach) sends them at once: SDKs wait for them before
// reading events. An error says the client is gone.
func (c *clientWriter) writeHeader(status int, flushEach bool) error {
	c.flushEach = flushEach
	c.extend(c.now())
	c.w.WriteHeader(status)
	if !flushEach {
		return nil
	}
	if err := c.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	c.wrote()
	return nil
}

// write writes b, read at now (the clock reading that serves the
// deadline). An error says the client is gone. flush follows it.
func (c *clientWriter) write(b []byte, now time.Time) error {
	c.extend(now)
	_, err := c.w.Write(b)
	return err
}

// flush sends what write wrote at once when the response is flushed
// write by write, then ends the write. An error says the client is gone.
func (c *clientWriter) flush() error {
	if c.flushEach {
		if err := c.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
	}
	c.wrote()
	return nil
}

// writeLast writes the last bytes of a response that is being ended (an
// error event after an interrupted stream), flushed, whatever the client
// does with them. It reports whether they were written.
func (c *clientWriter) writeLast(b []byte) bool {
	c.extend(c.now())
	_, err := c.w.Write(b)
	if err == nil {
		_ = c.rc.Flush()
	}
	c.wrote()
	return err == nil
}

// writeError answers with a relay error before any byte of a response was
// sent.
func (c *clientWriter) writeError(shape provider.Shape, e *relayError) {
	c.extend(c.now())
	writeError(c.w, shape, e)
	c.wrote()
}

// now reads the clock for a deadline, only when a deadline is kept.
func (c *clientWriter) now() time.Time {
	if c.timeout <= 0 || c.noDeadline {
		return time.Time{}
	}
	return time.Now()
}

// extend sets the write deadline to timeout from now before a write. On
// HTTP/1 the deadline matters only during writes, so it is renewed only
// once half of it is used, and most writes touch no timer. On HTTP/2 it
// is set before each write and cleared after it (wrote).
func (c *clientWriter) extend(now time.Time) {
	if c.timeout <= 0 || c.noDeadline {
		return
	}
	if !c.h2 && !c.deadline.IsZero() && c.deadline.Sub(now) > c.timeout/2 {
		return
	}
	c.deadline = now.Add(c.timeout)
	if err := c.rc.SetWriteDeadline(c.deadline); err != nil {
		c.noDeadline = true // the writer cannot: stop trying
	}
	c.keepAborted()
}

// wrote clears an HTTP/2 stream's write deadline after a write, so that a
// quiet upstream does not get the stream reset.
func (c *clientWriter) wrote() {
	if c.h2 && !c.noDeadline && c.timeout > 0 {
		c.deadline = time.Time{}
		_ = c.rc.SetWriteDeadline(time.Time{})
		c.keepAborted()
	}
}

// keepAborted puts back the past deadline of an exchange Shutdown aborted
// while this goroutine was moving the deadline. Shutdown stores aborted
// before it sets its deadline (abort), and this check follows every move,
// so the past deadline is always the last one set.
func (c *clientWriter) keepAborted() {
	if c.aborted.Load() {
		_ = c.rc.SetWriteDeadline(aLongTimeAgo())
	}
}

// abort makes every write fail from now on: Shutdown gives up on a client
// that does not read. Safe from Shutdown's goroutine.
func (c *clientWriter) abort() {
	c.aborted.Store(true)
	_ = c.rc.SetWriteDeadline(aLongTimeAgo())
}
