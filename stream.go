package relay

import (
	"context"
	"io"
	"net/http"
	"strings"
	"time"
)

// responseKind decides how to relay a response: an event stream is always
// relayed as SSE, whatever the route says, so that no stream is ever
// buffered; a route's kind decides the rest.
func responseKind(route StreamKind, contentType string) StreamKind {
	mt := mediaType(contentType)
	switch {
	case mt == "text/event-stream":
		return KindSSE
	case strings.HasPrefix(mt, "audio/") || mt == "application/octet-stream":
		return KindAudio
	case route == KindAudio:
		return KindAudio
	case route == KindSSE && mt == "":
		return KindSSE
	default:
		return KindJSON
	}
}

// mediaType returns a Content-Type's media type in lower case, without
// parameters. Unlike mime.ParseMediaType it does not allocate for the
// lower-case types upstreams send.
func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(mt)
	for i := 0; i < len(mt); i++ {
		if c := mt[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(mt)
		}
	}
	return mt
}

// relayResponse streams the response roundTrip got to the client: its
// status and headers, then its body read by read, each read written (and,
// for SSE and audio, flushed) at once and observed only after its bytes
// are on their way. It returns nil once the response is relayed whole,
// and errEnded when the client left or the upstream broke off
// (interrupted). With WithDrainOnClientGone, a client that left does not
// end it: the rest is read and observed, and sent nowhere.
func (ex *exchange) relayResponse() error {
	resp := ex.up.resp
	defer resp.Body.Close()
	kind := responseKind(ex.target.Kind, resp.Header.Get("Content-Type"))
	if err := ex.sendHeader(kind, resp); err != nil && !ex.drains() {
		return err
	}
	var parser sseParser // a plain SSE body's, on this goroutine's stack
	p, d := ex.observe(kind, resp, &parser)
	if d != nil {
		defer ex.rl.closeDecoder(d) // on every exit, a panic included; after endEvents
	}
	if p != nil {
		defer ex.endEvents(p) // on every exit, disconnects included
	}
	return ex.copyBody(resp.Body, p, d)
}

// sendHeader sends the response's status and headers, with those the
// relay adds, to the client.
func (ex *exchange) sendHeader(kind StreamKind, resp *http.Response) error {
	ex.rec.Kind = kind
	ex.rec.Status = resp.StatusCode
	if resp.StatusCode >= 400 {
		ex.rec.ErrorType = ErrTypeUpstreamStatus
	}
	h := ex.client.header()
	copyResponseHeaders(h, resp)
	if ex.hidesUsageChunk(kind, resp) {
		delete(h, "Content-Length") // the body may be shorter by the usage chunk
	}
	if v := resp.Header.Get("X-Request-Id"); v != "" {
		h.Set("X-Upstream-Request-Id", v) // the provider's id, for support tickets
	}
	if kind == KindSSE {
		h["Cache-Control"] = ex.rl.constHdr.noCache
		h["X-Accel-Buffering"] = ex.rl.constHdr.no // tell nginx-style proxies not to buffer
	}
	// A JSON body of unknown length may be a stream too (NDJSON, Gemini's
	// JSON array stream): relay it as it comes.
	flushEach := kind != KindJSON || resp.ContentLength < 0
	if ex.client.writeHeader(resp.StatusCode, flushEach) != nil {
		return ex.clientGone()
	}
	return nil
}

// observe prepares to observe the body, and returns the parser an SSE
// body goes through (nil for any other body, observed read by read) and,
// for a gzip or deflate body, the decoder that observes a decoded copy
// of each read (compression.go). A body in any other coding, or one whose
// decoder the observation budget refuses, is relayed as it came and not
// observed: no events, no usage; its reads are counted as chunks.
func (ex *exchange) observe(kind StreamKind, resp *http.Response, parser *sseParser) (*sseParser, *decoder) {
	c := contentCoding(resp.Header)
	var d *decoder
	if c != codingIdentity {
		if c == codingOther {
			return nil, nil
		}
		if d = ex.rl.newDecoder(c); d == nil {
			return nil, nil // the budget refused: usage unknown
		}
	}
	ex.beginBody(kind, resp)
	if d != nil {
		if ex.stream.obs == nil { // audio, or a body no family reads
			ex.rl.closeDecoder(d)
			return nil, nil
		}
		d.o = &ex.stream
		if kind == KindSSE {
			d.sse, parser = true, &d.parser
		}
	}
	if kind != KindSSE || ex.stream.obs == nil {
		return nil, d
	}
	ex.up.a.awaitContent() // its content events are seen, by p or by d's parser
	*parser = sseParser{maxData: maxObservedHead, tailCap: observedTail, onEvent: ex.onEvent,
		acct: obsAccount{budget: &ex.rl.observed}, field: parser.field, name: parser.name,
		hide: d == nil && ex.hidesUsageChunk(kind, resp)}
	return parser, d
}

// endEvents records the events of an SSE body and gives back the
// parser's buffers; what it held back of an event left incomplete is sent
// first.
func (ex *exchange) endEvents(p *sseParser) {
	ex.flushHeld(p)
	ex.rec.Events = p.events
	p.release()
}

