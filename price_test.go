package relay

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestParseMoney: decimal text becomes micro-units exactly (no float on
// the way: 0.1 + 0.2 style errors would show in the last digits), and
// anything else is refused.
func TestParseMoney(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Money
	}{
		{"2.50", 2_500_000},
		{"0.075", 75_000},
		{"15", 15_000_000},
		{"0.000001", 1},
		{"0.1", 100_000},
		{"0.3", 300_000}, // float64(0.3)*1e6 is 299999.99999999994
		{"1.10000000", 1_100_000},
		{".5", 500_000},
		{"7.", 7_000_000},
		{"0", 0},
		{"1000000000", maxPrice},
		{"123456.789012", 123_456_789_012},
	} {
		got, err := ParseMoney(tt.in)
		require.NoError(t, err, tt.in)
		assert.Equal(t, tt.want, got, tt.in)
	}
	for _, bad := range []string{"", ".", "-1", "+1", "1e3", "1,5", "1_000", " 1", "0.0000001", "1.2.3", "abc",
		"1000000000.000001", "99999999999999999999"} {
		_, err := ParseMoney(bad)
		assert.Error(t, err, "%q", bad)
	}
}

func TestMoneyString(t *testing.T) {
	assert.Equal(t, "2.500000", Money(2_500_000).String())
	assert.Equal(t, "0.000001", Money(1).String())
	assert.Equal(t, "-0.008200", Money(-8200).String())
	m, err := ParseMoney(Money(123_456_789).String())
	require.NoError(t, err)
	assert.Equal(t, Money(123_456_789), m, "String is what ParseMoney reads")
}

func mustPrices(t *testing.T, entries ...PriceEntry) *PriceTable {
	t.Helper()
	pt, err := NewPriceTable("test-2026-11", "USD", entries)
	require.NoError(t, err)
	return pt
}

