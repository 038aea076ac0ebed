package provider

// This file is the observed state of one WebSocket session (Realtime):
// what the relay learns from the messages that pass, in each direction,
// without holding them. Each family's file says what its messages carry:
//
//	openai.go      OpenAI Realtime (GA and beta event names) and the
//	               Responses API's WebSocket mode, on "openai" and
//	               "azure" routes
//	gemini.go      Gemini Live (BidiGenerateContent), recognised by shape
//	               behind the same routes
//	elevenlabs.go  ElevenLabs stream-input and multi-stream-input
//	               ("elevenlabs" routes)
//	cartesia.go    Cartesia's TTS WebSocket ("cartesia" routes)
//
// The route's family decides which protocol a session speaks where the
// bytes cannot tell (a TTS client's {"text": ...} is not a Gemini
// client's); on OpenAI-compatible routes OpenAI's events are told from
// Gemini's by their keys. On every other route (Anthropic, Azure Speech,
// a resolver's provider the table does not know) nothing is observed:
// the relay counts bytes, frames and time.

// Realtime is the observed state of one WebSocket session. The relay
// calls Upstream from the upstream→client goroutine and Client from the
// client→upstream goroutine: the two halves of the state share no field
// (each is written by one of them only), so they need no lock. Usage and
// ResponseModel read the upstream half, Characters the client half: call
// each from its half's goroutine, or after that goroutine has ended.
// Reset makes a Realtime reusable (pooled); the zero Realtime observes
// nothing until Reset.
type Realtime struct {
	proto realtimeProto // written by Reset only
	up    rtUpstream
	cl    rtClient
}

// rtUpstream is the upstream half of a Realtime.
type rtUpstream struct {
	usage Usage  // summed over the session
	model []byte // reused across Reset so capture does not allocate

	// Gemini Live reports usage per turn, and may repeat a turn's counts:
	// the open turn's counts so far, which a repeat replaces (gemini.go).
	turn     usageParts
	turnOpen bool
}

// rtClient is the client half of a Realtime.
type rtClient struct {
	chars int64
}

// realtimeProto is the protocol a route's sessions speak, as far as
// observation goes (family.realtime).
type realtimeProto uint8

const (
	realtimeNone       realtimeProto = iota // nothing observed
	realtimeByShape                         // OpenAI Realtime, Responses WebSocket mode, Gemini Live
	realtimeElevenLabs                      // ElevenLabs stream-input
	realtimeCartesia                        // Cartesia TTS WebSocket
)

// RealtimeFact is what one upstream message told.
type RealtimeFact struct {
	// Content is true for a message that carries generated output: an
	// audio, text or transcript delta (any response.*.delta), a Gemini
	// model turn's text or inline data, a TTS audio chunk. The first one
	// times TTFT.
	Content bool
	// Tokens > 0: the message reported this many tokens (input + output)
	// not reported before: a response.done's (or response.completed's)
	// total, a transcription's, or the increase of a Gemini turn's. The
	// relay settles them with the limiter at once.
	Tokens int64
	// Error is true for an in-band error event.
	Error bool
}

// Reset prepares rt for a new session on a route whose Provider is
// routeProvider ("" is "openai"). A provider the table does not know
// observes nothing.
func (rt *Realtime) Reset(routeProvider string) {
	model := rt.up.model[:0]
	if cap(model) > maxKeptModel {
		model = nil // do not pin a freak buffer in a pool
	}
	proto := realtimeNone
	if f, ok := Lookup(routeProvider); ok || routeProvider == "" {
		proto = f.family().realtime()
	}
	*rt = Realtime{proto: proto, up: rtUpstream{model: model}}
}

// Upstream observes one upstream message, text or binary (Gemini Live
// sends its JSON in binary frames too). msg is its whole (unmasked,
// reassembled) payload when complete is true; when the message was
// larger than the relay's cap, msg holds its first bytes and tail its
// last bytes (complete false; the two may overlap): the type is read
// from the head and a usage object from the tail, where every protocol
// puts it (after the output it counts). It does not allocate, except
// once to keep the model name.
func (rt *Realtime) Upstream(msg, tail []byte, text, complete bool) RealtimeFact {
	_ = text // the payload tells: JSON or not
	d := msg[skipWS(msg, 0):]
	if len(d) == 0 || d[0] != '{' {
		return RealtimeFact{} // audio, or nothing a family reads
	}
	if complete {
		tail = nil
	}
	switch rt.proto {
	case realtimeByShape:
		if typ := messageType(d); typ != nil {
			return openAIRealtimeEvent(&rt.up, typ, d, tail)
		}
		return geminiLiveMessage(&rt.up, d, tail)
	case realtimeElevenLabs:
		return elevenLabsUpstream(d)
	case realtimeCartesia:
		return cartesiaUpstream(d)
	}
	return RealtimeFact{}
}

