package provider

// The ElevenLabs family: streaming text to speech over WebSocket
// (/v1/text-to-speech/{voice_id}/stream-input and multi-stream-input).
// Its HTTP requests are relayed unobserved; it is billed in characters.
//
//   - Client messages: {"text": "...", ...}. Characters are the code
//     points of "text" as decoded (runeLen). The documented
//     initialisation message, of the connection or (multi-stream-input)
//     of a context, has the text " " and is not counted; the closing
//     message's text is "" and counts nothing.
//   - Server messages: {"audio": "<base64>", "isFinal": ..., ...}
//     (multi-stream-input also "contextId"): a non-empty audio is
//     content. A message with an "error" member is an in-band error.
//   - No token usage: the relay meters Characters.
//   - Error shape: ShapeOpenAI.
type elevenLabs struct{ defaults }

func (elevenLabs) name() string                         { return "elevenlabs" }
func (elevenLabs) routed() bool                         { return true }
func (elevenLabs) billing(string) (tokens, output bool) { return false, false }
func (elevenLabs) realtime() realtimeProto              { return realtimeElevenLabs }

// elevenLabsCharacters counts the characters of a client message's text.
func elevenLabsCharacters(d []byte, complete bool) int64 {
	return ttsCharacters(d, "text", `"text"`, complete, " ")
}

// elevenLabsUpstream observes one server message.
func elevenLabsUpstream(d []byte) (f RealtimeFact) {
	if hasNonEmptyString(d, `"audio"`) {
		f.Content = true
		return f
	}
	if v := member(d, "error"); len(v) > 0 && string(v) != "null" {
		f.Error = true
	}
	return f
}

// ttsCharacters counts the code points of the string member key (quoted:
// the same name in quotes) of a TTS client message, except a text equal
// to skip. Of a message cut short (complete false) it counts what its
// head holds of the string.
func ttsCharacters(d []byte, key, quoted string, complete bool, skip string) int64 {
	if v := member(d, key); v != nil {
		if raw, _, ok := rawString(v); !ok || string(raw) == skip {
			return 0
		}
		return runeLen(v)
	}
	if complete {
		return 0
	}
	i := keyValue(d, quoted, 0)
	if i < 0 || i >= len(d) || d[i] != '"' {
		return 0
	}
	return countRunes(d[i+1:])
}
