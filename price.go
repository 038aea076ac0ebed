package relay

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"strings"
)

// Money is an amount in micro-units (millionths) of a currency: 1 USD is
// Money(1_000_000), $2.50 is Money(2_500_000). Money is never a float,
// so sums are exact; ParseMoney reads decimal text exactly.
type Money int64

// MoneyUnit is one whole unit of a currency (1 USD, 1 EUR).
const MoneyUnit Money = 1_000_000

// maxPrice bounds a price (one billion currency units per million): far
// above any real price, and low enough that the cost arithmetic, which
// multiplies int64 counts by prices in 128 bits, never overflows.
const maxPrice Money = 1_000_000_000 * MoneyUnit

// ParseMoney reads a non-negative decimal amount of currency units
// ("2.50", "0.075", "15") exactly, without floating point, into Money:
// at most 6 decimal places (micro-units; further zeros are allowed), no
// sign, exponent or separators.
func ParseMoney(s string) (Money, error) {
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" && (!dot || frac == "") {
		return 0, fmt.Errorf("price %q is not a decimal number", s)
	}
	frac = strings.TrimRight(frac, "0")
	if len(frac) > 6 {
		return 0, fmt.Errorf("price %q has more than 6 decimal places (the unit is a millionth)", s)
	}
	digits := func(d string) bool {
		for i := range len(d) {
			if d[i] < '0' || d[i] > '9' {
				return false
			}
		}
		return true
	}
	if !digits(whole) || !digits(frac) {
		return 0, fmt.Errorf("price %q is not a decimal number", s)
	}
	var w uint64
	if whole != "" {
		var err error
		if w, err = strconv.ParseUint(whole, 10, 64); err != nil || w > uint64(maxPrice/MoneyUnit) {
			return 0, fmt.Errorf("price %q is out of range (at most %d)", s, maxPrice/MoneyUnit)
		}
	}
	var f uint64
	if frac != "" {
		f, _ = strconv.ParseUint(frac+strings.Repeat("0", 6-len(frac)), 10, 64)
	}
	m := Money(w)*MoneyUnit + Money(f)
	if m > maxPrice {
		return 0, fmt.Errorf("price %q is out of range (at most %d)", s, maxPrice/MoneyUnit)
	}
	return m, nil
}

// String renders m as a decimal amount of currency units with six
// places ("2.500000"), the form ParseMoney reads.
func (m Money) String() string {
	neg := m < 0
	u := uint64(m)
	if neg {
		u = -u
	}
	var b []byte
	if neg {
		b = append(b, '-')
	}
	b = strconv.AppendUint(b, u/1_000_000, 10)
	b = append(b, '.')
	frac := strconv.FormatUint(u%1_000_000, 10)
	b = append(b, "000000"[len(frac):]...)
	return string(append(b, frac...))
}

// NoCharge is the price of a part that costs nothing. A ModelPrice part
// left zero is charged at its total's price instead (see ModelPrice).
const NoCharge Money = -1

// ModelPrice is what one model costs, in Money per million tokens (per
// million characters for Characters): "$2.50 per 1M input tokens" is
// Input: 2_500_000.
//
// The parts follow Usage: CachedInput, CacheWrite and AudioInput are
// prices of parts of the input, Reasoning and AudioOutput of parts of the
// output. Each token is priced once: a part's tokens at the part's price,
// the rest of the input at Input and of the output at Output. A part
// price left zero means "the same as its total" (Input or Output), since
// a provider that does not price a part apart bills it as the rest; use
// NoCharge for a part that is free.
//
// Realtime audio is billed by audio tokens (AudioInput, AudioOutput), as
// OpenAI's realtime and audio models report them. Prices per minute of
// audio are not supported: records hold no audio duration.
type ModelPrice struct {
	Input       Money // per 1M input tokens not in a part below
	CachedInput Money // per 1M cache-read input tokens (Usage.CachedInputTokens)
	CacheWrite  Money // per 1M cache-write input tokens (Usage.CacheCreationInputTokens)
	AudioInput  Money // per 1M audio input tokens
	Output      Money // per 1M output tokens not in a part below
	Reasoning   Money // per 1M reasoning tokens, when priced apart from output
	AudioOutput Money // per 1M audio output tokens
	// Characters is per 1M characters synthesised (Record.Characters:
	// TTS billed by characters, such as Azure Speech or OpenAI tts-1).
	// "$15 per 1M characters" is 15_000_000; "$0.30 per 1K" is
	// 300_000_000.
	Characters Money
}