// Client observes one client message, as Upstream does: the characters a
// TTS client sends for synthesis. Of a message larger than the relay's
// cap only the text in its head is counted (the middle is not seen), so
// Characters is then a lower bound.
func (rt *Realtime) Client(msg, tail []byte, text, complete bool) {
	_, _ = tail, text
	d := msg[skipWS(msg, 0):]
	if len(d) == 0 || d[0] != '{' {
		return
	}
	switch rt.proto {
	case realtimeElevenLabs:
		rt.cl.chars += elevenLabsCharacters(d, complete)
	case realtimeCartesia:
		rt.cl.chars += cartesiaCharacters(d, complete)
	}
}

// ObservesClient reports whether Client reads anything for the session's
// provider (the TTS protocols' characters); when false the caller may
// skip handing it client messages.
func (rt *Realtime) ObservesClient() bool {
	return rt.proto == realtimeElevenLabs || rt.proto == realtimeCartesia
}

// Usage returns the usage summed over the session so far.
func (rt *Realtime) Usage() Usage { return rt.up.usage }

// Characters returns the characters the client sent for synthesis:
// Unicode code points of the text as decoded (an escape is one), as
// Request.Characters counts OpenAI speech's input.
func (rt *Realtime) Characters() int64 { return rt.cl.chars }

// ResponseModel returns the model the upstream reported (OpenAI's
// session.created), or "". The first non-empty one wins. It allocates.
func (rt *Realtime) ResponseModel() string { return string(rt.up.model) }

// captureModel keeps v as the model if it is a non-empty string and none
// was kept yet.
func (u *rtUpstream) captureModel(v []byte) {
	if len(u.model) > 0 {
		return
	}
	if raw, _, ok := rawString(v); !ok || len(raw) == 0 {
		return
	}
	u.model, _ = appendString(u.model[:0], v)
}

// addResponse adds one response's usage to the session's and returns its
// tokens (never negative, whatever a server writes).
func (u *rtUpstream) addResponse(k usageKind, r *usageParts) int64 {
	v := usageOf(k, r)
	u.usage = addUsage(u.usage, v, 1)
	return max(v.Total(), 0)
}

// addUsage returns a + sign*b, field by field.
func addUsage(a, b Usage, sign int64) Usage {
	a.InputTokens += sign * b.InputTokens
	a.OutputTokens += sign * b.OutputTokens
	a.CachedInputTokens += sign * b.CachedInputTokens
	a.CacheCreationInputTokens += sign * b.CacheCreationInputTokens
	a.ReasoningTokens += sign * b.ReasoningTokens
	a.AudioInputTokens += sign * b.AudioInputTokens
	a.AudioOutputTokens += sign * b.AudioOutputTokens
	return a
}

// messageType returns the value of a message's top-level "type": at once
// when it is the first key (as OpenAI and Cartesia write it), else by a
// walk over the top-level members. nil when there is none (Gemini).
func messageType(d []byte) []byte {
	if typ := eventType(nil, d); typ != nil {
		return typ
	}
	switch string(firstKey(d)) {
	case "serverContent", "setupComplete", "toolCall", "toolCallCancellation",
		"goAway", "sessionResumptionUpdate", "usageMetadata":
		return nil // Gemini's, which have no type: spare the walk
	}
	v, escaped, ok := rawString(member(d, "type"))
	if !ok || escaped || len(v) == 0 {
		return nil
	}
	return v
}

// tailUsage returns the usage object a message reports under key: the
// value of key in obj when it is complete there, else the last complete
// object under key in tail (a message too large to hold).
func tailUsage(obj []byte, key string, tail []byte) []byte {
	if u := member(obj, key); isObject(u) {
		return u
	}
	if tail == nil {
		return nil
	}
	if k, u := lastUsage(tail); k == key {
		return u
	}
	return nil
}
