package relay

import (
	"sync"
	"sync/atomic"
	"time"
)

// keepAliveComment is what a keep-alive sends: an SSE comment, which
// every client ignores, and which resets an intermediary's idle timer.
const keepAliveComment = ": keep-alive\n\n"

// keepAlive sends SSE comments to the client while the upstream of an
// event stream is silent (Route.KeepAlive). The copy loop owns the
// client's writer, except while it waits on an upstream Read: then the
// writer is free, and the timer may take it (waiting, fire). A comment
// goes out only when the bytes sent so far end between two events, which
// the stream's parser knows: it has parsed exactly what was sent (pass
// writes each read, then parses it; passHiding holds back the start of an
// incomplete event, and its parser is then inside one).
//
// The timer's goroutine and the copy loop hand the writer over through
// idle: whoever swaps it from true to false has it. The loop, finding the
// timer has it, waits on mu for its write to end.
type keepAlive struct {
	ex    *exchange
	p     *sseParser
	every time.Duration
	timer *time.Timer
	mu    sync.Mutex  // held by fire while it writes
	idle  atomic.Bool // the loop waits on the upstream: the writer is free
	bytes int64       // comment bytes sent, added to the record by stop
	gone  bool        // a comment's write failed: the client is gone
	hook  func(wrote bool)
}

// startKeepAlive returns the keep-alive of a successful event stream
// relayed through parser p, or nil when the route sends none, the body is
// not parsed (p nil) or compressed (d, into which plain text cannot go).
func (ex *exchange) startKeepAlive(p *sseParser, d *decoder) *keepAlive {
	every := ex.target.KeepAlive
	if every <= 0 || p == nil || d != nil || ex.up.resp.StatusCode >= 400 || ex.rec.ClientGone {
		return nil
	}
	k := &keepAlive{ex: ex, p: p, every: every, hook: ex.rl.keepAliveHook}
	k.timer = time.AfterFunc(every, k.fire)
	k.timer.Stop()
	return k
}

// waiting hands the writer to the timer while the loop reads.
func (k *keepAlive) waiting() {
	if k == nil {
		return
	}
	k.idle.Store(true)
	k.timer.Reset(k.every)
}

// woke takes the writer back once a Read returned, waiting for a comment
// being written; it reports whether a comment found the client gone.
func (k *keepAlive) woke() bool {
	if k == nil {
		return false
	}
	if !k.idle.CompareAndSwap(true, false) {
		k.mu.Lock() // fire has the writer
		k.idle.Store(false)
		k.mu.Unlock()
	}
	k.timer.Stop()
	return k.gone
}

// fire runs in the timer's goroutine after every of silence: it sends a
// comment if the loop is still waiting and the stream is between events,
// and waits for the next period.
func (k *keepAlive) fire() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.idle.CompareAndSwap(true, false) {
		return // the Read returned: the writer is the loop's
	}
	ex, p := k.ex, k.p
	wrote := false
	if p.between() && !p.lastCR && !ex.rec.ClientGone && !ex.left.Load() {
		if ex.client.write([]byte(keepAliveComment), time.Now()) != nil || ex.client.flush() != nil {
			k.gone = true
		} else {
			k.bytes += int64(len(keepAliveComment))
			wrote = true
		}
	}
	if k.hook != nil {
		k.hook(wrote)
	}
	if !k.gone {
		k.timer.Reset(k.every)
	}
	k.idle.Store(true)
}

// stop ends the keep-alives, once no Read is under way, and counts their
// bytes in the record.
func (k *keepAlive) stop() {
	if k == nil {
		return
	}
	k.woke()
	k.ex.rec.BytesOut += k.bytes
}
