package relay

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type sseEvent struct {
	name, data string
	truncated  bool
}

// parseAll feeds the stream in pieces of the given sizes (cycling) and
// collects the events.
func parseAll(stream string, sizes []int, maxData int) ([]sseEvent, *sseParser) {
	var got []sseEvent
	p := &sseParser{maxData: maxData}
	p.onEvent = func(_ time.Time, name, data, tail []byte, truncated bool) {
		got = append(got, sseEvent{string(name), string(data), truncated})
	}
	b := []byte(stream)
	for i := 0; len(b) > 0; i++ {
		n := len(b)
		if len(sizes) > 0 {
			n = min(max(1, sizes[i%len(sizes)]), len(b))
		}
		p.feed(b[:n], time.Time{})
		b = b[n:]
	}
	return got, p
}

// referenceParse is a direct transcription of the WHATWG event-stream
// parsing rules over a whole stream, for comparison.
func referenceParse(stream string) []sseEvent {
	var lines []string
	for len(stream) > 0 {
		i := strings.IndexAny(stream, "\r\n")
		if i < 0 {
			break // an unterminated last line is never processed
		}
		lines = append(lines, stream[:i])
		if stream[i] == '\r' && i+1 < len(stream) && stream[i+1] == '\n' {
			i++
		}
		stream = stream[i+1:]
	}
	var out []sseEvent
	var name, data strings.Builder
	hasData := false
	for _, l := range lines {
		if l == "" {
			if hasData {
				out = append(out, sseEvent{name: truncName(name.String()), data: data.String()})
			}
			name.Reset()
			data.Reset()
			hasData = false
			continue
		}
		if l[0] == ':' {
			continue
		}
		field, value, found := strings.Cut(l, ":")
		if found {
			value = strings.TrimPrefix(value, " ")
		}
		switch field {
		case "data":
			if hasData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			hasData = true
		case "event":
			name.Reset()
			name.WriteString(value)
		}
	}
	return out
}

func truncName(s string) string { return s[:min(len(s), maxEventName)] }

func TestSSEParser(t *testing.T) {
	tests := []struct {
		name   string
		stream string
		want   []sseEvent
	}{
		{"simple", "data: a\n\n", []sseEvent{{"", "a", false}}},
		{"named", "event: delta\ndata: {}\n\n", []sseEvent{{"delta", "{}", false}}},
		{"multi-line data", "data: a\ndata: b\n\n", []sseEvent{{"", "a\nb", false}}},
		{"no space after colon", "data:a\n\n", []sseEvent{{"", "a", false}}},
		{"two spaces keep one", "data:  a\n\n", []sseEvent{{"", " a", false}}},
		{"crlf", "event: x\r\ndata: 1\r\n\r\n", []sseEvent{{"x", "1", false}}},
		{"cr", "data: 1\r\rdata: 2\r\r", []sseEvent{{"", "1", false}, {"", "2", false}}},
		{"comment", ": ping\n\ndata: x\n\n", []sseEvent{{"", "x", false}}},
		{"empty data field", "data\n\n", []sseEvent{{"", "", false}}},
		{"id and retry ignored", "id: 3\nretry: 5\ndata: x\n\n", []sseEvent{{"", "x", false}}},
		{"event without data is not dispatched", "event: x\n\ndata: y\n\n", []sseEvent{{"", "y", false}}},
		{"unterminated", "data: x\n", nil},
		{"long field name", strings.Repeat("d", 100) + ": x\ndata: y\n\n", []sseEvent{{"", "y", false}}},
		{"truncated", "data: " + strings.Repeat("z", 20) + "\n\n", []sseEvent{{"", strings.Repeat("z", 16), true}}},
	}
	for _, tt := range tests {
		for _, sizes := range [][]int{nil, {1}, {2, 3}, {7}} {
			got, p := parseAll(tt.stream, sizes, 16)
			assert.Equal(t, tt.want, got, "%s split %v", tt.name, sizes)
			assert.Equal(t, int64(len(tt.want)), p.events)
		}
	}
}

func TestSSEParserMidEvent(t *testing.T) {
	tests := []struct {
		stream           string
		midLine, pending bool
	}{
		{"data: a\n\n", false, false},
		{"data: a\n", false, true},
		{"data: a", true, true},
		{"event: x\n", false, true},
		{": comment", true, false},
	}
	for _, tt := range tests {
		_, p := parseAll(tt.stream, nil, 1<<10)
		ml, pe := p.midEvent()
		assert.Equal(t, tt.midLine, ml, tt.stream)
		assert.Equal(t, tt.pending, pe, tt.stream)
	}
}

