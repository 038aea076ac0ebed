package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

// results are a run's raw figures, indexed by arm (direct, bare, relay).
type results struct {
	started, finished  time.Time
	loadStart, loadEnd string // 1-minute load average

	mu      sync.Mutex
	checked [3]int64 // responses checked and found intact (or cut as expected)
	bad     [3]int64

	procs     map[string]runtimeStats // each role's stats at start (GOMAXPROCS)
	latency   latencyResult
	tput      []tputResult
	stream    streamResult
	mem       []memResult
	scale     []scaleResult
	hostile   []hostileResult
	ws        wsResult
	instances []*relayInstance
	profile   *profileSummary
}

func armIndex(name string) int {
	switch name {
	case armDirect:
		return 0
	case armBare:
		return 1
	default:
		return 2
	}
}

// count tallies one checked response.
func (r *results) count(armName string, ok bool) {
	i := armIndex(armName)
	r.mu.Lock()
	defer r.mu.Unlock()
	if ok {
		r.checked[i]++
	} else {
		r.bad[i]++
	}
}

type latencyResult struct {
	jsonTTFB, sseTTFB, events [3]samples
}

type tputResult struct {
	conc int
	reqs [3]int64
	arms [3]usage
}

type streamResult struct {
	long  [3]usage
	longN [3]int64
	// gzip is the same streams gzip-compressed, flushed per event.
	gzip  [3]usage
	gzipN [3]int64
	// allocLong and allocShort measure allocations per event.
	allocLong, allocShort   [3]usage
	allocLongN, allocShortN [3]int64
}

type memPoint struct {
	streams int
	rawRSS  int64 // as measured with the streams open
	rss     int64 // after a GC and returning freed memory
	held    int64 // streams the upstream held at that moment
	stats   runtimeStats
}

type memResult struct {
	arm       string
	proto     string // of the upstream hop
	baseRSS   int64
	baseStats runtimeStats
	points    []memPoint
}

type scaleResult struct {
	arm                 string
	proto               string // of the upstream hop
	streams             int
	peakHeld            int64
	completed, failed   int64
	openTime, drainTime time.Duration
}

// relayInstance is one relay process and the records it must have
// written: one line per request it was sent, less those it counted as
// dropped, none containing a credential.
type relayInstance struct {
	name        string
	file        string
	sent        int64
	dropped     float64
	haveDropped bool
	lines       int64
	err         error

	// wsWant is the usage the upstream reported in the WebSocket sessions
	// sent to this relay; the session records must sum to it.
	wsWant    wsUsage
	wsRecords int64
	wsGot     wsUsage
	wsEnds    map[string]int64 // session records by "closed_by close_code"
}

// wsRecordUsage is the part of a session's record the check reads.
type wsRecordUsage struct {
	ClosedBy  string `json:"closed_by"`
	CloseCode int    `json:"close_code"`
	Usage     struct {
		InputTokens       int64 `json:"input_tokens"`
		OutputTokens      int64 `json:"output_tokens"`
		CachedInputTokens int64 `json:"cached_input_tokens"`
		AudioInputTokens  int64 `json:"audio_input_tokens"`
		AudioOutputTokens int64 `json:"audio_output_tokens"`
	} `json:"usage"`
}

// addWSRecord adds a WebSocket session's record to the sums; the text
// and audio split of the input is kept as the relay reports it (input
// minus audio counts as text).
func (ri *relayInstance) addWSRecord(line []byte) error {
	var rec wsRecordUsage
	if err := json.Unmarshal(line, &rec); err != nil {
		return err
	}
	u := rec.Usage
	ri.wsRecords++
	if ri.wsEnds == nil {
		ri.wsEnds = map[string]int64{}
	}
	ri.wsEnds[cmp.Or(rec.ClosedBy, "—")+" "+strconv.Itoa(rec.CloseCode)]++
	ri.wsGot = ri.wsGot.plus(wsUsage{inText: u.InputTokens - u.AudioInputTokens, inAudio: u.AudioInputTokens,
		cached: u.CachedInputTokens, outText: u.OutputTokens - u.AudioOutputTokens, outAudio: u.AudioOutputTokens})
	return nil
}

func (ri *relayInstance) check() {
	f, err := os.Open(ri.file)
	if err != nil {
		ri.err = err
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var leaked bool
	for sc.Scan() {
		ri.lines++
		line := sc.Bytes()
		if bytes.Contains(line, []byte(clientKey)) || bytes.Contains(line, []byte(upstreamKey)) {
			leaked = true
		}
		if bytes.Contains(line, []byte(`"kind":"websocket"`)) {
			if err := ri.addWSRecord(line); err != nil && ri.err == nil {
				ri.err = failf(failAltered, "a session record in %s: %v", ri.file, err)
			}
		}
	}
	if ri.err != nil {
		return
	}
	switch {
	case sc.Err() != nil:
		ri.err = sc.Err()
	case leaked:
		ri.err = failf(failAltered, "a record in %s contains a credential", ri.file)
	case !ri.haveDropped:
		ri.err = failf(failTruncated, "the relay's last scrape failed; records cannot be reconciled")
	case ri.lines+int64(ri.dropped) != ri.sent:
		ri.err = failf(failTruncated, "relay %s: %d requests sent, %d records written, %.0f counted as dropped",
			ri.name, ri.sent, ri.lines, ri.dropped)
	case ri.dropped == 0 && ri.wsGot != ri.wsWant:
		ri.err = failf(failAltered, "relay %s: the %d session records sum to usage %+v, the upstream reported %+v",
			ri.name, ri.wsRecords, ri.wsGot, ri.wsWant)
	}
}

// metricValue finds an unlabelled sample in a Prometheus text exposition.
func metricValue(exposition []byte, name string) (float64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(exposition))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte(name+" "))
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(string(bytes.TrimSpace(rest)), 64)
		return v, err == nil
	}
	return 0, false
}

// Formatting helpers for the report.

func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond)) }

func signedUS(d time.Duration) string {
	return fmt.Sprintf("%+.1f µs", float64(d)/float64(time.Microsecond))
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func kib(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// loadAverage is the 1-minute load average, or "?".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := bytes.Fields(b)
	if len(f) == 0 {
		return "?"
	}
	return string(f[0])
}
