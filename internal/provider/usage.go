package provider

// Usage is the token usage of one response.
//
// The fields follow OpenAI's convention on every provider, so that they
// add up the same way everywhere: CachedInputTokens is a part of
// InputTokens and ReasoningTokens is a part of OutputTokens. Each family's
// file says how its usage maps to these fields.
type Usage struct {
	InputTokens       int64
	OutputTokens      int64
	CachedInputTokens int64
	ReasoningTokens   int64
}

// Total is InputTokens + OutputTokens.
func (u Usage) Total() int64 { return u.InputTokens + u.OutputTokens }
