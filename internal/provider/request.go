package provider

import "strings"

// Request is what the relay learns from a request body before forwarding
// it. The family files say where each fact comes from for their requests.
type Request struct {
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

// Pin is the members of a request body (RequestPin) a conversation can be recognised
// by (the relay's Route.Sticky). Each is a raw JSON value as written,
// quotes and escapes included, sliced from the body: nothing is copied,
// and the slices are valid as long as the body is. Nil when absent.
type Pin struct {
	// PromptCacheKey is OpenAI's "prompt_cache_key".
	PromptCacheKey []byte
	// User is OpenAI's "user", else Anthropic's "metadata"."user_id".
	User []byte
	// System is the system prompt: "system" (Anthropic), "instructions"
	// (the Responses API) or "systemInstruction" (Gemini), the first
	// present.
	System []byte
	// FirstMessage is the first element of "messages", "input" or
	// "contents" (the value itself when it is not an array): the opening
	// of the conversation, the same on every turn.
	FirstMessage []byte
}

// requestScan is one pass over a JSON request body: the facts so far, and
// what the families keep from one member to the next.
type requestScan struct {
	Request
	Pin
	promptBytes int64 // string bytes under prompt-bearing members
	maxRank     int   // the rank of the member MaxOutputTokens came from; 0 for none

	speechInput []byte // "input", until the path and "voice" tell whether it is speech
	speechVoice bool   // a "voice" member was seen
}

// Ranks of the members that bound the output, in the order of precedence
// Request.MaxOutputTokens documents: a body may carry several (an OpenAI
// client sending both names), and the most specific wins.
const (
	rankMaxCompletionTokens   = 1 + iota // OpenAI chat's current name
	rankMaxOutputTokens                  // the Responses API's
	rankMaxTokens                        // OpenAI's older name, and Anthropic's
	rankGeminiMaxOutputTokens            // Gemini's generationConfig.maxOutputTokens
)

// offerMaxOutput takes v, an output bound of the given rank, unless a
// member of a better rank gave one.
func (r *requestScan) offerMaxOutput(rank int, v []byte) {
	if r.maxRank != 0 && r.maxRank < rank {
		return
	}
	if n, ok := intValue(v); ok {
		r.MaxOutputTokens, r.maxRank = n, rank
	}
}

// pinSystem and pinFirst keep the system prompt and the first message
// for Pin, the first member found winning.
func (r *requestScan) pinSystem(v []byte) {
	if r.System == nil {
		r.System = v
	}
}

func (r *requestScan) pinFirst(v []byte) {
	if r.FirstMessage != nil || len(v) == 0 {
		return
	}
	if v[0] != '[' {
		r.FirstMessage = v
		return
	}
	i := skipWS(v, 1)
	if e := skipValue(v, i); e > i {
		r.FirstMessage = v[i:e]
	}
}

// addPrompt counts the prompt text under a prompt-bearing member.
func (r *requestScan) addPrompt(v []byte) { r.promptBytes += textBytes(v, 0) }

// Request reads a request body sent on a route of family f. It never
// fails: what it cannot read is left zero. An SSML body is Azure Speech's;
// a JSON object is offered member by member to every family that reads
// JSON requests, since the route does not always tell the dialect.
func (f Family) Request(path, contentType string, body []byte) Request {
	r, _ := f.RequestPin(path, contentType, body)
	return r
}

// RequestPin is Request, also returning the body's Pin, read in the same
// pass.
func (f Family) RequestPin(path, contentType string, body []byte) (Request, Pin) {
	path = stripQuery(path)
	b := body[skipWS(body, 0):]
	var r requestScan
	if azureSpeechRequest(&r.Request, contentType, b, f.family() == family(azureSpeech{})) {
		return r.Request, Pin{}
	}
	o := openObject(b)
	for {
		k, v, ok := o.next()
		if !ok {
			break
		}
		openAIRequestMember(&r, k, v)
		anthropicRequestMember(&r, k, v)
		openAISpeechRequestMember(&r, k, v)
		geminiRequestMember(&r, k, v)
	}
	r.PromptEstimate = (r.promptBytes + 3) / 4
	azureRequestDone(&r, path) // the deployment names the model before Gemini's path does
	openAISpeechRequestDone(&r, path)
	geminiRequestDone(&r, path)
	return r.Request, r.Pin
}

// TokenEstimate is the number of tokens to reserve for a request of family
// f on path: the prompt estimate plus the output bound, or
// defaultMaxOutput when the request names none and generates output. It
// is 0 when the family bills the path otherwise (characters, audio) or
// the body told nothing (no model, no prompt).
func (f Family) TokenEstimate(path string, r Request, defaultMaxOutput int64) int64 {
	tokens, output := f.family().billing(stripQuery(path))
	if !tokens || r.Model == "" && r.PromptEstimate <= 0 {
		return 0
	}
	out := r.MaxOutputTokens
	if out <= 0 && output {
		out = defaultMaxOutput
	}
	return r.PromptEstimate + out
}

// UsageEdit returns the edit that makes the response to a request of
// family f on path report its usage (OpenAI's include_usage), and whether
// there is one; r is what Request read from body. Families whose
// responses report usage unasked have none. The edit is a small value:
// the caller keeps body and sends it edited or not (AcceptsUsageEdit).
func (f Family) UsageEdit(path string, body []byte, r Request) (Edit, bool) {
	return f.family().usageEdit(path, body, r)
}

// AcceptsUsageEdit reports whether an upstream of family f takes the
// usage edit, judged by the raw query of its URL (Azure's api-version).
// An upstream that refuses it anyway answers 400 naming the parameter
// (RefusesUsageEdit).
func (f Family) AcceptsUsageEdit(rawQuery string) bool {
	return f.family().acceptsUsageEdit(rawQuery)
}

// Rewrite returns body with UsageEdit applied, in a new slice, and whether
// it changed anything; body itself is never modified.
func (f Family) Rewrite(path string, body []byte, r Request) ([]byte, bool) {
	e, ok := f.UsageEdit(path, body, r)
	if !ok {
		return body, false
	}
	return e.Apply(body), true
}

// Edit is a change to a request body: the bytes [at, at+cut) replaced by
// one of a few fixed texts. It is a small value (8 bytes), so that the
// relay keeps it beside the body it read, rather than an edited copy, and
// sends either. The zero Edit changes nothing.
type Edit struct {
	at  uint32
	cut uint16
	ins uint8 // the inserted text, editText(ins); 0: none
}

// newEdit returns the edit that replaces body[i:j] by text ins, and false
// for offsets out of its range (a body over 4 GiB, a 64 KiB value).
func newEdit(i, j int, ins uint8) (Edit, bool) {
	if i < 0 || j < i || int64(j) > 1<<32-1 || j-i > 1<<16-1 {
		return Edit{}, false
	}
	return Edit{at: uint32(i), cut: uint16(j - i), ins: ins}, true
}

// Parts returns the edited body as three parts: body's bytes before the
// edit, the inserted text and body's bytes after it. body must be the
// body the edit was made for.
func (e Edit) Parts(body []byte) (head []byte, insert string, rest []byte) {
	if e.ins == 0 {
		return body, "", nil
	}
	at := int(e.at)
	return body[:at], editText(e.ins), body[at+int(e.cut):]
}

// Len is the length of the edited body for a body of n bytes.
func (e Edit) Len(n int) int {
	if e.ins == 0 {
		return n
	}
	return n - int(e.cut) + len(editText(e.ins))
}

// Apply returns body edited, in a new slice.
func (e Edit) Apply(body []byte) []byte {
	head, ins, rest := e.Parts(body)
	out := make([]byte, 0, e.Len(len(body)))
	out = append(out, head...)
	out = append(out, ins...)
	return append(out, rest...)
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
