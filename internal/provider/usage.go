package provider

// Usage is the token usage of one response.
//
// The fields follow OpenAI's convention on every provider, so that they
// add up the same way everywhere: CachedInputTokens,
// CacheCreationInputTokens and AudioInputTokens are parts of InputTokens;
// ReasoningTokens and AudioOutputTokens are parts of OutputTokens. Each
// family's file says how its usage maps to these fields.
type Usage struct {
	InputTokens              int64
	OutputTokens             int64
	CachedInputTokens        int64
	CacheCreationInputTokens int64
	ReasoningTokens          int64
	AudioInputTokens         int64
	AudioOutputTokens        int64
}

// Total is InputTokens + OutputTokens.
func (u Usage) Total() int64 { return u.InputTokens + u.OutputTokens }

// part is one count a provider reports, under whatever name its format
// gives it. A Stream keeps the last value reported for each part, so that
// a later report replaces earlier values field by field (a field absent
// from a later report keeps its earlier value), and each family computes
// Usage from the parts (usageOf).
type part uint8

const (
	partInput      part = iota // prompt_/input_tokens; Anthropic's uncached input_tokens; Gemini's promptTokenCount
	partOutput                 // completion_/output_tokens; Gemini's candidatesTokenCount
	partCached                 // cached_tokens, cache_read_input_tokens, cachedContentTokenCount
	partCacheHit               // DeepSeek's prompt_cache_hit_tokens, when cached_tokens is absent
	partCacheWrite             // Anthropic's cache_creation_input_tokens
	partReasoning              // reasoning_tokens; Gemini's thoughtsTokenCount
	partAudioIn                // audio_tokens of the input; Gemini's AUDIO prompt modality
	partAudioOut               // audio_tokens of the output; Gemini's AUDIO candidates modality
	partToolPrompt             // Gemini's toolUsePromptTokenCount
	numParts
)

// usageParts are the parts reported so far.
type usageParts struct {
	n    [numParts]int64
	seen uint16 // bit p: part p was reported
}

func (u *usageParts) set(p part, n int64) {
	u.n[p] = n
	u.seen |= 1 << p
}

func (u *usageParts) has(p part) bool { return u.seen&(1<<p) != 0 }

// merge replaces the parts r reports.
func (u *usageParts) merge(r *usageParts) {
	for p := range numParts {
		if r.has(p) {
			u.set(p, r.n[p])
		}
	}
}

// setPart stores v as part p if it is an integer; a null or missing
// value is no report and keeps the earlier one.
func (u *usageParts) setPart(p part, v []byte) bool {
	n, ok := intValue(v)
	if ok {
		u.set(p, n)
	}
	return ok
}

// usageKind is whose formula turns the parts into Usage: the family of
// the last usage report.
type usageKind uint8

const (
	usageOpenAI usageKind = iota // OpenAI and every format that reads as it
	usageAnthropic
	usageGemini
)

// usageOf computes Usage from the parts by the formula of kind k (each
// family's file documents its mapping).
func usageOf(k usageKind, p *usageParts) Usage {
	u := Usage{
		CachedInputTokens: p.n[partCached],
		ReasoningTokens:   p.n[partReasoning],
		AudioInputTokens:  p.n[partAudioIn],
		AudioOutputTokens: p.n[partAudioOut],
	}
	switch k {
	case usageAnthropic:
		// Anthropic reports the uncached input, the cache writes and the
		// cache reads disjointly: the input is their sum.
		u.CacheCreationInputTokens = p.n[partCacheWrite]
		u.InputTokens = p.n[partInput] + p.n[partCacheWrite] + p.n[partCached]
		u.OutputTokens = p.n[partOutput]
	case usageGemini:
		// Gemini reports thoughts apart from candidates; both are output.
		u.InputTokens = p.n[partInput] + p.n[partToolPrompt]
		u.OutputTokens = p.n[partOutput] + p.n[partReasoning]
	default:
		u.InputTokens = p.n[partInput]
		u.OutputTokens = p.n[partOutput]
		if !p.has(partCached) {
			u.CachedInputTokens = p.n[partCacheHit]
		}
	}
	return u
}

// reported tells which of the totals the provider has reported so far:
// the input, and the output (a placeholder, such as the output_tokens of
// Anthropic's message_start, is never stored as a report).
func (u *usageParts) reported() (input, output bool) {
	return u.has(partInput), u.has(partOutput) || u.has(partReasoning)
}
