package deployments

// Helpers that collect every PromQL expression of the monitoring assets.
// They live in a test file so that they cost the module nothing. The
// static tests and the live one (live_test.go) use allExpressions(t), and
// promExpr.mustReturnSeries to leave out the alert conditions, which only
// return series while they fire.

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/streamrelay/relay/internal/testkit"
)

// Paths of the assets, relative to this directory (the tests' working
// directory).
var (
	dashboardPath        = filepath.Join("grafana", "dashboard.json")
	alertsPath           = filepath.Join("prometheus", "alerts.yml")
	prometheusConfigPath = filepath.Join("prometheus", "prometheus.yml")
	queriesPath          = "queries.md"
)

// exprKind says where an expression comes from and what to expect of it.
type exprKind int

const (
	kindPanel          exprKind = iota // a dashboard panel's target
	kindVariable                       // a dashboard variable's label_values, as count by
	kindDoc                            // a line of a ```promql block in a markdown file
	kindRecord                         // a recording rule
	kindAlertQuery                     // an alert's expr without its "<op> <number>" threshold
	kindAlertCondition                 // an alert's whole expr
)

func (k exprKind) String() string {
	return [...]string{"panel", "variable", "doc", "record", "alert query", "alert condition"}[k]
}

// promExpr is one PromQL expression found in the assets.
type promExpr struct {
	Source string   // file and position, for messages
	Raw    string   // as written, Grafana variables included
	Expr   string   // with the Grafana variables substituted (see substitute)
	Kind   exprKind // where it comes from
}

// mustReturnSeries reports whether the expression returns at least one
// series on a Prometheus that scraped a relay which served traffic. Alert
// conditions only do while the alert fires.
func (e promExpr) mustReturnSeries() bool { return e.Kind != kindAlertCondition }

// grafanaVars are the only Grafana variables the assets may use, and what
// stands for them outside Grafana. Longest names first.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__interval", "1m",
	"$__range", "5m",
	"$route", ".*",
)

// substitute replaces the Grafana variables of expr by the values above.
// Anything still starting with '$' afterwards is an unsupported variable.
func substitute(expr string) string { return grafanaVars.Replace(expr) }

// allExpressions returns every expression of the dashboard, the alert rules
// (both query side and whole condition) and queries.md.
func allExpressions(t testing.TB) []promExpr {
	t.Helper()
	var out []promExpr
	out = append(out, dashboardExpressions(t, dashboardPath)...)
	out = append(out, ruleExpressions(t, alertsPath)...)
	out = append(out, markdownExpressions(t, queriesPath)...)
	return out
}

// Dashboard JSON, as far as the tests look at it.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []templateVar `json:"list"`
	} `json:"templating"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Datasource  *datasourceRef `json:"datasource"`
	Targets     []panelTarget  `json:"targets"`
	Panels      []panel        `json:"panels"` // a collapsed row's panels
	FieldConfig struct {
		Defaults struct {
			Unit       string `json:"unit"`
			Thresholds *struct {
				Mode  string `json:"mode"`
				Steps []struct {
					Color string   `json:"color"`
					Value *float64 `json:"value"`
				} `json:"steps"`
			} `json:"thresholds"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
}

type panelTarget struct {
	RefID      string         `json:"refId"`
	Expr       string         `json:"expr"`
	Format     string         `json:"format"`
	Datasource *datasourceRef `json:"datasource"`
}

type templateVar struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"` // a string, or {"query": "..."}
	Definition string          `json:"definition"`
	Datasource *datasourceRef  `json:"datasource"`
	IncludeAll bool            `json:"includeAll"`
	AllValue   string          `json:"allValue"`
	Multi      bool            `json:"multi"`
}

// queryString returns the variable's query text.
func (v templateVar) queryString() string {
	var s string
	if json.Unmarshal(v.Query, &s) == nil {
		return s
	}
	var o struct {
		Query string `json:"query"`
	}
	if json.Unmarshal(v.Query, &o) == nil {
		return o.Query
	}
	return ""
}

// loadDashboard parses the dashboard at path.
func loadDashboard(t testing.TB, path string) dashboard {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return d
}

// flatPanels returns the dashboard's panels, those of collapsed rows
// included, rows excluded.
func flatPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		if p.Type == "row" {
			out = append(out, flatPanels(p.Panels)...)
			continue
		}
		out = append(out, p)
	}
	return out
}

