package deployments

// Static checks of the monitoring assets: they need nothing but promtool
// (Debian's prometheus package), and skip the promtool parts without it
// unless CI=true.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// metricInfo describes one metric the relay exposes.
type metricInfo struct {
	histogram bool
	labels    []string
}

// relayMetrics are the metrics of the relay, with their labels.
var relayMetrics = map[string]metricInfo{
	"relay_requests_total":          {labels: []string{"route", "status"}},
	"relay_duration_ms":             {histogram: true, labels: []string{"route"}},
	"relay_errors_total":            {labels: []string{"route", "type"}},
	"relay_active_connections":      {labels: []string{"route"}},
	"relay_ttfb_ms":                 {histogram: true, labels: []string{"route"}},
	"relay_tokens_total":            {labels: []string{"route", "model", "type"}},
	"relay_ttft_ms":                 {histogram: true, labels: []string{"route", "model"}},
	"relay_inter_chunk_ms":          {histogram: true, labels: []string{"route", "model"}},
	"relay_upstream_requests_total": {labels: []string{"route", "upstream", "status"}},
	"relay_rate_limited_total":      {labels: []string{"route", "reason"}},
	"relay_records_dropped_total":   {},
	"relay_records_retried_total":   {},
	"relay_records_queued":          {},
	"relay_records_queued_bytes":    {},
	"relay_storage_write_ms":        {histogram: true},
}

// labelValues are the values a label can take, where they are fixed.
var labelValues = map[string][]string{
	"relay_requests_total.status": {"2xx", "3xx", "4xx", "5xx"},
	"relay_errors_total.type": {"auth", "rate_limited", "body_too_large", "bad_request", "no_route",
		"upstream_connect", "upstream_timeout", "upstream_status", "stream_interrupted", "client_canceled",
		"limiter", "storage", "shutting_down", "upstream_error_event", "body_timeout", "overloaded", "method_not_allowed", "no_read_deadline"},
	"relay_tokens_total.type": {"input", "output", "cached_input", "cache_creation_input", "reasoning",
		"audio_input", "audio_output", "estimated"},
	"relay_rate_limited_total.reason": {"requests", "tokens"},
}

// series resolves a series name used in an expression to its metric, and
// reports whether it is a histogram's _bucket series.
func series(name string) (metric string, info metricInfo, bucket, ok bool) {
	if info, ok := relayMetrics[name]; ok && !info.histogram {
		return name, info, false, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, found := strings.CutSuffix(name, suffix)
		if info, ok := relayMetrics[base]; found && ok && info.histogram {
			return base, info, suffix == "_bucket", true
		}
	}
	return "", metricInfo{}, false, false
}

var (
	selectorRe = regexp.MustCompile(`\b(relay_[a-zA-Z0-9_]*)\s*(\{([^}]*)\})?`)
	matcherRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	byLeRe     = regexp.MustCompile(`\bby\s*\([^)]*\ble\b[^)]*\)`)
)

// TestExpressionsStatic checks every expression without Prometheus: only
// known variables, known series, known labels and label values, bucket
// series aggregated by le, panels filtered by the route variable.
func TestExpressionsStatic(t *testing.T) {
	all := allExpressions(t)
	if len(all) == 0 {
		t.Fatal("no expressions found")
	}
	for _, e := range all {
		t.Run(e.Source, func(t *testing.T) {
			if strings.TrimSpace(e.Expr) == "" {
				t.Fatal("empty expression")
			}
			if i := strings.IndexByte(e.Expr, '$'); i >= 0 {
				t.Errorf("unsupported variable at %q (only $route, $__rate_interval, $__interval, $__range)", e.Expr[i:])
			}
			if !balanced(e.Expr) {
				t.Errorf("unbalanced brackets or quotes: %s", e.Expr)
			}
			uses := selectorRe.FindAllStringSubmatch(e.Raw, -1)
			if len(uses) == 0 && !strings.Contains(e.Raw, "up{") {
				t.Errorf("uses no relay metric: %s", e.Raw)
			}
			for _, u := range uses {
				metric, info, bucket, ok := series(u[1])
				if !ok {
					t.Errorf("unknown series %s", u[1])
					continue
				}
				if bucket && !byLeRe.MatchString(e.Raw) {
					t.Errorf("%s is not aggregated by le: %s", u[1], e.Raw)
				}
				routeFiltered := false
				for _, m := range matcherRe.FindAllStringSubmatch(u[3], -1) {
					label, op, value := m[1], m[2], m[3]
					if !slices.Contains(info.labels, label) && !(bucket && label == "le") {
						t.Errorf("%s has no label %q", u[1], label)
					}
					if allowed, fixed := labelValues[metric+"."+label]; fixed && (op == "=" || op == "!=") && !slices.Contains(allowed, value) {
						t.Errorf("%s{%s%s%q}: %s takes only %v", u[1], label, op, value, label, allowed)
					}
					if label == "route" && op == "=~" && value == "$route" {
						routeFiltered = true
					}
				}
				if e.Kind == kindPanel && slices.Contains(info.labels, "route") && !routeFiltered {
					t.Errorf("panel selector %s does not filter route=~\"$route\"", u[0])
				}
			}
		})
	}
}

