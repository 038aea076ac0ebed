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
//   - Gemini Live, over WebSocket: geminiLiveMessage.
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
	if r, ok := geminiUsageParts(u); ok {
		s.parts.merge(&r)
		s.usageReported(usageGemini)
	}
}

// geminiUsageParts reads the counts a usageMetadata object reports
// (setGeminiUsage's mapping); ok is false when it has no input or output
// count. Gemini Live names the output responseTokenCount and
// responseTokensDetails where generateContent says candidates.
func geminiUsageParts(u []byte) (r usageParts, ok bool) {
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
		case "candidatesTokenCount", "responseTokenCount":
			r.setPart(partOutput, v)
		case "thoughtsTokenCount":
			r.setPart(partReasoning, v)
		case "cachedContentTokenCount":
			r.setPart(partCached, v)
		case "promptTokensDetails":
			if n, ok := geminiAudioTokens(v); ok {
				r.set(partAudioIn, n)
			}
		case "candidatesTokensDetails", "responseTokensDetails":
			if n, ok := geminiAudioTokens(v); ok {
				r.set(partAudioOut, n)
			}
		}
	}
	return r, r.has(partInput) || r.has(partToolPrompt) || r.has(partOutput) || r.has(partReasoning)
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

// Gemini Live (BidiGenerateContent), over WebSocket behind "openai"
// routes (realtime.go). Its server messages are JSON, in text or binary
// frames, holding one of serverContent, setupComplete, toolCall,
// toolCallCancellation, goAway or sessionResumptionUpdate, and maybe a
// usageMetadata beside it.
//
//   - Content: a serverContent.modelTurn part with text or inlineData
//     (audio), or an outputTranscription (the transcript of the model's
//     speech).
//   - Usage: usageMetadata, mapped as generateContent's (setGeminiUsage;
//     Live says responseTokenCount and responseTokensDetails for the
//     output). It reports one model turn: its promptTokenCount counts the
//     turn's whole context, history included, which is billed again each
//     turn. So turns are summed; a turn ends with serverContent's
//     turnComplete or interrupted, or a toolCall (the model's next
//     generation reads the tool's response as a new prompt). A second
//     report within one turn repeats the turn's counts, as Gemini's
//     streamed chunks do, and replaces the first field by field; only the
//     increase is settled.
//   - Model: none; the server does not name it (the client's setup
//     message does).
//   - Errors: Gemini Live closes the socket with a close code and reason;
//     it sends no in-band error message.
func geminiLiveMessage(u *rtUpstream, d, tail []byte) (f RealtimeFact) {
	var usage []byte
	ends := false
	if tail == nil {
		// A walk over the members: an audio chunk's base64 is skipped by
		// one IndexByte, where a search for a key would compare all of it.
		o := openObject(d)
		for {
			k, v, ok := o.next()
			if !ok {
				break
			}
			switch string(k) {
			case "serverContent":
				f.Content = geminiLiveContent(v)
				ends = isTrue(member(v, "turnComplete")) || isTrue(member(v, "interrupted"))
			case "toolCall":
				ends = true
			case "usageMetadata":
				usage = v
			}
		}
	} else {
		// Too large to hold: the head tells content, the tail the usage
		// and the turn's end.
		f.Content = geminiLiveContent(member(d, "serverContent")) ||
			hasObjectKey(d, `"modelTurn"`) && (hasObjectKey(d, `"inlineData"`) || hasNonEmptyString(d, `"text"`))
		usage = tailUsage(d, "usageMetadata", tail)
		ends = hasTrue(tail, `"turnComplete"`) || hasTrue(tail, `"interrupted"`) || hasObjectKey(d, `"toolCall"`)
	}
	if isObject(usage) {
		if p, ok := geminiUsageParts(usage); ok {
			f.Tokens = u.geminiTurnUsage(&p)
		}
	}
	if ends {
		u.turnOpen = false
	}
	return f
}

// geminiLiveContent reports whether a serverContent object carries
// generated output: a modelTurn part with text or inlineData (found at
// the start of an audio chunk), or an outputTranscription's text.
func geminiLiveContent(sc []byte) bool {
	if len(sc) == 0 {
		return false
	}
	if mt := keyValue(sc, `"modelTurn"`, 0); mt >= 0 {
		t := sc[mt:]
		return hasObjectKey(t, `"inlineData"`) || hasNonEmptyString(t, `"text"`)
	}
	if ot := member(sc, "outputTranscription"); isObject(ot) {
		return hasNonEmptyString(ot, `"text"`)
	}
	return false
}

// isTrue reports whether v is the value true.
func isTrue(v []byte) bool { return string(v) == "true" }

// hasTrue reports whether key k occurs with the value true.
func hasTrue(b []byte, k string) bool {
	for i := 0; ; {
		i = keyValue(b, k, i)
		if i < 0 {
			return false
		}
		if bytes.HasPrefix(b[i:], []byte("true")) {
			return true
		}
	}
}

// geminiTurnUsage applies one usageMetadata report to the open turn (a
// new one if none is open) and returns the tokens it adds.
func (u *rtUpstream) geminiTurnUsage(r *usageParts) int64 {
	var before Usage
	if u.turnOpen {
		before = usageOf(usageGemini, &u.turn)
	} else {
		u.turn, u.turnOpen = usageParts{}, true
	}
	u.turn.merge(r)
	after := usageOf(usageGemini, &u.turn)
	u.usage = addUsage(addUsage(u.usage, before, -1), after, 1)
	return max(after.Total()-before.Total(), 0)
}
