package relay

import (
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync"
	"time"
)

// Default timeouts. None cuts a healthy stream: FirstByte allows for long
// non-streamed completions, whose headers come only when they are done.
const (
	defaultConnectTimeout   = 10 * time.Second
	defaultFirstByteTimeout = 10 * time.Minute
	defaultIdleTimeout      = 5 * time.Minute
	// defaultFirstTokenTimeout: reasoning models have been seen silent for
	// 8.5 minutes before their first token.
	defaultFirstTokenTimeout = 15 * time.Minute
)

// Causes of cancellation of an upstream attempt.
const (
	errConnectTimeout    = Error("upstream connect timeout")
	errFirstByteTimeout  = Error("upstream first byte timeout")
	errIdleTimeout       = Error("upstream idle timeout")
	errFirstTokenTimeout = Error("upstream first token timeout")
	errTotalTimeout      = Error("upstream total timeout")
)

// errFailover is what an attempt returns when the next backend is to be
// tried.
const errFailover = Error("relay: try the next backend")

// roundTrip sends the request upstream, failing over between backends
// until one answers or the attempts run out. The response it got is left
// in ex.up for relayResponse. A request that made more than one attempt
// has each listed in Record.AttemptLog (attemptlog.go).
func (ex *exchange) roundTrip() error {
	err := ex.attempts()
	if ex.rec.AttemptLog != nil { // the last attempt, once there was one before
		ex.logAttempt(err)
	}
	return err
}

// attempts makes the attempts of roundTrip.
func (ex *exchange) attempts() error {
	rl, t := ex.rl, ex.target
	to := effective(t.Timeouts, rl.cfg.timeouts)
	base, baseCancel := ex.ctx, ex.cancel
	if to.Total > 0 {
		base, ex.up.stopTotal = context.WithTimeoutCause(base, to.Total, errTotalTimeout)
		baseCancel = nil // a cancel of base's parent would not carry the total's cause
	}
	t.applyPin()   // a sticky route's pinned key first (sticky.go)
	t.claimProbe() // now that the request is admitted (health.go)
	// Attempts past the backends retry the last one, after a backoff
	// (retry.go).
	nb, tries := len(t.Backends), t.MaxAttempts
	if tries <= 0 {
		tries = nb
	}
	// i counts attempts and n round trips: an upstream that refuses the
	// include_usage edit gets the same request once more without it.
	for i, n := 0, 1; i < tries; n++ {
		if ex.left.Load() {
			return ex.clientGone() // no upstream is asked for a client that left
		}
		if ex.up.a != nil {
			ex.up.a.slot.release() // the attempt before is over (inflight.go)
		}
		slot, err := ex.takeKeySlot(base, min(i, nb-1)) // may pick another key: before b is read
		if err != nil {
			return err
		}
		b, last := t.Backends[min(i, nb-1)], i == tries-1
		if b.URL == nil {
			slot.release()
			rl.log.Error("relay: resolver returned a backend without a URL", "route", ex.route, "upstream", b.Name)
			return &rl.answers.noURL
		}
		if n > 1 { // the attempt before is over, and not the last: list it
			ex.logAttempt(errFailover)
		}
		ex.rec.Attempts, ex.rec.Upstream = n, b.Name
		ex.injectFor(b)
		// The last attempt runs in base itself: nothing follows it that
		// its cancellation could harm (an include_usage retry runs in base
		// too, and ends only the attempt's timer: endRefused).
		var own context.CancelCauseFunc
		if last {
			own = baseCancel
		}
		ex.up.a = newAttempt(base, own, to) // ended by serve's deferred ex.up.end, a panic included
		ex.up.a.slot = slot                 // released by its end
		// retry: the next attempt, if any, is a retry of this backend.
		retry := 0
		if i+1 >= nb {
			retry = i + 2 - nb
		}
		err = ex.try(b, i, last, retry)
		if ex.hk != nil && (err == errFailover || err == errRetryPlain) {
			ex.hookAttemptEnd(true)
		}
		switch err {
		case errFailover:
			if i++; retry > 0 {
				if err := ex.backoff(base, b); err != nil {
					return err
				}
			}
		case errRetryPlain: // once: the edit is not sent again
		case nil:
			if t.sticky != nil && ex.up.resp.StatusCode < 400 {
				t.keepPin(b.pool, b.key)
			}
			return nil
		default:
			return err
		}
	}
	// Not reached: the last attempt never fails over (resolve refused a
	// target without backends).
	return &rl.answers.noURL
}

