package relay

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/streamrelay/relay/internal/provider"
)

// include_usage: the relay asks streamed OpenAI-style chat completions to
// report their usage (the route family's usage edit, which inspectRequest
// keeps beside the body), where the upstream takes it, and keeps what that
// adds to the stream from the client that did not ask. In the order a
// request meets them:
//
//   - injectFor: an attempt sends the edit only where the route's family
//     accepts it, judged by the backend URL's query (Azure's api-version,
//     internal/provider/azure.go);
//   - refusesUsageEdit: an upstream that still answers 400 naming
//     stream_options gets the same request once more, as the client sent
//     it, before anything reached the client (relay_include_usage_retries_total);
//     that response reports no usage;
//   - passHiding: a response to an attempt that sent the edit is relayed
//     event by event, without the usage-only chunk the edit caused, which
//     is observed all the same.

// The include_usage edit of an exchange (exchange.stream.incl).
const (
	inclNone    uint8 = iota // the attempt sends the body as the client sent it
	inclSent                 // the attempt sends the usage edit
	inclRefused              // an upstream refused the edit: no attempt sends it again
)

// errRetryPlain is what an attempt returns when its upstream refused the
// usage edit: the same backend is tried once more without it.
const errRetryPlain = Error("relay: retry without include_usage")

// injectFor decides whether the attempt at b sends the usage edit.
func (ex *exchange) injectFor(b Backend) {
	if ex.stream.incl == inclRefused {
		return
	}
	ex.stream.incl = inclNone
	if ex.src.edit != (provider.Edit{}) && ex.family.AcceptsUsageEdit(b.URL.RawQuery) {
		ex.stream.incl = inclSent
	}
}

// refusalPeek bounds what is read of a 400 answer to look for the name of
// the parameter; the answers that name it are a few hundred bytes.
const refusalPeek = 4 << 10

// refusesUsageEdit reports whether resp, a 400 answer to attempt a that
// sent the usage edit, names stream_options. It reads at most refusalPeek
// bytes of the body, each read bounded by the attempt's Idle timeout, and
// decodes a gzip or deflate body to look. A refusal is counted, and the
// body closed; any other answer gets the bytes read put back in front of
// the rest, to be relayed as it came.
func (ex *exchange) refusesUsageEdit(a *attempt, b Backend, resp *http.Response) bool {
	buf := make([]byte, 0, refusalPeek)
	var err error
	for len(buf) < cap(buf) && err == nil {
		var n int
		a.reading()
		n, err = resp.Body.Read(buf[len(buf):cap(buf)])
		a.read()
		buf = buf[:len(buf)+n]
	}
	if !provider.RefusesUsageEdit(decodedPeek(resp.Header.Get("Content-Encoding"), buf)) {
		resp.Body = &peekedBody{head: buf, err: err, ReadCloser: resp.Body}
		return false
	}
	resp.Body.Close()
	ex.stream.incl = inclRefused
	ex.rl.metrics.includeUsageRetries.WithLabelValues(ex.route).Inc()
	ex.rl.log.Info("relay: upstream refused stream_options; retrying without include_usage",
		"request_id", ex.rec.RequestID, "route", ex.route, "upstream", b.Name)
	return true
}

// decodedPeek returns the start of a body as it reads decoded: gzip and
// deflate (zlib, or raw) are decoded as far as the bytes go; any other
// encoding is returned as it is.
func decodedPeek(encoding string, b []byte) []byte {
	var r io.Reader
	var err error
	switch strings.ToLower(strings.TrimSpace(encoding)) {
	case "", "identity":
		return b
	case "gzip", "x-gzip":
		r, err = gzip.NewReader(bytes.NewReader(b))
	case "deflate":
		if r, err = zlib.NewReader(bytes.NewReader(b)); err != nil {
			r, err = flate.NewReader(bytes.NewReader(b)), nil
		}
	default:
		return b
	}
	if err != nil {
		return b
	}
	out, _ := io.ReadAll(io.LimitReader(r, 4*refusalPeek)) // a cut stream yields what it has
	return out
}

// peekedBody is a response body whose first bytes were read already.
type peekedBody struct {
	head []byte // read, not yet relayed
	err  error  // what ended the peek, returned once head is gone
	io.ReadCloser
}

