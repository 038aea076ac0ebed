package provider

import (
	"bytes"
	"strings"
)

// The Gemini family: Google's native generateContent API. It has no route
// provider of its own: its requests and responses are recognised by shape
// behind "openai" routes. (Gemini's OpenAI-compatible endpoint speaks
// OpenAI's API and is read by openai.go.)
//
//   - Requests: the model and the method in the path
//     (/models/{model}:generateContent, :streamGenerateContent streams);
//     the prompt in "contents" and "systemInstruction"; the output bound
//     in generationConfig.maxOutputTokens.
//   - Events: data-only chunks with "candidates" and a cumulative
//     "usageMetadata" (no [DONE]); without alt=sse, one JSON array of the
//     same chunks (dispatch.go's Body). Generated output is a part's
//     "text", "functionCall" or "inlineData". The model is "modelVersion".
//   - Usage: InputTokens = promptTokenCount + toolUsePromptTokenCount;
//     OutputTokens = candidatesTokenCount + thoughtsTokenCount (Gemini
//     reports thoughts apart from candidates; the sum is what
//     totalTokenCount counts and what is billed as output);
//     ReasoningTokens = thoughtsTokenCount; CachedInputTokens =
//     cachedContentTokenCount (a part of promptTokenCount);
//     AudioInputTokens and AudioOutputTokens = the AUDIO entries of
//     promptTokensDetails and candidatesTokensDetails. Gemini reports no
//     cache writes. Every chunk repeats the cumulative counts; the last
//     wins, field by field.
//   - Content (ContentBytes): the parts' text (thoughts included) and
//     functionCall objects; inlineData (audio, images) counts nothing.
//   - Errors: {"error":{"code","message","status"}}; its status is the
//     error type. An error chunk has no candidates and is read as OpenAI's,
//     which reads the same object.
type gemini struct{ defaults }

func (gemini) name() string { return "gemini" }

// geminiRequestMember reads Gemini's members of a JSON request body.
func geminiRequestMember(r *requestScan, key, val []byte) {
	switch string(key) {
	case "contents", "systemInstruction":
		r.addPrompt(val)
	case "generationConfig":
		r.offerMaxOutput(rankGeminiMaxOutputTokens, member(val, "maxOutputTokens"))
	}
}

// geminiRequestDone reads the model and the method from the path.
func geminiRequestDone(r *requestScan, path string) {
	m, ok := pathSegmentAfter(path, "/models/")
	if !ok {
		return
	}
	if model, method, found := strings.Cut(m, ":"); found {
		if r.Model == "" {
			r.Model = model
		}
		if method == "streamGenerateContent" {
			r.Stream = true
		}
	}
}

// geminiEvent claims Gemini's chunks by their keys, whatever their type. Gemini
// writes its members in a fixed order, so the first key tells at once;
// otherwise (a proxy that reorders them) the search runs over the whole
// event, which is why Gemini comes last.
func geminiEvent(s *Stream, d []byte) (content, ok bool) {
	switch string(firstKey(d)) {
	case "candidates", "promptFeedback", "usageMetadata", "modelVersion", "responseId":
	default:
		if keyValue(d, `"candidates"`, 0) < 0 && !hasObjectKey(d, `"usageMetadata"`) {
			return false, false
		}
	}
	n := stringBytes(d, `"text"`) + objectBytes(d, `"functionCall"`)
	s.addContent(n)
	content = n > 0 || hasObjectKey(d, `"inlineData"`) // audio or image output
	if len(s.model) == 0 && bytes.Contains(d, []byte(`"modelVersion"`)) {
		s.captureModel(member(d, "modelVersion"))
	}
	if u := member(d, "usageMetadata"); isObject(u) {
		setGeminiUsage(s, u)
	}
	if s.errType == "" && hasObjectKey(d, `"error"`) {
		if isObject(member(d, "error")) {
			s.setError(d)
		}
	}
	return content, true
}

// geminiTailUsage claims a usageMetadata object, whatever the event.
func geminiTailUsage(s *Stream, key string, u []byte) bool {
	if key != "usageMetadata" {
		return false
	}
	setGeminiUsage(s, u)
	return true
}

// geminiBodyMember reads Gemini's members of a JSON response body.
func geminiBodyMember(s *Stream, key, val []byte) {
	switch string(key) {
	case "modelVersion":
		s.captureModel(val)
	case "usageMetadata":
		if isObject(val) {
			setGeminiUsage(s, val)
		}
	}
}

// setGeminiUsage applies a usageMetadata object: each count present
// replaces the earlier value, each count absent keeps it (Gemini repeats
// its cumulative usage on every chunk, and early chunks may lack counts).
func setGeminiUsage(s *Stream, u []byte) {
	var r usageParts
	o := openObject(u)
	for {
		k, v, ok := o.next()
		if !ok {
			break
		}
		switch string(k) {
		case "promptTokenCount":
			r.setPart(partInput, v)
		case "toolUsePromptTokenCount":
			r.setPart(partToolPrompt, v)
		case "candidatesTokenCount":
			r.setPart(partOutput, v)
		case "thoughtsTokenCount":
			r.setPart(partReasoning, v)
		case "cachedContentTokenCount":
			r.setPart(partCached, v)
		case "promptTokensDetails":
			if n, ok := geminiAudioTokens(v); ok {
				r.set(partAudioIn, n)
			}
		case "candidatesTokensDetails":
			if n, ok := geminiAudioTokens(v); ok {
				r.set(partAudioOut, n)
			}
		}
	}
	if !r.has(partInput) && !r.has(partToolPrompt) && !r.has(partOutput) && !r.has(partReasoning) {
		return
	}
	s.parts.merge(&r)
	s.usageReported(usageGemini)
}

// geminiAudioTokens sums the tokenCount of the AUDIO entries of a
// ModalityTokenCount list ([{"modality":"TEXT","tokenCount":18}, ...]).
// ok is false when v is not such a list; a list without AUDIO reports 0.
func geminiAudioTokens(v []byte) (n int64, ok bool) {
	if len(v) == 0 || v[0] != '[' {
		return 0, false
	}
	for i := 1; ; {
		i = skipWS(v, i)
		e := skipValue(v, i)
		if e < 0 {
			return n, true
		}
		if entry := v[i:e]; string(member(entry, "modality")) == `"AUDIO"` {
			c, _ := intValue(member(entry, "tokenCount"))
			n += c
		}
		i = skipWS(v, e)
		if i >= len(v) || v[i] != ',' {
			return n, true
		}
		i++
	}
}