// try makes the attempt ex.up.a at backend b, the i-th. It returns nil
// when the response is the one to relay (left in ex.up.resp),
// errFailover when the next attempt is to be made, errRetryPlain when b
// is to be tried again without the include_usage edit, or the exchange's
// error. A retry above 0 says the next attempt would be that retry of b:
// it is made only for what planRetry accepts, else this answer is final.
func (ex *exchange) try(b Backend, i int, last bool, retry int) error {
	a := ex.up.a
	resp, err := ex.send(a, b)
	cause := context.Cause(a.ctx)
	held := err == nil && ex.holds(last, resp)
	if !held { // a held attempt is reported once its stream has its fate
		res := ex.report(b, cause, resp, err)
		a.status = uint16(res.Status)
		if !last && retry > 0 && !ex.planRetry(res, cause, retry) {
			last = true
		}
	}
	if err != nil {
		a.end()
		return ex.attemptFailed(b, i, last, cause, err)
	}
	if resp.StatusCode >= 400 {
		a.errType = ErrTypeUpstreamStatus // relayed, failed over, or refusing the include_usage edit
	}
	if held {
		err := ex.holdFirstContent(a, b, resp) // hold.go
		if err == errFailover && retry > 0 {
			// The next attempt retries b: it follows a backoff as any
			// retry does, and a stream that waited out FirstToken is not
			// retried (as for FirstByte: a retry would double the wait).
			cause := context.Cause(a.ctx)
			if cause == errFirstTokenTimeout {
				return ex.failed(beforeResponse, cause, context.DeadlineExceeded)
			}
			ex.planRetry(AttemptResult{Status: http.StatusServiceUnavailable}, nil, retry)
		}
		return err
	}
	if ex.stream.incl == inclSent && resp.StatusCode == http.StatusBadRequest && ex.refusesUsageEdit(a, b, resp) {
		a.endRefused()
		return errRetryPlain
	}
	if !last && (resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500) {
		// Drain a short known-length body so the connection can be
		// reused; anything else is closed rather than waited for.
		if resp.ContentLength >= 0 && resp.ContentLength <= 4<<10 {
			a.reading()
			_, _ = io.Copy(io.Discard, resp.Body)
		}
		resp.Body.Close()
		a.end()
		return errFailover
	}
	ex.dropBody(false) // no attempt follows: the body is not needed again
	ex.up.resp = resp
	return nil
}

// send round-trips the attempt's request to b. A response that comes
// after the attempt's header timer fired is closed: the attempt timed out.
func (ex *exchange) send(a *attempt, b Backend) (*http.Response, error) {
	ctx := a.ctx
	if ex.rl.cfg.transport != nil || a.connect != defaultConnectTimeout || a.firstByte != defaultFirstByteTimeout {
		// Timeouts of the route's own, or a transport whose dialer the
		// relay does not know: watch the connection, so that Connect and
		// FirstByte each bound their own wait. With the defaults the
		// dialer bounds the connect (10s) and the header timer both
		// together (10m10s), and the trace is saved.
		ctx = httptrace.WithClientTrace(ctx, a.trace())
	}
	req := ex.upstreamRequest(ctx, b) // tells Hooks.AttemptStart
	resp, err := ex.rl.transport.RoundTrip(req)
	if !a.headersIn() && err == nil {
		resp.Body.Close()
		resp, err = nil, context.Cause(a.ctx)
	}
	return resp, err
}

