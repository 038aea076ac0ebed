package provider

// Stream observes one response: feed it every SSE event (Event, or
// LargeEvent for one too large to hold) or the JSON body (Body, and
// BodyTail for the end of one too long to hold), then read Usage, Model
// and ErrorType. dispatch.go offers what it is fed to the families.
//
// A Stream must be Reset (or made with NewStream) before use; Reset keeps
// the internal buffer so a pooled Stream does not allocate again.
// A Stream is not safe for concurrent use.
type Stream struct {
	family Family // the route's

	usage    Usage
	hasUsage bool
	reports  uint32     // usage reports seen (Reports)
	parts    usageParts // the last value of each count reported
	content  int64      // bytes of generated content seen (ContentBytes)
	texts    int64      // events that carried some of them

	model   []byte // reused across Reset so capture does not allocate
	errType string
	done    bool // a final event was seen

	usageChunk bool // the last event was a usage-only chat chunk (UsageChunk)
}

// NewStream returns a Stream ready for a response on a route of family f.
func NewStream(f Family) *Stream {
	s := new(Stream)
	s.Reset(f)
	return s
}

// Reset prepares s for a new response on a route of family f.
func (s *Stream) Reset(f Family) {
	model := s.model[:0]
	if cap(model) > maxKeptModel {
		model = nil // do not pin a freak buffer in a pool
	}
	*s = Stream{family: f, model: model}
}

// maxKeptModel bounds the model buffer Reset keeps for reuse.
const maxKeptModel = 256

// Usage returns the usage seen so far. The final report wins, field by
// field: a later report replaces each count it carries and keeps the
// earlier value of each count it omits (providers that repeat usage send
// cumulative numbers; Anthropic's message_delta may revise the input of
// its message_start).
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

// routedTo reports whether the response's route names family f.
func (s *Stream) routedTo(f family) bool { return s.family.family() == f }

// usageReported recomputes the usage from the parts after a report, by
// the formula of kind, the reporting family's.
func (s *Stream) usageReported(k usageKind) {
	s.usage, s.hasUsage = usageOf(k, &s.parts), true
	s.reports++
}

// Reports counts the usage reports seen so far: a caller that compares it
// with the count it saw last learns, at no cost, that Usage changed.
func (s *Stream) Reports() uint32 { return s.reports }

// ContentBytes is the length of the generated content seen so far: the
// bytes, as written in the JSON (escapes included), of the text, reasoning
// and tool-call argument strings of the events that carry output. Audio
// and images count nothing. Each family's file says which strings it
// counts; the count costs no allocation.
func (s *Stream) ContentBytes() int64 { return s.content }

// addContent counts n bytes of generated content, carried by one event.
func (s *Stream) addContent(n int64) {
	if n > 0 {
		s.content += n
		s.texts++
	}
}

// OutputEstimate estimates the output tokens of the content seen so far:
// ContentBytes / 4, rounded up, as the relay counts a prompt, but at
// least one token per event that carried content (OpenAI-compatible
// servers send one token per chunk, which bytes / 4 undercounts for short
// words and code).
func (s *Stream) OutputEstimate() int64 { return max((s.content+3)/4, s.texts) }

// Estimate returns the usage with what the provider has not reported
// filled in by estimate, for a response cut short: the input from
// promptEstimate (the request's Request.PromptEstimate, its prompt's bytes
// / 4) when no input count arrived, the output from OutputEstimate when
// no output count arrived. estimated reports whether either was filled
// in. Counts the provider reported stand as reported; the parts of a
// total (cached, reasoning, audio) are never estimated.
func (s *Stream) Estimate(promptEstimate int64) (u Usage, estimated bool) {
	u = s.usage
	in, out := s.parts.reported()
	if !in {
		u.InputTokens, estimated = max(promptEstimate, 0), true
	}
	if !out {
		u.OutputTokens, estimated = s.OutputEstimate(), true
	}
	return u, estimated
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

// setError records the type of the error in top (an object holding an
// "error" member, or an error event such as the Responses API's
// {"type":"error","code":...}). Only the first error is kept. Every
// family's error objects are read here: their type, else their status
// (Gemini), else their code.
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