// TestSSEParserDoesNotAllocate checks steady-state parsing: once the
// buffers have grown, parsing more events allocates nothing.
func TestSSEParserDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without -race (.ci/run runs one)")
	}
	chunk := []byte("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hello\"}}\n\n: ping\r\ndata: x\r\n\r\n")
	var n int
	p := &sseParser{maxData: 1 << 20, onEvent: func(_ time.Time, name, data, tail []byte, truncated bool) { n++ }}
	p.feed(chunk, time.Time{})
	allocs := testing.AllocsPerRun(1000, func() {
		p.feed(chunk[:17], time.Time{})
		p.feed(chunk[17:], time.Time{})
	})
	assert.Zero(t, allocs)
	assert.Equal(t, 2+2*1001, n) // AllocsPerRun adds one warm-up run
}

func FuzzSSEParser(f *testing.F) {
	for _, s := range []string{
		"data: a\n\n",
		"event: x\r\ndata: 1\r\n\r\n",
		"data: 1\r\rdata: 2\r\r",
		": c\n\ndata\n\n",
		"data: a\ndata: b\n\nevent: e\n\n",
		"data:\r\n\r\n\r\ndata:  x\r",
		"retry: 1\nid: 2\nfoo: bar\ndata: y\n\n",
	} {
		f.Add(s, uint8(1), uint8(3))
	}
	f.Fuzz(func(t *testing.T, stream string, a, b uint8) {
		want := referenceParse(stream)
		whole, _ := parseAll(stream, nil, 1<<20)
		split, _ := parseAll(stream, []int{int(a), int(b)}, 1<<20)
		if len(want) == 0 {
			want = nil
		}
		assert.Equal(t, want, whole, "whole")
		assert.Equal(t, want, split, "split %d/%d", a, b)

		// With a small head and tail window: each event's head is its
		// start, and its window a suffix of at least tailCap bytes.
		i := 0
		p := &sseParser{maxData: 8, tailCap: 4}
		p.onEvent = func(_ time.Time, name, data, tail []byte, truncated bool) {
			require.Less(t, i, len(want))
			w := want[i].data
			i++
			assert.Equal(t, w[:min(len(w), 8)], string(data))
			assert.Equal(t, len(w) > 8, truncated)
			if truncated {
				assert.True(t, strings.HasSuffix(w, string(tail)), "window %q of %q", tail, w)
				assert.GreaterOrEqual(t, len(tail), 4)
			}
		}
		for k, rest := 0, []byte(stream); len(rest) > 0; k++ {
			n := min(len(rest), max(1, int([]uint8{a, b}[k%2])))
			p.feed(rest[:n], time.Time{})
			rest = rest[n:]
		}
		assert.Equal(t, len(want), i)
	})
}

