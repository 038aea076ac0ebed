package provider

// Shape is the JSON shape of an error the relay answers itself, as the
// SDKs of a family parse it; each family says which its SDKs expect
// (family.shape). The shapes are written in the files of the families
// that define them (openai.go, anthropic.go).
type Shape uint8

// Error shapes.
const (
	// ShapeOpenAI is {"error":{"message","type","param","code"}}.
	ShapeOpenAI Shape = iota
	// ShapeAnthropic is {"type":"error","error":{"type","message"}}.
	ShapeAnthropic
)

// AppendJSON appends the error object for one of the relay's error types
// (the relay's ErrorType values: "auth", "rate_limited", ...) in the
// family's vocabulary, which its SDKs turn into typed errors, with a
// client-safe message.
func (s Shape) AppendJSON(b []byte, errType, message string) []byte {
	if s == ShapeAnthropic {
		return appendAnthropicError(b, errType, message)
	}
	return appendOpenAIError(b, errType, message)
}

// AppendEvent appends a final SSE error event. Both shapes use "event:
// error": the OpenAI SDKs raise on any event whose data has an "error"
// member, the Anthropic SDKs on the error event.
func (s Shape) AppendEvent(b []byte, errType, message string) []byte {
	b = append(b, "event: error\ndata: "...)
	b = s.AppendJSON(b, errType, message)
	return append(b, "\n\n"...)
}
