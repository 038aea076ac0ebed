package relay

// pricing is the seam between prices and spend budgets: it prices, in
// micro-units, the tokens a request reserves at admission (Cost.Spend)
// and what its usage cost, for settlement. Its zero value prices nothing:
// no spend is reserved or settled, and budgets only refuse a tenant
// already over them. New wires it to the price table; this package's
// tests set it directly.
type pricing struct {
	// estimate prices in prompt tokens and out output tokens of model on
	// a route of provider; ok is false when the price is unknown.
	estimate func(provider Provider, model string, in, out int64) (micros int64, ok bool)
	// cost is what a finished request's usage cost (rec's Usage,
	// Characters, Model and ResponseModel); ok is false when unknown.
	cost func(provider Provider, rec *Record) (micros int64, ok bool)
}

// newPricing prices spend with the price table t (WithPrices): the
// reservation by t.Estimate, the settlement at the record's Cost, which
// finish sets (priceRecord) before it settles. A nil t prices nothing.
func newPricing(t *PriceTable) pricing {
	if t == nil {
		return pricing{}
	}
	return pricing{
		estimate: func(p Provider, model string, in, out int64) (int64, bool) {
			m, ok := t.Estimate(p, model, in, out)
			return int64(m), ok
		},
		cost: func(_ Provider, rec *Record) (int64, bool) {
			return int64(rec.Cost.Amount), rec.Cost.Known
		},
	}
}

// reserveSpend prices the token reservation of inspectRequest: in prompt
// tokens and out of output. An unknown price reserves nothing.
func (ex *exchange) reserveSpend(in, out int64) int64 {
	est := ex.rl.pricing.estimate
	if est == nil || ex.target == nil {
		return 0
	}
	if micros, ok := est(ex.target.Provider, ex.rec.Model, in, out); ok {
		return max(0, micros)
	}
	return 0
}

// usedSpend is what the request's recorded usage cost; ok is false when
// the cost is unknown.
func (ex *exchange) usedSpend() (int64, bool) {
	cost := ex.rl.pricing.cost
	if cost == nil || ex.target == nil {
		return 0, false
	}
	return cost(ex.target.Provider, &ex.rec)
}
