package bench

import (
	"slices"
	"time"
)

// samples are durations measured for one arm; quantiles sort them in place.
type samples []time.Duration

// quantile returns the q-quantile (0 ≤ q ≤ 1) by the nearest-rank method,
// or 0 when there are no samples.
func (s samples) quantile(q float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	if !slices.IsSorted(s) {
		slices.Sort(s)
	}
	rank := int(q*float64(len(s))+0.999999999) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

func (s samples) p50() time.Duration { return s.quantile(0.50) }
func (s samples) p99() time.Duration { return s.quantile(0.99) }