func (p ModelPrice) validate() error {
	for _, f := range [...]struct {
		name string
		v    Money
		part bool
	}{
		{"input", p.Input, false}, {"cached_input", p.CachedInput, true}, {"cache_write", p.CacheWrite, true},
		{"audio_input", p.AudioInput, true}, {"output", p.Output, false}, {"reasoning", p.Reasoning, true},
		{"audio_output", p.AudioOutput, true}, {"characters", p.Characters, false},
	} {
		if f.v > maxPrice || f.v < 0 && !(f.part && f.v == NoCharge) {
			return fmt.Errorf("%s price %d is out of range", f.name, f.v)
		}
	}
	return nil
}

// PriceEntry prices the models it names for one provider.
type PriceEntry struct {
	// Provider is the route's provider the entry is for (ProviderOpenAI,
	// ProviderAzure, ...); empty matches any provider. An entry for the
	// record's provider wins over an empty one at the same step.
	Provider Provider
	// Models are exact model names, or patterns: a name ending in "*" is
	// a prefix ("gpt-4o-mini*"), and "*" alone matches every model of the
	// provider, a request naming none included (such as one price for
	// every Azure Speech voice); no other wildcard is understood.
	Models []string
	Price  ModelPrice
}

// PriceTable maps models to prices. Build it with NewPriceTable; it is
// immutable and safe for concurrent use. A nil *PriceTable prices
// nothing.
//
// A model is looked up in steps, the first match winning (each step
// tries the record's provider's entries, then entries with no provider):
//
//  1. its exact name;
//  2. its name without a trailing date snapshot, so that
//     "gpt-4o-2024-08-06" costs what "gpt-4o" does unless listed itself.
//     Recognised: -YYYY-MM-DD, -YYYYMMDD, @YYYYMMDD (Vertex) and -MMDD
//     ("gpt-4-0613");
//  3. the longest prefix pattern ("gpt-4o-mini*" beats "gpt-4o*"),
//     matched against the full name; "*" last, which alone matches a
//     request that named no model.
//
// Names are compared case-sensitively, as providers spell them.
type PriceTable struct {
	version  string
	currency string
	exact    map[Provider]map[string]*ModelPrice
	patterns []pricePattern // longest prefix first; a provider's before none at equal length
}

type pricePattern struct {
	provider Provider
	prefix   string
	price    *ModelPrice
}

// NewPriceTable builds a table. version names the prices (a date or a
// revision: records carry it, so a cost can be traced to the prices it
// was computed with); currency is an ISO 4217 code such as "USD". It is
// an error for a model name to appear twice for one provider, or for a
// price to be negative (except NoCharge parts) or above a billion units
// per million.
func NewPriceTable(version, currency string, entries []PriceEntry) (*PriceTable, error) {
	if version == "" {
		return nil, errors.New("relay: price table: version is required")
	}
	if len(currency) != 3 || strings.ToUpper(currency) != currency || strings.ContainsFunc(currency, func(r rune) bool { return r < 'A' || r > 'Z' }) {
		return nil, fmt.Errorf("relay: price table: currency %q is not an ISO 4217 code such as USD", currency)
	}
	t := &PriceTable{version: version, currency: currency, exact: map[Provider]map[string]*ModelPrice{}}
	seen := map[Provider]map[string]bool{}
	for i, e := range entries {
		if err := e.Price.validate(); err != nil {
			return nil, fmt.Errorf("relay: price table entry %d (%v): %w", i, e.Models, err)
		}
		if len(e.Models) == 0 {
			return nil, fmt.Errorf("relay: price table entry %d names no model", i)
		}
		p := new(ModelPrice)
		*p = e.Price
		for _, m := range e.Models {
			if m == "" || strings.Contains(strings.TrimSuffix(m, "*"), "*") {
				return nil, fmt.Errorf("relay: price table entry %d: model %q: want a name or a prefix ending in *", i, m)
			}
			if seen[e.Provider][m] {
				return nil, fmt.Errorf("relay: price table: model %q is priced twice for provider %q", m, e.Provider)
			}
			if seen[e.Provider] == nil {
				seen[e.Provider] = map[string]bool{}
			}
			seen[e.Provider][m] = true
			if prefix, ok := strings.CutSuffix(m, "*"); ok {
				t.patterns = append(t.patterns, pricePattern{e.Provider, prefix, p})
				continue
			}
			if t.exact[e.Provider] == nil {
				t.exact[e.Provider] = map[string]*ModelPrice{}
			}
			t.exact[e.Provider][m] = p
		}
	}
	slices.SortStableFunc(t.patterns, func(a, b pricePattern) int {
		if d := len(b.prefix) - len(a.prefix); d != 0 {
			return d
		}
		if (a.provider == "") != (b.provider == "") {
			if a.provider == "" {
				return 1
			}
			return -1
		}
		return 0
	})
	return t, nil
}