func (b *peekedBody) Read(p []byte) (int, error) {
	if len(b.head) > 0 {
		n := copy(p, b.head)
		b.head = b.head[n:]
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	return b.ReadCloser.Read(p)
}

// hidesUsageChunk reports whether the response is relayed without the
// usage chunk the attempt's edit caused: an SSE body sent as the upstream
// encoded it, uncompressed. Such an attempt offers the upstream identity
// only (upstreamRequest); an upstream that compresses anyway has its
// stream passed untouched, usage chunk included. Its Content-Length, if
// any, is not passed on.
func (ex *exchange) hidesUsageChunk(kind StreamKind, resp *http.Response) bool {
	return ex.stream.incl == inclSent && kind == KindSSE && contentCoding(resp.Header) == codingIdentity
}

// maxHeld bounds the bytes of one event held back: less than the first
// read buffer (2 KiB). The usage chunk is about half a kilobyte: an event
// that has that much and is still incomplete at the end of a read is not
// it, and passes on as it comes (a large event's first read, which fills
// the buffer, is never held).
const maxHeld = smallBufSize - 1

// passHiding is pass for a stream whose attempt sent the usage edit: each
// read is sent on but for the usage-only chunk the edit caused, which is
// only observed. The read is parsed before it is written, in runs that
// each end between two events (sseParser.feedTo): a run that ends an
// ordinary event or a comment is written at once, the run of the usage
// chunk is dropped, and the start of an event the read left incomplete is
// held until the read that completes it, at most maxHeld bytes of it, in a
// pooled buffer. A client cannot act on part of an event, so holding it
// back delays nothing a client could see. An event too large to hold
// passes as it comes and is never hidden. Each read ends in one flush.
func (ex *exchange) passHiding(chunk []byte, p *sseParser) error {
	wall := time.Now()
	now := wall
	if !ex.rl.sysClock {
		now = ex.rl.clock.Now()
	}
	h := hiding{ex: ex, wall: wall, now: now}
	w, open := 0, -1 // chunk[w:] is still to be sent; open starts an incomplete run
	for i := 0; i < len(chunk); {
		if p.dropLF { // the LF ending a hidden run that ended with its CR
			if p.dropLF = false; chunk[i] == '\n' {
				h.send(chunk[w:i])
				w = i + 1
			}
		}
		start := i
		i += p.feedTo(chunk[i:], now)
		hide := ex.stream.hideEv
		ex.stream.hideEv = false
		if !p.between() {
			open = start // i is len(chunk)
			break
		}
		switch {
		case p.passing: // its start was sent already
			p.passing = false
		case hide:
			// A run starts with the LF of the CRLF that ended the event
			// before it, when that event's run ended with the CR: that LF
			// is the previous event's and is sent; the LF of this run's
			// own final CR, in the next run, is not (dropLF).
			lead := chunk[w:start]
			if start == 0 && len(p.held) > 0 {
				if p.held[0] == '\n' {
					h.send(p.held[:1])
				}
			} else if chunk[start] == '\n' {
				lead = chunk[w : start+1]
			}
			h.send(lead)
			w = i
			ex.releaseHeld(p) // the held start of the usage chunk, if it began in an earlier read
			p.dropLF = chunk[i-1] == '\r'
		case start == 0 && len(p.held) > 0:
			h.send(p.held)
			ex.releaseHeld(p)
		}
	}
	if open >= 0 && open < w {
		open = w // the open run starts with a dropped LF: it is not held
	}
	switch {
	case open < 0 || p.passing:
		h.send(chunk[w:])
	case len(p.held)+len(chunk)-open > maxHeld:
		h.send(p.held) // only the start of the open run is ever held
		ex.releaseHeld(p)
		h.send(chunk[w:])
		p.passing = true
	default:
		h.send(chunk[w:open])
		ex.hold(p, chunk[open:])
	}
	return h.end()
}

// hiding sends the runs of one read that passHiding lets through.
type hiding struct {
	ex        *exchange
	wall, now time.Time
	wrote     bool
	err       error
}

func (h *hiding) send(b []byte) {
	ex := h.ex
	if len(b) == 0 || h.err != nil || ex.rec.ClientGone {
		return // nothing, or nothing more: the client left (the upstream may drain)
	}
	if ex.rec.BytesOut == 0 {
		ex.rec.TTFB = h.now.Sub(ex.rec.Start)
		if ex.hk != nil {
			ex.hookFirstByte()
		}
	}
	h.wrote = true
	if ex.left.Load() || ex.client.write(b, h.wall) != nil {
		h.gone()
		return
	}
	ex.rec.BytesOut += int64(len(b))
}

// gone records that the client left; the read ends the stream, unless the
// upstream drains (WithDrainOnClientGone), as in pass.
func (h *hiding) gone() {
	if err := h.ex.clientGone(); !h.ex.drains() {
		h.err = err
	}
}

// end flushes what was sent; it returns errEnded if the client is gone.
func (h *hiding) end() error {
	if h.err == nil && h.wrote && !h.ex.rec.ClientGone && h.ex.client.flush() != nil {
		h.gone()
	}
	return h.err
}

// hold appends b, the start of an incomplete event, to what p holds.
func (ex *exchange) hold(p *sseParser, b []byte) {
	if len(b) == 0 {
		return
	}
	if p.heldBuf == nil {
		p.heldBuf = ex.rl.smallBufs.Get().(*[]byte)
		p.held = (*p.heldBuf)[:0]
	}
	p.held = append(p.held, b...) // within maxHeld: never grows
}

// releaseHeld forgets what p held and gives its buffer back.
func (ex *exchange) releaseHeld(p *sseParser) {
	if p.heldBuf != nil {
		ex.rl.smallBufs.Put(p.heldBuf)
		p.heldBuf, p.held = nil, nil
	}
}

// flushHeld sends what p holds of an event the stream left incomplete, as
// the client would have got it without the relay: at the end of the body,
// or before the error event of an interrupted stream.
func (ex *exchange) flushHeld(p *sseParser) {
	if len(p.held) > 0 {
		h := hiding{ex: ex, wall: time.Now(), now: ex.rl.clock.Now()}
		h.send(p.held)
		_ = h.end()
	}
	ex.releaseHeld(p)
}