// report tells b's Done hook and the metrics how an attempt went, and
// returns what it told. A client that left, or a shutdown, says nothing
// about the upstream: the hook is not told, and the metric counts it as
// canceled.
func (ex *exchange) report(b Backend, cause error, resp *http.Response, err error) AttemptResult {
	ours := ex.r.Context().Err() != nil || cause == errShutdown
	res := AttemptResult{Err: err}
	if err == nil {
		res.Status = resp.StatusCode
		res.RetryAfter = retryAfter(resp.Header, ex.rl.clock)
	}
	if b.Done != nil && !ours {
		b.Done(res)
	}
	status := upstreamStatus(res.Status, err)
	if ours && err != nil {
		status = "canceled"
	}
	ex.rl.metrics.upstreamReqs.WithLabelValues(ex.route, b.Name, status).Inc()
	return res
}

// attemptFailed decides what follows an attempt that got no response:
// the next backend (errFailover), or the exchange's answer. Neither a
// shutdown nor the total timeout leaves time for another attempt.
func (ex *exchange) attemptFailed(b Backend, i int, last bool, cause, err error) error {
	e := ex.rl.answers.classify(beforeResponse, cause, err, ex.r.Context().Err() != nil)
	if e == nil {
		return ex.clientGone()
	}
	ex.up.a.errType = e.typ
	ex.rl.log.Warn("relay: upstream request failed", "request_id", ex.rec.RequestID,
		"route", ex.route, "upstream", b.Name, "attempt", i+1, "error", safeError(err, cause))
	if last || cause == errShutdown || cause == errTotalTimeout {
		return e
	}
	return errFailover
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

// effective resolves a route's timeouts: zero takes the relay's option,
// then the default; negative means no limit.
func effective(route, relay Timeouts) Timeouts {
	to := route.merge(relay).merge(Timeouts{
		Connect: defaultConnectTimeout, FirstByte: defaultFirstByteTimeout, Idle: defaultIdleTimeout,
		FirstToken: defaultFirstTokenTimeout,
	})
	for _, d := range []*time.Duration{&to.Connect, &to.FirstByte, &to.FirstToken, &to.Idle, &to.Total} {
		*d = max(*d, 0)
	}
	return to
}

// attempt is one upstream round trip. One timer bounds each of its waits
// in turn: for the response headers (Connect+FirstByte; with a trace,
// Connect for the connection, then FirstByte), then each body Read
// (Idle). The timer is moved on only once it is stopped, and Stop's result
// settles every race with it: true, the wait was still bounded and the
// timer is free to bound the next one; false, it had fired and cancelled
// the attempt, which stays cancelled. A response that arrives as the
// header timer fires is therefore relayed or timed out, never both.
type attempt struct {
	ctx    context.Context
	cancel context.CancelCauseFunc

	timer *time.Timer // nil until a wait is bounded
	cause error       // what the timer cancels with: written only while it is stopped
	armed bool        // the timer was set for the wait under way (and may have fired)

	// stage is how far the wait for the headers got. A transport may call
	// trace hooks from any goroutine (net/http calls these two inside
	// RoundTrip), so the hooks and headersIn take mu; once the headers
	// are in, hooks change nothing and the body phase needs no lock.
	mu    sync.Mutex
	stage uint8

	inBase bool // ctx is the exchange's base context, not one of the attempt's own
	// awaiting: an event stream's reads are bounded by firstToken, not
	// idle, until its first content event (awaitContent, contentSeen).
	awaiting bool

	// How the attempt went, for Record.AttemptLog (attemptlog.go): the
	// upstream's status (0: none), and why it was not relayed.
	status  uint16
	errType ErrorType

	wait time.Duration // the backoff before a retry follows the attempt (planRetry)

	slot keySlot // the key's in-flight slot (Upstream.MaxInFlight), released by end

	connect, firstByte, firstToken, idle time.Duration
}

// Stages of an attempt, in order; the trace's hooks only move forward.
const (
	awaitConn    uint8 = iota // Connect+FirstByte: before the transport gets a connection, or without a trace
	connecting                // Connect
	awaitHeaders              // FirstByte
	inBody                    // each body Read: Idle
)

// newAttempt starts an attempt in a context of its own, or, when
// baseCancel is given, in base itself (one context fewer is one less
// registration with the parent per request).
func newAttempt(base context.Context, baseCancel context.CancelCauseFunc, to Timeouts) *attempt {
	a := &attempt{connect: to.Connect, firstByte: to.FirstByte, firstToken: to.FirstToken, idle: to.Idle}
	if a.inBase = baseCancel != nil; a.inBase {
		a.ctx, a.cancel = base, baseCancel
	} else {
		a.ctx, a.cancel = context.WithCancelCause(base)
	}
	a.bound(a.connect+a.firstByte, errFirstByteTimeout)
	return a
}

// bound bounds the next wait by d (0: no bound): when it runs out, the
// timer cancels the attempt with cause. The bound of the wait before is
// stopped first; bound reports false, and bounds nothing, when it had
// already run out.
func (a *attempt) bound(d time.Duration, cause error) bool {
	if a.armed && !a.timer.Stop() {
		return false // fired: the attempt is cancelled
	}
	if a.armed = d > 0; a.armed {
		a.cause = cause
		if a.timer == nil {
			a.timer = time.AfterFunc(d, a.expire)
		} else {
			a.timer.Reset(d)
		}
	}
	return true
}

// expire runs in the timer's goroutine when a bounded wait runs out.
func (a *attempt) expire() { a.cancel(a.cause) }

// trace bounds the connection and the headers each by its own limit:
// Connect from when the transport starts getting a connection, FirstByte
// from when it has one.
func (a *attempt) trace() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		GetConn: func(string) { a.advance(connecting, a.connect, errConnectTimeout) },
		GotConn: func(httptrace.GotConnInfo) { a.advance(awaitHeaders, a.firstByte, errFirstByteTimeout) },
	}
}

