package provider

// The Cartesia family: streaming text to speech over WebSocket
// (/tts/websocket). Its HTTP requests are relayed unobserved; it is
// billed in characters.
//
//   - Client messages: generation requests {"model_id", "transcript",
//     "voice", "context_id", "continue", ...} and cancellations.
//     Characters are the code points of "transcript" as decoded.
//   - Server messages, typed by "type": "chunk" (base64 audio in "data")
//     is content; "error" is an in-band error; "done", "flush_done",
//     "timestamps" and "phoneme_timestamps" carry neither.
//   - No token usage: the relay meters Characters.
//   - Error shape: ShapeOpenAI.
type cartesia struct{ defaults }

func (cartesia) name() string                         { return "cartesia" }
func (cartesia) routed() bool                         { return true }
func (cartesia) billing(string) (tokens, output bool) { return false, false }
func (cartesia) realtime() realtimeProto              { return realtimeCartesia }

// cartesiaCharacters counts the characters of a generation request.
func cartesiaCharacters(d []byte, complete bool) int64 {
	return ttsCharacters(d, "transcript", `"transcript"`, complete, "")
}

// cartesiaUpstream observes one server message.
func cartesiaUpstream(d []byte) (f RealtimeFact) {
	switch string(messageType(d)) {
	case "chunk":
		f.Content = true
	case "error":
		f.Error = true
	}
	return f
}
