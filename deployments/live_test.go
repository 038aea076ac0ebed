package deployments

// The live test of the monitoring assets: a real Prometheus scrapes a relay
// that serves every kind of traffic, and evaluates every expression of the
// dashboard, the alert rules, queries.md and the root README.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readmePath is the root README, whose "## Metrics" section has a
// ```promql block.
var readmePath = filepath.Join("..", "README.md")

// TestLiveExpressions starts a relay in process, in front of a fake
// upstream, sends it a few hundred requests of every kind (streams, JSON,
// upstream errors, a closed upstream port, client disconnects, rate
// limits, limiter and storage failures), has a real Prometheus scrape it
// every second with the repository's alert rules loaded, and then asks
// Prometheus:
//   - that every rule of alerts.yml loaded and evaluates without error;
//   - that every expression is valid, and that those that must return
//     series (all but the alert conditions) do;
//   - that every relay_* selector of the expressions selects series, so
//     that a label filter that never matches is not hidden behind an
//     `or vector(0)`.
//
// It needs the prometheus binary (RELAY_TEST_PROMETHEUS_BIN or PATH); it
// is skipped without it unless CI=true.
func TestLiveExpressions(t *testing.T) {
	bin := prometheusBinary(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	alerts, err := filepath.Abs(alertsPath)
	if err != nil {
		t.Fatal(err)
	}
	exprs := append(allExpressions(t), markdownExpressions(t, readmePath)...)

	up := newFakeUpstream(t)
	rl, srv := startRelay(t, up)
	// Started before the traffic, so that the two overlap.
	prom := startPrometheus(ctx, t, bin, srv.Listener.Addr().String(), alerts)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.Cleanup(client.CloseIdleConnections)
	load := &loadGen{t: t, base: srv.URL, client: client, up: up}
	load.run(ctx, 20, 8)
	// Write the records of the burst, so that the storage metrics moved.
	if err := rl.Recorder().Flush(ctx); err != nil {
		t.Fatalf("flushing records: %v", err)
	}
	mark := time.Now()
	// More traffic while Prometheus scrapes, so that rates are not zero.
	stop := load.background(ctx, 200*time.Millisecond)
	defer stop()

	waitScrapes(ctx, t, prom, mark, 2)

	t.Run("rules", func(t *testing.T) { checkRules(ctx, t, prom, alerts) })
	t.Run("expressions", func(t *testing.T) {
		var checks []liveCheck
		for _, e := range exprs {
			checks = append(checks, liveCheck{source: e.Source, expr: e.Expr, needSeries: e.mustReturnSeries()})
		}
		evaluate(ctx, t, prom, checks)
	})
	t.Run("selectors", func(t *testing.T) {
		evaluate(ctx, t, prom, selectorChecks(exprs))
	})
}

// waitScrapes waits until Prometheus has scraped the relay successfully at
// least n times since mark, so that rate() over what happened before mark
// has two samples to work with.
func waitScrapes(ctx context.Context, t *testing.T, p *promServer, mark time.Time, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	var last string
	err := poll(ctx, 200*time.Millisecond, func() (bool, error) {
		res, err := p.query(ctx, `up{job="stream-relay"}[1m]`)
		if err != nil {
			return false, err
		}
		if res.Status != "success" {
			return false, fmt.Errorf("querying up: %s: %s", res.ErrorType, res.Error)
		}
		var m []struct {
			Values [][2]any `json:"values"`
		}
		if err := json.Unmarshal(res.Data.Result, &m); err != nil {
			return false, err
		}
		after := 0
		last = "no sample"
		for _, s := range m {
			for _, v := range s.Values {
				ts, _ := v[0].(float64)
				val, _ := v[1].(string)
				last = "up = " + val
				if ts > float64(mark.UnixNano())/1e9 && val == "1" {
					after++
				}
			}
		}
		return after >= n, nil
	})
	if err != nil {
		t.Fatalf("waiting for %d scrapes of the relay (last: %s): %v\nprometheus log:\n%s", n, last, err, p.logTail())
	}
}

// checkRules checks that Prometheus loaded every rule of the file and that
// each evaluates without error.
func checkRules(ctx context.Context, t *testing.T, p *promServer, file string) {
	want := 0
	for _, g := range loadRules(t, alertsPath).Groups {
		want += len(g.Rules)
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	var groups []promRuleGroup
	err := poll(ctx, 200*time.Millisecond, func() (bool, error) {
		var err error
		if groups, err = p.rules(ctx); err != nil {
			return false, err
		}
		for _, g := range groups {
			for _, r := range g.Rules {
				if r.Health == "unknown" || r.Health == "" {
					return false, nil // not evaluated yet
				}
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("waiting for the rules to be evaluated: %v", err)
	}
	got := 0
	for _, g := range groups {
		if g.File != file {
			t.Errorf("rule group %q from %s, want only %s", g.Name, g.File, file)
		}
		for _, r := range g.Rules {
			got++
			if r.Health != "ok" {
				t.Errorf("%s: group %s %s %s: health %q: %s", alertsPath, g.Name, r.Type, r.Name, r.Health, r.LastError)
			}
		}
	}
	if got != want {
		t.Errorf("prometheus loaded %d rules, %s has %d", got, alertsPath, want)
	}
}

// liveCheck is one query to evaluate.
type liveCheck struct {
	source     string
	expr       string
	needSeries bool
}

// evaluate runs every check. An invalid expression fails at once; one that
// returns no series is retried for a while, since a series of a request
// that ended just before the last scrape may still be on its way.
func evaluate(ctx context.Context, t *testing.T, p *promServer, checks []liveCheck) {
	t.Helper()
	if len(checks) == 0 {
		t.Fatal("nothing to evaluate")
	}
	settle, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pending, invalid := checks, 0
	err := poll(settle, 500*time.Millisecond, func() (bool, error) {
		var empty []liveCheck
		for _, c := range pending {
			res, err := p.query(ctx, c.expr)
			if err != nil {
				return false, err
			}
			switch {
			case res.Status != "success":
				invalid++
				t.Errorf("%s: invalid: %s: %s\n\t%s", c.source, res.ErrorType, res.Error, c.expr)
			case c.needSeries && res.empty():
				empty = append(empty, c)
			}
		}
		pending = empty
		return len(pending) == 0, nil
	})
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("querying prometheus: %v", err)
	}
	for _, c := range pending {
		t.Errorf("%s: returned no series\n\t%s", c.source, c.expr)
	}
	t.Logf("%d queries evaluated: %d invalid, %d without series", len(checks), invalid, len(pending))
}

// selectorChecks returns, for every distinct relay_* selector of the
// expressions, a check that it selects series.
func selectorChecks(exprs []promExpr) []liveCheck {
	sources := map[string][]string{}
	var order []string
	for _, e := range exprs {
		for _, m := range selectorRe.FindAllStringSubmatch(e.Expr, -1) {
			sel := strings.Join(strings.Fields(m[0]), "")
			if _, seen := sources[sel]; !seen {
				order = append(order, sel)
			}
			if !slices.Contains(sources[sel], e.Source) {
				sources[sel] = append(sources[sel], e.Source)
			}
		}
	}
	var checks []liveCheck
	for _, sel := range order {
		src := sources[sel][0]
		if n := len(sources[sel]); n > 1 {
			src += " and " + strconv.Itoa(n-1) + " more"
		}
		checks = append(checks, liveCheck{source: "selector " + sel + " of " + src, expr: "count(" + sel + ")", needSeries: true})
	}
	return checks
}
