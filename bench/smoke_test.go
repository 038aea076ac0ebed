package bench

import (
	"bytes"
	"strings"
	"testing"
)

// TestSmoke runs the harness's smoke mode: the mock upstream, the bare
// proxy and the relay as separate processes (this test binary, started
// again), every arm checked byte for byte, 1,000 concurrent streams each,
// and a scaled-down hostile-clients attack on each server that must end on
// time with every normal stream intact.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three processes and opens thousands of streams")
	}
	var out, log bytes.Buffer
	code := Run(Config{Mode: ModeSmoke, Command: "go test -run TestSmoke", Stdout: &out, Stderr: &log})
	if code != 0 {
		t.Fatalf("smoke run exited %d\nreport:\n%s\nlog:\n%s", code, out.String(), log.String())
	}
	report := out.String()
	for _, want := range []string{
		"**Fidelity: PASS**",
		"| direct | — | 1000 | 1000 | 1000 | 0 |",
		"| bare | HTTP/1.1 | 1000 | 1000 | 1000 | 0 |",
		"| relay | HTTP/1.1 | 1000 | 1000 | 1000 | 0 |",
		"| main |",
		"| hostile |",
		"## 6. Hostile clients",
		"| bare | slow body, no key | 10 | 10 |",
		"| relay | slow body, valid key | 10 | 10 |",
		"| relay | under attack |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
}
