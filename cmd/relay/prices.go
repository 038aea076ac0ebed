package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/streamrelay/relay"
	"go.yaml.in/yaml/v3"
)

// maxPriceFile bounds the price file read (a table of thousands of models
// is a few hundred KiB).
const maxPriceFile = 4 << 20

// priceFile is the price file's schema (YAML, or JSON, which YAML reads).
// Amounts are decimal currency units, read from the text as written
// ("2.50", quoted or not) and never through a float. See
// prices.example.yaml.
type priceFile struct {
	// Version names the prices; every record carries it.
	Version string `yaml:"version"`
	// Currency is an ISO 4217 code ("USD").
	Currency string       `yaml:"currency"`
	Prices   []priceEntry `yaml:"prices"`
}

// priceEntry prices models per million tokens (characters: per million
// or per thousand). A part price (cached_input, cache_write, audio_input,
// reasoning, audio_output) left out is charged as its total (input or
// output); written as 0 it is free.
type priceEntry struct {
	Provider    string      `yaml:"provider"`
	Models      []string    `yaml:"models"`
	Input       *priceValue `yaml:"input"`
	CachedInput *priceValue `yaml:"cached_input"`
	CacheWrite  *priceValue `yaml:"cache_write"`
	AudioInput  *priceValue `yaml:"audio_input"`
	Output      *priceValue `yaml:"output"`
	Reasoning   *priceValue `yaml:"reasoning"`
	AudioOutput *priceValue `yaml:"audio_output"`
	// CharactersPerMillion and CharactersPerThousand price synthesised
	// characters (TTS); give one of them.
	CharactersPerMillion  *priceValue `yaml:"characters_per_million"`
	CharactersPerThousand *priceValue `yaml:"characters_per_thousand"`
}

// priceValue is an amount read exactly from its YAML text.
type priceValue relay.Money

// UnmarshalYAML reads the scalar's text with relay.ParseMoney: "2.50" is
// 2,500,000 micro-units, with no float rounding on the way.
func (p *priceValue) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: a price is a decimal number", n.Line)
	}
	m, err := relay.ParseMoney(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*p = priceValue(m)
	return nil
}

// knownProvider reports whether an entry's provider is a route provider:
// a typo would otherwise price nothing, silently.
func knownProvider(p relay.Provider) bool {
	switch p {
	case relay.ProviderOpenAI, relay.ProviderAzure, relay.ProviderAnthropic, relay.ProviderAzureTTS:
		return true
	}
	return false
}

// loadPrices reads a price file (no network: prices are the operator's).
func loadPrices(path string) (*relay.PriceTable, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading prices: %w", err)
	}
	defer f.Close()
	src, err := io.ReadAll(io.LimitReader(f, maxPriceFile+1))
	if err != nil {
		return nil, fmt.Errorf("reading prices: %w", err)
	}
	if len(src) > maxPriceFile {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxPriceFile)
	}
	return parsePrices(src, path)
}

// parsePrices decodes a price file strictly (an unknown key is an error)
// and builds its table.
func parsePrices(src []byte, name string) (*relay.PriceTable, error) {
	var pf priceFile
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&pf); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty price file", name)
		}
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	entries := make([]relay.PriceEntry, 0, len(pf.Prices))
	for i, e := range pf.Prices {
		if e.Provider != "" && !knownProvider(relay.Provider(e.Provider)) {
			return nil, fmt.Errorf("%s: prices[%d]: unknown provider %q (want openai, azure, anthropic or azure-tts, or none for any)", name, i, e.Provider)
		}
		if e.CharactersPerMillion != nil && e.CharactersPerThousand != nil {
			return nil, fmt.Errorf("%s: prices[%d]: give characters_per_million or characters_per_thousand, not both", name, i)
		}
		p := relay.ModelPrice{
			Input:       total(e.Input),
			CachedInput: part(e.CachedInput),
			CacheWrite:  part(e.CacheWrite),
			AudioInput:  part(e.AudioInput),
			Output:      total(e.Output),
			Reasoning:   part(e.Reasoning),
			AudioOutput: part(e.AudioOutput),
			Characters:  total(e.CharactersPerMillion),
		}
		if e.CharactersPerThousand != nil {
			p.Characters = relay.Money(*e.CharactersPerThousand) * 1000 // exact: ParseMoney bounds it far below overflow
		}
		entries = append(entries, relay.PriceEntry{Provider: relay.Provider(e.Provider), Models: e.Models, Price: p})
	}
	t, err := relay.NewPriceTable(pf.Version, pf.Currency, entries)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return t, nil
}

// total is a total's price: absent is zero.
func total(v *priceValue) relay.Money {
	if v == nil {
		return 0
	}
	return relay.Money(*v)
}

// part is a part's price: absent is its total's (relay's zero), an
// explicit zero is free.
func part(v *priceValue) relay.Money {
	switch {
	case v == nil:
		return 0
	case *v == 0:
		return relay.NoCharge
	}
	return relay.Money(*v)
}

// pricesPath resolves the prices key against the configuration file's
// directory, so that a relative path does not depend on where the relay
// was started.
func pricesPath(configFile, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(configFile), p)
}
