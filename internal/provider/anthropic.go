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
//   - Usage is reported in parts that Usage adds up: InputTokens =
//     input_tokens + cache_creation_input_tokens + cache_read_input_tokens
//     (Anthropic reports the three disjointly; cache writes are prompt
//     tokens the model processed); CachedInputTokens =
//     cache_read_input_tokens; CacheCreationInputTokens =
//     cache_creation_input_tokens (both parts of InputTokens, as OpenAI's
//     cached tokens are of its input); OutputTokens = output_tokens, from
//     message_delta (cumulative: the last wins, field by field, and may
//     revise the input too); message_start's output_tokens is a
//     placeholder and is not read. Anthropic reports no reasoning or
//     audio tokens apart (thinking is counted in output_tokens).
//   - Content (ContentBytes): a delta's text, partial_json and thinking,
//     and a tool block's name.
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
	switch string(key) {
	case "system":
		r.addPrompt(val)
		r.pinSystem(val)
	case "metadata":
		if r.User == nil { // OpenAI's "user" wins
			r.User = member(val, "user_id")
		}
	}
}

// anthropicEvent claims the Messages API's events by their names.
func anthropicEvent(s *Stream, typ, d []byte) (content, ok bool) {
	switch string(typ) {
	case "content_block_delta":
		// A delta carries one of text, partial_json (a tool's input) and
		// thinking, the common first; it is what counts towards
		// ContentBytes.
		n := stringBytes(d, `"text"`)
		if n == 0 {
			n = stringBytes(d, `"partial_json"`)
		}
		if n == 0 {
			n = stringBytes(d, `"thinking"`)
		}
		s.addContent(n)
		return n > 0 || bytes.Contains(d, []byte(`"citations_delta"`)), true
	case "content_block_start":
		// Only tool blocks carry a name; the name is generated output, as
		// the first OpenAI tool_calls chunk is. Text blocks start empty.
		n := stringBytes(d, `"name"`) + stringBytes(d, `"text"`)
		s.addContent(n)
		return n > 0, true
	case "message_start":
		m := member(d, "message")
		s.captureModel(member(m, "model"))
		if u := member(m, "usage"); isObject(u) {
			setAnthropicUsage(s, u, true)
		}
		return false, true
	case "message_delta":
		if u := member(d, "usage"); isObject(u) {
			setAnthropicUsage(s, u, false)
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
	case "message_start":
		setAnthropicUsage(s, u, true)
		return true
	case "message_delta":
		setAnthropicUsage(s, u, false)
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
	setAnthropicUsage(s, u, false)
	return true
}

// setAnthropicUsage applies an Anthropic usage object. Each count present
// replaces the earlier value and each count absent keeps it:
// message_delta's usage is cumulative, repeats the input counts on newer
// API versions (and revises them: server tools can raise input_tokens
// from message_start's 25 to 10,682), and omits them on older ones. At
// message_start (start), output_tokens is a placeholder (1, before any
// output), never a count: it is not stored, so that a stream cut before
// its message_delta has no output count and is estimated instead.
func setAnthropicUsage(s *Stream, u []byte, start bool) {
	p := &s.parts
	o := openObject(u)
	for {
		k, v, ok := o.next()
		if !ok {
			break
		}
		switch string(k) {
		case "input_tokens":
			p.setPart(partInput, v)
		case "cache_creation_input_tokens":
			p.setPart(partCacheWrite, v)
		case "cache_read_input_tokens":
			p.setPart(partCached, v)
		case "output_tokens":
			if !start {
				p.setPart(partOutput, v)
			}
		}
	}
	s.usageReported(usageAnthropic)
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
