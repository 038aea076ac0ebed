package usage

import "bytes"

// Stream observes one response: feed it every SSE event (Event) or the
// whole JSON body (Body), then read Usage, Model and ErrorType.
//
// A Stream must be Reset (or made with NewStream) before use; Reset keeps
// the internal buffer so a pooled Stream does not allocate again.
// A Stream is not safe for concurrent use.
type Stream struct {
	provider string

	usage    Usage
	hasUsage bool

	// Anthropic reports input at message_start and (cumulative) output in
	// message_delta, and a delta may repeat the input fields; keeping the
	// parts lets each field be replaced rather than added.
	antInput, antCacheWrite, antCacheRead, antOutput int64

	model   []byte // reused across Reset so capture does not allocate
	errType string
	done    bool // a final event was seen
}

// NewStream returns a Stream ready for a response from provider.
func NewStream(provider string) *Stream {
	s := new(Stream)
	s.Reset(provider)
	return s
}

// Reset prepares s for a new response from provider.
func (s *Stream) Reset(provider string) {
	model := s.model[:0]
	if cap(model) > maxKeptModel {
		model = nil // do not pin a freak buffer in a pool
	}
	*s = Stream{provider: provider, model: model}
}

// maxKeptModel bounds the model buffer Reset keeps for reuse.
const maxKeptModel = 256

// Usage returns the usage seen so far (the last report wins: providers
// that repeat usage on every chunk send cumulative numbers).
func (s *Stream) Usage() Usage { return s.usage }

// HasUsage reports whether any usage report was seen, so a caller can tell
// "no usage sent" (e.g. a stream without include_usage) from zero usage.
func (s *Stream) HasUsage() bool { return s.hasUsage }

// Model returns the model named by the response, or "" if none was seen.
// The first non-empty model wins. Each call allocates the string.
func (s *Stream) Model() string { return string(s.model) }

// ErrorType returns the type of the first in-band error the response
// carried, or "". It is the error object's "type", else its "status"
// (Gemini), else its "code" (OpenRouter sends only a numeric code, e.g.
// "400"), else "error".
func (s *Stream) ErrorType() string { return s.errType }

// Done reports whether the stream's final event has been seen: [DONE],
// message_stop, an error event, a terminal Responses event or
// speech.audio.done. A client that hangs up after it got the response
// whole, as the SDKs do, has not cancelled anything.
func (s *Stream) Done() bool { return s.done }

// Event handles one complete SSE event. name is the event field (nil if
// none), data the joined data lines. truncated means data was cut to a
// cap by the caller; values are only read when complete, so a cut event
// can still report content but not a usage object it lost. It reports
// whether the event carries generated output.
func (s *Stream) Event(name, data []byte, truncated bool) (content bool) {
	_ = truncated // see above: the scanner never trusts incomplete values
	d := data[skipWS(data, 0):]
	if len(d) == 0 || d[0] != '{' {
		if string(bytes.TrimSpace(d)) == "[DONE]" {
			s.done = true
		}
		return false // [DONE], comments, keep-alives
	}
	typ := eventType(name, d)
	switch string(typ) {
	case "message_stop", "error", "response.completed", "response.failed", "response.incomplete",
		"speech.audio.done", "transcript.text.done":
		s.done = true
	}
	switch string(typ) {
	case "":
		return s.chunk(d)

	// Anthropic Messages.
	case "content_block_delta":
		return hasNonEmptyString(d, `"text"`) ||
			hasNonEmptyString(d, `"partial_json"`) ||
			hasNonEmptyString(d, `"thinking"`) ||
			bytes.Contains(d, []byte(`"citations_delta"`))
	case "content_block_start":
		// Only tool blocks carry a name; the name is generated output, as
		// the first OpenAI tool_calls chunk is. Text blocks start empty.
		return hasNonEmptyString(d, `"name"`) || hasNonEmptyString(d, `"text"`)
	case "message_start":
		m := member(d, "message")
		s.captureModel(member(m, "model"))
		if u := member(m, "usage"); isObject(u) {
			s.setAnthropic(u)
		}
		return false
	case "message_delta":
		if u := member(d, "usage"); isObject(u) {
			s.setAnthropic(u)
		}
		return false
	case "ping", "content_block_stop", "message_stop":
		return false
	case "error":
		s.setError(d)
		return false

	// OpenAI audio: speech (stream_format "sse") and transcription.
	case "speech.audio.delta":
		return hasNonEmptyString(d, `"audio"`)
	case "transcript.text.delta":
		return hasNonEmptyString(d, `"delta"`)
	case "speech.audio.done", "transcript.text.done":
		if u := member(d, "usage"); isObject(u) {
			s.setOpenAI(u)
		}
		return false
	}

	if bytes.HasPrefix(typ, []byte("response.")) {
		return s.responses(typ, d)
	}
	// An unknown event name: treat the data as a chat-style chunk.
	return s.chunk(d)
}

