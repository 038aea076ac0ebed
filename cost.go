package relay

// priceRecord sets the record's Cost from its usage at the end of a
// request (finish), and counts it: relay_cost_total in currency units,
// relay_cost_unknown_total when it cannot be priced. Without a price
// table (WithPrices) it does nothing: Cost stays the zero value, unknown
// and with no currency. It allocates nothing.
//
// The model priced is the one the upstream said it used
// (Record.ResponseModel) when the table knows it, else the one the
// request named (Record.Model): a dated snapshot or an Azure deployment's
// real model is the more exact price.
func (ex *exchange) priceRecord(label string) {
	t := ex.rl.prices
	if t == nil {
		return
	}
	rec := &ex.rec
	rec.Cost = Charge{Currency: t.currency, PriceVersion: t.version}
	u := &rec.Usage
	answered := ex.up.resp != nil && ex.up.resp.StatusCode < 400
	if u.Total() == 0 && !u.Estimated && !answered {
		// Nothing was generated: refused by the relay, failed before an
		// answer, or an upstream 4xx/5xx reporting no usage (as usedTokens
		// settles them).
		rec.Cost.Known = true
		return
	}
	p := t.lookup(rec.Provider, rec.ResponseModel)
	if p == nil {
		p = t.lookup(rec.Provider, rec.Model)
	}
	m := ex.rl.metrics
	switch {
	case p == nil:
		m.costUnknown.WithLabelValues(ex.route, "model").Inc()
		return
	case u.Total() == 0 && !u.Estimated && (rec.Characters == 0 || p.Characters == 0):
		// Answered, so billed, but nothing the table prices was counted
		// (a body reporting no usage, speech billed in tokens but
		// answered as bare audio).
		m.costUnknown.WithLabelValues(ex.route, "usage").Inc()
		return
	}
	rec.Cost.Amount = p.cost(*u, rec.Characters)
	rec.Cost.Known = true
	if rec.Cost.Amount > 0 {
		m.cost.WithLabelValues(ex.route, label).Add(float64(rec.Cost.Amount) / float64(MoneyUnit))
	}
}
