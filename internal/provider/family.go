// Package provider is what the relay knows about each provider family, in
// one file per family:
//
//	openai.go        OpenAI and every server that speaks its API ("openai", the default)
//	azure.go         Azure OpenAI ("azure")
//	anthropic.go     Anthropic Messages ("anthropic")
//	azurespeech.go   Azure Speech REST text to speech ("azure-tts")
//	openaispeech.go  OpenAI speech and transcription (behind "openai" and "azure" routes)
//	gemini.go        Gemini native generateContent and Gemini Live (behind "openai" routes)
//	elevenlabs.go    ElevenLabs text to speech ("elevenlabs")
//	cartesia.go      Cartesia text to speech ("cartesia")
//
// A family's file holds all of that family's knowledge: the facts its
// requests carry (model, stream flag, output bound, a prompt estimate, TTS
// characters) and how its requests are billed; its request's usage edit, if any
// (OpenAI's stream_options.include_usage, and Azure's api-versions that
// refuse it); its events: their names, which
// of them carry generated output (time to first token), where its usage is
// and how it maps to Usage, its in-band errors and its final event; and
// the JSON shape of errors its SDKs parse.
//
// # Families and dialects
//
// A route names one family (Lookup, over the table in families()), but
// one upstream often speaks several dialects: an "openai" route carries
// chat completions, the Responses API, speech and Gemini's native API,
// and a rewritten route prefix hides which endpoint a request is for. So
// the route's family decides only what the bytes cannot tell: through the
// family interface, the error shape, the billing unit and the usage edit;
// and, in the files of the families concerned, that a plain-text body is
// SSML (azurespeech.go) and which of two same-named usage objects a JSON
// body holds (anthropic.go). Everything else is recognised by shape, by
// functions in the family files that the dispatchers call in one
// documented order:
//
//   - request.go: every top-level member of a JSON request body is
//     offered to every family's member reader, then each completes its
//     facts from the path; an SSML body is Azure Speech's on any route;
//   - dispatch.go: an SSE event named "error" is an in-band error in every
//     family that names its events (Anthropic, the Responses API); any
//     other event is offered to OpenAI, Anthropic, OpenAI speech and
//     Gemini in turn, and the first that claims it observes it. The usage
//     in the tail of an event too large to hold is offered the same way.
//     A JSON response body is walked once: the members families share
//     (type, model, usage, error) are read there, Gemini's by Gemini.
//
// What no family claims is read as OpenAI's, the format most compatible
// servers speak. The order puts the common case first (OpenAI's chat
// chunks and Responses events are claimed by the first look, at their
// first key or name) and the costly recognition last (Gemini's may search
// a whole event, which an audio delta must not pay). The calls are
// static, so that recognition costs no more than the checks themselves:
// the streaming path (Stream.Event) does not allocate.
//
// # Shared machinery
//
// json.go is a small read-only JSON scanner that never allocates and never
// hands back an incomplete value; request.go reads a request in one pass;
// stream.go is the state of one observed response (Stream); dispatch.go
// offers events and bodies to the families; realtime.go is the state of
// one observed WebSocket session (Realtime); shape.go writes errors in a
// family's shape; usage.go is the Usage every family maps to.
package provider

import "net/http"

// family is what a route's family decides: the facts the bytes of a
// request or response cannot tell. Each family's type embeds defaults, so
// that it defines only what differs.
type family interface {
	// name names the family: a route's Provider when routed is true, else
	// only for tests and documentation.
	name() string
	// routed reports whether a route's Provider can name the family.
	// Families that are not routed are recognised by shape, behind routes
	// of other families.
	routed() bool
	// shape is the JSON shape of the errors the family's SDKs parse.
	shape() Shape
	// recognises reports whether a request looks like one of the family's
	// before its route is known, for the shape of an error answered then.
	recognises(h http.Header, path string) bool
	// billing tells how requests on path (without query) are billed: in
	// tokens, and whether they generate output (an embedding does not).
	billing(path string) (tokens, output bool)
	// usageEdit returns the edit to the body that makes the response
	// report its usage, and whether there is one; r is what the body told.
	usageEdit(path string, body []byte, r Request) (Edit, bool)
	// acceptsUsageEdit reports whether an upstream at a URL with this raw
	// query takes the usage edit.
	acceptsUsageEdit(query string) bool
	// realtime is the protocol the route's WebSocket sessions speak, as
	// far as observing them goes (realtime.go).
	realtime() realtimeProto
}

// families is the table of every family. The first is the default: it
// serves routes without a provider, and what no family recognises is read
// as its. The order of the routed families is the order Names lists them.
//
// Adding a family is one line here (and the array's length).
func families() [8]family {
	return [...]family{
		openAI{},       // "openai": OpenAI, DeepSeek, Groq, OpenRouter, SiliconFlow, ...
		azure{},        // "azure": Azure OpenAI
		anthropic{},    // "anthropic": Anthropic Messages
		azureSpeech{},  // "azure-tts": Azure Speech REST text to speech
		openAISpeech{}, // OpenAI speech and transcription, behind "openai" and "azure" routes
		gemini{},       // Gemini native, behind "openai" routes
		elevenLabs{},   // "elevenlabs": ElevenLabs streaming text to speech
		cartesia{},     // "cartesia": Cartesia streaming text to speech
	}
}

// Family is a handle on one provider family. The zero Family is the
// default, OpenAI-compatible family. A Family is a small value: copy it.
type Family uint8

// Lookup returns the family a route's Provider names, and whether it names
// one. "" and unknown names get the default, OpenAI-compatible family.
func Lookup(provider string) (Family, bool) {
	for i, f := range families() {
		if f.routed() && f.name() == provider {
			return Family(i), true
		}
	}
	return 0, false
}

// Names lists the provider names routes may use, in table order.
func Names() []string {
	var names []string
	for _, f := range families() {
		if f.routed() {
			names = append(names, f.name())
		}
	}
	return names
}

func (f Family) family() family { return families()[f] }

// Name is the family's name; for a routed family, the route Provider that
// names it.
func (f Family) Name() string { return f.family().name() }

// Shape is the JSON shape of the errors the family's SDKs parse.
func (f Family) Shape() Shape { return f.family().shape() }

// RequestShape is the error shape for a request whose route is not known
// (yet): the shape of the first routed family the request looks like, else
// OpenAI's.
func RequestShape(h http.Header, path string) Shape {
	for _, f := range families() {
		if f.routed() && f.recognises(h, path) {
			return f.shape()
		}
	}
	return ShapeOpenAI
}

// defaults is embedded by every family: a family that does not define a
// hook is not routed, answers in OpenAI's shape, is billed in tokens and
// has no usage edit.
type defaults struct{}

func (defaults) routed() bool                         { return false }
func (defaults) shape() Shape                         { return ShapeOpenAI }
func (defaults) recognises(http.Header, string) bool  { return false }
func (defaults) billing(string) (tokens, output bool) { return true, true }

func (defaults) usageEdit(string, []byte, Request) (Edit, bool) { return Edit{}, false }
func (defaults) acceptsUsageEdit(string) bool                   { return true }
func (defaults) realtime() realtimeProto                        { return realtimeNone }