// TestPriceLookup: exact names, then dated snapshots, then the longest
// prefix; a provider's own entry beats a provider-less one at each step.
func TestPriceLookup(t *testing.T) {
	price := func(n Money) ModelPrice { return ModelPrice{Input: n} }
	pt := mustPrices(t,
		PriceEntry{Models: []string{"gpt-4o", "gpt-4o-latest"}, Price: price(1)},
		PriceEntry{Models: []string{"gpt-4o-mini"}, Price: price(2)},
		PriceEntry{Models: []string{"gpt-4o-2024-05-13"}, Price: price(3)}, // a snapshot priced apart
		PriceEntry{Provider: ProviderAzure, Models: []string{"gpt-4o"}, Price: price(4)},
		PriceEntry{Models: []string{"claude-sonnet-4"}, Price: price(5)},
		PriceEntry{Models: []string{"claude-3-5-sonnet-v2"}, Price: price(6)},
		PriceEntry{Models: []string{"gpt-4"}, Price: price(7)},
		PriceEntry{Models: []string{"gemini-2.5-flash*"}, Price: price(8)},
		PriceEntry{Models: []string{"gemini-2.5-flash-lite*"}, Price: price(9)},
		PriceEntry{Models: []string{"gemini-*"}, Price: price(10)},
		PriceEntry{Provider: ProviderOpenAI, Models: []string{"gemini-2.5*"}, Price: price(11)},
	)
	for _, tt := range []struct {
		provider Provider
		model    string
		want     Money // Input of the entry found; 0: none
	}{
		{ProviderOpenAI, "gpt-4o", 1},
		{ProviderOpenAI, "gpt-4o-latest", 1},          // an alias
		{ProviderAnthropic, "gpt-4o", 1},              // a provider-less entry matches any provider
		{ProviderAzure, "gpt-4o", 4},                  // the provider's own entry wins
		{ProviderAzure, "gpt-4o-2024-08-06", 4},       // snapshot of the provider's own
		{ProviderOpenAI, "gpt-4o-2024-08-06", 1},      // -YYYY-MM-DD: gpt-4o's price
		{ProviderOpenAI, "gpt-4o-2024-05-13", 3},      // unless the snapshot is listed
		{ProviderOpenAI, "gpt-4o-mini-2024-07-18", 2}, // not gpt-4o's
		{ProviderAnthropic, "claude-sonnet-4-20250514", 5},
		{ProviderAnthropic, "claude-3-5-sonnet-v2@20241022", 6}, // Vertex
		{ProviderOpenAI, "gpt-4-0613", 7},                       // -MMDD
		{ProviderOpenAI, "gpt-4-1399", 0},                       // not a month and day
		{ProviderOpenAI, "gpt-4o-2024-13-01", 0},                // not a month
		{ProviderOpenAI, "gpt-4o-mini-tts", 0},                  // no prefix pattern for gpt-4o
		{ProviderAzure, "gemini-2.5-flash-lite-preview", 9},     // the longest prefix
		{ProviderAzure, "gemini-2.5-flash-001", 8},
		{ProviderAzure, "gemini-2.5-pro", 10},
		{ProviderOpenAI, "gemini-2.5-pro", 11},   // the provider's own pattern beats a shorter provider-less one...
		{ProviderOpenAI, "gemini-2.5-flash", 8},  // ...but not a longer one
		{ProviderOpenAI, "Gemini-2.5-flash", 0},  // case-sensitive
		{ProviderOpenAI, "", 0},                  // no model
		{ProviderOpenAI, "gpt-4o-2024-08-0", 0},  // not a date
		{ProviderOpenAI, "x-2024-08-06", 0},      // a date, but x is unknown
		{ProviderOpenAI, "-2024-08-06", 0},       // nothing before the date
		{ProviderOpenAI, "gpt-4o-20240806", 1},   // -YYYYMMDD
		{ProviderOpenAI, "gpt-4o@20240806", 1},   // @YYYYMMDD
		{ProviderOpenAI, "gpt-4o-2024-08-06", 1}, // again, for the table's sake
	} {
		p, ok := pt.Lookup(tt.provider, tt.model)
		assert.Equal(t, tt.want != 0, ok, "%s %s", tt.provider, tt.model)
		assert.Equal(t, tt.want, p.Input, "%s %s", tt.provider, tt.model)
	}
	// "*" catches every model of its provider, none included.
	all := mustPrices(t, PriceEntry{Provider: ProviderAzureTTS, Models: []string{"*"}, Price: price(12)},
		PriceEntry{Provider: ProviderAzureTTS, Models: []string{"en-US-Ava*"}, Price: price(13)})
	for model, want := range map[string]Money{"": 12, "de-DE-KatjaNeural": 12, "en-US-AvaNeural": 13} {
		p, ok := all.Lookup(ProviderAzureTTS, model)
		assert.True(t, ok, model)
		assert.Equal(t, want, p.Input, model)
	}
	_, ok := all.Lookup(ProviderOpenAI, "")
	assert.False(t, ok, "another provider's catch-all")
	var none *PriceTable
	_, ok = none.Lookup(ProviderOpenAI, "gpt-4o")
	assert.False(t, ok, "a nil table prices nothing")
	_, ok = none.Cost(ProviderOpenAI, "gpt-4o", Usage{InputTokens: 1}, 0)
	assert.False(t, ok)
}

