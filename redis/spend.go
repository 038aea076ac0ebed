package relayredis

import (
	"time"

	"github.com/streamrelay/relay"
)

// The spend windows' arithmetic on the script's answer, by the rule of
// relay.MemoryLimiter (the root module's spendwindow.go), which the shared
// vectors hold this copy to.

// Spend windows, in the order relay.Limits lists their budgets.
const (
	spendMinute = iota
	spendDay
	spendMonth
	spendWindows
)

// maxSpend caps spend amounts where the script's doubles are still exact
// integers, as relay.MemoryLimiter caps them.
const maxSpend = 1 << 53

func clampSpend(v int64) int64 { return max(-maxSpend, min(v, maxSpend)) }

// budgets is lim's spend budget per window, zero where there is none.
func budgets(lim relay.Limits) [spendWindows]int64 {
	return [spendWindows]int64{clampSpend(max(0, lim.SpendPerMinute)),
		clampSpend(max(0, lim.SpendPerDay)), clampSpend(max(0, lim.SpendPerMonth))}
}

// spendWindow is one window's number and spend, as the script answers.
type spendWindow struct{ w, spent int64 }

// windowStart is when window w of kind begins (numbered as the script
// numbers them).
func windowStart(kind int, w int64) time.Time {
	switch kind {
	case spendMinute:
		return time.UnixMicro(w * 60_000_000)
	case spendDay:
		return time.UnixMicro(w * 86_400_000_000)
	}
	y := floorDiv(w, 12)
	return time.Date(int(y), time.Month(w-12*y+1), 1, 0, 0, 0, 0, time.UTC)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// spendRetryAfter is how long until every window admits c, counting only
// its boundaries: whole seconds rounded up, at least one.
func spendRetryAfter(now time.Time, bs [spendWindows]int64, ws [spendWindows]spendWindow, c int64) time.Duration {
	var retry time.Duration
	for k, b := range bs {
		if b <= 0 || b-ws[k].spent >= min(c, b) {
			continue
		}
		need := ws[k].spent - (b - min(c, b))
		d := windowStart(k, ws[k].w+(need+b-1)/b).Sub(now)
		retry = max(retry, time.Second, (d+time.Second-1)/time.Second*time.Second)
	}
	return retry
}

// spendQuota is the tightest window's quota: least remaining, or as much
// for longer.
func spendQuota(now time.Time, bs [spendWindows]int64, ws [spendWindows]spendWindow) relay.Quota {
	var q relay.Quota
	for k, b := range bs {
		if b <= 0 {
			continue
		}
		wq := relay.Quota{Limit: b, Remaining: max(0, b-ws[k].spent)}
		if v := ws[k].spent; v > 0 {
			wq.Reset = windowStart(k, ws[k].w+(v+b-1)/b).Sub(now)
		}
		if q.Limit == 0 || wq.Remaining < q.Remaining || wq.Remaining == q.Remaining && wq.Reset > q.Reset {
			q = wq
		}
	}
	return q
}
