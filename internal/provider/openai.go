package provider

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// The OpenAI-compatible family: OpenAI's chat completions, completions,
// Responses and embeddings APIs, and every server that speaks them —
// DeepSeek, SiliconFlow, OpenRouter, Groq, Gemini's OpenAI endpoint and
// most others. It is the default family: a route without a provider is
// one of its routes, and an event or usage object that no family
// recognises is read as OpenAI's.
//
//   - Requests: "model", "stream", "stream_options", the output bound
//     (max_completion_tokens, max_output_tokens, max_tokens) and the prompt
//     (messages, input, prompt, instructions, tools, functions). Billed in
//     tokens, except OpenAI's audio paths (openaispeech.go); embeddings
//     generate no output.
//   - Usage edit: a streamed chat completion that did not ask for usage
//     gets stream_options.include_usage, so that its last chunk reports
//     it (UsageChunk tells that chunk; RefusesUsageEdit an upstream that
//     does not know the parameter).
//   - Events: chat chunks are data-only JSON with "choices" (and [DONE] at
//     the end); the Responses API names its events "response.*". Usage is
//     prompt_/completion_tokens (chat) or input_/output_tokens (Responses):
//     InputTokens and OutputTokens; CachedInputTokens =
//     *_tokens_details.cached_tokens (DeepSeek: prompt_cache_hit_tokens);
//     ReasoningTokens = completion_/output_tokens_details.reasoning_tokens;
//     AudioInputTokens and AudioOutputTokens = the audio_tokens of the
//     prompt and completion details. OpenAI reports no cache writes. The
//     last report wins, field by field (SiliconFlow repeats its
//     cumulative usage on every chunk).
//   - Content (ContentBytes): a chunk's content, reasoning_content,
//     reasoning, refusal or legacy text, a tool call's name and
//     arguments, an audio transcript (chatContent); a Responses delta's
//     text (audio deltas excepted).
//   - Errors: a chunk with an "error" object; Responses' response.failed.
//   - WebSocket sessions: OpenAI Realtime and the Responses API's
//     WebSocket mode (openAIRealtimeEvent), and Gemini Live (gemini.go).
//   - Error shape: ShapeOpenAI.
type openAI struct{ defaults }

func (openAI) name() string { return "openai" }
func (openAI) routed() bool { return true }

// billing: OpenAI's audio endpoints bill characters or seconds, and an
// embedding generates no output, so it reserves none by default.
func (openAI) billing(path string) (tokens, output bool) {
	return !openAIAudio(path), !strings.Contains(path, "/embeddings")
}

// Requests.

// openAIRequestMember reads OpenAI's members of a JSON request body.
func openAIRequestMember(r *requestScan, key, val []byte) {
	switch string(key) {
	case "model":
		if m := stringValue(val); m != "" {
			r.Model = m
		}
	case "stream":
		r.Stream = string(val) == "true"
	case "stream_options":
		r.IncludeUsage = string(member(val, "include_usage")) == "true"
	case "max_completion_tokens":
		r.offerMaxOutput(rankMaxCompletionTokens, val)
	case "max_output_tokens":
		r.offerMaxOutput(rankMaxOutputTokens, val)
	case "max_tokens":
		r.offerMaxOutput(rankMaxTokens, val)
	case "messages", "input", "prompt", "instructions", "tools", "functions":
		r.addPrompt(val)
	}
}

// usageEdit asks a streamed request that did not ask for usage to report
// it (includeUsageEdit decides whether the request is a chat completion).
func (openAI) usageEdit(path string, body []byte, r Request) (Edit, bool) {
	if !r.Stream || r.IncludeUsage {
		return Edit{}, false
	}
	return includeUsageEdit(path, body)
}

// acceptsUsageEdit: OpenAI and the servers that speak its API take
// stream_options; an api-version parameter, which only Azure uses (an
// "openai" route in front of Azure), is judged as Azure's.
func (openAI) acceptsUsageEdit(query string) bool { return azureAcceptsStreamOptions(query) }

// The texts includeUsageEdit inserts, by Edit.ins (editText).
const (
	insStreamOptions = 1 + iota // a new top-level member
	insObject                   // replaces "stream_options": null
	insTrue                     // replaces the value of "include_usage"
	insMember                   // into an empty stream_options object
	insMemberComma              // before the members of stream_options
)

// editText is the text includeUsageEdit inserts for Edit.ins.
func editText(ins uint8) string {
	switch ins {
	case insStreamOptions:
		return `,"stream_options":{"include_usage":true}`
	case insObject:
		return `{"include_usage":true}`
	case insTrue:
		return `true`
	case insMember:
		return `"include_usage":true`
	case insMemberComma:
		return `"include_usage":true,`
	}
	return ""
}

