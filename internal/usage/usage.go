// Package usage reads what the relay carries without changing it: the
// model, token usage, in-band errors and whether an SSE event carries
// generated output (for time-to-first-token and inter-chunk timing).
//
// Recognition is by the shape of the payload rather than by the provider
// string alone, because one upstream often speaks several dialects (OpenAI
// chat, Responses, speech; Gemini native behind an "openai" route). The
// provider string is used only where two shapes are otherwise ambiguous.
//
// Providers: "openai" (OpenAI and compatible servers: SiliconFlow,
// DeepSeek, Gemini's OpenAI endpoint, OpenRouter, Groq; Gemini native
// usageMetadata is understood as well), "azure" (Azure OpenAI),
// "anthropic" (Messages API) and "azure-tts" (Azure Speech REST TTS,
// which has no usage in its responses; see ParseRequest for characters).
package usage

// Provider names accepted by Reset and ParseRequest.
const (
	ProviderOpenAI    = "openai"
	ProviderAzure     = "azure"
	ProviderAnthropic = "anthropic"
	ProviderAzureTTS  = "azure-tts"
)

// Usage is the token usage of one response.
//
// The fields follow OpenAI's convention on every provider, so that they
// add up the same way everywhere: CachedInputTokens is a part of
// InputTokens and ReasoningTokens is a part of OutputTokens.
//
//   - Anthropic: InputTokens = input_tokens + cache_creation_input_tokens +
//     cache_read_input_tokens (Anthropic reports the three disjointly);
//     CachedInputTokens = cache_read_input_tokens. Cache writes count as
//     input because they are prompt tokens the model processed.
//   - Gemini native: OutputTokens = candidatesTokenCount + thoughtsTokenCount
//     (Gemini reports thoughts apart from candidates; the sum is what
//     totalTokenCount counts and what is billed as output);
//     ReasoningTokens = thoughtsTokenCount; InputTokens = promptTokenCount +
//     toolUsePromptTokenCount; CachedInputTokens = cachedContentTokenCount.
//   - DeepSeek: prompt_cache_hit_tokens is used as CachedInputTokens when
//     prompt_tokens_details.cached_tokens is absent.
type Usage struct {
	InputTokens       int64
	OutputTokens      int64
	CachedInputTokens int64
	ReasoningTokens   int64
}

// Total is InputTokens + OutputTokens.
func (u Usage) Total() int64 { return u.InputTokens + u.OutputTokens }