// balanced reports whether brackets match outside quotes.
func balanced(s string) bool {
	var stack []byte
	pair := map[byte]byte{')': '(', ']': '[', '}': '{'}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '(', '[', '{':
			stack = append(stack, c)
		case ')', ']', '}':
			if len(stack) == 0 || stack[len(stack)-1] != pair[c] {
				return false
			}
			stack = stack[:len(stack)-1]
		case '"', '\'', '`':
			j := i + 1
			for ; j < len(s) && s[j] != c; j++ {
				if s[j] == '\\' && c != '`' {
					j++
				}
			}
			if j >= len(s) {
				return false
			}
			i = j
		}
	}
	return len(stack) == 0
}

// TestExpressionsParse has promtool parse every expression, each as a
// recording rule of a temporary rule file.
func TestExpressionsParse(t *testing.T) {
	pt := promtool(t)
	all := allExpressions(t)
	check := func(es []promExpr) ([]byte, error) {
		type rec struct {
			Record string `yaml:"record"`
			Expr   string `yaml:"expr"`
		}
		var rules []rec
		for i, e := range es {
			rules = append(rules, rec{Record: fmt.Sprintf("check:expr_%03d", i), Expr: e.Expr})
		}
		b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "expressions", "rules": rules}}})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "expressions.yml")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return exec.Command(pt, "check", "rules", path).CombinedOutput()
	}
	if out, err := check(all); err == nil {
		t.Logf("promtool parsed %d expressions", len(all))
		return
	} else {
		t.Logf("promtool check rules: %v\n%s", err, out)
	}
	// Something failed: check each on its own to name it.
	for _, e := range all {
		if out, err := check([]promExpr{e}); err != nil {
			t.Errorf("%s: %s\n%v\n%s", e.Source, e.Expr, err, out)
		}
	}
}

// TestPromtoolCheck runs promtool's own checks of the Prometheus files.
func TestPromtoolCheck(t *testing.T) {
	pt := promtool(t)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"rules", []string{"check", "rules", alertsPath}},
		{"config", []string{"check", "config", prometheusConfigPath}},
		{"alert unit tests", []string{"test", "rules", filepath.Join("prometheus", "alerts_test.yml")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := exec.Command(pt, tc.args...).CombinedOutput()
			if err != nil {
				t.Fatalf("promtool %s: %v\n%s", strings.Join(tc.args, " "), err, out)
			}
			if !bytes.Contains(out, []byte("SUCCESS")) {
				t.Errorf("promtool %s did not report SUCCESS:\n%s", strings.Join(tc.args, " "), out)
			}
		})
	}
}

func TestSplitThreshold(t *testing.T) {
	for _, tc := range []struct {
		expr, query, op, threshold string
		ok                         bool
	}{
		{`up == 0`, `up`, `==`, `0`, true},
		{`rate(x{a!="b"}[5m]) > 0.05`, `rate(x{a!="b"}[5m])`, `>`, `0.05`, true},
		{"(sum(a) or vector(0))\n  >= 1e3", `(sum(a) or vector(0))`, `>=`, `1e3`, true},
		{`a{b=">1"} != 2`, `a{b=">1"}`, `!=`, `2`, true},
		{`a > b`, ``, ``, ``, false},
		{`a`, ``, ``, ``, false},
		{`a > bool 1`, ``, ``, ``, false},
		{`(a > 1)`, ``, ``, ``, false},
		{`a < 1 # comment > 2`, ``, ``, ``, false},
	} {
		t.Run(tc.expr, func(t *testing.T) {
			q, op, th, ok := splitThreshold(tc.expr)
			if q != tc.query || op != tc.op || th != tc.threshold || ok != tc.ok {
				t.Errorf("splitThreshold(%q) = %q, %q, %q, %v; want %q, %q, %q, %v",
					tc.expr, q, op, th, ok, tc.query, tc.op, tc.threshold, tc.ok)
			}
		})
	}
}

