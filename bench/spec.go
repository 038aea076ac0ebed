package bench

import (
	"net/url"
	"strconv"
	"time"
)

// spec says what one request asks of the mock upstream. It travels in the
// query string, which the bare proxy and the relay both forward untouched,
// so that every arm gets the same response for the same spec.
type spec struct {
	mode     string        // modeSSE, modeJSON or modeAudio
	seed     uint64        // selects the generated content
	n        int           // events (SSE), tokens (JSON) or chunks (audio)
	interval time.Duration // pause between events or chunks
	delay    time.Duration // pause before the response headers
	hold     string        // when set, pause after the first event until released
	failAt   int           // when > 0, abort the connection before event failAt
	size     int           // audio chunk size in bytes
	// gzip asks for a gzip-compressed SSE stream (Accept-Encoding: gzip),
	// which the upstream flushes per event, as providers compress streams.
	gzip bool
}

// path is the request path for the spec's mode.
func (s spec) path() string {
	if s.mode == modeAudio {
		return "/v1/audio/speech"
	}
	return "/v1/chat/completions"
}

// query encodes the spec.
func (s spec) query() string {
	b := make([]byte, 0, 96)
	b = append(b, "mode="...)
	b = append(b, s.mode...)
	b = append(b, "&seed="...)
	b = strconv.AppendUint(b, s.seed, 10)
	b = append(b, "&n="...)
	b = strconv.AppendInt(b, int64(s.n), 10)
	if s.interval > 0 {
		b = append(b, "&interval="...)
		b = strconv.AppendInt(b, int64(s.interval), 10)
	}
	if s.delay > 0 {
		b = append(b, "&delay="...)
		b = strconv.AppendInt(b, int64(s.delay), 10)
	}
	if s.hold != "" {
		b = append(b, "&hold="...)
		b = append(b, url.QueryEscape(s.hold)...)
	}
	if s.failAt > 0 {
		b = append(b, "&fail="...)
		b = strconv.AppendInt(b, int64(s.failAt), 10)
	}
	if s.size > 0 {
		b = append(b, "&size="...)
		b = strconv.AppendInt(b, int64(s.size), 10)
	}
	if s.gzip {
		b = append(b, "&gzip=1"...)
	}
	return string(b)
}

// maxN bounds events, tokens and chunks, and maxChunk the audio chunk
// size, so that a malformed query cannot make the upstream misbehave.
const (
	maxN     = 100000
	maxChunk = 1 << 20
)

// parseSpec decodes a query produced by spec.query.
func parseSpec(q url.Values) (spec, error) {
	s := spec{mode: q.Get("mode"), hold: q.Get("hold"), gzip: q.Get("gzip") == "1"}
	switch s.mode {
	case modeSSE, modeJSON, modeAudio:
	default:
		return s, benchError("unknown mode " + strconv.Quote(s.mode))
	}
	var err error
	if s.seed, err = strconv.ParseUint(q.Get("seed"), 10, 64); err != nil {
		return s, benchError("bad seed")
	}
	ints := []struct {
		key string
		dst *int
		max int
	}{{"n", &s.n, maxN}, {"fail", &s.failAt, maxN}, {"size", &s.size, maxChunk}}
	for _, f := range ints {
		v := q.Get(f.key)
		if v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > f.max {
			return s, benchError("bad " + f.key)
		}
		*f.dst = n
	}
	durs := []struct {
		key string
		dst *time.Duration
	}{{"interval", &s.interval}, {"delay", &s.delay}}
	for _, f := range durs {
		v := q.Get(f.key)
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > int64(time.Minute) {
			return s, benchError("bad " + f.key)
		}
		*f.dst = time.Duration(n)
	}
	if s.mode == modeAudio && s.size == 0 {
		s.size = 4096
	}
	return s, nil
}
