package provider

import (
	"net/http"
	"slices"
	"testing"
)

// The route providers, as tests name them.
const (
	ProviderOpenAI    = "openai"
	ProviderAzure     = "azure"
	ProviderAnthropic = "anthropic"
	ProviderAzureTTS  = "azure-tts"
	ProviderEleven    = "elevenlabs"
	ProviderCartesia  = "cartesia"
)

// fam returns the family named name: a route provider (Lookup; "" is the
// default), or a family recognised only by shape ("gemini",
// "openai-speech").
func fam(name string) Family {
	if f, ok := Lookup(name); ok || name == "" {
		return f
	}
	for i, f := range families() {
		if f.name() == name {
			return Family(i)
		}
	}
	panic("no family " + name)
}

// TestLookup: the table is the one place a route's Provider is resolved,
// and unknown names fall back to the OpenAI-compatible family.
func TestLookup(t *testing.T) {
	for _, tt := range []struct {
		provider string
		want     string
		ok       bool
	}{
		{"openai", "openai", true},
		{"azure", "azure", true},
		{"anthropic", "anthropic", true},
		{"azure-tts", "azure-tts", true},
		{"elevenlabs", "elevenlabs", true},
		{"cartesia", "cartesia", true},
		{"", "openai", false},
		{"bedrock", "openai", false},
		{"gemini", "openai", false},        // recognised by shape, not routed
		{"openai-speech", "openai", false}, // likewise
		{"OpenAI", "openai", false},        // names are exact
	} {
		f, ok := Lookup(tt.provider)
		if f.Name() != tt.want || ok != tt.ok {
			t.Errorf("Lookup(%q) = %s, %v; want %s, %v", tt.provider, f.Name(), ok, tt.want, tt.ok)
		}
	}
	if got, want := Names(), []string{"openai", "azure", "anthropic", "azure-tts", "elevenlabs", "cartesia"}; !slices.Equal(got, want) {
		t.Errorf("Names() = %q, want %q", got, want)
	}
	seen := map[string]bool{}
	for _, f := range families() {
		if f.name() == "" || seen[f.name()] {
			t.Errorf("family %T: name %q is empty or taken", f, f.name())
		}
		seen[f.name()] = true
	}
	if _, isDefault := families()[0].(openAI); !isDefault {
		t.Error("the first family must be the OpenAI-compatible default")
	}
}

// TestShapes: each routed family's error shape, and the shape of a request
// whose route is not known.
func TestShapes(t *testing.T) {
	for name, want := range map[string]Shape{
		"openai": ShapeOpenAI, "azure": ShapeOpenAI, "anthropic": ShapeAnthropic, "azure-tts": ShapeOpenAI,
		"elevenlabs": ShapeOpenAI, "cartesia": ShapeOpenAI,
	} {
		if got := fam(name).Shape(); got != want {
			t.Errorf("%s: shape %d, want %d", name, got, want)
		}
	}
	withVersion := http.Header{}
	withVersion.Set("anthropic-version", "2023-06-01")
	for _, tt := range []struct {
		h    http.Header
		path string
		want Shape
	}{
		{http.Header{}, "/v1/chat/completions", ShapeOpenAI},
		{http.Header{}, "/v1/messages", ShapeAnthropic},
		{withVersion, "/anything", ShapeAnthropic},
		{http.Header{}, "/v1beta/models/g:generateContent", ShapeOpenAI},
	} {
		if got := RequestShape(tt.h, tt.path); got != tt.want {
			t.Errorf("RequestShape(%v, %s) = %d, want %d", tt.h, tt.path, got, tt.want)
		}
	}
}

// The per-family table tests (openai_test.go, azure_test.go, ...) share
// these cases and runners: a request as the route's family reads it, the
// events or body of a response, and the errors the relay answers in the
// family's shape.

// defaultMaxOutput is the output bound requestCase.tokens assumes when a
// request names none (the relay's WithDefaultMaxTokens).
const defaultMaxOutput = 1000

// requestCase is one request body on a route of the given provider.
type requestCase struct {
	name, route             string
	path, contentType, body string
	want                    Request
	tokens                  int64  // TokenEstimate with defaultMaxOutput
	rewritten               string // the body Rewrite forwards; "" for no rewrite
}

func runRequestCases(t *testing.T, cases []requestCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run("request/"+tt.name, func(t *testing.T) {
			f := fam(tt.route)
			got := f.Request(tt.path, tt.contentType, []byte(tt.body))
			if got != tt.want {
				t.Errorf("Request:\n got  %+v\n want %+v", got, tt.want)
			}
			if n := f.TokenEstimate(tt.path, got, defaultMaxOutput); n != tt.tokens {
				t.Errorf("TokenEstimate = %d, want %d", n, tt.tokens)
			}
			in := []byte(tt.body)
			out, ok := f.Rewrite(tt.path, in, got)
			if string(in) != tt.body {
				t.Fatal("Rewrite modified the body in place")
			}
			switch {
			case tt.rewritten == "" && (ok || string(out) != tt.body):
				t.Errorf("Rewrite = %q, %v; want the body unchanged", out, ok)
			case tt.rewritten != "" && (!ok || string(out) != tt.rewritten):
				t.Errorf("Rewrite = %v\n got  %s\n want %s", ok, out, tt.rewritten)
			}
		})
	}
}

// event is one SSE event: its name ("" for none) and its data.
type event struct{ name, data string }

// responseCase is a response on a route of the given provider: SSE events,
// or a JSON body (json), and what observing it yields.
type responseCase struct {
	name, route string
	events      []event
	json        string
	want        streamResult
	done        bool
}

func runResponseCases(t *testing.T, cases []responseCase) {
	t.Helper()
	for _, tt := range cases {
		t.Run("response/"+tt.name, func(t *testing.T) {
			s := NewStream(fam(tt.route))
			var got streamResult
			for _, ev := range tt.events {
				if s.Event([]byte(ev.name), []byte(ev.data), false) {
					got.content++
				}
			}
			if tt.json != "" {
				s.Body([]byte(tt.json), false)
			}
			got.usage, got.hasUsage = s.Usage(), s.HasUsage()
			got.model, got.errType = s.Model(), s.ErrorType()
			checkResult(t, got, tt.want)
			if s.Done() != tt.done {
				t.Errorf("Done = %v, want %v", s.Done(), tt.done)
			}
		})
	}
}

// errorCase is one of the relay's error types (its ErrorType values) and
// the JSON the family's shape writes for it.
type errorCase struct{ errType, want string }

func runErrorCases(t *testing.T, route string, shape Shape, cases []errorCase) {
	t.Helper()
	if got := fam(route).Shape(); got != shape {
		t.Fatalf("%s routes answer in shape %d, want %d", route, got, shape)
	}
	for _, tt := range cases {
		t.Run("error/"+tt.errType, func(t *testing.T) {
			if got := string(shape.AppendJSON(nil, tt.errType, "Msg.")); got != tt.want {
				t.Errorf("AppendJSON:\n got  %s\n want %s", got, tt.want)
			}
			want := "event: error\ndata: " + tt.want + "\n\n"
			if got := string(shape.AppendEvent(nil, tt.errType, "Msg.")); got != want {
				t.Errorf("AppendEvent:\n got  %q\n want %q", got, want)
			}
		})
	}
}