func TestMarkdownExpressions(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"blocks", "text\n```promql\na\n\n# comment\n  b  \n```\n```\nnot promql\n```\n```promql\nc\n```\n", []string{"a", "b", "c"}},
		{"variables", "```promql\nrate(x{route=~\"$route\"}[$__rate_interval])\n```\n", []string{`rate(x{route=~".*"}[1m])`}},
		{"none", "no blocks\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".md")
			if err := os.WriteFile(path, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range markdownExpressions(t, path) {
				got = append(got, e.Expr)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestQueriesDocument checks that queries.md covers what users ask for.
func TestQueriesDocument(t *testing.T) {
	var exprs []string
	for _, e := range markdownExpressions(t, queriesPath) {
		exprs = append(exprs, e.Raw)
	}
	for _, tc := range []struct {
		name  string
		parts []string
	}{
		{"request rate", []string{"rate(relay_requests_total[5m])"}},
		{"average latency", []string{"rate(relay_duration_ms_sum[5m])", "/", "rate(relay_duration_ms_count[5m])"}},
		{"p95 latency", []string{"histogram_quantile(0.95,", "relay_duration_ms_bucket"}},
		{"success rate", []string{"1 - (", `relay_requests_total{status="5xx"}`}},
		{"error rate by type", []string{"sum by (type)", "relay_errors_total"}},
		{"active connections", []string{"relay_active_connections"}},
		{"ttft p95 by model", []string{"histogram_quantile(0.95,", "by (model, le)", "relay_ttft_ms_bucket"}},
		{"tokens per minute by model", []string{"sum by (model)", "relay_tokens_total", "* 60"}},
		{"drops", []string{"sum(increase(relay_records_dropped_total[5m]))"}},
		{"rate limited", []string{"relay_rate_limited_total"}},
		{"storage write p95", []string{"relay_storage_write_ms_bucket"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !slices.ContainsFunc(exprs, func(e string) bool { return containsAll(e, tc.parts) }) {
				t.Errorf("no expression contains all of %q", tc.parts)
			}
		})
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

func TestDashboard(t *testing.T) {
	d := loadDashboard(t, dashboardPath)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both must be set", d.UID, d.Title)
	}
	if d.SchemaVersion < 36 {
		t.Errorf("schemaVersion %d, want 36 or later", d.SchemaVersion)
	}

	vars := map[string]templateVar{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if v, ok := vars["DS_PROMETHEUS"]; !ok || v.Type != "datasource" || v.queryString() != "prometheus" {
		t.Errorf("want a datasource variable DS_PROMETHEUS of type prometheus, got %+v", v)
	}
	if v, ok := vars["route"]; !ok || v.Type != "query" ||
		v.queryString() != "label_values(relay_requests_total, route)" ||
		!v.IncludeAll || v.AllValue != ".*" || v.Datasource == nil || v.Datasource.UID != "${DS_PROMETHEUS}" {
		t.Errorf("want a query variable route = label_values(relay_requests_total, route) with All = .* on ${DS_PROMETHEUS}, got %+v", v)
	}

	ids := map[int]string{}
	var check func(ps []panel)
	check = func(ps []panel) {
		for _, p := range ps {
			if prev, dup := ids[p.ID]; dup || p.ID == 0 {
				t.Errorf("panel %q: id %d missing or already used by %q", p.Title, p.ID, prev)
			}
			ids[p.ID] = p.Title
			if p.Type == "row" {
				check(p.Panels)
				continue
			}
			if p.Title == "" {
				t.Errorf("panel %d has no title", p.ID)
			}
			if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" {
				t.Errorf("panel %q: datasource %+v, want uid ${DS_PROMETHEUS}", p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no targets", p.Title)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q target %s has no expr", p.Title, tg.RefID)
				}
				if tg.RefID == "" || refs[tg.RefID] {
					t.Errorf("panel %q: target refId %q missing or repeated", p.Title, tg.RefID)
				}
				refs[tg.RefID] = true
				if tg.Datasource == nil || tg.Datasource.UID != "${DS_PROMETHEUS}" {
					t.Errorf("panel %q target %s: datasource %+v, want uid ${DS_PROMETHEUS}", p.Title, tg.RefID, tg.Datasource)
				}
			}
		}
	}
	check(d.Panels)
}

// TestDashboardPanels checks that the panels users need are there.
func TestDashboardPanels(t *testing.T) {
	panels := flatPanels(loadDashboard(t, dashboardPath).Panels)
	for _, tc := range []struct {
		title, typ string
		parts      []string // all in one of the panel's expressions
		format     string   // of every target, if set
	}{
		{"Total requests", "stat", []string{"increase(relay_requests_total", "$__range"}, ""},
		{"Success rate", "stat", []string{`status="5xx"`, "relay_requests_total"}, ""},
		{"Requests per minute", "timeseries", []string{"rate(relay_requests_total", "* 60"}, ""},
		{"Request duration p50 / p95 / p99", "timeseries", []string{"histogram_quantile(0.99,", "relay_duration_ms_bucket"}, ""},
		{"Request duration heatmap", "heatmap", []string{"relay_duration_ms_bucket", "by (le)"}, "heatmap"},
		{"Errors per minute by type", "timeseries", []string{"by (type)", "relay_errors_total"}, ""},
		{"Active connections", "stat", []string{"relay_active_connections"}, ""},
		{"Active connections by route", "timeseries", []string{"relay_active_connections"}, ""},
		{"Time to first token p50 / p95 by model", "timeseries", []string{"histogram_quantile(0.95,", "relay_ttft_ms_bucket"}, ""},
		{"Tokens per minute by model", "timeseries", []string{"relay_tokens_total", "model"}, ""},
		{"Rate-limited requests per minute", "timeseries", []string{"relay_rate_limited_total"}, ""},
		{"Storage records dropped / retried per minute", "timeseries", []string{"relay_records_dropped_total"}, ""},
		{"Storage write p95", "timeseries", []string{"histogram_quantile(0.95,", "relay_storage_write_ms_bucket"}, ""},
	} {
		t.Run(tc.title, func(t *testing.T) {
			i := slices.IndexFunc(panels, func(p panel) bool { return p.Title == tc.title })
			if i < 0 {
				t.Fatalf("no panel titled %q", tc.title)
			}
			p := panels[i]
			if p.Type != tc.typ {
				t.Errorf("type %q, want %q", p.Type, tc.typ)
			}
			if !slices.ContainsFunc(p.Targets, func(tg panelTarget) bool { return containsAll(tg.Expr, tc.parts) }) {
				t.Errorf("no target contains all of %q", tc.parts)
			}
			for _, tg := range p.Targets {
				if tc.format != "" && tg.Format != tc.format {
					t.Errorf("target %s: format %q, want %q", tg.RefID, tg.Format, tc.format)
				}
			}
		})
	}
}

// TestSuccessRateThresholds: red below 90%, orange from 90%, yellow from
// 95%, green from 99%.
func TestSuccessRateThresholds(t *testing.T) {
	panels := flatPanels(loadDashboard(t, dashboardPath).Panels)
	i := slices.IndexFunc(panels, func(p panel) bool { return p.Title == "Success rate" })
	if i < 0 {
		t.Fatal("no Success rate panel")
	}
	def := panels[i].FieldConfig.Defaults
	if def.Unit != "percentunit" {
		t.Errorf("unit %q, want percentunit (the expression is a 0..1 ratio)", def.Unit)
	}
	if def.Thresholds == nil {
		t.Fatal("no thresholds")
	}
	type step struct {
		color string
		value string
	}
	var got []step
	for _, s := range def.Thresholds.Steps {
		v := "base"
		if s.Value != nil {
			v = fmt.Sprint(*s.Value)
		}
		got = append(got, step{s.Color, v})
	}
	want := []step{{"red", "base"}, {"orange", "0.9"}, {"yellow", "0.95"}, {"green", "0.99"}}
	if def.Thresholds.Mode != "absolute" || !slices.Equal(got, want) {
		t.Errorf("thresholds %s %v, want absolute %v", def.Thresholds.Mode, got, want)
	}
}

// TestAlertRules checks the alerts users need and their metadata.
func TestAlertRules(t *testing.T) {
	alerts := map[string]rule{}
	for _, g := range loadRules(t, alertsPath).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			if _, dup := alerts[r.Alert]; dup {
				t.Errorf("alert %s defined twice", r.Alert)
			}
			alerts[r.Alert] = r
		}
	}
	for _, tc := range []struct {
		alert string
		parts []string // in the expr
	}{
		{"RelayDown", []string{`up{job="stream-relay"}`}},
		{"RelayHighErrorRate", []string{`relay_requests_total{status="5xx"}[5m]`, "> 0.05"}},
		{"RelayHighLatencyP95", []string{"histogram_quantile(0.95,", "relay_duration_ms_bucket"}},
		{"RelayHighTimeToFirstTokenP95", []string{"histogram_quantile(0.95,", "relay_ttft_ms_bucket"}},
		{"RelayUpstreamFailures", []string{"relay_upstream_requests_total"}},
		{"RelayStorageDroppingRecords", []string{"increase(relay_records_dropped_total[5m])", "> 0"}},
		{"RelayStorageErrors", []string{`relay_errors_total{type="storage"}`}},
		{"RelayLimiterErrors", []string{`relay_errors_total{type="limiter"}`}},
	} {
		t.Run(tc.alert, func(t *testing.T) {
			r, ok := alerts[tc.alert]
			if !ok {
				t.Fatalf("no alert %s", tc.alert)
			}
			if !containsAll(r.Expr, tc.parts) {
				t.Errorf("expr does not contain all of %q:\n%s", tc.parts, r.Expr)
			}
			if r.For == "" {
				t.Error("no for:")
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("severity %q, want warning or critical", s)
			}
			for _, a := range []string{"summary", "description"} {
				if r.Annotations[a] == "" {
					t.Errorf("no %s annotation", a)
				}
			}
		})
	}
}

// relayConfig is the layout of relay.yaml; unknown fields are errors.
type relayConfig struct {
	Server struct {
		Port        int    `yaml:"port"`
		Timeout     string `yaml:"timeout"`
		MaxBodySize int64  `yaml:"max_body_size"`
	} `yaml:"server"`
	Routes []struct {
		Name       string `yaml:"name"`
		Path       string `yaml:"path"`
		Upstream   string `yaml:"upstream"`
		AuthHeader string `yaml:"auth_header"`
		AuthEnv    string `yaml:"auth_env"`
		Kind       string `yaml:"kind"`
	} `yaml:"routes"`
	RateLimit struct {
		Enabled bool `yaml:"enabled"`
		Default int  `yaml:"default"`
		Burst   int  `yaml:"burst"`
	} `yaml:"rate_limit"`
	Auth struct {
		APIKeys []string `yaml:"api_keys"`
	} `yaml:"auth"`
	Observability struct {
		Prometheus struct {
			Enabled bool   `yaml:"enabled"`
			Path    string `yaml:"path"`
		} `yaml:"prometheus"`
	} `yaml:"observability"`
}

type prometheusConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

type composeFile struct {
	Services map[string]struct {
		Image   string   `yaml:"image"`
		Command []string `yaml:"command"`
		Build   *struct {
			Context    string `yaml:"context"`
			Dockerfile string `yaml:"dockerfile"`
		} `yaml:"build"`
		Volumes []string `yaml:"volumes"`
	} `yaml:"services"`
}

func decodeYAML(t *testing.T, path string, v any, strict bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(strict)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestDeploymentConsistency checks that the files agree with each other:
// what Prometheus scrapes is what the relay serves, what compose mounts
// exists and is where the other files expect it.
func TestDeploymentConsistency(t *testing.T) {
	var relay relayConfig
	decodeYAML(t, "relay.yaml", &relay, true)
	var prom prometheusConfig
	decodeYAML(t, prometheusConfigPath, &prom, false)
	var compose composeFile
	decodeYAML(t, "docker-compose.yml", &compose, false)
	var provider struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	decodeYAML(t, filepath.Join("grafana", "provisioning", "dashboards", "stream-relay.yml"), &provider, false)
	var datasources struct {
		Datasources []struct {
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	decodeYAML(t, filepath.Join("grafana", "provisioning", "datasources", "prometheus.yml"), &datasources, false)
	dockerfile, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}

	// mounts maps each compose service's container paths to host paths.
	mounts := map[string]map[string]string{}
	for name, s := range compose.Services {
		mounts[name] = map[string]string{}
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if !strings.HasPrefix(parts[0], ".") {
				continue // a named volume
			}
			mounts[name][parts[1]] = parts[0]
		}
	}

	job := func() (path string, targets []string) {
		for _, sc := range prom.ScrapeConfigs {
			if sc.JobName == "stream-relay" {
				for _, s := range sc.StaticConfigs {
					targets = append(targets, s.Targets...)
				}
				return sc.MetricsPath, targets
			}
		}
		return "", nil
	}
	metricsPath, targets := job()

	for _, tc := range []struct {
		name string
		ok   bool
		got  any
	}{
		{"relay.yaml enables prometheus", relay.Observability.Prometheus.Enabled, relay.Observability.Prometheus},
		{"relay.yaml has a route", len(relay.Routes) > 0 && relay.Routes[0].Name != "", relay.Routes},
		{"prometheus scrapes the relay's metrics path", metricsPath == relay.Observability.Prometheus.Path, metricsPath},
		{"prometheus scrapes relay:<port>", slices.Contains(targets, fmt.Sprintf("relay:%d", relay.Server.Port)), targets},
		{"prometheus loads alerts.yml beside it", slices.Contains(prom.RuleFiles, filepath.Base(alertsPath)), prom.RuleFiles},
		{"compose has relay, prometheus and grafana", len(mounts["relay"]) > 0 && len(mounts["prometheus"]) > 0 && len(mounts["grafana"]) > 0, mounts},
		{"compose mounts relay.yaml at /etc/relay/config.yaml", mounts["relay"]["/etc/relay/config.yaml"] == "./relay.yaml", mounts["relay"]},
		{"Dockerfile runs -config /etc/relay/config.yaml", bytes.Contains(dockerfile, []byte(`"-config", "/etc/relay/config.yaml"`)), nil},
		{"Dockerfile builds cmd/relay with golang:1.26", bytes.Contains(dockerfile, []byte("FROM golang:1.26 ")) && bytes.Contains(dockerfile, []byte("/cmd/relay")), nil},
		{"compose mounts the prometheus directory", mounts["prometheus"]["/etc/prometheus"] == "./"+filepath.Dir(prometheusConfigPath), mounts["prometheus"]},
		{"compose mounts provisioning", mounts["grafana"]["/etc/grafana/provisioning"] == "./grafana/provisioning", mounts["grafana"]},
		{"dashboard provider reads the mounted dashboard", len(provider.Providers) == 1 &&
			mounts["grafana"][provider.Providers[0].Options.Path+"/stream-relay.json"] == "./"+dashboardPath, provider},
		{"datasource is the compose prometheus", len(datasources.Datasources) == 1 &&
			datasources.Datasources[0].Type == "prometheus" && datasources.Datasources[0].URL == "http://prometheus:9090", datasources},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.ok {
				t.Errorf("got %+v", tc.got)
			}
		})
	}

	for name, s := range compose.Services {
		for container, host := range mounts[name] {
			if _, err := os.Stat(host); err != nil {
				t.Errorf("service %s mounts %s at %s: %v", name, host, container, err)
			}
		}
		if s.Build != nil {
			if _, err := os.Stat(filepath.Join(s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("service %s: %v", name, err)
			}
		}
	}
}

// syntheticSeries returns promtool input series for every metric of the
// relay, as a relay that served streams, errors, limits and storage writes
// would expose them (counters growing by 5 per 15s step, for 10 minutes).
func syntheticSeries() []map[string]string {
	var out []map[string]string
	add := func(series, values string) {
		out = append(out, map[string]string{"series": series, "values": values})
	}
	const grow, flat = "0+5x40", "3x40"
	histogram := func(name, labels string, buckets ...string) {
		for i, le := range append(buckets, "+Inf") {
			add(fmt.Sprintf(`%s_bucket{%sle="%s"}`, name, labels, le), fmt.Sprintf("0+%dx40", 2*(i+1)))
		}
		add(fmt.Sprintf("%s_count{%s}", name, strings.TrimSuffix(labels, ",")), fmt.Sprintf("0+%dx40", 2*(len(buckets)+1)))
		add(fmt.Sprintf("%s_sum{%s}", name, strings.TrimSuffix(labels, ",")), "0+5000x40")
	}
	add(`up{job="stream-relay",instance="relay:8080"}`, "1x40")
	for _, route := range []string{"openai", "tts"} {
		r := fmt.Sprintf(`route="%s",`, route)
		for _, status := range []string{"2xx", "4xx", "5xx"} {
			add(fmt.Sprintf(`relay_requests_total{%sstatus="%s"}`, r, status), grow)
		}
		for _, typ := range []string{"auth", "rate_limited", "upstream_timeout"} {
			add(fmt.Sprintf(`relay_errors_total{%stype="%s"}`, r, typ), grow)
		}
		add(fmt.Sprintf(`relay_active_connections{%s}`, strings.TrimSuffix(r, ",")), flat)
		add(fmt.Sprintf(`relay_rate_limited_total{%sreason="requests"}`, r), grow)
		add(fmt.Sprintf(`relay_upstream_requests_total{%supstream="up-%s",status="200"}`, r, route), grow)
		add(fmt.Sprintf(`relay_upstream_requests_total{%supstream="up-%s",status="error"}`, r, route), grow)
		histogram("relay_duration_ms", r, "100", "500", "1000", "2000", "5000", "10000", "30000", "60000")
		histogram("relay_ttfb_ms", r, "5", "50", "500", "5000")
		for _, model := range []string{"gpt-4o", "gpt-4o-mini"} {
			rm := fmt.Sprintf(`%smodel="%s",`, r, model)
			for _, typ := range []string{"input", "output", "cached_input", "reasoning"} {
				add(fmt.Sprintf(`relay_tokens_total{%stype="%s"}`, rm, typ), grow)
			}
			histogram("relay_ttft_ms", rm, "100", "500", "1000", "5000")
			histogram("relay_inter_chunk_ms", rm, "5", "50", "500")
		}
	}
	add(`relay_errors_total{route="",type="storage"}`, grow)
	add(`relay_records_dropped_total`, grow)
	add(`relay_records_retried_total`, grow)
	add(`relay_records_queued`, flat)
	histogram("relay_storage_write_ms", "", "1", "10", "100", "1000")
	return out
}

var absentExprRe = regexp.MustCompile(`absent\(check:expr_(\d+)\)`)

// TestExpressionsReturnSeries evaluates, with `promtool test rules`, every
// expression that must return series against synthetic series of every
// relay metric: each is recorded by a rule, and absent() of each recorded
// series must be empty. It catches expressions that are valid but select
// nothing (say, a division whose sides' labels never match).
func TestExpressionsReturnSeries(t *testing.T) {
	pt := promtool(t)
	var exprs []promExpr
	for _, e := range allExpressions(t) {
		if e.mustReturnSeries() {
			exprs = append(exprs, e)
		}
	}
	var rules, checks []map[string]any
	for i, e := range exprs {
		name := fmt.Sprintf("check:expr_%03d", i)
		rules = append(rules, map[string]any{"record": name, "expr": e.Expr})
		checks = append(checks, map[string]any{"expr": "absent(" + name + ")", "eval_time": "8m", "exp_samples": []any{}})
	}
	dir := t.TempDir()
	write := func(name string, v any) string {
		b, err := yaml.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write("rules.yml", map[string]any{"groups": []any{map[string]any{"name": "expressions", "interval": "15s", "rules": rules}}})
	test := write("rules_test.yml", map[string]any{
		"rule_files":          []string{"rules.yml"},
		"evaluation_interval": "15s",
		"tests": []any{map[string]any{
			"interval":         "15s",
			"input_series":     syntheticSeries(),
			"promql_expr_test": checks,
		}},
	})
	out, err := exec.Command(pt, "test", "rules", test).CombinedOutput()
	if err == nil {
		t.Logf("all %d expressions returned series", len(exprs))
		return
	}
	failed := 0
	for _, m := range absentExprRe.FindAllStringSubmatch(string(out), -1) {
		if i, err := strconv.Atoi(m[1]); err == nil && i < len(exprs) {
			failed++
			t.Errorf("%s returned no series: %s", exprs[i].Source, exprs[i].Expr)
		}
	}
	if failed == 0 {
		t.Errorf("promtool test rules: %v\n%s", err, out)
	}
}
