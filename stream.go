package relay

import (
	"context"
	"errors"
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

// relayResponse streams the response roundTrip got to the client. Each
// read from the upstream is written and, for SSE and audio, flushed at
// once; SSE is parsed only after the bytes are on their way, to observe
// events. It returns nil once the response is relayed whole, and errEnded
// when the client left or the upstream broke off (interrupted).
func (ex *exchange) relayResponse() error {
	a, resp := ex.up.a, ex.up.resp
	defer resp.Body.Close()
	rl, w := ex.rl, ex.w
	kind := responseKind(ex.target.Kind, resp.Header.Get("Content-Type"))
	ex.rec.Kind = kind

	h := w.Header()
	copyResponseHeaders(h, resp)
	if v := resp.Header.Get("X-Request-Id"); v != "" {
		h.Set("X-Upstream-Request-Id", v) // the provider's id, for support tickets
	}
	if kind == KindSSE {
		h["Cache-Control"] = rl.constHdr.noCache
		h["X-Accel-Buffering"] = rl.constHdr.no // tell nginx-style proxies not to buffer
	}
	ex.rec.Status = resp.StatusCode
	if resp.StatusCode >= 400 {
		ex.rec.ErrorType = ErrTypeUpstreamStatus
	}
	rc := http.NewResponseController(w)
	ex.extendWriteDeadline(rc)
	w.WriteHeader(resp.StatusCode)
	// A JSON body of unknown length may be a stream too (NDJSON, Gemini's
	// JSON array stream): relay it as it comes.
	flush := kind != KindJSON || resp.ContentLength < 0
	if flush {
		// Headers go out now: SDKs wait for them before reading events.
		if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return ex.clientGone()
		}
	}

	// A compressed body is relayed as it came and never decoded, so it is
	// not observed either: no events, no usage; its chunks are counted and
	// a failure aborts it, since appended plain text would corrupt it.
	var p *sseParser
	if resp.Header.Get("Content-Encoding") == "" {
		if kind == KindSSE {
			p = &sseParser{maxData: maxObservedHead, tailCap: observedTail, onEvent: ex.onEvent,
				acct: obsAccount{budget: &rl.observed}}
			defer func() { // on every exit, disconnects included
				ex.rec.Events = p.events
				p.release()
			}()
		}
		ex.beginBody(kind, resp)
	}

	// Start with a small buffer: LLM events are small and most streams
	// idle between them, so an open stream holds 4 KiB, not 32. A read
	// that fills it moves the stream to a large one.
	pool := &rl.smallBufs
	bufp := pool.Get().(*[]byte)
	defer func() { pool.Put(bufp) }()
	buf := *bufp
	a.startBody()
	for {
		a.reading()
		n, err := resp.Body.Read(buf)
		a.read()
		if n > 0 {
			chunk := buf[:n]
			// One clock reading per read serves the write deadline and,
			// with the system clock, the event timings.
			wall, now := time.Now(), time.Time{}
			if now = wall; !rl.sysClock {
				now = rl.clock.Now()
			}
			if ex.rec.BytesOut == 0 {
				ex.rec.TTFB = now.Sub(ex.rec.Start)
			}
			ex.extendWriteDeadlineAt(rc, wall)
			if _, werr := w.Write(chunk); werr != nil {
				return ex.clientGone()
			}
			ex.rec.BytesOut += int64(n)
			if flush {
				if ferr := rc.Flush(); ferr != nil && !errors.Is(ferr, http.ErrNotSupported) {
					return ex.clientGone()
				}
			}
			ex.wrote(rc)
			if p != nil {
				p.feed(chunk, now)
			} else {
				ex.rec.Events++
				ex.stream.chunk(chunk)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return ex.interrupted(a, p, rc, err)
		}
		if n == len(buf) && pool != &rl.bufs {
			pool.Put(bufp)
			pool = &rl.bufs
			bufp = pool.Get().(*[]byte)
			buf = *bufp
		}
	}
}

// interrupted ends a response whose upstream failed after the first byte:
// an SSE stream gets a final error event; any other body (p is nil) is
// aborted, so the client sees a truncated response rather than a clean end.
// It returns errEnded.
func (ex *exchange) interrupted(a *attempt, p *sseParser, rc *http.ResponseController, err error) error {
	cause := context.Cause(a.ctx)
	if ex.r.Context().Err() != nil {
		// The SDKs hang up as soon as they read the final event, often
		// before the upstream's end of body reaches the relay: that
		// response was delivered whole.
		if ex.stream.obs == nil || !ex.stream.obs.Done() {
			return ex.clientGone()
		}
		return errEnded
	}
	e := ex.rl.answers.classify(midStream, cause, err)
	ex.rec.ErrorType = e.typ
	ex.rl.log.Warn("relay: upstream stream failed", "request_id", ex.rec.RequestID,
		"route", ex.route, "upstream", ex.rec.Upstream, "error", safeError(err, cause))
	if p == nil {
		panic(http.ErrAbortHandler) // serve's deferred ends still run
	}
	b := make([]byte, 0, 256)
	// Close a half-written line or event first, so that the error event is
	// parsed as an event of its own. A stream cut between CR and LF gets
	// the LF first: the client would pair a lone LF with that CR.
	if p.lastCR {
		b = append(b, '\n')
	}
	switch midLine, pending := p.midEvent(); {
	case midLine:
		b = append(b, "\n\n"...)
	case pending:
		b = append(b, '\n')
	}
	b = appendErrorEvent(b, ex.shape, e)
	ex.extendWriteDeadline(rc)
	if _, werr := ex.w.Write(b); werr == nil {
		ex.rec.BytesOut += int64(len(b))
		_ = rc.Flush()
	}
	ex.wrote(rc)
	return errEnded
}

// extendWriteDeadline keeps the host server's WriteTimeout from cutting a
// healthy stream, while still dropping a client that stops reading: before
// each write the deadline is set to writeTimeout from now. On HTTP/1 the
// deadline matters only during writes, so it is renewed only once half of
// it is used, and most writes touch no timer. On HTTP/2 an expired
// deadline resets the stream even between writes, so it is set before each
// write and cleared after it (see wrote).
func (ex *exchange) extendWriteDeadline(rc *http.ResponseController) {
	if ex.rl.cfg.writeTimeout > 0 && !ex.noDeadline {
		ex.extendWriteDeadlineAt(rc, time.Now())
	}
}

func (ex *exchange) extendWriteDeadlineAt(rc *http.ResponseController, now time.Time) {
	wt := ex.rl.cfg.writeTimeout
	if wt <= 0 || ex.noDeadline {
		return
	}
	if !ex.h2 && !ex.deadline.IsZero() && ex.deadline.Sub(now) > wt/2 {
		return
	}
	ex.deadline = now.Add(wt)
	if err := rc.SetWriteDeadline(ex.deadline); err != nil {
		ex.noDeadline = true // the writer cannot: stop trying
	}
	ex.keepAborted(rc)
}

// wrote clears an HTTP/2 stream's write deadline after a write, so that a
// quiet upstream does not get the stream reset.
func (ex *exchange) wrote(rc *http.ResponseController) {
	if ex.h2 && !ex.noDeadline && ex.rl.cfg.writeTimeout > 0 {
		ex.deadline = time.Time{}
		_ = rc.SetWriteDeadline(time.Time{})
		ex.keepAborted(rc)
	}
}

// keepAborted puts back the past deadline of an exchange Shutdown aborted
// while this goroutine was moving the deadline. Shutdown stores aborted
// before it sets its deadline, and this check follows every move, so the
// past deadline is always the last one set.
func (ex *exchange) keepAborted(rc *http.ResponseController) {
	if ex.aborted.Load() {
		_ = rc.SetWriteDeadline(aLongTimeAgo())
	}
}
