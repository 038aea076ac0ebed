package relay

import "time"

// ErrorType classifies why a request did not end well. The set is fixed
// and documented, so it is safe as a metric label.
type ErrorType string

// Error types, as recorded and as the "type" label of relay_errors_total.
const (
	ErrTypeNone              ErrorType = ""
	ErrTypeAuth              ErrorType = "auth"                 // 401: missing or wrong key
	ErrTypeRateLimited       ErrorType = "rate_limited"         // 429 from the relay's limiter
	ErrTypeBodyTooLarge      ErrorType = "body_too_large"       // 413
	ErrTypeBadRequest        ErrorType = "bad_request"          // 400: unreadable request body
	ErrTypeNoRoute           ErrorType = "no_route"             // 404: no route for the path
	ErrTypeUpstreamConnect   ErrorType = "upstream_connect"     // 502: dial, TLS or protocol failure before the response
	ErrTypeUpstreamTimeout   ErrorType = "upstream_timeout"     // 504 before the first byte; or an idle/total timeout mid-stream
	ErrTypeUpstreamStatus    ErrorType = "upstream_status"      // the upstream answered 4xx/5xx, passed through
	ErrTypeStreamInterrupted ErrorType = "stream_interrupted"   // the upstream broke off after the first byte
	ErrTypeClientCanceled    ErrorType = "client_canceled"      // 499: the client went away
	ErrTypeLimiter           ErrorType = "limiter"              // the limiter failed (counted whether failing open or closed)
	ErrTypeStorage           ErrorType = "storage"              // a record batch could not be written
	ErrTypeShuttingDown      ErrorType = "shutting_down"        // 503 while draining
	ErrTypeUpstreamEvent     ErrorType = "upstream_error_event" // the stream carried the provider's own error event
	ErrTypeMethodNotAllowed  ErrorType = "method_not_allowed"   // 405: a method outside WithAllowedMethods
)

// Usage is the token accounting of one request, as the provider reported
// it, or, when Estimated is set, partly estimated by the relay. Zero
// fields mean "not reported".
//
// The fields add up the same way for every provider, OpenAI's way:
// InputTokens and OutputTokens are the totals, and the other counts are
// parts of them, never added to them. CachedInputTokens,
// CacheCreationInputTokens and AudioInputTokens are parts of InputTokens;
// ReasoningTokens and AudioOutputTokens are parts of OutputTokens. So the
// input neither read from nor written to a cache is InputTokens -
// CachedInputTokens - CacheCreationInputTokens, and Total is what a token
// budget counts.
//
// Per provider (the README's Metering section has the full table):
//
//   - OpenAI and compatible servers (chat completions, Responses, Azure
//     OpenAI, DeepSeek, Groq, OpenRouter, SiliconFlow, ...): InputTokens =
//     prompt_tokens / input_tokens; OutputTokens = completion_tokens /
//     output_tokens; CachedInputTokens = prompt_tokens_details.cached_tokens
//     (Responses: input_tokens_details; DeepSeek: prompt_cache_hit_tokens);
//     ReasoningTokens = completion_tokens_details.reasoning_tokens;
//     AudioInputTokens and AudioOutputTokens = prompt_tokens_details and
//     completion_tokens_details audio_tokens (transcription:
//     input_token_details.audio_tokens). No cache writes are reported.
//   - Anthropic: InputTokens = input_tokens +
//     cache_creation_input_tokens + cache_read_input_tokens (Anthropic
//     reports the three apart); CachedInputTokens = cache_read_input_tokens;
//     CacheCreationInputTokens = cache_creation_input_tokens; OutputTokens
//     = output_tokens (streamed: of the last message_delta;
//     message_start's is a placeholder and is never recorded). Thinking is
//     inside OutputTokens; no reasoning or audio counts are reported
//     apart.
//   - Gemini native: InputTokens = promptTokenCount +
//     toolUsePromptTokenCount; OutputTokens = candidatesTokenCount +
//     thoughtsTokenCount; ReasoningTokens = thoughtsTokenCount;
//     CachedInputTokens = cachedContentTokenCount; AudioInputTokens and
//     AudioOutputTokens = the AUDIO modality of promptTokensDetails and
//     candidatesTokensDetails.
//   - OpenAI speech (SSE): InputTokens and OutputTokens as reported (its
//     output is audio, reported only as a total). Azure Speech reports no
//     tokens: it is billed by Record.Characters.
//
// When a stream reports usage more than once, the final report wins,
// field by field: a later report replaces the counts it carries and keeps
// the earlier value of those it omits.
type Usage struct {
	InputTokens              int64 `json:"input_tokens"`
	OutputTokens             int64 `json:"output_tokens"`
	CachedInputTokens        int64 `json:"cached_input_tokens"`
	CacheCreationInputTokens int64 `json:"cache_creation_input_tokens"`
	ReasoningTokens          int64 `json:"reasoning_tokens"`
	AudioInputTokens         int64 `json:"audio_input_tokens"`
	AudioOutputTokens        int64 `json:"audio_output_tokens"`
	// Estimated reports that InputTokens or OutputTokens (or both) are the
	// relay's estimate, not the provider's count: a stream cut short (the
	// client left, the upstream broke off or timed out, an in-band error)
	// before the provider reported them. A missing input is the request's
	// prompt estimate (its prompt text's bytes / 4); a missing output is
	// the generated content that passed (the bytes of its text, reasoning
	// and tool-call strings / 4, rounded up, at least one per content
	// event). Counts the provider did report stand as reported; the parts
	// (cached, reasoning, audio) are never estimated. Output the client
	// never saw (hidden reasoning) cannot be estimated, so an estimate is
	// usually low for reasoning models.
	Estimated bool `json:"estimated"`
}

