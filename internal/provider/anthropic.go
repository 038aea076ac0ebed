package provider

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
)

// The Anthropic family: the Messages API.
//
//   - Requests: "system" holds prompt text; the other members (model,
//     stream, max_tokens, messages, tools) have OpenAI's names and meaning
//     and are read once, in openai.go. Billed in tokens.
//   - Events: named message_start (the model, and input usage),
//     content_block_start / content_block_delta / content_block_stop,
//     message_delta (cumulative output usage), message_stop (the end) and
//     ping; an in-band "error" event (dispatch.go).
//   - Usage is reported in parts that Usage adds up: input_tokens +
//     cache_creation_input_tokens + cache_read_input_tokens are the input
//     (Anthropic reports the three disjointly; cache writes are prompt
//     tokens the model processed), cache_read_input_tokens the cached
//     input.
//   - Error shape: ShapeAnthropic, also for a request that looks like
//     Anthropic's (anthropic-version, a /messages path) before its route
//     is known.
type anthropic struct{ defaults }

func (anthropic) name() string { return "anthropic" }
func (anthropic) routed() bool { return true }
func (anthropic) shape() Shape { return ShapeAnthropic }

func (anthropic) recognises(h http.Header, path string) bool {
	return h.Get("Anthropic-Version") != "" || strings.HasSuffix(path, "/messages")
}

// anthropicRequestMember reads the Messages API's own request member.
func anthropicRequestMember(r *requestScan, key, val []byte) {
	if string(key) == "system" {
		r.addPrompt(val)
	}
}

// anthropicEvent claims the Messages API's events by their names.
func anthropicEvent(s *Stream, typ, d []byte) (content, ok bool) {
	switch string(typ) {
	case "content_block_delta":
		return hasNonEmptyString(d, `"text"`) ||
			hasNonEmptyString(d, `"partial_json"`) ||
			hasNonEmptyString(d, `"thinking"`) ||
			bytes.Contains(d, []byte(`"citations_delta"`)), true
	case "content_block_start":
		// Only tool blocks carry a name; the name is generated output, as
		// the first OpenAI tool_calls chunk is. Text blocks start empty.
		return hasNonEmptyString(d, `"name"`) || hasNonEmptyString(d, `"text"`), true
	case "message_start":
		m := member(d, "message")
		s.captureModel(member(m, "model"))
		if u := member(m, "usage"); isObject(u) {
			setAnthropicUsage(s, u)
		}
		return false, true
	case "message_delta":
		if u := member(d, "usage"); isObject(u) {
			setAnthropicUsage(s, u)
		}
		return false, true
	case "message_stop":
		s.done = true
		return false, true
	case "ping", "content_block_stop":
		return false, true
	}
	return false, false
}

// anthropicTailUsage claims the usage in a large event's tail for the
// Messages API's events.
func anthropicTailUsage(s *Stream, typ []byte, key string, u []byte) bool {
	if key != "usage" {
		return false
	}
	switch string(typ) {
	case "message_start", "message_delta":
		setAnthropicUsage(s, u)
		return true
	case "ping", "message_stop":
		return true // no usage: a match would be something else's
	}
	return bytes.HasPrefix(typ, []byte("content_block_"))
}

// anthropicBodyUsage claims a JSON body's usage object if it is
// Anthropic's. A Messages body says "type":"message". Without it (the tail
// of a long body), a usage object on an Anthropic route is Anthropic's
// unless it has OpenAI's prompt_tokens: the Responses API's usage has
// Anthropic's names but counts cache reads inside input_tokens.
func anthropicBodyUsage(s *Stream, typ, u []byte) bool {
	if string(typ) != `"message"` &&
		!(s.routedTo(anthropic{}) && member(u, "prompt_tokens") == nil) {
		return false
	}
	setAnthropicUsage(s, u)
	return true
}

// anthropicUsage keeps the parts of Anthropic's usage: input at
// message_start, cumulative output in message_delta, and a delta may
// repeat the input fields, so each field is replaced rather than added.
type anthropicUsage struct {
	input, cacheWrite, cacheRead, output int64
}

// setAnthropicUsage applies an Anthropic usage object; fields present
// replace the earlier values, fields absent keep them (message_delta
// repeats the input fields on newer API versions, and omits them on older
// ones).
func setAnthropicUsage(s *Stream, u []byte) {
	a := &s.ant
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
			a.input = n
		case "cache_creation_input_tokens":
			a.cacheWrite = n
		case "cache_read_input_tokens":
			a.cacheRead = n
		case "output_tokens":
			a.output = n
		}
	}
	s.setUsage(Usage{
		InputTokens:       a.input + a.cacheWrite + a.cacheRead,
		OutputTokens:      a.output,
		CachedInputTokens: a.cacheRead,
	})
}

// appendAnthropicError appends ShapeAnthropic: {"type":"error","error":
// {"type","message"}}, the relay's error types mapped to Anthropic's.
func appendAnthropicError(b []byte, errType, message string) []byte {
	b = append(b, `{"type":"error","error":{"type":`...)
	b = strconv.AppendQuote(b, anthropicErrorType(errType))
	b = append(b, `,"message":`...)
	b = strconv.AppendQuote(b, message)
	return append(b, "}}"...)
}

// anthropicErrorType maps the relay's error types (its ErrorType values)
// to Anthropic's error types.
func anthropicErrorType(errType string) string {
	switch errType {
	case "auth":
		return "authentication_error"
	case "rate_limited":
		return "rate_limit_error"
	case "body_too_large":
		return "request_too_large"
	case "bad_request", "client_canceled", "method_not_allowed", "body_timeout":
		return "invalid_request_error"
	case "no_route":
		return "not_found_error"
	case "shutting_down", "limiter", "overloaded":
		return "overloaded_error"
	default:
		return "api_error"
	}
}