// includeUsageEdit returns the edit that sets stream_options.include_usage
// to true in a streaming chat completions request (path ends in
// /chat/completions, "stream": true) that did not ask for it, so the relay
// learns the usage. Only the bytes needed are inserted or replaced; the
// rest of the body keeps its exact layout. ok is false when the request
// already asks for usage, is not a streaming chat completions request, or
// is not a valid JSON object (or is too large to edit, over 4 GiB).
//
// An explicit "include_usage": false (or null) is replaced with true: the
// relay needs the usage either way, and Request.IncludeUsage tells the
// caller that the client did not ask for the extra chunk.
func includeUsageEdit(path string, body []byte) (Edit, bool) {
	if !strings.HasSuffix(stripQuery(path), "/chat/completions") || !json.Valid(body) {
		return Edit{}, false
	}
	o := openObject(body)
	if o.done {
		return Edit{}, false
	}
	stream := false
	soStart, soEnd := -1, -1
	lastEnd := -1
	for {
		k, v, more := o.next()
		if !more {
			break
		}
		lastEnd = o.i
		switch string(k) {
		case "stream":
			stream = string(v) == "true"
		case "stream_options":
			soStart, soEnd = o.i-len(v), o.i
		}
	}
	if !stream || lastEnd < 0 {
		return Edit{}, false
	}
	if soStart < 0 {
		return newEdit(lastEnd, lastEnd, insStreamOptions)
	}
	so := body[soStart:soEnd]
	if string(so) == "null" {
		return newEdit(soStart, soEnd, insObject)
	}
	if so[0] != '{' {
		return Edit{}, false // not ours to repair; upstream will reject it
	}
	inner := openObject(so)
	for {
		k, v, more := inner.next()
		if !more {
			break
		}
		if string(k) == "include_usage" {
			if string(v) == "true" {
				return Edit{}, false
			}
			end := soStart + inner.i
			return newEdit(end-len(v), end, insTrue)
		}
	}
	open := soStart + 1
	if j := skipWS(body, open); body[j] == '}' {
		return newEdit(open, open, insMember)
	}
	return newEdit(open, open, insMemberComma)
}

// UsageChunk reports whether the event just observed (by Event) was the
// usage-only chunk that include_usage adds to a chat completions stream: a
// chat chunk whose "choices" is empty and whose "usage" is an object.
// Azure's prompt_filter_results chunk also has empty choices, but no
// usage. The relay observes this chunk and, when the client did not ask
// for it, does not send it on (clients that index choices[0] fail on it).
// It costs nothing: the chunk's usage is read anyway.
func (s *Stream) UsageChunk() bool { return s.usageChunk }

// RefusesUsageEdit reports whether the body of a 400 answer names
// stream_options: an upstream that does not know the parameter (Azure
// before api-version 2024-09-01-preview answers "Unknown parameter:
// 'stream_options'." or "Unrecognized request argument supplied:
// stream_options"). body may be a prefix of the answer.
func RefusesUsageEdit(body []byte) bool {
	return bytes.Contains(body, []byte("stream_options"))
}

// Events.

// openAIEvent claims the Responses API's events, and the chat chunks that
// show it by their first key: "id" (OpenAI, Azure, DeepSeek, Groq,
// OpenRouter, SiliconFlow, ...) or "choices" (Azure's filter chunks,
// servers that sort their keys). A look at the first key costs next to nothing on the most
// common event there is; a data-only chunk that starts otherwise is left
// to the other families (Gemini's) and, when none claims it, read as a
// chat chunk after all.
func openAIEvent(s *Stream, typ, d []byte) (content, ok bool) {
	if bytes.HasPrefix(typ, []byte("response.")) {
		return responsesEvent(s, typ, d), true
	}
	if len(typ) == 0 {
		switch string(firstKey(d)) {
		case "id", "choices":
			return openAIChunk(s, d), true
		}
	}
	return false, false
}

// openAITailUsage claims the usage in a large event's tail for chat chunks
// and Responses events, which put their usage last; a delta event carries
// none, so a usage object in its tail is something else's (generated
// text, a tool's arguments).
func openAITailUsage(s *Stream, typ []byte, key string, u []byte) bool {
	if key != "usage" {
		return false
	}
	switch {
	case bytes.HasSuffix(typ, []byte(".delta")):
		return true
	case len(typ) == 0 || bytes.HasPrefix(typ, []byte("response.")):
		setOpenAIUsage(s, u)
		return true
	}
	return false
}

// openAIDone reports whether non-JSON data is the [DONE] that ends a chat
// completions stream.
func openAIDone(d []byte) bool { return string(bytes.TrimSpace(d)) == "[DONE]" }