func TestNewPriceTableRefuses(t *testing.T) {
	ok := []PriceEntry{{Models: []string{"m"}, Price: ModelPrice{Input: 1}}}
	for name, tt := range map[string]struct {
		version, currency string
		entries           []PriceEntry
	}{
		"no version":       {"", "USD", ok},
		"no currency":      {"v", "", ok},
		"lowercase":        {"v", "usd", ok},
		"not a code":       {"v", "US$", ok},
		"no model":         {"v", "USD", []PriceEntry{{Price: ModelPrice{Input: 1}}}},
		"empty model":      {"v", "USD", []PriceEntry{{Models: []string{""}}}},
		"two stars":        {"v", "USD", []PriceEntry{{Models: []string{"**"}}}},
		"inner star":       {"v", "USD", []PriceEntry{{Models: []string{"gpt-*-mini"}}}},
		"twice":            {"v", "USD", []PriceEntry{{Models: []string{"m"}}, {Models: []string{"m"}}}},
		"negative":         {"v", "USD", []PriceEntry{{Models: []string{"m"}, Price: ModelPrice{Input: -5}}}},
		"no charge total":  {"v", "USD", []PriceEntry{{Models: []string{"m"}, Price: ModelPrice{Output: NoCharge}}}},
		"too high":         {"v", "USD", []PriceEntry{{Models: []string{"m"}, Price: ModelPrice{Input: maxPrice + 1}}}},
		"negative reasons": {"v", "USD", []PriceEntry{{Models: []string{"m"}, Price: ModelPrice{Reasoning: -2}}}},
	} {
		_, err := NewPriceTable(tt.version, tt.currency, tt.entries)
		assert.Error(t, err, name)
	}
	// The same name for two providers is two entries, not a duplicate.
	_, err := NewPriceTable("v", "USD", []PriceEntry{{Models: []string{"m"}}, {Provider: ProviderAzure, Models: []string{"m"}}})
	assert.NoError(t, err)
}

// TestPriceCostParts: every part of the usage priced once, at its own
// price or its total's, with the arithmetic written out (micro-units per
// token = price per million / 1,000,000).
func TestPriceCostParts(t *testing.T) {
	full := ModelPrice{
		Input: 3_000_000, CachedInput: 300_000, CacheWrite: 3_750_000, AudioInput: 40_000_000, // $3, $0.30, $3.75, $40 per 1M
		Output: 15_000_000, Reasoning: 20_000_000, AudioOutput: 80_000_000, // $15, $20, $80 per 1M
		Characters: 30_000_000, // $30 per 1M characters ($0.03 per 1K)
	}
	for _, tt := range []struct {
		name  string
		price ModelPrice
		u     Usage
		chars int64
		want  Money
	}{
		{"nothing", full, Usage{}, 0, 0},
		// input 1000: 100 cached, 200 written, 300 audio, 400 plain
		// = 100*0.3 + 200*3.75 + 300*40 + 400*3 = 30 + 750 + 12000 + 1200 = 13980
		// output 500: 100 reasoning, 50 audio, 350 plain
		// = 100*20 + 50*80 + 350*15 = 2000 + 4000 + 5250 = 11250
		{"every part", full, Usage{InputTokens: 1000, CachedInputTokens: 100, CacheCreationInputTokens: 200,
			AudioInputTokens: 300, OutputTokens: 500, ReasoningTokens: 100, AudioOutputTokens: 50}, 0, 13980 + 11250},
		// parts unpriced are priced as their totals: 1000*3 + 500*15 = 10500
		{"parts as totals", ModelPrice{Input: 3_000_000, Output: 15_000_000},
			Usage{InputTokens: 1000, CachedInputTokens: 100, CacheCreationInputTokens: 200, AudioInputTokens: 300,
				OutputTokens: 500, ReasoningTokens: 100, AudioOutputTokens: 50}, 0, 10500},
		// NoCharge: the 400 cached are free, 600*3 = 1800
		{"free part", ModelPrice{Input: 3_000_000, CachedInput: NoCharge}, Usage{InputTokens: 1000, CachedInputTokens: 400}, 0, 1800},
		// parts overlapping beyond the total are capped: 800 cached of
		// 1000, then 200 (not 500) audio, 0 plain = 800*0.3 + 200*40 = 240 + 8000
		{"overlap capped", full, Usage{InputTokens: 1000, CachedInputTokens: 800, AudioInputTokens: 500}, 0, 8240},
		// reasoning above output (OpenRouter's 11 of 10): 10*20 = 200
		{"reasoning beyond output", full, Usage{OutputTokens: 10, ReasoningTokens: 11}, 0, 200},
		// characters: 12345 * 30 = 370350
		{"characters", full, Usage{}, 12345, 370350},
		// rounding: half a micro-unit up, once, on the exact sum
		{"rounded once", full, Usage{InputTokens: 2, CachedInputTokens: 1}, 0, 3},  // 0.3 + 3 = 3.3 -> 3
		{"half up", ModelPrice{Input: 500_000}, Usage{InputTokens: 1}, 0, 1},       // 0.5 -> 1
		{"below half", ModelPrice{Input: 499_999}, Usage{InputTokens: 1}, 0, 0},    // 0.499999 -> 0
		{"summed first", ModelPrice{Input: 400_000}, Usage{InputTokens: 3}, 0, 1},  // 1.2 -> 1 (not 3 x round(0.4))
		{"negative counts", full, Usage{InputTokens: -5, OutputTokens: -1}, -3, 0}, // count as zero
		{"saturates", ModelPrice{Input: maxPrice}, Usage{InputTokens: math.MaxInt64}, 0, math.MaxInt64},
	} {
		pt := mustPrices(t, PriceEntry{Models: []string{"m"}, Price: tt.price})
		got, ok := pt.Cost(ProviderOpenAI, "m", tt.u, tt.chars)
		assert.True(t, ok, tt.name)
		assert.Equal(t, tt.want, got, tt.name)
	}
}