// LargeEvent handles an SSE event too large to hold whole: head is the
// start of its data and tail the end (the middle was not kept; the two may
// overlap). Type, model and content are read from head as Event reads them
// from a truncated event; usage is read from the last complete "usage" or
// "usageMetadata" object in tail, since every provider puts it last in its
// final event (Gemini's chunks, OpenAI's usage chunk, Responses' terminal
// events, Anthropic's message_delta). It reports whether the event carries
// generated output.
func (s *Stream) LargeEvent(name, head, tail []byte) (content bool) {
	content = s.Event(name, head, true)
	d := head[skipWS(head, 0):]
	if len(d) == 0 || d[0] != '{' {
		return content
	}
	key, u := lastUsage(tail)
	if u == nil {
		return content
	}
	typ := eventType(name, d)
	switch {
	case key == "usageMetadata":
		s.setGemini(u)
	case string(typ) == "message_start" || string(typ) == "message_delta":
		s.setAnthropic(u)
	case string(typ) == "error" || string(typ) == "ping" || string(typ) == "message_stop" ||
		bytes.HasPrefix(typ, []byte("content_block_")) || bytes.HasSuffix(typ, []byte(".delta")):
		// These carry no usage: a match would be something else's.
	default:
		s.setOpenAI(u)
	}
	return content
}

// lastUsage returns the last complete object in b that is the value of a
// "usage" or "usageMetadata" key. b may start anywhere in a document, even
// inside a string; a key is recognised only as a quoted name followed by a
// colon and an opening brace, which text inside a JSON string cannot be
// (its quotes are escaped).
func lastUsage(b []byte) (key string, obj []byte) {
	const prefix = `"usage`
	for end := len(b); end > 0; {
		i := bytes.LastIndex(b[:end], []byte(prefix))
		if i < 0 {
			return "", nil
		}
		end = i
		j := i + len(prefix)
		switch {
		case j < len(b) && b[j] == '"':
			key, j = "usage", j+1
		case bytes.HasPrefix(b[j:], []byte(`Metadata"`)):
			key, j = "usageMetadata", j+len(`Metadata"`)
		default:
			continue
		}
		j = skipWS(b, j)
		if j >= len(b) || b[j] != ':' {
			continue
		}
		if j = skipWS(b, j+1); j >= len(b) || b[j] != '{' {
			continue
		}
		if e := skipContainer(b, j); e > 0 {
			return key, b[j:e]
		}
	}
	return "", nil
}

// eventType returns the SSE event name, or, for data-only streams, the
// value of "type" when it is the first key (Anthropic, Responses and audio
// events put it first; chat chunks start with "id" and get nil).
func eventType(name, d []byte) []byte {
	if len(name) > 0 && string(name) != "message" {
		return name
	}
	i := skipWS(d, 1)
	if !bytes.HasPrefix(d[i:], []byte(`"type"`)) {
		return nil
	}
	i = skipWS(d, i+len(`"type"`))
	if i >= len(d) || d[i] != ':' {
		return nil
	}
	i = skipWS(d, i+1)
	e := skipValue(d, i)
	if e < 0 {
		return nil
	}
	v, escaped, ok := rawString(d[i:e])
	if !ok || escaped {
		return nil
	}
	return v
}

// chunk handles chat-completions style chunks: OpenAI, Azure, DeepSeek,
// SiliconFlow, OpenRouter, Groq, legacy completions and Gemini native.
func (s *Stream) chunk(d []byte) bool {
	content := chatContent(d)
	if len(s.model) == 0 && bytes.Contains(d, []byte(`"model`)) {
		if !s.captureModel(member(d, "model")) {
			s.captureModel(member(d, "modelVersion")) // Gemini native
		}
	}
	usage, usageMetadata := usageKeys(d)
	if usage {
		u := member(d, "usage")
		if !isObject(u) {
			u = member(member(d, "x_groq"), "usage") // Groq before mid-2024
		}
		if isObject(u) {
			s.setOpenAI(u)
		}
	}
	if usageMetadata {
		if u := member(d, "usageMetadata"); isObject(u) {
			s.setGemini(u)
		}
	}
	if s.errType == "" && hasObjectKey(d, `"error"`) {
		if isObject(member(d, "error")) {
			s.setError(d)
		}
	}
	return content
}

