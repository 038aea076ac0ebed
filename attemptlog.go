package relay

// Record.AttemptLog: the attempts of a request that made more than one.
// The list stays nil until a second attempt starts, so that the common
// request, with one attempt, allocates nothing for it; then the attempt
// before is listed as each next one starts, and roundTrip lists the last.

// recordMaxAttemptLog bounds Record.AttemptLog (Route.MaxAttempts is not
// bounded); the attempts past it set Record.Truncated.
const recordMaxAttemptLog = 16

// logAttempt lists the attempt ex.up.a, made at ex.rec.Upstream, which
// ended the attempts with err (errFailover when another followed). An
// attempt that did not note why it failed takes the record's error type
// (the client left, the total timeout ran out) or err's.
func (ex *exchange) logAttempt(err error) {
	a := ex.up.a
	if len(ex.rec.AttemptLog) >= recordMaxAttemptLog {
		ex.rec.Truncated = true
		return
	}
	typ := a.errType
	if typ == "" && err != nil && err != errFailover {
		typ = ex.rec.ErrorType
		if e, ok := err.(*relayError); ok {
			typ = e.typ
		}
	}
	if ex.rec.AttemptLog == nil {
		ex.rec.AttemptLog = make([]AttemptInfo, 0, 4)
	}
	ex.rec.AttemptLog = append(ex.rec.AttemptLog, AttemptInfo{Upstream: ex.rec.Upstream, Status: int(a.status), ErrorType: typ})
}
