package provider

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// The Azure Speech family: the REST text-to-speech API
// (/cognitiveservices/v1), whose request is SSML (or plain text) and whose
// response is audio without usage.
//
//   - Requests: Characters, the spoken text (see Request.Characters), and
//     the first <voice name="..."> as the model. Billed in characters, not
//     tokens. An SSML body (application/ssml+xml, or a body starting with
//     '<') is read as SSML on any route.
//   - Responses: audio, which the relay relays without observing.
//   - Error shape: ShapeOpenAI.
type azureSpeech struct{ defaults }

func (azureSpeech) name() string { return "azure-tts" }
func (azureSpeech) routed() bool { return true }

func (azureSpeech) billing(string) (tokens, output bool) { return false, false }

// azureSpeechRequest reads an SSML (or, on an "azure-tts" route, plain
// text) request body, reporting whether it did; routed is true when the
// route is an "azure-tts" route.
func azureSpeechRequest(r *Request, contentType string, body []byte, routed bool) bool {
	if !routed && !isSSMLType(contentType) && (len(body) == 0 || body[0] != '<') {
		return false
	}
	parseSSML(body, r)
	return true
}

func isSSMLType(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/ssml+xml")
}

// parseSSML counts the spoken characters of an SSML (or plain text) body
// and takes the first voice name as the model.
func parseSSML(b []byte, ri *Request) {
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
