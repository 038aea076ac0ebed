package usage

import (
	"bytes"
	"encoding/json"
	"strings"
	"unicode/utf8"
)

// RequestInfo is what the relay learns from a request body before
// forwarding it.
type RequestInfo struct {
	// Model is the body's "model". When the body has none it comes from
	// the path: the Azure deployment (/openai/deployments/{name}/...), the
	// Gemini native model (/models/{model}:generateContent), or for Azure
	// TTS the first <voice name="..."> of the SSML.
	Model string
	// Stream is true for "stream": true, OpenAI speech "stream_format":
	// "sse", and Gemini native :streamGenerateContent paths.
	Stream bool
	// MaxOutputTokens is max_completion_tokens, max_output_tokens,
	// max_tokens or generationConfig.maxOutputTokens (first present in that
	// order); 0 if absent.
	MaxOutputTokens int64
	// PromptEstimate is a rough token count: the bytes of every JSON string
	// value under the prompt-bearing fields (messages, input, prompt,
	// system, instructions, contents, systemInstruction, tools, functions),
	// divided by 4 and rounded up. Values of structural or binary keys
	// (type, role, id, url, data, image_url, signature, ...) are left out
	// so that a base64 image does not count as a novel. Escapes count as
	// written. For SSML it is the normalized text length in bytes / 4.
	PromptEstimate int64
	// Characters is what TTS bills: for OpenAI speech the runes of "input"
	// as decoded; for Azure SSML the runes of the text content with tags
	// and comments removed, entities counted as one character and XML
	// whitespace normalized (each run of whitespace counts once, leading
	// and trailing whitespace not at all), because indentation between
	// tags is formatting, not speech. A plain-text Azure body counts the
	// same way.
	Characters int64
	// IncludeUsage is true if the client set stream_options.include_usage.
	IncludeUsage bool
	// StreamFormat is OpenAI speech "stream_format" ("sse" or "audio") if
	// given.
	StreamFormat string
}

// ParseRequest reads a request body. It never fails: what it cannot read is
// left zero.
func ParseRequest(provider, path, contentType string, body []byte) RequestInfo {
	var ri RequestInfo
	path = stripQuery(path)
	b := body[skipWS(body, 0):]
	if provider == ProviderAzureTTS || isSSMLType(contentType) ||
		(len(b) > 0 && b[0] == '<') {
		parseSSML(b, &ri)
		return ri
	}

	var maxCompletion, maxOutput, maxTokens, maxGemini []byte
	var input, voice []byte
	var promptBytes int64
	o := openObject(b)
	for {
		k, v, ok := o.next()
		if !ok {
			break
		}
		switch string(k) {
		case "model":
			if m := stringValue(v); m != "" {
				ri.Model = m
			}
		case "stream":
			ri.Stream = string(v) == "true"
		case "stream_options":
			ri.IncludeUsage = string(member(v, "include_usage")) == "true"
		case "stream_format":
			ri.StreamFormat = stringValue(v)
		case "max_completion_tokens":
			maxCompletion = v
		case "max_output_tokens":
			maxOutput = v
		case "max_tokens":
			maxTokens = v
		case "generationConfig":
			maxGemini = member(v, "maxOutputTokens")
		case "voice":
			voice = v
		}
		switch string(k) {
		case "input":
			input = v
			promptBytes += textBytes(v, 0)
		case "messages", "prompt", "system", "instructions", "contents",
			"systemInstruction", "tools", "functions":
			promptBytes += textBytes(v, 0)
		}
	}
	if ri.StreamFormat == "sse" {
		ri.Stream = true
	}
	for _, v := range [...][]byte{maxCompletion, maxOutput, maxTokens, maxGemini} {
		if n, ok := intValue(v); ok {
			ri.MaxOutputTokens = n
			break
		}
	}
	if strings.HasSuffix(path, "/audio/speech") || voice != nil && input != nil {
		ri.Characters = runeLen(input)
	}
	ri.PromptEstimate = (promptBytes + 3) / 4

	// Azure names the deployment, and Gemini native the model, in the path.
	if dep, ok := pathSegmentAfter(path, "/deployments/"); ok && ri.Model == "" {
		ri.Model = dep
	}
	if m, ok := pathSegmentAfter(path, "/models/"); ok {
		if model, method, found := strings.Cut(m, ":"); found {
			if ri.Model == "" {
				ri.Model = model
			}
			if method == "streamGenerateContent" {
				ri.Stream = true
			}
		}
	}
	return ri
}

func stripQuery(path string) string {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		return path[:i]
	}
	return path
}

// pathSegmentAfter returns the path segment that follows marker.
func pathSegmentAfter(path, marker string) (string, bool) {
	i := strings.Index(path, marker)
	if i < 0 {
		return "", false
	}
	seg := path[i+len(marker):]
	if j := strings.IndexByte(seg, '/'); j >= 0 {
		seg = seg[:j]
	}
	return seg, seg != ""
}

// textBytes sums the raw lengths of the string values in v, skipping
// the values of keys that hold identifiers, enums or binary payloads.
// Nesting deeper than 64 levels is ignored rather than recursed into.
func textBytes(v []byte, depth int) int64 {
	if len(v) == 0 || depth > 64 {
		return 0
	}
	switch v[0] {
	case '"':
		return int64(len(v) - 2)
	case '{':
		var n int64
		o := openObject(v)
		for {
			k, val, ok := o.next()
			if !ok {
				return n
			}
			switch string(k) {
			case "type", "role", "id", "tool_call_id", "tool_use_id", "url",
				"data", "image_url", "file_data", "file_id", "mime_type",
				"mimeType", "media_type", "signature", "encrypted_content",
				"detail", "format", "cache_control":
				continue
			}
			n += textBytes(val, depth+1)
		}
	case '[':
		var n int64
		for i := 1; ; {
			i = skipWS(v, i)
			e := skipValue(v, i)
			if e < 0 {
				return n
			}
			n += textBytes(v[i:e], depth+1)
			i = skipWS(v, e)
			if i >= len(v) || v[i] != ',' {
				return n
			}
			i++
		}
	}
	return 0
}

