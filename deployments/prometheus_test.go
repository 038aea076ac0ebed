package deployments

// A real Prometheus for the live test: started on a free port of
// 127.0.0.1 with a generated configuration, killed at cleanup, and a small
// client for its HTTP API.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/streamrelay/relay/internal/testkit"
)

// prometheusBinary returns the path of the prometheus server: the
// RELAY_TEST_PROMETHEUS_BIN environment variable, else prometheus on PATH.
// Without it the test fails in CI and is skipped otherwise (see testkit.Missing).
func prometheusBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("RELAY_TEST_PROMETHEUS_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("RELAY_TEST_PROMETHEUS_BIN: %v", err)
		}
		return p
	}
	p, err := exec.LookPath("prometheus")
	if err != nil {
		testkit.Missing(t, "prometheus not found: set RELAY_TEST_PROMETHEUS_BIN or install Debian's prometheus package")
	}
	return p
}

// promServer is a running Prometheus.
type promServer struct {
	base   string // http://127.0.0.1:port
	log    string // path of its log
	exited chan struct{}
	client *http.Client
}

// startPrometheus starts Prometheus scraping target every second as job
// "stream-relay", with rules as its rule files, and waits until it is
// ready. It is killed at cleanup.
func startPrometheus(ctx context.Context, t *testing.T, bin, target string, rules ...string) *promServer {
	t.Helper()
	dir := t.TempDir() // before the kill below is registered, so removed after it
	cfg, err := yaml.Marshal(map[string]any{
		"global": map[string]any{
			"scrape_interval":     "1s",
			"scrape_timeout":      "1s",
			"evaluation_interval": "1s",
		},
		"rule_files": rules,
		"scrape_configs": []any{map[string]any{
			"job_name":       "stream-relay",
			"metrics_path":   "/metrics",
			"static_configs": []any{map[string]any{"targets": []string{target}}},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	// The free port may be taken between its discovery and Prometheus'
	// bind: try again on another one then.
	for try := 1; ; try++ {
		p, err := launchPrometheus(ctx, t, bin, cfgPath, filepath.Join(dir, fmt.Sprintf("data-%d", try)))
		if err == nil {
			return p
		}
		if try == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
		t.Logf("retrying on another port: %v", err)
	}
}

// launchPrometheus starts one Prometheus process and waits until it is
// ready, returning an error (with its log) when it exits first.
func launchPrometheus(ctx context.Context, t *testing.T, bin, cfgPath, dataDir string) (*promServer, error) {
	t.Helper()
	addr := freeAddr(t)
	logPath := dataDir + ".log"
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close() // the child has its own descriptor
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+dataDir,
		"--web.listen-address="+addr,
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	dieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	p := &promServer{
		base:   "http://" + addr,
		log:    logPath,
		exited: make(chan struct{}),
		client: &http.Client{Timeout: 10 * time.Second},
	}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		testkit.Recv(t, p.exited, "prometheus did not exit after SIGKILL")
		p.client.CloseIdleConnections()
	})

	err = poll(ctx, 100*time.Millisecond, func() (bool, error) {
		select {
		case <-p.exited:
			return false, fmt.Errorf("prometheus exited before it was ready:\n%s", p.logTail())
		default:
		}
		resp, err := p.client.Get(p.base + "/-/ready")
		if err != nil {
			return false, nil // not listening yet
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// freeAddr returns a 127.0.0.1 address that nothing listened on a moment
// ago: for Prometheus to listen on, or for a route to an upstream that is
// down.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// logTail returns the end of Prometheus' log, for failure messages.
func (p *promServer) logTail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	if len(b) > 4<<10 {
		b = b[len(b)-4<<10:]
	}
	return string(b)
}

// promResult is an answer of the query API.
type promResult struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
		Groups     []promRuleGroup `json:"groups"` // of the rules API
	} `json:"data"`
}

type promRuleGroup struct {
	Name  string `json:"name"`
	File  string `json:"file"`
	Rules []struct {
		Name      string `json:"name"`
		Type      string `json:"type"`
		Health    string `json:"health"`
		LastError string `json:"lastError"`
	} `json:"rules"`
}

// query evaluates expr at the present time. An error means the API could
// not be asked; an invalid expression is reported in the result's Status.
func (p *promServer) query(ctx context.Context, expr string) (promResult, error) {
	return p.api(ctx, "/api/v1/query", url.Values{"query": {expr}})
}

// api posts form to an API endpoint and decodes the answer, whatever its
// HTTP status (Prometheus answers 400 and 422 with a JSON error).
func (p *promServer) api(ctx context.Context, path string, form url.Values) (promResult, error) {
	var res promResult
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		return res, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := p.client.Do(req)
	if err != nil {
		return res, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return res, err
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return res, fmt.Errorf("%s: HTTP %d, not JSON: %.200s", path, resp.StatusCode, b)
	}
	return res, nil
}

// rules returns the rule groups Prometheus loaded.
func (p *promServer) rules(ctx context.Context) ([]promRuleGroup, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.base+"/api/v1/rules", nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var res promResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return nil, err
	}
	if res.Status != "success" {
		return nil, fmt.Errorf("rules API: %s: %s", res.ErrorType, res.Error)
	}
	return res.Data.Groups, nil
}

// empty reports whether a successful result holds no series (a scalar or
// string result is never empty).
func (r promResult) empty() bool {
	if r.Data.ResultType != "vector" && r.Data.ResultType != "matrix" {
		return false
	}
	var v []json.RawMessage
	return json.Unmarshal(r.Data.Result, &v) != nil || len(v) == 0
}

// poll calls f every interval until it reports done or an error, or ctx
// ends (then ctx's error is returned).
func poll(ctx context.Context, interval time.Duration, f func() (bool, error)) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		done, err := f()
		if err != nil || done {
			return err
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
