package provider

import (
	"bytes"
	"strings"
)

// This file offers what a Stream is fed to the families, in one order:
// OpenAI, Anthropic, OpenAI speech, Gemini. The first family that claims
// an event, or the usage in a large event's tail, observes it; what none
// claims is read as OpenAI's (see the package doc).

// Event handles one complete SSE event. name is the event field (nil if
// none), data the joined data lines. truncated means data was cut to a
// cap by the caller; values are only read when complete, so a cut event
// can still report content but not a usage object it lost. It reports
// whether the event carries generated output.
func (s *Stream) Event(name, data []byte, truncated bool) (content bool) {
	_ = truncated // see above: the scanner never trusts incomplete values
	s.usageChunk = false
	d := data[skipWS(data, 0):]
	if len(d) == 0 || d[0] != '{' {
		if openAIDone(d) {
			s.done = true
		}
		return false // comments, keep-alives
	}
	typ := eventType(name, d)
	if string(typ) == "error" {
		// Anthropic's and the Responses API's in-band error; setError
		// reads both shapes.
		s.done = true
		s.setError(d)
		return false
	}
	if content, ok := openAIEvent(s, typ, d); ok {
		return content
	}
	if content, ok := anthropicEvent(s, typ, d); ok {
		return content
	}
	if content, ok := openAISpeechEvent(s, typ, d); ok {
		return content
	}
	if content, ok := geminiEvent(s, d); ok {
		return content
	}
	return openAIChunk(s, d)
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
	if string(typ) == "error" {
		return content // it carries no usage: a match would be something else's
	}
	if !openAITailUsage(s, typ, key, u) &&
		!anthropicTailUsage(s, typ, key, u) &&
		!openAISpeechTailUsage(s, typ, key, u) &&
		!geminiTailUsage(s, key, u) {
		setOpenAIUsage(s, u) // only "usage" is left: Gemini claims usageMetadata
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

// ReadsBody reports whether a response body of media type mt (lower case,
// without parameters) is one the families read: JSON, or newline-delimited
// JSON. Other bodies (audio, images, text) pass unobserved.
func ReadsBody(mt string) bool {
	return mt == "application/json" || strings.HasSuffix(mt, "+json") || mt == "application/x-ndjson"
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

// bodyObject reads one JSON object of a body in one pass: the members the
// families share here, Gemini's by Gemini.
func (s *Stream) bodyObject(b []byte) {
	if len(b) == 0 || b[0] != '{' {
		return
	}
	var typ, model, u, e []byte
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
		case "usage":
			u = v
		case "error":
			e = v
		default:
			geminiBodyMember(s, k, v)
		}
	}
	s.captureModel(model)
	if isObject(u) {
		s.bodyUsage(typ, u)
	}
	if s.errType == "" && isObject(e) {
		s.setError(b)
	}
}

// bodyUsage applies a body's "usage" object: Anthropic's if it claims it,
// else OpenAI's.
func (s *Stream) bodyUsage(typ, u []byte) {
	if !anthropicBodyUsage(s, typ, u) {
		setOpenAIUsage(s, u)
	}
}

// BodyTail handles the end of a JSON body too long to hold whole, after
// Body saw its head: the last usage object in it ("usage", or Gemini's
// "usageMetadata"), which every provider puts near the end, is read as
// that member of the body (OpenAI's embeddings put "usage" after
// megabytes of vectors).
func (s *Stream) BodyTail(tail []byte) {
	key, u := lastUsage(tail)
	switch {
	case u == nil:
	case key == "usage":
		s.bodyUsage(nil, u)
	default:
		geminiTailUsage(s, key, u)
	}
}
