package relay

import (
	"context"
	"time"
)

// errDrainOver is the cause that ends the drain of an upstream whose
// client left (WithDrainOnClientGone).
const errDrainOver = Error("relay: client gone, drain time over")

// drainOnLeave keeps the exchange's upstream running for at most d once
// the client has left (WithDrainOnClientGone). The exchange's context
// then does not end with the client's (enter); instead, when the client's
// ends while the exchange is live, left is set, so that the relay stops
// writing and the attempt loop tries no other upstream, and a timer ends
// the exchange's context d later. The timer is stopped as soon as the
// exchange ends, so nothing outlives it; Shutdown ends the drain as it
// ends any stream.
func (ex *exchange) drainOnLeave(d time.Duration) {
	stop := context.AfterFunc(ex.r.Context(), func() {
		if ex.ctx.Err() != nil {
			return // the exchange is over: the handler returned
		}
		ex.left.Store(true)
		t := time.AfterFunc(d, func() { ex.cancel(errDrainOver) })
		context.AfterFunc(ex.ctx, func() { t.Stop() })
		ex.rl.log.Debug("relay: client left; draining the upstream for its usage",
			"request_id", ex.rec.RequestID, "for", d)
	})
	// Unregistered once the exchange ends (finish cancels ex.ctx), so that
	// a host context outliving the request does not keep the exchange.
	context.AfterFunc(ex.ctx, func() { stop() })
}

// drains reports whether the upstream is read on after the client left.
func (ex *exchange) drains() bool { return ex.rl.cfg.drain > 0 }
