package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// process is a running child server.
type process struct {
	role   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	addrs  roleAddrs
	done   chan struct{}
	err    error // Wait's result, once done is closed
	ctlCli *http.Client
}

// startProcess starts exe as a child in the given role, behind the
// launcher commands in prefix (taskset, nice: each execs the next, so the
// pid is the server's own), and waits for its addresses.
func startProcess(prefix []string, exe string, cfg roleConfig, stderr io.Writer) (*process, error) {
	js, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	argv := append(append([]string(nil), prefix...), exe)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(childEnv(), roleEnv+"="+string(js))
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cfg.Role, err)
	}
	p := &process{role: cfg.Role, cmd: cmd, stdin: stdin, done: make(chan struct{}),
		ctlCli: &http.Client{Timeout: 30 * time.Second}}
	type answer struct {
		a   roleAddrs
		err error
	}
	ch := make(chan answer, 1)
	go func() {
		br := bufio.NewReader(stdout)
		a, err := readAddrs(br)
		ch <- answer{a, err}
		_, _ = io.Copy(io.Discard, br)
		p.err = cmd.Wait()
		close(p.done)
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case ans := <-ch:
		if ans.err != nil {
			p.kill()
			return nil, fmt.Errorf("%s: %w", cfg.Role, ans.err)
		}
		p.addrs = ans.a
		return p, nil
	case <-t.C:
		p.kill()
		return nil, fmt.Errorf("%s did not start within 30s", cfg.Role)
	}
}

// childEnv is the harness's environment without its own variables.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, roleEnv+"=") || strings.HasPrefix(kv, pinnedEnv+"=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) url() string { return "http://" + p.addrs.Addr }

// stop asks the child to shut down gracefully and waits for it, killing
// it if it takes longer than 20 seconds.
func (p *process) stop() error {
	_ = p.stdin.Close()
	t := time.NewTimer(20 * time.Second)
	defer t.Stop()
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%s exited: %w", p.role, p.err)
		}
		return nil
	case <-t.C:
		p.kill()
		return fmt.Errorf("%s did not stop within 20s and was killed", p.role)
	}
}

func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	_ = p.stdin.Close()
}

// control sends a request to the child's control port.
func (p *process) control(ctx context.Context, method, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+p.addrs.Control+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.ctlCli.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("%s %s on %s: %s", method, path, p.role, resp.Status)
	}
	return b, nil
}

func (p *process) stats(ctx context.Context) (runtimeStats, error) {
	var s runtimeStats
	b, err := p.control(ctx, http.MethodGet, "/stats")
	if err != nil {
		return s, err
	}
	return s, json.Unmarshal(b, &s)
}

// freeMemory runs a garbage collection in the child and returns freed
// memory to the operating system, so that RSS reflects live memory.
func (p *process) freeMemory(ctx context.Context) error {
	_, err := p.control(ctx, http.MethodPost, "/gc")
	return err
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times. It is 100 on
// every Linux architecture Go supports, and part of the kernel's ABI.
const clockTicks = 100

// cpuTime is the CPU time (user plus system) the process has used.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime from a /proc/<pid>/stat line. The
// command name may contain spaces and parentheses, so fields are counted
// from the last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, benchError("malformed /proc stat line")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, benchError("short /proc stat line")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, benchError("malformed utime or stime in /proc stat line")
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// rss is the process's resident memory in bytes.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return parseVmRSS(b)
}

// peakRSS is the most resident memory the process has had since it
// started (VmHWM, the kernel's high-water mark), in bytes: unlike a
// sampled VmRSS it cannot miss a peak between samples.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	return parseStatusKB(b, "VmHWM")
}

// parseVmRSS reads the VmRSS line of /proc/<pid>/status.
func parseVmRSS(b []byte) (int64, error) { return parseStatusKB(b, "VmRSS") }

// parseStatusKB reads a "Name: N kB" line of /proc/<pid>/status, in bytes.
func parseStatusKB(b []byte, name string) (int64, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, name+":")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, benchError("malformed " + name + " line")
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, benchError("malformed " + name + " value")
		}
		return kb << 10, nil
	}
	return 0, benchError("no " + name + " line")
}

// coreBusy is the time core n has spent busy (not idle or waiting for
// I/O) since boot, from /proc/stat.
func coreBusy(n int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseCoreBusy(b, n)
}

func parseCoreBusy(b []byte, n int) (time.Duration, error) {
	prefix := "cpu" + strconv.Itoa(n) + " "
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 8 {
			return 0, benchError("short cpu line in /proc/stat")
		}
		var busy uint64
		for i, v := range f[:8] {
			if i == 3 || i == 4 { // idle, iowait
				continue
			}
			t, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, benchError("malformed cpu line in /proc/stat")
			}
			busy += t
		}
		return time.Duration(busy) * time.Second / clockTicks, nil
	}
	return 0, benchError("no " + prefix + "line in /proc/stat")
}
