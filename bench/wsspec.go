package bench

import (
	"net/url"
	"strconv"
	"time"
)

// wsPath is the mock upstream's realtime endpoint.
const wsPath = "/v1/realtime"

// wsSpec says what one WebSocket session asks of the mock upstream. Like
// spec it travels in the query string, which every arm forwards as is.
//
// Every session opens with session.created. A session with a hold group
// then waits until the group is released (counted as held meanwhile).
// Then comes the stream phase: r responses, each n audio deltas interval
// apart and a response.done with usage. After it the upstream closes with
// closeCode if one is given; otherwise it echoes every data frame back as
// it came (same opcode, FIN bit and payload, so fragmentation survives),
// answers pings, and echoes the client's close.
type wsSpec struct {
	seed      uint64
	n         int           // audio deltas per response
	r         int           // responses
	interval  time.Duration // between deltas
	size      int           // audio bytes per delta (wsAudioBytes when 0)
	hold      string
	closeCode int // when set, the upstream closes after the stream phase
}

// audioSize is the audio bytes per delta.
func (s wsSpec) audioSize() int {
	if s.size == 0 {
		return wsAudioBytes
	}
	return s.size
}

// upstreamReason is the reason of a close the upstream starts.
const upstreamReason = "bench: upstream done"

func (s wsSpec) query() string {
	b := make([]byte, 0, 96)
	b = append(b, "seed="...)
	b = strconv.AppendUint(b, s.seed, 10)
	add := func(k string, v int64) {
		if v > 0 {
			b = append(b, '&')
			b = append(b, k...)
			b = append(b, '=')
			b = strconv.AppendInt(b, v, 10)
		}
	}
	add("n", int64(s.n))
	add("r", int64(s.r))
	add("interval", int64(s.interval))
	add("size", int64(s.size))
	add("close", int64(s.closeCode))
	if s.hold != "" {
		b = append(b, "&hold="...)
		b = append(b, url.QueryEscape(s.hold)...)
	}
	return string(b)
}

// parseWSSpec decodes a query produced by wsSpec.query.
func parseWSSpec(q url.Values) (wsSpec, error) {
	s := wsSpec{hold: q.Get("hold")}
	var err error
	if s.seed, err = strconv.ParseUint(q.Get("seed"), 10, 64); err != nil {
		return s, benchError("bad seed")
	}
	var interval int
	for _, f := range []struct {
		key      string
		dst      *int
		min, max int
	}{
		{"n", &s.n, 0, maxN}, {"r", &s.r, 0, 1000}, {"size", &s.size, 0, maxChunk},
		{"interval", &interval, 0, int(time.Minute)}, {"close", &s.closeCode, 1000, 4999},
	} {
		v := q.Get(f.key)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < f.min || n > f.max {
			return s, benchError("bad " + f.key)
		}
		*f.dst = n
	}
	s.interval = time.Duration(interval)
	return s, nil
}
