package relay

import "time"

// Spend budgets are kept per calendar window of UTC (minute, day, month),
// not in sliding token buckets: a budget of $100 a month is what finance
// means by it, it resets at midnight UTC on the 1st, and integer counters
// keep money exact where a bucket's refill would need floats. The rule,
// which the Redis limiter's script follows operation for operation (the
// shared vectors hold the two to it):
//
//   - Each window with a budget B keeps the spend of the window it was
//     last written in. At each boundary the budget is granted afresh, less
//     any debt: k boundaries later the spend is max(0, spent - k*B). So a
//     debt (spend above B) is repaid by the next windows' budgets, as a
//     token bucket's debt is by its refill, and spend over any run of
//     windows stays within their budgets plus one request's overrun. A
//     clock reading in an earlier window than the last write changes
//     nothing.
//   - A cost c is admitted when B - spent >= min(c, B): a cost above the
//     whole budget waits for an untouched window, then goes into debt.
//     Admission adds c; settlement adds used minus reserved, never leaving
//     the spend below zero.
//   - Retry-After is the time to the boundary after which the window
//     admits c (refunds of requests in flight aside), rounded up to whole
//     seconds, at least one. The Quota is the tightest window's: Limit B,
//     Remaining max(0, B - spent), Reset the time to the boundary at which
//     the spend is back to zero.

// Spend windows, in the order Limits lists their budgets.
const (
	spendMinute = iota
	spendDay
	spendMonth
	spendWindows
)

// maxSpend bounds every amount of spend arithmetic (budgets, costs,
// settlements): the Redis script computes in doubles, which are exact
// integers up to 2^53 micro-units (some nine billion currency units).
const maxSpend = 1 << 53

func clampSpend(v int64) int64 { return max(-maxSpend, min(v, maxSpend)) }

// budgets returns lim's spend budget per window, zero where there is none.
func (lim Limits) budgets() [spendWindows]int64 {
	return [spendWindows]int64{clampSpend(max(0, lim.SpendPerMinute)),
		clampSpend(max(0, lim.SpendPerDay)), clampSpend(max(0, lim.SpendPerMonth))}
}

// hasSpend reports whether lim has any spend budget.
func (lim Limits) hasSpend() bool {
	return lim.SpendPerMinute > 0 || lim.SpendPerDay > 0 || lim.SpendPerMonth > 0
}

// windowsAt numbers the windows holding now: minutes and days since the
// Unix epoch, months since year 0.
func windowsAt(now time.Time) [spendWindows]int64 {
	us := now.UnixMicro()
	y, m, _ := now.UTC().Date()
	return [spendWindows]int64{floorDiv(us, 60_000_000), floorDiv(us, 86_400_000_000), int64(y)*12 + int64(m) - 1}
}