// copyBody relays the body read by read, until its end (nil), the client
// leaving or the upstream breaking off (errEnded). It starts with a small
// buffer: LLM events are small and most streams idle between them, so an
// open stream holds 2 KiB, not 32. A read that fills it moves the stream
// to a large one.
func (ex *exchange) copyBody(body io.Reader, p *sseParser, d *decoder) error {
	a, rl := ex.up.a, ex.rl
	pool := &rl.smallBufs
	bufp := pool.Get().(*[]byte)
	defer func() { pool.Put(bufp) }()
	k := ex.startKeepAlive(p, d) // nil unless the route sends keep-alives
	defer k.stop()
	for {
		buf := *bufp
		a.reading()
		k.waiting()
		n, err := body.Read(buf)
		gone := k.woke()
		a.read()
		if gone && !ex.rec.ClientGone { // a keep-alive found the client gone
			if werr := ex.clientGone(); !ex.drains() {
				return werr
			}
		}
		if n > 0 {
			if werr := ex.pass(buf[:n], p, d); werr != nil {
				return werr
			}
		}
		switch {
		case err == io.EOF:
			if d != nil {
				d.end()
			}
			return nil
		case err != nil:
			return ex.interrupted(p, err)
		case n == len(buf) && pool != &rl.bufs:
			pool.Put(bufp)
			pool = &rl.bufs
			bufp = pool.Get().(*[]byte)
		}
	}
}

// pass sends one read on to the client, then has it observed: by the SSE
// parser p, or as a chunk, or, for a compressed body, decoded by d on
// its way to either. One clock reading serves the write deadline and, with
// the system clock, the timings.
func (ex *exchange) pass(chunk []byte, p *sseParser, d *decoder) error {
	if p != nil && p.hide { // never compressed: see hidesUsageChunk
		return ex.passHiding(chunk, p)
	}
	wall := time.Now()
	now := wall
	if !ex.rl.sysClock {
		now = ex.rl.clock.Now()
	}
	if !ex.rec.ClientGone { // else the upstream drains: nothing more is sent
		if ex.rec.BytesOut == 0 {
			ex.rec.TTFB = now.Sub(ex.rec.Start)
			if ex.hk != nil {
				ex.hookFirstByte()
			}
		}
		if err := ex.sendChunk(chunk, wall); err != nil && !ex.drains() {
			return err
		}
	}
	if p == nil {
		ex.rec.Events++ // chunks: the body's events are not parsed
	}
	switch {
	case d != nil:
		d.feed(chunk, now)
	case p != nil:
		p.feed(chunk, now)
	default:
		ex.stream.chunk(chunk)
	}
	return nil
}

// sendChunk writes one read to the client, and flushes it. An error says the
// client is gone (clientGone recorded it); so does left, set when the
// client's context ended while the upstream drains.
func (ex *exchange) sendChunk(chunk []byte, wall time.Time) error {
	if ex.left.Load() || ex.client.write(chunk, wall) != nil {
		return ex.clientGone()
	}
	ex.rec.BytesOut += int64(len(chunk))
	if ex.client.flush() != nil {
		return ex.clientGone()
	}
	return nil
}

// interrupted ends a response whose upstream failed after the first byte:
// an SSE stream gets a final error event; any other body (p is nil) is
// aborted, so the client sees a truncated response rather than a clean end,
// as is a compressed one, which appended plain text would corrupt. It
// returns errEnded.
func (ex *exchange) interrupted(p *sseParser, err error) error {
	if ex.rec.ClientGone {
		return errEnded // a drain ended (drain.go): no one to tell
	}
	cause := context.Cause(ex.up.a.ctx)
	e := ex.rl.answers.classify(midStream, cause, err, ex.r.Context().Err() != nil)
	if e == nil {
		// The SDKs hang up as soon as they read the final event, often
		// before the upstream's end of body reaches the relay: that
		// response was delivered whole.
		if ex.stream.obs == nil || !ex.stream.obs.Done() {
			return ex.clientGone()
		}
		return errEnded
	}
	if ex.stream.obs != nil && ex.stream.obs.Done() && ex.stream.obs.ErrorType() == "" {
		// The final event ([DONE], message_stop, response.completed) was
		// relayed: an upstream that then stalls or breaks off instead of
		// closing delivered its response whole, and nothing is appended.
		return errEnded
	}
	ex.rec.ErrorType = e.typ
	ex.stream.cut = true
	ex.rl.log.Warn("relay: upstream stream failed", "request_id", ex.rec.RequestID,
		"route", ex.route, "upstream", ex.rec.Upstream, "error", safeError(err, cause))
	if p == nil || contentCoding(ex.up.resp.Header) != codingIdentity {
		panic(http.ErrAbortHandler) // serve's deferred ends still run
	}
	ex.flushHeld(p) // what the client would have got, before the error event
	b := closeEvent(make([]byte, 0, 256), p)
	b = appendErrorEvent(b, ex.shape, e)
	if ex.client.writeLast(b) {
		ex.rec.BytesOut += int64(len(b))
	}
	return errEnded
}

// closeEvent appends what closes a half-written line or event, so that an
// error event that follows is parsed as an event of its own. A stream cut
// between CR and LF gets the LF first: the client would pair a lone LF
// with that CR.
func closeEvent(b []byte, p *sseParser) []byte {
	if p.lastCR {
		b = append(b, '\n')
	}
	switch midLine, pending := p.midEvent(); {
	case midLine:
		b = append(b, "\n\n"...)
	case pending:
		b = append(b, '\n')
	}
	return b
}
