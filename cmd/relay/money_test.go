package main

import (
	"strings"
	"testing"
)

// Amounts are parsed from their text, exactly, into micro-units: no float
// ever holds them.
func TestParseMoney(t *testing.T) {
	good := map[string]int64{"0": 0, "10": 10_000_000, "10.00": 10_000_000, "0.01": 10_000, "0.0082": 8_200,
		".5": 500_000, "0.000001": 1, "9007199254.740992": 1 << 53, "0.1": 100_000}
	for s, want := range good {
		if got, err := parseMoney(s); err != nil || got != want {
			t.Errorf("parseMoney(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", ".", "-1", "+1", "1.", "1,00", "1e3", "0.0000001", "9007199254.740993", "abc", "1.2.3", " 1"} {
		if got, err := parseMoney(s); err == nil {
			t.Errorf("parseMoney(%q) = %d, want an error", s, got)
		}
	}
}

// Spend budgets in the file reach relay.Limits as micro-units, for the
// defaults and a key's own limits; a bad amount names its key and line.
func TestSpendBudgetsConfig(t *testing.T) {
	const src = "routes: [{name: r, path: /v1, upstream: https://api.example.com}]\n" +
		"rate_limit: {enabled: true, spend_per_minute: 0.5, spend_per_day: \"10.00\", spend_per_month: 250}\n" +
		"auth:\n  api_keys:\n    - key: k\n      limits: {spend_per_day: \"0.01\"}\n"
	c, err := parseConfig([]byte(src), "relay.yaml", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	l := c.RateLimit.limits()
	if l.SpendPerMinute != 500_000 || l.SpendPerDay != 10_000_000 || l.SpendPerMonth != 250_000_000 {
		t.Errorf("rate_limit limits = %+v", l)
	}
	if k := c.Auth.APIKeys[0].Limits; k == nil || k.SpendPerDay != 10_000 {
		t.Errorf("key limits = %+v", k)
	}
	_, err = parseConfig([]byte(strings.Replace(src, `"0.01"`, `"0.0000001"`, 1)), "relay.yaml", env(nil))
	if err == nil || !strings.Contains(err.Error(), "relay.yaml:6:") || !strings.Contains(err.Error(), "spend_per_day") ||
		!strings.Contains(err.Error(), "six decimal places") {
		t.Errorf("error = %v", err)
	}
}
