package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
)

// TestPricesExample: the shipped example loads, with its amounts read
// exactly (per million; micro-units).
func TestPricesExample(t *testing.T) {
	pt, err := loadPrices("prices.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if pt.Version() != "example-2025-06" || pt.Currency() != "USD" {
		t.Errorf("version %q currency %q", pt.Version(), pt.Currency())
	}
	for _, tt := range []struct {
		provider relay.Provider
		model    string
		want     relay.ModelPrice
	}{
		{relay.ProviderOpenAI, "gpt-4o-2024-08-06", relay.ModelPrice{Input: 2_500_000, CachedInput: 1_250_000, Output: 10_000_000}},
		{relay.ProviderOpenAI, "gpt-4o-mini", relay.ModelPrice{Input: 150_000, CachedInput: 75_000, Output: 600_000}},
		{relay.ProviderAnthropic, "claude-sonnet-4-20250514", relay.ModelPrice{Input: 3_000_000, CachedInput: 300_000, CacheWrite: 3_750_000, Output: 15_000_000}},
		{relay.ProviderOpenAI, "tts-1", relay.ModelPrice{Characters: 15_000_000}},
		{relay.ProviderAzureTTS, "en-US-AvaNeural", relay.ModelPrice{Characters: 16_000_000}},
	} {
		got, ok := pt.Lookup(tt.provider, tt.model)
		if !ok || got != tt.want {
			t.Errorf("%s %s: %+v %v, want %+v", tt.provider, tt.model, got, ok, tt.want)
		}
	}
	if _, ok := pt.Lookup(relay.ProviderOpenAI, "claude-sonnet-4"); ok {
		t.Error("an anthropic entry priced an openai route's model")
	}
}

// TestParsePrices: amounts read from their text exactly (quoted or not;
// JSON too), part prices absent (as the total) or 0 (free), and every
// mistake refused with the file's name.
func TestParsePrices(t *testing.T) {
	const yamlSrc = `
version: v1
currency: EUR
prices:
  - models: [m]
    input: 0.000001          # unquoted: the text, not a float
    cached_input: 0
    output: "123456.789012"
    reasoning: 1.1
    characters_per_thousand: "0.3"
`
	pt, err := parsePrices([]byte(yamlSrc), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := pt.Lookup(relay.ProviderOpenAI, "m")
	want := relay.ModelPrice{Input: 1, CachedInput: relay.NoCharge, Output: 123_456_789_012, Reasoning: 1_100_000, Characters: 300_000_000}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// 10 tokens at 0.000001 per million (0.00001 micro), 5 cached free, 1000
	// characters at 0.3 per thousand = 300 per million: 1000*300 = 300000.
	if c, ok := pt.Cost(relay.ProviderOpenAI, "m", relay.Usage{InputTokens: 10, CachedInputTokens: 5}, 1000); !ok || c != 300_000 {
		t.Errorf("cost %d %v, want 300000", c, ok)
	}

	const jsonSrc = `{"version": "j", "currency": "USD", "prices": [{"provider": "azure", "models": ["gpt-4o*"], "input": 2.5, "output": "10"}]}`
	pj, err := parsePrices([]byte(jsonSrc), "p.json")
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := pj.Lookup(relay.ProviderAzure, "gpt-4o-mini"); !ok || got.Input != 2_500_000 || got.Output != 10_000_000 {
		t.Errorf("json: %+v %v", got, ok)
	}

	for _, tt := range []struct{ name, src, want string }{
		{"unknown key", "version: v\ncurrency: USD\nprices: [{models: [m], inptu: 1}]", "inptu"},
		{"unknown provider", "version: v\ncurrency: USD\nprices: [{provider: opeanai, models: [m]}]", `unknown provider "opeanai"`},
		{"both character keys", "version: v\ncurrency: USD\nprices: [{models: [m], characters_per_million: 1, characters_per_thousand: 1}]", "not both"},
		{"exponent", "version: v\ncurrency: USD\nprices: [{models: [m], input: 1e-3}]", "not a decimal"},
		{"negative", "version: v\ncurrency: USD\nprices: [{models: [m], input: -1}]", "not a decimal"},
		{"too precise", "version: v\ncurrency: USD\nprices: [{models: [m], input: 0.0000001}]", "6 decimal places"},
		{"not a scalar", "version: v\ncurrency: USD\nprices: [{models: [m], input: [1]}]", "decimal number"},
		{"no version", "currency: USD\nprices: [{models: [m]}]", "version"},
		{"bad currency", "version: v\ncurrency: dollars\nprices: [{models: [m]}]", "ISO 4217"},
		{"twice", "version: v\ncurrency: USD\nprices: [{models: [m]}, {models: [m]}]", "twice"},
		{"empty", "", "empty"},
		{"too high per thousand", "version: v\ncurrency: USD\nprices: [{models: [m], characters_per_thousand: 1000000000}]", "out of range"},
	} {
		_, err := parsePrices([]byte(tt.src), "p.yaml")
		if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "p.yaml") {
			t.Errorf("%s: error %v, want one naming p.yaml and %q", tt.name, err, tt.want)
		}
	}
}

// TestConfigPricesUsed: a configuration naming a price file (relative to
// its own directory) prices each request: the record in the JSONL file
// carries the cost and the price version; a missing file stops the relay.
func TestConfigPricesUsed(t *testing.T) {
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":200,"prompt_tokens_details":{"cached_tokens":400}}}`)
	})}
	base := serveLoopback(t, up)
	dir := t.TempDir()
	records := filepath.Join(dir, "records.jsonl")
	writeFile(t, filepath.Join(dir, "my-prices.yaml"), "version: \"2026-11-29\"\ncurrency: USD\nprices:\n  - {models: [gpt-4o], input: \"2.50\", cached_input: \"1.25\", output: \"10\"}\n")
	cfg := filepath.Join(dir, "relay.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
routes:
  - {name: up, path: /v1, upstream: "%s", kind: json}
auth: {api_keys: [client-key]}
storage: {jsonl: {path: "%s"}}
models: [gpt-4o]
prices: my-prices.yaml
`, base, records))
	s := startServer(t, []string{"-config", cfg}, hooks{getenv: env(nil)})
	resp := post(testkit.Context(t), t, s.base+"/v1/chat/completions", "client-key", `{"model":"gpt-4o"}`)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if err := s.shutdown(t); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(records)
	if err != nil {
		t.Fatal(err)
	}
	var rec relay.Record
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	// 400 cached * 1.25 + 600 * 2.50 + 200 * 10 = 500 + 1500 + 2000 = 4000 micro-dollars
	want := relay.Charge{Known: true, Amount: 4000, Currency: "USD", PriceVersion: "2026-11-29"}
	if rec.Cost != want {
		t.Errorf("cost %+v, want %+v", rec.Cost, want)
	}

	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, "routes: [{name: r, path: /v1, upstream: https://api.example.com}]\nauth: {api_keys: [k]}\nprices: missing.yaml\n")
	if _, err := loadConfig(bad, env(nil)); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("a missing price file: %v", err)
	}
}