// openAIChunk handles chat-completions style chunks: OpenAI, Azure,
// DeepSeek, SiliconFlow, OpenRouter, Groq and legacy completions.
func openAIChunk(s *Stream, d []byte) bool {
	n, content := chatContent(d)
	s.addContent(n)
	if len(s.model) == 0 && bytes.Contains(d, []byte(`"model"`)) {
		s.captureModel(member(d, "model"))
	}
	if hasObjectKey(d, `"usage"`) {
		u := member(d, "usage")
		if isObject(u) {
			c := member(d, "choices")
			s.usageChunk = len(c) > 0 && c[0] == '[' && skipWS(c, 1) == len(c)-1
		} else {
			u = member(member(d, "x_groq"), "usage") // Groq before mid-2024
		}
		if isObject(u) {
			setOpenAIUsage(s, u)
		}
	}
	if s.errType == "" && hasObjectKey(d, `"error"`) {
		if isObject(member(d, "error")) {
			s.setError(d)
		}
	}
	return content
}

// chatContent reports whether a chat-style chunk carries generated output,
// and the bytes of it that count towards ContentBytes: the first
// non-empty of content, reasoning_content (DeepSeek, SiliconFlow),
// reasoning (OpenRouter, Groq), refusal and text (legacy completions;
// OpenRouter repeats its reasoning as reasoning_details[].text, so text
// counts only when nothing before it did); else a tool call's name and
// arguments, or an audio delta's transcript. A chunk carries one delta,
// so the common one, content, costs one look. Role-only chunks
// ("content":""), finish chunks (empty delta), usage-only chunks
// (choices:[]) and Azure's prompt_filter_results chunks and content
// filter annotations carry none of these.
func chatContent(d []byte) (n int64, content bool) {
	for _, k := range [...]string{`"content"`, `"reasoning_content"`, `"reasoning"`, `"refusal"`, `"text"`} {
		if n = stringBytes(d, k); n > 0 {
			return n, true
		}
	}
	switch {
	case hasNonEmptyArray(d, `"tool_calls"`), hasObjectKey(d, `"function_call"`):
		return stringBytes(d, `"name"`) + stringBytes(d, `"arguments"`), true
	case hasObjectKey(d, `"audio"`):
		return stringBytes(d, `"transcript"`), true
	}
	return 0, false
}

