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
	ant      anthropicUsage // Anthropic reports its usage in parts

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

// routedTo reports whether the response's route names family f.
func (s *Stream) routedTo(f family) bool { return s.family.family() == f }

// setUsage replaces the usage with a complete report.
func (s *Stream) setUsage(u Usage) { s.usage, s.hasUsage = u, true }

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