// Version is the table's price version; Currency its currency code.
func (t *PriceTable) Version() string { return t.version }

// Currency is the ISO 4217 code of the table's amounts.
func (t *PriceTable) Currency() string { return t.currency }

// Lookup finds the price of model for provider (see PriceTable for the
// steps). It reports false for an unknown model or a nil table. It does
// not allocate.
func (t *PriceTable) Lookup(provider Provider, model string) (ModelPrice, bool) {
	if p := t.lookup(provider, model); p != nil {
		return *p, true
	}
	return ModelPrice{}, false
}

func (t *PriceTable) lookup(provider Provider, model string) *ModelPrice {
	if t == nil {
		return nil
	}
	exact := func(name string) *ModelPrice {
		if p := t.exact[provider][name]; p != nil {
			return p
		}
		return t.exact[""][name]
	}
	if p := exact(model); model != "" && p != nil {
		return p
	}
	if base := stripSnapshotDate(model); base != model {
		if p := exact(base); p != nil {
			return p
		}
	}
	for i := range t.patterns {
		pt := &t.patterns[i]
		if (pt.provider == provider || pt.provider == "") && strings.HasPrefix(model, pt.prefix) {
			return pt.price
		}
	}
	return nil
}

// stripSnapshotDate returns model without a trailing date snapshot
// (-YYYY-MM-DD, -YYYYMMDD, @YYYYMMDD, -MMDD), or model itself.
func stripSnapshotDate(model string) string {
	n := len(model)
	digits := func(s string) bool {
		for i := range len(s) {
			if s[i] < '0' || s[i] > '9' {
				return false
			}
		}
		return true
	}
	monthDay := func(mm, dd string) bool {
		return mm >= "01" && mm <= "12" && dd >= "01" && dd <= "31"
	}
	// -YYYY-MM-DD
	if n > 11 && model[n-11] == '-' && model[n-6] == '-' && model[n-3] == '-' &&
		digits(model[n-10:n-6]) && digits(model[n-5:n-3]) && digits(model[n-2:]) && monthDay(model[n-5:n-3], model[n-2:]) {
		return model[:n-11]
	}
	// -YYYYMMDD or @YYYYMMDD
	if n > 9 && (model[n-9] == '-' || model[n-9] == '@') && digits(model[n-8:]) && model[n-8] == '2' &&
		monthDay(model[n-4:n-2], model[n-2:]) {
		return model[:n-9]
	}
	// -MMDD
	if n > 5 && model[n-5] == '-' && digits(model[n-4:]) && monthDay(model[n-4:n-2], model[n-2:]) {
		return model[:n-5]
	}
	return model
}

