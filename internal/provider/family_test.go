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
	if got, want := Names(), []string{"openai", "azure", "anthropic", "azure-tts"}; !slices.Equal(got, want) {
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