// TestSSEParserTailWindow: an event larger than the head is seen through
// its head and a window over its end, whatever the read sizes, and the
// parser never holds more than head plus twice the window.
func TestSSEParserTailWindow(t *testing.T) {
	const head, tail = 64, 32
	var data strings.Builder
	for i := 0; data.Len() < 5000; i++ {
		fmt.Fprintf(&data, "%d,", i)
	}
	d := data.String()
	stream := "event: big\ndata: " + d + "\n\ndata: small\n\n"
	for _, sizes := range [][]int{nil, {1}, {7, 3}, {31}, {33}, {64, 65}, {1000}} {
		var got []sseEvent
		var tails []string
		p := &sseParser{maxData: head, tailCap: tail}
		maxSize := int64(0)
		p.onEvent = func(_ time.Time, name, data, tl []byte, truncated bool) {
			got = append(got, sseEvent{string(name), string(data), truncated})
			tails = append(tails, string(tl))
			maxSize = max(maxSize, p.acct.size)
		}
		b := []byte(stream)
		for i := 0; len(b) > 0; i++ {
			n := len(b)
			if len(sizes) > 0 {
				n = min(sizes[i%len(sizes)], len(b))
			}
			p.feed(b[:n], time.Time{})
			b = b[n:]
		}
		require.Len(t, got, 2, "split %v", sizes)
		assert.Equal(t, sseEvent{"big", d[:head], true}, got[0], "split %v", sizes)
		assert.True(t, strings.HasSuffix(d, tails[0]), "split %v: the window is the event's end", sizes)
		assert.GreaterOrEqual(t, len(tails[0]), tail, "split %v", sizes)
		assert.LessOrEqual(t, len(tails[0]), 2*tail, "split %v", sizes)
		assert.Equal(t, sseEvent{"", "small", false}, got[1])
		assert.Empty(t, tails[1], "a small event has no window")
		assert.LessOrEqual(t, maxSize, int64(512+2*tail), "split %v", sizes)
	}

	// Without budget, the event is observed through what the response
	// holds on its own: a head, and a small window over its end from the
	// tail reserve, where the usage object is.
	var budget byteBudget // limit 0
	var hd, tl []byte
	p := &sseParser{maxData: 64 << 10, tailCap: 32 << 10, acct: obsAccount{budget: &budget},
		onEvent: func(_ time.Time, _, d, t []byte, _ bool) { hd, tl = d, t }}
	big := strings.Repeat("x", 200<<10) + "end"
	p.feed([]byte("data: "+big+"\n\n"), time.Time{})
	assert.Equal(t, headFree, len(hd), "the head the response holds on its own")
	assert.True(t, strings.HasSuffix(big, string(tl)), "the window is the event's end")
	assert.GreaterOrEqual(t, len(tl), minTail)
	assert.LessOrEqual(t, cap(tl), tailReserve)
	assert.LessOrEqual(t, p.acct.size+int64(cap(p.tail)), int64(observeFree))
	assert.Zero(t, budget.used.Load())
}

// TestSSEParserKeepsLargeEventBuffers: consecutive large events reuse the
// buffers and budget charge of the first; the first small event gives
// them back, and so does release at the stream's end.
func TestSSEParserKeepsLargeEventBuffers(t *testing.T) {
	budget := byteBudget{limit: 1 << 20}
	events := 0
	p := &sseParser{maxData: maxObservedHead, tailCap: observedTail, acct: obsAccount{budget: &budget},
		onEvent: func(_ time.Time, _, _, _ []byte, _ bool) { events++ }}
	for _, size := range []int{20 << 10, 100 << 10} {
		large := []byte("data: " + strings.Repeat("x", size) + "\n\n")
		p.feed(large, time.Time{})
		held := budget.used.Load()
		require.Positive(t, held, "%d KiB: a large event is charged", size>>10)
		data, tail := cap(p.data), cap(p.tail)
		for range 5 {
			p.feed(large, time.Time{})
		}
		assert.Equal(t, held, budget.used.Load(), "%d KiB: the next large events take nothing more", size>>10)
		assert.Equal(t, held, budget.peak.Load(), "%d KiB: never more held", size>>10)
		assert.Equal(t, data, cap(p.data), "%d KiB: the head buffer is reused", size>>10)
		assert.Equal(t, tail, cap(p.tail), "%d KiB: the tail buffer is reused", size>>10)
		p.feed([]byte("data: small\n\n"), time.Time{})
		assert.Zero(t, budget.used.Load(), "%d KiB: the first small event gives the charge back", size>>10)
		assert.Zero(t, p.acct.size)
	}
	p.feed([]byte("data: "+strings.Repeat("x", 100<<10)+"\n\n"), time.Time{})
	require.Positive(t, budget.used.Load())
	p.release() // the stream ends
	assert.Zero(t, budget.used.Load())
	assert.Equal(t, 15, events)
}

// TestSSEEventTimeIsItsRead: each event is reported with the time of the
// read that ended it, as feed was given it, however its bytes were split.
func TestSSEEventTimeIsItsRead(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var got []time.Time
	p := &sseParser{maxData: 1 << 10, onEvent: func(at time.Time, _, _, _ []byte, _ bool) { got = append(got, at) }}
	p.feed([]byte("data: a\n\ndata: b"), t0)               // ends a; b pending
	p.feed([]byte("\n"), t0.Add(time.Second))              // b's line, not yet its event
	p.feed([]byte("\ndata: c\n\n"), t0.Add(2*time.Second)) // ends b and c
	assert.Equal(t, []time.Time{t0, t0.Add(2 * time.Second), t0.Add(2 * time.Second)}, got)
}