// responsesEvent handles the Responses API's events ("response.*").
func responsesEvent(s *Stream, typ, d []byte) bool {
	switch string(typ) {
	case "response.completed", "response.failed", "response.incomplete":
		s.done = true
	}
	if bytes.HasSuffix(typ, []byte(".delta")) {
		// output_text, refusal, function_call_arguments, reasoning_text,
		// reasoning_summary_text, audio, audio.transcript, ... deltas. The
		// delta's text counts towards ContentBytes, except base64 audio.
		n := stringBytes(d, `"delta"`)
		if !bytes.HasSuffix(typ, []byte(".audio.delta")) {
			s.addContent(n)
		}
		return n > 0 || hasObjectKey(d, `"delta"`)
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
			setOpenAIUsage(s, u)
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

// setOpenAIUsage applies an OpenAI-shaped usage object: chat and
// completions (prompt_/completion_tokens) or Responses and audio
// (input_/output_tokens). Cached and audio input tokens are parts of the
// input, reasoning and audio output tokens parts of the output, the
// convention Usage follows; DeepSeek's prompt_cache_hit_tokens counts as
// cached when prompt_tokens_details.cached_tokens is absent. The counts
// it carries replace the earlier ones; an object with neither an input
// nor an output count (transcription's {"type":"duration"}) is no report.
func setOpenAIUsage(s *Stream, u []byte) {
	if r, ok := openAIUsageParts(u); ok {
		s.parts.merge(&r)
		s.usageReported(usageOpenAI)
	}
}

// openAIUsageParts reads the counts an OpenAI-shaped usage object
// reports (setOpenAIUsage's mapping); ok is false when it has neither an
// input nor an output count. OpenAI Realtime's response.done writes its
// output details as output_token_details (sic).
func openAIUsageParts(u []byte) (r usageParts, ok bool) {
	o := openObject(u)
	for {
		k, v, ok := o.next()
		if !ok {
			break
		}
		switch string(k) {
		case "prompt_tokens", "input_tokens":
			r.setPart(partInput, v)
		case "completion_tokens", "output_tokens":
			r.setPart(partOutput, v)
		case "prompt_tokens_details", "input_tokens_details", "input_token_details":
			// input_token_details (sic): transcription's.
			r.setPart(partCached, member(v, "cached_tokens"))
			r.setPart(partAudioIn, member(v, "audio_tokens"))
		case "completion_tokens_details", "output_tokens_details", "output_token_details":
			r.setPart(partReasoning, member(v, "reasoning_tokens"))
			r.setPart(partAudioOut, member(v, "audio_tokens"))
		case "prompt_cache_hit_tokens": // DeepSeek
			r.setPart(partCacheHit, v)
		}
	}
	return r, r.has(partInput) || r.has(partOutput)
}

// Errors the relay answers.

// appendOpenAIError appends ShapeOpenAI: {"error":{"message","type",
// "param","code"}}, the relay's error types mapped to OpenAI's types, with
// a code naming the relay's reason.
func appendOpenAIError(b []byte, errType, message string) []byte {
	typ, code := openAIErrorType(errType)
	b = append(b, `{"error":{"message":`...)
	b = strconv.AppendQuote(b, message)
	b = append(b, `,"type":`...)
	b = strconv.AppendQuote(b, typ)
	b = append(b, `,"param":null,"code":`...)
	b = strconv.AppendQuote(b, code)
	return append(b, "}}"...)
}

// openAIErrorType maps the relay's error types (its ErrorType values) to
// OpenAI's error type and a code.
func openAIErrorType(errType string) (typ, code string) {
	switch errType {
	case "auth":
		return "invalid_request_error", "invalid_api_key"
	case "rate_limited":
		return "rate_limit_error", "rate_limit_exceeded"
	case "body_too_large":
		return "invalid_request_error", "request_too_large"
	case "bad_request":
		return "invalid_request_error", "invalid_request"
	case "body_timeout":
		return "invalid_request_error", "request_timeout"
	case "no_route":
		return "invalid_request_error", "not_found"
	case "method_not_allowed":
		return "invalid_request_error", "method_not_allowed"
	case "upstream_timeout":
		return "server_error", "upstream_timeout"
	case "shutting_down", "limiter", "overloaded":
		return "server_error", "service_unavailable"
	case "client_canceled":
		return "invalid_request_error", "client_canceled"
	default:
		return "server_error", "upstream_error"
	}
}

// WebSocket sessions (realtime.go).

// realtime: OpenAI's routes carry OpenAI Realtime, the Responses API's
// WebSocket mode and Gemini Live, told apart by shape.
func (openAI) realtime() realtimeProto { return realtimeByShape }

// openAIRealtimeEvent observes one server event of OpenAI Realtime (GA
// and beta names) or of the Responses API's WebSocket mode, whose events
// are its SSE events as JSON messages:
//
//   - Content: any response.*.delta: output_audio (beta: audio),
//     output_text (text), output_audio_transcript (audio_transcript),
//     function_call_arguments, and the Responses API's deltas.
//   - Usage: each response.done's response.usage (Realtime), each
//     response.completed's, response.incomplete's or response.failed's
//     (Responses), read by the mapping chat and Responses use
//     (openAIUsageParts): input_tokens, output_tokens and their
//     details: cached_tokens and audio_tokens of the input, audio_tokens
//     of the output. Responses are summed over the session; each one's
//     total is settled at once (RealtimeFact.Tokens). The usage of
//     conversation.item.input_audio_transcription.completed (the input
//     transcription, billed at the transcription model's price) is added
//     likewise when it counts tokens; a {"type":"duration"} usage counts
//     none.
//   - Errors: the error event; the Responses API's response.failed.
//   - Model: session.created's and session.updated's session.model; the
//     Responses API's response.model.
func openAIRealtimeEvent(u *rtUpstream, typ, d, tail []byte) (f RealtimeFact) {
	if bytes.HasPrefix(typ, []byte("response.")) && bytes.HasSuffix(typ, []byte(".delta")) {
		f.Content = true // the common case, audio deltas, costs the two checks
		return f
	}
	switch string(typ) {
	case "error":
		f.Error = true
	case "session.created", "session.updated":
		if len(u.model) == 0 {
			u.captureModel(member(member(d, "session"), "model"))
		}
	case "response.created":
		if len(u.model) == 0 {
			u.captureModel(member(member(d, "response"), "model"))
		}
	case "response.done", "response.completed", "response.incomplete", "response.failed":
		r := member(d, "response")
		if len(u.model) == 0 {
			u.captureModel(member(r, "model"))
		}
		if p, ok := openAIUsageParts(tailUsage(r, "usage", tail)); ok {
			f.Tokens = u.addResponse(usageOpenAI, &p)
		}
		f.Error = string(typ) == "response.failed"
	case "conversation.item.input_audio_transcription.completed":
		if p, ok := openAIUsageParts(tailUsage(d, "usage", tail)); ok {
			f.Tokens = u.addResponse(usageOpenAI, &p)
		}
	}
	return f
}