func isSSMLType(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/ssml+xml")
}

// parseSSML counts the spoken characters of an SSML (or plain text) body
// and takes the first voice name as the model.
func parseSSML(b []byte, ri *RequestInfo) {
	var chars, textLen int64
	pendingSpace := false // a whitespace run seen after some text
	started := false
	emit := func(r rune, size int) {
		if r == ' ' || r == '\t' || r == '\n' || r == '\r' {
			pendingSpace = started
			return
		}
		if pendingSpace {
			chars++
			textLen++
			pendingSpace = false
		}
		started = true
		chars++
		textLen += int64(size)
	}
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == '<' && bytes.HasPrefix(b[i:], []byte("<!--")):
			j := bytes.Index(b[i+4:], []byte("-->"))
			if j < 0 {
				i = len(b)
			} else {
				i += 4 + j + 3
			}
		case c == '<' && bytes.HasPrefix(b[i:], []byte("<![CDATA[")):
			rest := b[i+9:]
			j := bytes.Index(rest, []byte("]]>"))
			if j < 0 {
				j = len(rest)
			}
			for _, r := range string(rest[:j]) {
				emit(r, utf8.RuneLen(r))
			}
			i += 9 + j + 3
		case c == '<':
			end := tagEnd(b, i)
			if ri.Model == "" {
				ri.Model = voiceName(b[i:end])
			}
			i = end
		case c == '&':
			// An entity (&amp; &#233; ...) is one character.
			j := bytes.IndexByte(b[i:min(len(b), i+12)], ';')
			if j < 0 {
				emit('&', 1)
				i++
			} else {
				emit('x', 1)
				i += j + 1
			}
		default:
			r, size := utf8.DecodeRune(b[i:])
			emit(r, size)
			i += size
		}
	}
	ri.Characters = chars
	ri.PromptEstimate = (textLen + 3) / 4
}

// tagEnd returns the index just past the tag starting at b[i], skipping
// quoted attribute values (which may contain '>').
func tagEnd(b []byte, i int) int {
	var quote byte
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '>':
			return j + 1
		}
	}
	return len(b)
}

// voiceName returns the name attribute of a <voice ...> start tag.
func voiceName(tag []byte) string {
	if !bytes.HasPrefix(tag, []byte("<voice")) || len(tag) < 7 || !isSpace(tag[6]) {
		return ""
	}
	for i := 6; i < len(tag); {
		j := bytes.Index(tag[i:], []byte("name"))
		if j < 0 {
			return ""
		}
		j += i
		k := skipWS(tag, j+4)
		if isSpace(tag[j-1]) && k < len(tag) && tag[k] == '=' {
			k = skipWS(tag, k+1)
			if k < len(tag) && (tag[k] == '"' || tag[k] == '\'') {
				if e := bytes.IndexByte(tag[k+1:], tag[k]); e >= 0 {
					return string(tag[k+1 : k+1+e])
				}
			}
			return ""
		}
		i = j + 4
	}
	return ""
}

// AddIncludeUsage returns body with stream_options.include_usage set to
// true, for a streaming chat completions request (path ends in
// /chat/completions, "stream": true) that did not ask for it, so the relay
// learns the usage. Only the bytes needed are inserted or replaced; the
// rest of the body keeps its exact layout. ok is false, and body is
// returned unchanged, when the request already asks for usage, is not a
// streaming chat completions request, or is not a valid JSON object.
//
// An explicit "include_usage": false (or null) is replaced with true: the
// relay needs the usage either way, and RequestInfo.IncludeUsage tells the
// caller that the client did not ask for the extra chunk.
func AddIncludeUsage(path string, body []byte) (out []byte, ok bool) {
	if !strings.HasSuffix(stripQuery(path), "/chat/completions") || !json.Valid(body) {
		return body, false
	}
	o := openObject(body)
	if o.done {
		return body, false
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
		return body, false
	}
	const setting = `"include_usage":true`
	if soStart < 0 {
		return splice(body, lastEnd, lastEnd, `,"stream_options":{`+setting+`}`), true
	}
	so := body[soStart:soEnd]
	if string(so) == "null" {
		return splice(body, soStart, soEnd, `{`+setting+`}`), true
	}
	if so[0] != '{' {
		return body, false // not ours to repair; upstream will reject it
	}
	inner := openObject(so)
	for {
		k, v, more := inner.next()
		if !more {
			break
		}
		if string(k) == "include_usage" {
			if string(v) == "true" {
				return body, false
			}
			end := soStart + inner.i
			return splice(body, end-len(v), end, "true"), true
		}
	}
	open := soStart + 1
	if j := skipWS(body, open); body[j] == '}' {
		return splice(body, open, open, setting), true
	}
	return splice(body, open, open, setting+","), true
}

// splice returns a new slice: b with b[i:j] replaced by s.
func splice(b []byte, i, j int, s string) []byte {
	out := make([]byte, 0, len(b)-(j-i)+len(s))
	out = append(out, b[:i]...)
	out = append(out, s...)
	return append(out, b[j:]...)
}