// advance moves the header wait on to stage s, bounded by d, unless it
// is there or beyond (a connection retried, or the headers in).
func (a *attempt) advance(s uint8, d time.Duration, cause error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stage < s {
		a.stage = s
		a.bound(d, cause)
	}
}

// headersIn ends the wait for the headers. It reports false when that
// wait had run out, or the attempt was cancelled otherwise: the response
// must then be treated as failed, not relayed.
func (a *attempt) headersIn() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stage = inBody
	return a.bound(0, nil) && a.ctx.Err() == nil
}

// reading bounds a body Read by Idle (FirstToken while an event stream
// awaits its first content), and read ends that bound when the Read
// returns: only upstream silence counts, not time spent writing to a slow
// client.
func (a *attempt) reading() {
	if a.awaiting {
		a.bound(a.firstToken, errFirstTokenTimeout)
		return
	}
	a.bound(a.idle, errIdleTimeout)
}

// awaitContent bounds the reads of an event stream whose content events
// the relay can see by FirstToken until contentSeen.
func (a *attempt) awaitContent() { a.awaiting = true }

// contentSeen: the stream's first content event was read; Idle bounds the
// reads from now on.
func (a *attempt) contentSeen() { a.awaiting = false }

func (a *attempt) read() { a.bound(0, nil) }

// endRefused ends an attempt whose upstream refused the include_usage
// edit, before the same request is sent again without it: as end, but an
// attempt in the exchange's base context only stops its timer, since the
// retry runs in that context too. A timer that had fired leaves base
// cancelled, and the retry fails as the attempt would have.
func (a *attempt) endRefused() {
	if !a.inBase {
		a.end()
	} else if a.timer != nil {
		a.timer.Stop()
	}
}

// end stops the timer and cancels the attempt: its response, if any, is
// over. It is idempotent.
func (a *attempt) end() {
	if a.timer != nil {
		a.timer.Stop()
	}
	a.cancel(nil)
	a.slot.release()
}
