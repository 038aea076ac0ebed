package bench

import (
	"bytes"
	"strings"
	"testing"
)

// TestSmoke runs the harness's smoke mode: the mock upstream, the bare
// proxy and the relay as separate processes (this test binary, started
// again), every arm checked byte for byte, 1,000 concurrent streams each,
// a scaled-down hostile-clients attack on each server that must end on
// time with every normal stream intact, and every WebSocket fidelity case
// on every arm, with the relay's session records reconciled (usage
// included).
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
		"## 7. WebSocket sessions",
		"| text and binary messages, every length form | 3 / 0 | 3 / 0 | 3 / 0 |",
		"| 1 MiB binary message, close without a code | 3 / 0 | 3 / 0 | 3 / 0 |",
		"| fragmented messages with a ping between fragments | 3 / 0 | 3 / 0 | 3 / 0 |",
		"| pings both ways, close with code and reason by the client | 3 / 0 | 3 / 0 | 3 / 0 |",
		"| realtime responses with usage, close with code and reason by the upstream | 3 / 0 | 3 / 0 | 3 / 0 |",
		"| browser subprotocol key (relay only) | — | — | 3 / 0 |",
		"| wrong key refused before the upgrade (relay only) | — | — | 3 / 0 |",
		// The relay recorded who closed each session, and with which code.
		"| main | client | 4001 | 3 |",
		"| main | client | 1005 | 3 |",
		"| main | upstream | 4002 | 3 |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
}
