package relay

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/streamrelay/relay/internal/provider"
)

// Hold until first content: providers fail after a 200 too (Anthropic's
// overloaded_error after message_start, an OpenAI-compatible server that
// closes with no event, a model that never starts). While a request has
// an attempt left, the relay reads a successful event stream's first
// bytes before it sends anything, until the first content event (the
// event that times TTFT). What that read brought, and all before it, is
// then relayed as if it had just arrived; a stream that fails before it
// is closed and the next backend tried, and the client never sees it.
//
//   - holds decides which responses are held;
//   - holdFirstContent reads, and keeps, up to the first content event;
//   - the kept bytes go back in front of the body (peekedBody), so that
//     relayResponse relays the response from its first byte, unchanged.

// maxHold bounds the bytes held before the first content event: a stream
// that sends more before any content is committed, held bytes and all.
const maxHold = 64 << 10

// holdDataCap bounds what of one held event is parsed for content: a
// cut event still tells content (provider.Stream.Event).
const holdDataCap = 4 << 10

// ErrNoFirstContent is the error a Backend's Done hook is told when an
// event stream it answered failed before its first content event (ended
// empty, broke off, carried an error event, or timed out) and the relay
// failed over. The metric relay_upstream_requests_total counts such an
// attempt with status "stream_error".
const ErrNoFirstContent = Error("relay: upstream stream failed before its first content")

// holds reports whether resp, the answer to an attempt that is not the
// last, is held until its first content: a successful, uncompressed event
// stream of a route that does not turn the hold off, nor sends
// keep-alives (a held stream sends the client nothing, not even its
// headers, so comments could not keep a proxy's idle timer at bay).
func (ex *exchange) holds(last bool, resp *http.Response) bool {
	t := ex.target
	return !last && !t.NoFirstContentHold && t.KeepAlive <= 0 &&
		resp.StatusCode >= 200 && resp.StatusCode < 300 &&
		responseKind(t.Kind, resp.Header.Get("Content-Type")) == KindSSE &&
		contentCoding(resp.Header) == codingIdentity
}

// held is what holdFirstContent learns of the events it reads.
type held struct {
	s       *provider.Stream
	content bool // a content event was read
}

func (h *held) event(_ time.Time, name, data, _ []byte, truncated bool) {
	if h.s.Event(name, data, truncated) {
		h.content = true
	}
}

// holdFirstContent reads resp, the held answer of attempt a at backend b,
// up to its first content event. It returns nil with resp left in ex.up
// for relayResponse, the bytes read put back in front of its body, when
// the stream is to be relayed: content came, the stream ended complete
// without any (a final event and no error), or more than maxHold bytes
// came first. It returns errFailover when the stream failed before its
// first content, and the exchange's answer when the client left, the
// relay is shutting down or the total timeout ran out. Attempt a is
// reported (report) here, once its fate is known.
func (ex *exchange) holdFirstContent(a *attempt, b Backend, resp *http.Response) error {
	rl := ex.rl
	h := held{s: rl.streams.Get().(*provider.Stream)}
	h.s.Reset(ex.family)
	defer rl.streams.Put(h.s)
	p := sseParser{maxData: holdDataCap, onEvent: h.event, acct: obsAccount{budget: &rl.observed}}
	defer p.release()
	buf := make([]byte, 0, smallBufSize)
	// What the buffer grows beyond its first read's size is taken from the
	// observation budget while the stream is held: with the budget spent,
	// the stream is relayed from its first byte instead.
	var taken int64
	defer func() { rl.observed.give(taken) }()
	a.awaitContent()
	a.status = uint16(resp.StatusCode)
	var err error
	for {
		if len(buf) == cap(buf) { // below maxHold: grow, doubling
			grow := min(2*cap(buf), maxHold) - cap(buf)
			if !rl.observed.take(int64(grow)) {
				ex.report(b, nil, resp, nil)
				return ex.commitHeld(resp, buf, nil)
			}
			taken += int64(grow)
			nb := make([]byte, len(buf), cap(buf)+grow)
			buf = nb[:copy(nb, buf)]
		}
		var n int
		a.reading()
		n, err = resp.Body.Read(buf[len(buf):cap(buf)])
		a.read()
		if n > 0 {
			p.feed(buf[len(buf):len(buf)+n], time.Now())
			buf = buf[:len(buf)+n]
		}
		switch {
		case h.content, len(buf) >= maxHold && err == nil,
			(err == nil || err == io.EOF) && h.s.Done() && h.s.ErrorType() == "":
			// Relayed from its first byte: an error that came with the
			// content ends it after what came before (interrupted). A
			// stream complete without content is an answer, relayed at
			// once even if its upstream keeps the connection open.
			ex.report(b, nil, resp, nil)
			return ex.commitHeld(resp, buf, err)
		case err == nil && h.s.ErrorType() == "":
			continue
		}
		break
	}
	// Failed before its first content: an error event, an empty or
	// broken stream, or a timeout.
	cause := context.Cause(a.ctx) // read before a.end cancels it with none
	resp.Body.Close()
	a.end()
	why := err
	a.errType = ErrTypeStreamInterrupted
	switch {
	case h.s.ErrorType() != "":
		why = errors.New("error event " + h.s.ErrorType())
		a.errType = ErrTypeUpstreamEvent
	case err == io.EOF:
		why = errors.New("stream ended before its first content")
	case isTimeout(cause, err):
		a.errType = ErrTypeUpstreamTimeout
	}
	ex.reportHeld(b, cause, why)
	if e := rl.answers.classify(beforeResponse, cause, err, ex.r.Context().Err() != nil); e == nil {
		return ex.clientGone()
	} else if cause == errShutdown || cause == errTotalTimeout {
		return e
	}
	rl.log.Warn("relay: upstream stream failed before its first content; failing over", "request_id", ex.rec.RequestID,
		"route", ex.route, "upstream", b.Name, "attempt", ex.rec.Attempts, "error", safeError(why, cause))
	return errFailover
}

// commitHeld makes resp, whose first bytes buf were read while it was
// held (err ended that read), the response to relay.
func (ex *exchange) commitHeld(resp *http.Response, buf []byte, err error) error {
	resp.Body = &peekedBody{head: buf, err: err, ReadCloser: resp.Body}
	ex.dropBody(false) // no attempt follows
	ex.up.resp = resp
	return nil
}

// reportHeld reports a held attempt that failed before its first content:
// b's Done hook gets ErrNoFirstContent, the metric "stream_error"; a
// client that left or a shutdown is reported as report does.
func (ex *exchange) reportHeld(b Backend, cause, why error) {
	ours := ex.r.Context().Err() != nil || cause == errShutdown
	if ours {
		ex.report(b, cause, nil, why)
		return
	}
	if b.Done != nil {
		b.Done(AttemptResult{Err: ErrNoFirstContent})
	}
	ex.rl.metrics.upstreamReqs.WithLabelValues(ex.route, b.Name, "stream_error").Inc()
}