// usageKeys reports whether d has a "usage" or a "usageMetadata" key with
// an object value, in one scan since every chunk pays for it.
func usageKeys(d []byte) (usage, usageMetadata bool) {
	const prefix = `"usage`
	for from := 0; from < len(d); {
		j := bytes.Index(d[from:], []byte(prefix))
		if j < 0 {
			break
		}
		j += from + len(prefix)
		from = j
		meta := false
		switch {
		case j < len(d) && d[j] == '"':
			j++
		case bytes.HasPrefix(d[j:], []byte(`Metadata"`)):
			j += len(`Metadata"`)
			meta = true
		default:
			continue
		}
		j = skipWS(d, j)
		if j >= len(d) || d[j] != ':' {
			continue
		}
		if j = skipWS(d, j+1); j < len(d) && d[j] == '{' {
			if meta {
				usageMetadata = true
			} else {
				usage = true
			}
		}
	}
	return usage, usageMetadata
}

// chatContent reports whether a chat-style chunk carries generated output.
// Role-only chunks ("content":""), finish chunks (empty delta), usage-only
// chunks (choices:[]) and Azure prompt_filter_results chunks match none of
// these checks.
func chatContent(d []byte) bool {
	return hasNonEmptyString(d, `"content"`) ||
		hasNonEmptyString(d, `"reasoning_content"`) || // DeepSeek, SiliconFlow
		hasNonEmptyString(d, `"reasoning"`) || // OpenRouter, Groq
		hasNonEmptyArray(d, `"tool_calls"`) ||
		hasNonEmptyString(d, `"text"`) || // legacy completions, Gemini parts
		hasNonEmptyString(d, `"refusal"`) ||
		hasObjectKey(d, `"function_call"`) ||
		hasObjectKey(d, `"audio"`) ||
		hasObjectKey(d, `"functionCall"`) || // Gemini
		hasObjectKey(d, `"inlineData"`) // Gemini audio/image output
}

// responses handles OpenAI Responses API events ("response.*").
func (s *Stream) responses(typ, d []byte) bool {
	if bytes.HasSuffix(typ, []byte(".delta")) {
		// output_text, refusal, function_call_arguments, reasoning_text,
		// reasoning_summary_text, audio, audio.transcript, ... deltas.
		return hasNonEmptyString(d, `"delta"`) || hasObjectKey(d, `"delta"`)
	}
	// Lifecycle events (created, in_progress, completed, incomplete,
	// failed) carry the whole response object.
	if !bytes.Contains(d, []byte(`"response"`)) {
		return false
	}
	var r []byte
	if len(s.model) == 0 {
		r = member(d, "response")
		s.captureModel(member(r, "model"))
	}
	if hasObjectKey(d, `"usage"`) {
		if r == nil {
			r = member(d, "response")
		}
		if u := member(r, "usage"); isObject(u) {
			s.setOpenAI(u)
		}
	}
	if s.errType == "" && string(typ) == "response.failed" {
		if r == nil {
			r = member(d, "response")
		}
		if isObject(member(r, "error")) {
			s.setError(r)
		} else {
			s.errType = "response.failed"
		}
	}
	return false
}

// Body handles a complete non-streaming JSON response: OpenAI chat,
// completions and Responses, Anthropic messages, Gemini native (including
// the JSON array that streamGenerateContent returns without alt=sse), and
// error bodies. truncated has the same meaning as for Event.
func (s *Stream) Body(body []byte, truncated bool) {
	_ = truncated
	b := body[skipWS(body, 0):]
	if len(b) == 0 {
		return
	}
	if b[0] == '[' {
		for i := 1; ; {
			i = skipWS(b, i)
			e := skipValue(b, i)
			if e < 0 {
				return
			}
			s.bodyObject(b[i:e])
			i = skipWS(b, e)
			if i >= len(b) || b[i] != ',' {
				return
			}
			i++
		}
	}
	s.bodyObject(b)
}

func (s *Stream) bodyObject(b []byte) {
	if len(b) == 0 || b[0] != '{' {
		return
	}
	var typ, model, modelVersion, u, um, e []byte
	o := openObject(b)
	for {
		k, v, ok := o.next()
		if !ok {
			break
		}
		switch string(k) {
		case "type":
			typ = v
		case "model":
			model = v
		case "modelVersion":
			modelVersion = v
		case "usage":
			u = v
		case "usageMetadata":
			um = v
		case "error":
			e = v
		}
	}
	if !s.captureModel(model) {
		s.captureModel(modelVersion)
	}
	if isObject(u) {
		// Anthropic's input_tokens excludes cache reads while the Responses
		// API's includes them, so the two same-named shapes need telling
		// apart: Anthropic messages say "type":"message".
		anthropic := string(typ) == `"message"` ||
			s.provider == ProviderAnthropic && member(u, "prompt_tokens") == nil
		if anthropic {
			s.setAnthropic(u)
		} else {
			s.setOpenAI(u)
		}
	}
	if isObject(um) {
		s.setGemini(um)
	}
	if s.errType == "" && isObject(e) {
		s.setError(b)
	}
}