// Total is input plus output tokens (the other counts are already part of
// those).
func (u Usage) Total() int64 { return u.InputTokens + u.OutputTokens }

// Record describes one finished request, rejected and failed ones included.
// It is a struct, passed by value, so that fields can be added without
// breaking Recorder implementations. It never holds a credential.
//
// Strings the client (or an upstream) controls are capped, so that a
// record's size does not depend on what a client sends: Path at 2 KiB,
// Model and ResponseModel at 256 bytes, Method at 32 bytes (and
// ClientRequestID at 128 by its well-formedness rule). A record with any
// of them cut has Truncated set. Tenant, KeyID, Route, Upstream and Labels
// come from the Authenticator and resolver, the operator's code, and are
// not capped; they count towards AsyncOptions.MaxQueueBytes.
type Record struct {
	// RequestID is generated by the relay for every request and is unique:
	// it is what consumers de-duplicate on. The client gets it back in the
	// X-Request-Id response header.
	RequestID string `json:"request_id"`
	// ClientRequestID is the client's own X-Request-ID when it was well
	// formed (1 to 128 letters, digits and -_.:), else empty. Clients choose
	// it freely, so it is not unique; it is sent upstream for tracing.
	ClientRequestID string    `json:"client_request_id,omitempty"`
	Start           time.Time `json:"start"`
	Tenant          string    `json:"tenant"`
	KeyID           string    `json:"key_id"`
	Route           string    `json:"route"`
	Upstream        string    `json:"upstream"`
	Method          string    `json:"method"`
	// Path is the client's request path, without the query string (which
	// may carry secrets).
	Path string `json:"path"`
	// Model is the model the request named, when its body is JSON with a
	// "model" field.
	Model string `json:"model,omitempty"`
	// ResponseModel is the model the upstream said it used, when it differs.
	ResponseModel string     `json:"response_model,omitempty"`
	Provider      Provider   `json:"provider,omitempty"`
	Kind          StreamKind `json:"kind"`
	// Stream reports whether the request asked for a streamed response.
	Stream bool `json:"stream"`
	// Status is what the client got: 499 when it went away.
	Status    int       `json:"status"`
	ErrorType ErrorType `json:"error_type,omitempty"`
	BytesIn   int64     `json:"bytes_in"`
	BytesOut  int64     `json:"bytes_out"`
	// Events counts SSE events for SSE responses (a compressed one's in
	// its decoded copy) and body chunks written otherwise, or when a
	// compressed body is not observed.
	Events int64 `json:"events"`
	// TTFB is the time from the request's arrival to the first body byte
	// sent to the client.
	TTFB time.Duration `json:"ttfb_ns"`
	// TTFT is the time to the first event that carries generated content.
	TTFT     time.Duration `json:"ttft_ns,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	// ClientGone reports that the client disconnected before the end.
	ClientGone bool `json:"client_gone"`
	// Truncated reports that at least one client-controlled string (Path,
	// Model, ResponseModel, Method) was longer than its cap and was cut to
	// it, on a UTF-8 boundary, or that AttemptLog was cut to its cap.
	// (Declared beside ClientGone, so that the two share a word: the
	// exchange that holds the record fits its size class.)
	Truncated bool  `json:"truncated,omitempty"`
	Usage     Usage `json:"usage"`
	// Cost is what the usage cost at the relay's prices (WithPrices);
	// unknown (Known false) without prices or for a model they lack.
	Cost Charge `json:"cost"`
	// Attempts is how many upstream attempts were made (failover).
	Attempts int `json:"attempts"`
	// AttemptLog lists the attempts of a request that made more than one,
	// in order: each one's upstream, its answer's status and why it was
	// not the one relayed. It is nil when the request made one attempt
	// (or none): that attempt is Upstream, and its outcome the record's
	// Status and ErrorType. The last entry is the attempt relayed (or
	// the last that failed); it tells how it began, not how its stream
	// ended, which is the record's ErrorType. At most recordMaxAttemptLog
	// (16) entries are kept, the first ones, with Truncated set when
	// more were made.
	AttemptLog []AttemptInfo `json:"attempt_log,omitempty"`
	// Characters is the number of characters sent for synthesis (TTS).
	Characters int64 `json:"characters,omitempty"`
	// Labels are the Identity's labels.
	Labels map[string]string `json:"labels,omitempty"`
	// FramesIn and FramesOut count a WebSocket session's frames (Kind
	// KindWebSocket): client to upstream and upstream to client, control
	// frames included. BytesIn and BytesOut are then the wire bytes each
	// way, frame headers included.
	FramesIn  int64 `json:"frames_in,omitempty"`
	FramesOut int64 `json:"frames_out,omitempty"`
	// CloseCode is the close code of the session's first close: the code
	// of the first close frame (1005 when it had none), 1006 when a side
	// ended without a close frame, or the code the relay sent when it
	// ended the session (1001: Shutdown, a time limit or a dead peer;
	// 1002: a protocol error). Zero for ordinary requests.
	CloseCode int `json:"close_code,omitempty"`
	// ClosedBy says which side closed a session first: "client",
	// "upstream" or "relay". Empty for ordinary requests.
	ClosedBy string `json:"closed_by,omitempty"`
}

// AttemptInfo is one upstream attempt of a request (Record.AttemptLog).
type AttemptInfo struct {
	// Upstream is the backend's name, as Record.Upstream.
	Upstream string `json:"upstream"`
	// Status is the upstream's HTTP status; 0 when no answer came (a
	// connect failure or a timeout before the headers).
	Status int `json:"status"`
	// ErrorType is why the attempt was not relayed, or how the relayed
	// one began; empty for a success:
	//
	//   - ErrTypeUpstreamConnect, ErrTypeUpstreamTimeout: no answer came;
	//   - ErrTypeUpstreamStatus: a 429/5xx that failed over, a 400 that
	//     refused the include_usage edit (the same upstream is tried
	//     again without it), or a relayed 4xx/5xx;
	//   - for an event stream held until its first content (see
	//     Route.NoFirstContentHold) that failed before it, with Status
	//     200: ErrTypeUpstreamEvent (an error event, such as Anthropic's
	//     overloaded_error), ErrTypeUpstreamTimeout (FirstToken ran out)
	//     or ErrTypeStreamInterrupted (the stream ended or broke off);
	//   - the record's own type when the request ended during the last
	//     attempt (ErrTypeClientCanceled, ErrTypeShuttingDown, ...).
	ErrorType ErrorType `json:"error_type,omitempty"`
}