// TestPriceEstimate: the budget's reservation, as the example:
// 100 prompt tokens and max_tokens 1000 at $2/$8 per million reserve
// 100*2 + 1000*8 = 8200 micro-dollars ($0.0082).
func TestPriceEstimate(t *testing.T) {
	pt := mustPrices(t, PriceEntry{Models: []string{"m"}, Price: ModelPrice{Input: 2_000_000, Output: 8_000_000, Reasoning: 50_000_000}})
	got, ok := pt.Estimate(ProviderOpenAI, "m", 100, 1000)
	assert.True(t, ok)
	assert.Equal(t, Money(8200), got)
	_, ok = pt.Estimate(ProviderOpenAI, "other", 100, 1000)
	assert.False(t, ok, "unknown model")
	assert.Equal(t, "test-2026-11", pt.Version())
	assert.Equal(t, "USD", pt.Currency())
}

// The request path prices without allocating.
func TestPriceCostNoAllocation(t *testing.T) {
	pt := mustPrices(t, PriceEntry{Models: []string{"gpt-4o"}, Price: ModelPrice{Input: 2_500_000, Output: 10_000_000}},
		PriceEntry{Models: []string{"gemini-*"}, Price: ModelPrice{Input: 1}})
	u := Usage{InputTokens: 1000, OutputTokens: 100, CachedInputTokens: 10}
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = pt.Cost(ProviderOpenAI, "gpt-4o-2024-08-06", u, 0)
		_, _ = pt.Cost(ProviderOpenAI, "gemini-2.5-pro", u, 0)
		_, _ = pt.Cost(ProviderOpenAI, "unknown", u, 0)
	})
	assert.Zero(t, allocs)
}

func BenchmarkPriceCost(b *testing.B) {
	pt, err := NewPriceTable("v", "USD", []PriceEntry{
		{Models: []string{"gpt-4o"}, Price: ModelPrice{Input: 2_500_000, CachedInput: 1_250_000, Output: 10_000_000}},
		{Models: []string{"gpt-4o-mini*"}, Price: ModelPrice{Input: 150_000, Output: 600_000}},
	})
	require.NoError(b, err)
	u := Usage{InputTokens: 1000, OutputTokens: 100, CachedInputTokens: 10}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = pt.Cost(ProviderOpenAI, "gpt-4o-2024-08-06", u, 0)
	}
}
