package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/streamrelay/relay/internal/testkit"
)

// chromium is a headless Debian chromium driven over the DevTools
// protocol. --dump-dom is no use here: it prints the DOM at the load
// event, long before a WebSocket conversation ends (and
// --virtual-time-budget does not wait for sockets), so the test awaits a
// promise the page settles instead.
type chromium struct {
	cmd  *exec.Cmd
	conn *websocket.Conn
	next int64
}

// startChromium starts the browser until the test ends. Without chromium
// the test is skipped, or fails in CI (testkit.Missing).
func startChromium(t *testing.T) *chromium {
	t.Helper()
	bin, err := exec.LookPath("chromium")
	if err != nil {
		testkit.Missing(t, "chromium not found on PATH (Debian package chromium; .ci/services.sh installs it)")
		return nil
	}
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu",
		"--remote-debugging-port=0", "--user-data-dir="+t.TempDir(),
		"--no-first-run", "--no-default-browser-check", "--disable-extensions",
		"--disable-background-networking", "--disable-dev-shm-usage", "about:blank")
	// Its own process group, so the cleanup can end its helper processes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	exited := make(chan struct{})
	endpoint := make(chan string, 1)
	var tail strings.Builder // the stderr lines before the endpoint, for a failure message
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			if ws, ok := strings.CutPrefix(line, "DevTools listening on "); ok {
				endpoint <- ws
				break
			}
			if tail.Len() < 4096 {
				tail.WriteString(line + "\n")
			}
		}
		_, _ = io.Copy(io.Discard, stderr) // keep draining: a full pipe would stall it
		_ = cmd.Wait()
		close(exited)
	}()
	c := &chromium{cmd: cmd}
	t.Cleanup(func() { c.stop(t, exited) })
	var url string
	select {
	case url = <-endpoint:
	case <-exited:
		t.Fatalf("chromium exited before it listened:\n%s", tail.String())
	case <-time.After(30 * time.Second):
		t.Fatal("chromium did not open its DevTools endpoint in 30s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatalf("DevTools dial %s: %v", url, err)
	}
	conn.SetReadLimit(64 << 20)
	c.conn = conn
	return c
}

// stop closes the browser politely, then ends its process group if it
// lingers.
func (c *chromium) stop(t *testing.T, exited <-chan struct{}) {
	if c.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = c.call(ctx, "", "Browser.close", nil, nil)
		cancel()
		_ = c.conn.CloseNow()
	}
	select {
	case <-exited:
		return
	case <-time.After(10 * time.Second):
	}
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Error("chromium did not exit")
	}
}

// message is one DevTools protocol message: a reply (ID) or an event
// (Method).
type message struct {
	ID        int64           `json:"id"`
	Method    string          `json:"method"`
	SessionID string          `json:"sessionId"`
	Result    json.RawMessage `json:"result"`
	Error     *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// call sends a command and waits for its reply, decoding the result into
// out. Events that arrive meanwhile go to onEvent when it is set.
func (c *chromium) call(ctx context.Context, session, method string, params, out any) error {
	return c.callWatching(ctx, session, method, params, out, nil)
}

func (c *chromium) callWatching(ctx context.Context, session, method string, params, out any, onEvent func(message)) error {
	c.next++
	id := c.next
	req := map[string]any{"id": id, "method": method}
	if params != nil {
		req["params"] = params
	}
	if session != "" {
		req["sessionId"] = session
	}
	b, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if err := c.conn.Write(ctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	for {
		m, err := c.read(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", method, err)
		}
		if m.ID != id {
			if m.Method != "" && onEvent != nil {
				onEvent(m)
			}
			continue
		}
		if m.Error != nil {
			return fmt.Errorf("%s: %s", method, m.Error.Message)
		}
		if out != nil {
			return json.Unmarshal(m.Result, out)
		}
		return nil
	}
}

func (c *chromium) read(ctx context.Context) (message, error) {
	var m message
	_, b, err := c.conn.Read(ctx)
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal(b, &m)
}

// openPage opens url in a new tab and waits for its load event. It
// returns the tab's session id.
func (c *chromium) openPage(ctx context.Context, url string) (string, error) {
	var target struct {
		TargetID string `json:"targetId"`
	}
	if err := c.call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target); err != nil {
		return "", err
	}
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	if err := c.call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attached); err != nil {
		return "", err
	}
	s := attached.SessionID
	if err := c.call(ctx, s, "Page.enable", nil, nil); err != nil {
		return "", err
	}
	loaded := false
	watch := func(m message) { loaded = loaded || (m.SessionID == s && m.Method == "Page.loadEventFired") }
	var nav struct {
		ErrorText string `json:"errorText"`
	}
	if err := c.callWatching(ctx, s, "Page.navigate", map[string]any{"url": url}, &nav, watch); err != nil {
		return "", err
	}
	if nav.ErrorText != "" {
		return "", fmt.Errorf("navigating to %s: %s", url, nav.ErrorText)
	}
	for !loaded {
		m, err := c.read(ctx)
		if err != nil {
			return "", fmt.Errorf("waiting for the page's load event: %w", err)
		}
		watch(m)
	}
	return s, nil
}

// await evaluates a JavaScript expression in the tab, awaits the promise
// it yields and returns its string value.
func (c *chromium) await(ctx context.Context, session, expr string) (string, error) {
	var res struct {
		Result struct {
			Type  string `json:"type"`
			Value any    `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	if err := c.call(ctx, session, "Runtime.evaluate",
		map[string]any{"expression": expr, "awaitPromise": true, "returnByValue": true}, &res); err != nil {
		return "", err
	}
	if res.ExceptionDetails != nil {
		return "", errors.New("page exception: " + res.ExceptionDetails.Text)
	}
	s, ok := res.Result.Value.(string)
	if !ok {
		return "", fmt.Errorf("%s gave %s %v, not a string", expr, res.Result.Type, res.Result.Value)
	}
	return s, nil
}