// captureModel stores v as the model if it is a non-empty string and no
// model was stored yet. It reports whether a model is now known.
func (s *Stream) captureModel(v []byte) bool {
	if len(s.model) > 0 {
		return true
	}
	if raw, _, ok := rawString(v); !ok || len(raw) == 0 {
		return false
	}
	s.model, _ = appendString(s.model[:0], v)
	return len(s.model) > 0
}

// setOpenAI replaces the usage with an OpenAI-shaped usage object: chat
// and completions (prompt_/completion_tokens) or Responses and audio
// (input_/output_tokens).
func (s *Stream) setOpenAI(u []byte) {
	var r Usage
	var cached, hit int64
	var hasCached, found bool
	o := openObject(u)
	for {
		k, v, ok := o.next()
		if !ok {
			break
		}
		switch string(k) {
		case "prompt_tokens", "input_tokens":
			r.InputTokens, _ = intValue(v)
			found = true
		case "completion_tokens", "output_tokens":
			r.OutputTokens, _ = intValue(v)
			found = true
		case "prompt_tokens_details", "input_tokens_details":
			cached, hasCached = intValue(member(v, "cached_tokens"))
		case "completion_tokens_details", "output_tokens_details":
			r.ReasoningTokens, _ = intValue(member(v, "reasoning_tokens"))
		case "prompt_cache_hit_tokens": // DeepSeek
			hit, _ = intValue(v)
		}
	}
	if !found {
		return // e.g. transcription usage of type "duration"
	}
	if hasCached {
		r.CachedInputTokens = cached
	} else {
		r.CachedInputTokens = hit
	}
	s.usage, s.hasUsage = r, true
}

// setAnthropic applies an Anthropic usage object; fields present replace
// the earlier values, fields absent keep them (message_delta repeats the
// input fields on newer API versions, and omits them on older ones).
func (s *Stream) setAnthropic(u []byte) {
	o := openObject(u)
	for {
		k, v, ok := o.next()
		if !ok {
			break
		}
		n, isInt := intValue(v)
		if !isInt {
			continue
		}
		switch string(k) {
		case "input_tokens":
			s.antInput = n
		case "cache_creation_input_tokens":
			s.antCacheWrite = n
		case "cache_read_input_tokens":
			s.antCacheRead = n
		case "output_tokens":
			s.antOutput = n
		}
	}
	s.usage = Usage{
		InputTokens:       s.antInput + s.antCacheWrite + s.antCacheRead,
		OutputTokens:      s.antOutput,
		CachedInputTokens: s.antCacheRead,
	}
	s.hasUsage = true
}

// setGemini replaces the usage with a Gemini usageMetadata object.
func (s *Stream) setGemini(u []byte) {
	var r Usage
	found := false
	o := openObject(u)
	for {
		k, v, ok := o.next()
		if !ok {
			break
		}
		n, isInt := intValue(v)
		if !isInt {
			continue
		}
		switch string(k) {
		case "promptTokenCount", "toolUsePromptTokenCount":
			r.InputTokens += n
			found = true
		case "candidatesTokenCount":
			r.OutputTokens += n
			found = true
		case "thoughtsTokenCount":
			r.OutputTokens += n
			r.ReasoningTokens = n
			found = true
		case "cachedContentTokenCount":
			r.CachedInputTokens = n
		}
	}
	if found {
		s.usage, s.hasUsage = r, true
	}
}

// setError records the type of the error in top (an object holding an
// "error" member, or an error event such as the Responses API's
// {"type":"error","code":...}). Only the first error is kept.
func (s *Stream) setError(top []byte) {
	if s.errType != "" {
		return
	}
	if e := member(top, "error"); isObject(e) {
		for _, k := range [...]string{"type", "status", "code"} {
			if t := scalarString(member(e, k)); t != "" {
				s.errType = t
				return
			}
		}
	} else if t := scalarString(member(top, "code")); t != "" {
		s.errType = t
		return
	}
	s.errType = "error"
}

// scalarString returns a string value decoded, or a number as written;
// "" for anything else.
func scalarString(v []byte) string {
	if len(v) == 0 {
		return ""
	}
	if v[0] == '"' {
		return stringValue(v)
	}
	if _, ok := intValue(v); ok {
		return string(v)
	}
	return ""
}
