package provider

import "strings"

// The OpenAI speech family: /audio/speech (text to speech) and the
// streamed transcription events that share its format. It has no route
// provider of its own: it is recognised by shape behind "openai" and
// "azure" routes.
//
//   - Requests: Characters are the runes of "input" as decoded, on a
//     /audio/speech path or in a body with both "input" and "voice" (a
//     rewritten route prefix can hide the path); "stream_format": "sse"
//     streams. OpenAI's audio paths are billed in characters or seconds,
//     never tokens (openAIAudio).
//   - Events: data-only, typed by their leading "type": speech.audio.delta
//     (output: its base64 "audio") and speech.audio.done (the end, with
//     input_/output_tokens usage); transcript.text.delta and
//     transcript.text.done likewise.
//   - Usage as OpenAI's (openai.go). Speech reports only totals: its
//     output_tokens (audio, all of them) are OutputTokens, with no
//     AudioOutputTokens, which count only what a provider reports as
//     audio. Transcription reports its audio input in
//     input_token_details.audio_tokens (AudioInputTokens).
//   - Content (ContentBytes): a transcript delta's text; audio counts
//     nothing. Without stream_format "sse" the
//     response is audio, relayed without observing.
type openAISpeech struct{ defaults }

func (openAISpeech) name() string { return "openai-speech" }

// openAIAudio reports whether path is one of OpenAI's audio endpoints
// (speech, transcriptions, translations).
func openAIAudio(path string) bool { return strings.Contains(path, "/audio/") }

// openAISpeechRequestMember reads speech's members of a JSON request body.
func openAISpeechRequestMember(r *requestScan, key, val []byte) {
	switch string(key) {
	case "stream_format":
		r.StreamFormat = stringValue(val)
	case "voice":
		r.speechVoice = true
	case "input":
		r.speechInput = val
	}
}

// openAISpeechRequestDone decides, from the path and the members, whether
// the request is speech, and so billed in characters.
func openAISpeechRequestDone(r *requestScan, path string) {
	if r.StreamFormat == "sse" {
		r.Stream = true
	}
	if strings.HasSuffix(path, "/audio/speech") || r.speechVoice && r.speechInput != nil {
		r.Characters = runeLen(r.speechInput)
	}
}

// openAISpeechEvent claims speech and transcription events by their type.
func openAISpeechEvent(s *Stream, typ, d []byte) (content, ok bool) {
	switch string(typ) {
	case "speech.audio.delta":
		return hasNonEmptyString(d, `"audio"`), true
	case "transcript.text.delta":
		n := stringBytes(d, `"delta"`)
		s.addContent(n)
		return n > 0, true
	case "speech.audio.done", "transcript.text.done":
		s.done = true
		if u := member(d, "usage"); isObject(u) {
			setOpenAIUsage(s, u) // transcription's {"type":"duration"} has no tokens
		}
		return false, true
	}
	return false, false
}

// openAISpeechTailUsage claims the usage in a large speech or
// transcription event's tail.
func openAISpeechTailUsage(s *Stream, typ []byte, key string, u []byte) bool {
	switch string(typ) {
	case "speech.audio.done", "transcript.text.done":
		if key == "usage" {
			setOpenAIUsage(s, u)
		}
		return true
	case "speech.audio.delta", "transcript.text.delta":
		return true // no usage: a match would be something else's
	}
	return false
}