// windowStart is when window w of kind begins.
func windowStart(kind int, w int64) time.Time {
	switch kind {
	case spendMinute:
		return time.UnixMicro(w * 60_000_000)
	case spendDay:
		return time.UnixMicro(w * 86_400_000_000)
	}
	return time.Date(int(floorDiv(w, 12)), time.Month(w-12*floorDiv(w, 12)+1), 1, 0, 0, 0, 0, time.UTC)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// spendCounter is one window's spend. Its zero value is an untouched
// window.
type spendCounter struct {
	w     int64 // the window last written; meaningful only when spent > 0
	spent int64 // may exceed the budget: debt
}

// window is the window for this counter of w, the one the clock is in:
// the one last written when the clock reads earlier (a clock that went
// back changes nothing).
func (s spendCounter) window(w int64) int64 {
	if s.spent > 0 && s.w > w {
		return s.w
	}
	return w
}

// spentIn is the spend in window w under budget b: the stored spend less
// a budget per boundary crossed since, never below zero.
func (s spendCounter) spentIn(w, b int64) int64 {
	if s.spent <= 0 || w <= s.w {
		return max(0, s.spent)
	}
	if k := w - s.w; k > s.spent/b { // k*b > spent, without overflow
		return 0
	}
	return s.spent - (w-s.w)*b
}

// add sets the spend in window w (from window, never older than the one
// stored) to its spend plus n, never below zero.
func (s *spendCounter) add(w, b, n int64) {
	s.spent, s.w = max(0, clampSpend(s.spentIn(w, b)+n)), w
}

// spendAdmits reports whether a window with budget b and spend v admits
// cost c.
func spendAdmits(b, v, c int64) bool { return b-v >= min(c, b) }

// spendRetryAfter is how long until a window of kind (number w, budget b,
// spend v) admits c, counting only its boundaries: whole seconds rounded
// up, at least one.
func spendRetryAfter(kind int, now time.Time, w, b, v, c int64) time.Duration {
	need := v - (b - min(c, b)) // what the boundaries must take off
	k := (need + b - 1) / b
	return max(time.Second, ceilSecond(windowStart(kind, w+k).Sub(now)))
}

func ceilSecond(d time.Duration) time.Duration {
	return (d + time.Second - 1) / time.Second * time.Second
}

// spendQuota reports a window of kind (number w, budget b, spend v).
func spendQuota(kind int, now time.Time, w, b, v int64) Quota {
	q := Quota{Limit: b, Remaining: max(0, b-v)}
	if v > 0 {
		k := (v + b - 1) / b
		q.Reset = windowStart(kind, w+k).Sub(now)
	}
	return q
}

// tighter reports whether quota a is tighter than b: less remaining, or as
// much for longer. An unlimited b is never tighter.
func tighter(a, b Quota) bool {
	return b.Limit == 0 || a.Remaining < b.Remaining || a.Remaining == b.Remaining && a.Reset > b.Reset
}

// spendState is a tenant's spend windows, and the budget each was last
// written under (for the sweep). Called with the limiter's lock held.
type spendState struct {
	budgets [spendWindows]int64
	c       [spendWindows]spendCounter
}

// check decides cost c at now (in windows cur) under budgets bs, taking
// nothing: it returns whether every window admits c and, when one does
// not, the Retry-After.
func (s *spendState) check(now time.Time, cur, bs [spendWindows]int64, c int64) (ok bool, retry time.Duration) {
	ok = true
	for k, b := range bs {
		if b <= 0 {
			continue
		}
		w := s.c[k].window(cur[k])
		if v := s.c[k].spentIn(w, b); !spendAdmits(b, v, c) {
			ok, retry = false, max(retry, spendRetryAfter(k, now, w, b, v, c))
		}
	}
	return ok, retry
}

// add adds n (a refund when negative) to every window with a budget, in
// windows cur.
func (s *spendState) add(cur, bs [spendWindows]int64, n int64) {
	for k, b := range bs {
		if b > 0 {
			s.budgets[k] = b
			if n != 0 {
				s.c[k].add(s.c[k].window(cur[k]), b, n)
			}
		}
	}
}

// quota is the tightest window's quota at now (in windows cur).
func (s *spendState) quota(now time.Time, cur, bs [spendWindows]int64) Quota {
	var q Quota
	for k, b := range bs {
		if b <= 0 {
			continue
		}
		w := s.c[k].window(cur[k])
		if wq := spendQuota(k, now, w, b, s.c[k].spentIn(w, b)); tighter(wq, q) {
			q = wq
		}
	}
	return q
}

// full reports whether no window holds spend at now under the budgets last
// written, so that forgetting them changes nothing.
func (s *spendState) full(now time.Time) bool {
	cur := windowsAt(now)
	for k, c := range s.c {
		b := s.budgets[k]
		if c.spent <= 0 || b <= 0 {
			continue
		}
		if w := cur[k]; w < c.w || c.spentIn(w, b) > 0 {
			return false
		}
	}
	return true
}