var labelValuesRe = regexp.MustCompile(`^\s*label_values\(\s*(.+?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// dashboardExpressions returns the expressions of the dashboard's panels,
// and of its label_values variables rewritten as "count by (label) (...)".
func dashboardExpressions(t testing.TB, path string) []promExpr {
	t.Helper()
	d := loadDashboard(t, path)
	var out []promExpr
	for _, p := range flatPanels(d.Panels) {
		for _, tg := range p.Targets {
			out = append(out, promExpr{
				Source: path + ": panel " + strconv.Itoa(p.ID) + " " + strconv.Quote(p.Title) + " target " + tg.RefID,
				Raw:    tg.Expr,
				Expr:   substitute(tg.Expr),
				Kind:   kindPanel,
			})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValuesRe.FindStringSubmatch(v.queryString())
		if m == nil {
			t.Errorf("%s: variable %s: query %q is not label_values(<selector>, <label>)", path, v.Name, v.queryString())
			continue
		}
		raw := "count by (" + m[2] + ") (" + m[1] + ")"
		out = append(out, promExpr{
			Source: path + ": variable " + v.Name,
			Raw:    raw,
			Expr:   substitute(raw),
			Kind:   kindVariable,
		})
	}
	return out
}

// Prometheus rule files, as far as the tests look at them.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// loadRules parses the rule file at path.
func loadRules(t testing.TB, path string) ruleFile {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f ruleFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return f
}

// ruleExpressions returns the expressions of the rule file at path: each
// recording rule's, and for each alert both its query side and its whole
// condition. An alert whose expr is not "<query> <op> <number>" is an error.
func ruleExpressions(t testing.TB, path string) []promExpr {
	t.Helper()
	var out []promExpr
	for _, g := range loadRules(t, path).Groups {
		for i, r := range g.Rules {
			expr := strings.TrimSpace(r.Expr)
			if r.Record != "" {
				out = append(out, promExpr{Source: path + ": record " + r.Record, Raw: expr, Expr: substitute(expr), Kind: kindRecord})
				continue
			}
			src := path + ": group " + g.Name + " rule " + strconv.Itoa(i) + " alert " + r.Alert
			query, _, _, ok := splitThreshold(expr)
			if !ok {
				t.Errorf("%s: expr is not \"<query> <comparison> <number>\": %s", src, expr)
			} else {
				out = append(out, promExpr{Source: src + " (query)", Raw: query, Expr: substitute(query), Kind: kindAlertQuery})
			}
			out = append(out, promExpr{Source: src, Raw: expr, Expr: substitute(expr), Kind: kindAlertCondition})
		}
	}
	return out
}

// splitThreshold splits "<query> <op> <number>", op a comparison operator
// outside any brackets, quotes or comments, into its parts.
func splitThreshold(expr string) (query, op, threshold string, ok bool) {
	depth, last, lastLen := 0, -1, 0
	for i := 0; i < len(expr); i++ {
		switch c := expr[i]; c {
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			depth--
		case '"', '\'', '`':
			for i++; i < len(expr) && expr[i] != c; i++ {
				if expr[i] == '\\' && c != '`' {
					i++
				}
			}
		case '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case '=', '!', '>', '<':
			if depth != 0 {
				continue
			}
			if i+1 < len(expr) && expr[i+1] == '=' {
				last, lastLen = i, 2
				i++
			} else if c == '>' || c == '<' {
				last, lastLen = i, 1
			}
		}
	}
	if last < 0 {
		return "", "", "", false
	}
	query = strings.TrimSpace(expr[:last])
	op = expr[last : last+lastLen]
	threshold = strings.TrimSpace(expr[last+lastLen:])
	if _, err := strconv.ParseFloat(threshold, 64); err != nil || query == "" {
		return "", "", "", false
	}
	return query, op, threshold, true
}

// markdownExpressions returns every non-empty, non-comment line of the
// ```promql blocks of the markdown file at path.
func markdownExpressions(t testing.TB, path string) []promExpr {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []promExpr
	in, n, open := false, 0, 0
	for sc := bufio.NewScanner(f); sc.Scan(); {
		n++
		line := strings.TrimSpace(sc.Text())
		switch {
		case !in && line == "```promql":
			in, open = true, n
		case in && line == "```":
			in = false
		case in && line != "" && !strings.HasPrefix(line, "#"):
			out = append(out, promExpr{Source: path + ":" + strconv.Itoa(n), Raw: line, Expr: substitute(line), Kind: kindDoc})
		}
	}
	if in {
		t.Errorf("%s:%d: ```promql block is not closed", path, open)
	}
	return out
}

// promtool returns the path of promtool: the RELAY_TEST_PROMTOOL_BIN
// environment variable, else promtool on PATH or in /usr/bin. Without it
// the test fails in CI and is skipped otherwise (see testkit.Missing).
func promtool(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("RELAY_TEST_PROMTOOL_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("RELAY_TEST_PROMTOOL_BIN: %v", err)
		}
		return p
	}
	p, err := exec.LookPath("promtool")
	if err != nil {
		if _, serr := os.Stat("/usr/bin/promtool"); serr == nil {
			return "/usr/bin/promtool"
		}
		testkit.Missing(t, "promtool not found: set RELAY_TEST_PROMTOOL_BIN or install Debian's prometheus package")
	}
	return p
}