// Cost prices a usage and a count of synthesised characters at model's
// price for provider (see PriceTable for the lookup). It reports false
// for an unknown model or a nil table. It does not allocate.
//
// Each token is priced once (Usage's parts are parts of its totals): of
// the input, the cached tokens at CachedInput, then the cache writes at
// CacheWrite, then the audio tokens at AudioInput, each part capped at
// what is left of InputTokens (a provider whose parts overlap, such as
// cached audio, is never charged twice), and the rest at Input; of the
// output, likewise reasoning then audio at their prices and the rest at
// Output. Negative counts count as zero.
//
// Rounding: prices are per million, so each part costs tokens × price /
// 1,000,000 micro-units; the products are summed exactly (128-bit
// integers) and the sum is divided once, rounding half up, so a cost is
// off by at most half a micro-unit. An amount beyond int64 saturates.
func (t *PriceTable) Cost(provider Provider, model string, u Usage, characters int64) (Money, bool) {
	p := t.lookup(provider, model)
	if p == nil {
		return 0, false
	}
	return p.cost(u, characters), true
}

// Estimate prices a reservation: inputTokens at the model's Input price
// and outputTokens (such as max_tokens) at its Output price, rounded as
// Cost rounds. It reports false for an unknown model or a nil table. It
// does not allocate. Parts (cached, reasoning, audio) are not known
// before the response, so they are not priced apart here: settle on Cost
// of the real usage.
func (t *PriceTable) Estimate(provider Provider, model string, inputTokens, outputTokens int64) (Money, bool) {
	return t.Cost(provider, model, Usage{InputTokens: inputTokens, OutputTokens: outputTokens}, 0)
}

// cost is Cost for a found price.
func (p *ModelPrice) cost(u Usage, characters int64) Money {
	var acc acc128
	in := max(u.InputTokens, 0)
	for _, part := range [...]struct {
		n     int64
		price Money
	}{{u.CachedInputTokens, p.CachedInput}, {u.CacheCreationInputTokens, p.CacheWrite}, {u.AudioInputTokens, p.AudioInput}} {
		n := min(max(part.n, 0), in)
		in -= n
		acc.add(n, partPrice(part.price, p.Input))
	}
	acc.add(in, p.Input)
	out := max(u.OutputTokens, 0)
	for _, part := range [...]struct {
		n     int64
		price Money
	}{{u.ReasoningTokens, p.Reasoning}, {u.AudioOutputTokens, p.AudioOutput}} {
		n := min(max(part.n, 0), out)
		out -= n
		acc.add(n, partPrice(part.price, p.Output))
	}
	acc.add(out, p.Output)
	acc.add(max(characters, 0), p.Characters)
	return acc.micros()
}

// partPrice is a part's price: its own, its total's when zero, nothing
// for NoCharge.
func partPrice(part, total Money) Money {
	switch {
	case part == NoCharge:
		return 0
	case part == 0:
		return total
	}
	return part
}

// acc128 sums count × price-per-million products exactly.
type acc128 struct{ hi, lo uint64 }

func (a *acc128) add(n int64, price Money) {
	if n <= 0 || price <= 0 {
		return
	}
	hi, lo := bits.Mul64(uint64(n), uint64(price))
	var c uint64
	a.lo, c = bits.Add64(a.lo, lo, 0)
	a.hi += hi + c
}

// micros divides the sum by a million, rounding half up, saturating at
// the largest Money.
func (a *acc128) micros() Money {
	lo, c := bits.Add64(a.lo, 500_000, 0)
	hi := a.hi + c
	if hi >= 1_000_000 {
		return math.MaxInt64
	}
	q, _ := bits.Div64(hi, lo, 1_000_000)
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return Money(q)
}

// Charge is what a request cost (Record.Cost), as priced by the relay's PriceTable
// (WithPrices) when the request ended. Amount is in micro-units of
// Currency.
//
// Known is false when the cost could not be priced: no price table is
// configured (Currency is then empty), the model is not in the table, or
// the response was billed but reported no usage. An unknown cost is
// never recorded as zero: Amount is 0 but must not be summed as spend.
// A request that consumed nothing (refused by the relay, failed before
// an answer, or answered 4xx/5xx without usage) costs a known zero.
// A usage the relay estimated (Usage.Estimated) is priced as it stands.
type Charge struct {
	Known bool `json:"known"`
	// Amount is in micro-units of Currency (Money).
	Amount       Money  `json:"amount_micros"`
	Currency     string `json:"currency,omitempty"`
	PriceVersion string `json:"price_version,omitempty"`
}
