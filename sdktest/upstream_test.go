package sdktest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// ending says how a replayed stream ends. The zero value serves the whole
// stream and ends the response with its last event.
type ending struct {
	// cutAfter is how many complete events are sent before the connection
	// is dropped; zero means the stream is not cut.
	cutAfter int
	// midEvent also sends the first half of the next event, so that the
	// stream stops inside a line.
	midEvent bool
	// linger keeps the response open after the last event until the relay
	// hangs up, like a provider whose end of stream lags its final event.
	linger bool
}

// capturedRequest is what the upstream received from the relay.
type capturedRequest struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// replayUpstream is an httptest server standing in for a provider: it
// answers every request with one recorded stream, written event by event
// with a flush after each, exactly as the file holds it. It keeps every
// request it receives.
type replayUpstream struct {
	srv    *httptest.Server
	stream []byte
	end    ending

	mu   sync.Mutex
	reqs []capturedRequest
}

// newReplayUpstream starts an upstream replaying stream; it is closed when
// the test ends.
func newReplayUpstream(t *testing.T, stream []byte, end ending) *replayUpstream {
	t.Helper()
	u := &replayUpstream{stream: stream, end: end}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *replayUpstream) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading the request failed", http.StatusBadRequest)
		return
	}
	u.mu.Lock()
	u.reqs = append(u.reqs, capturedRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
	u.mu.Unlock()

	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		return
	}
	events := splitEvents(u.stream)
	for i, ev := range events {
		if u.end.cutAfter > 0 && i == u.end.cutAfter {
			if u.end.midEvent {
				_, _ = w.Write(ev[:len(ev)/2])
				_ = rc.Flush()
			}
			// Dropping the connection without the chunked terminator is how a
			// provider's stream breaks: the relay reads an unexpected EOF.
			conn, _, err := rc.Hijack()
			if err != nil {
				panic(http.ErrAbortHandler) // closes the connection just the same
			}
			_ = conn.Close()
			return
		}
		if _, err := w.Write(ev); err != nil {
			return
		}
		if i == len(events)-1 && !u.end.linger {
			// The last event leaves with the end of the body, in one write,
			// so that the relay reads both at once (see ending.linger).
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
	if u.end.linger {
		select {
		case <-r.Context().Done():
		case <-time.After(waitTimeout):
		}
	}
}

// URL is the upstream's base URL.
func (u *replayUpstream) URL() string { return u.srv.URL }

// requests returns a copy of the requests received so far.
func (u *replayUpstream) requests() []capturedRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]capturedRequest(nil), u.reqs...)
}

// splitEvents cuts a stream into its events, each with the blank line that
// ends it, so that writing the pieces in turn reproduces the stream byte for
// byte. LF, CRLF and CR line endings are recognised; trailing bytes that
// form no complete event make the last piece.
func splitEvents(b []byte) [][]byte {
	var out [][]byte
	start := 0
	prevEOL := true // at the start of a line; a blank line there ends an event
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '\n' && c != '\r' {
			prevEOL = false
			continue
		}
		end := i + 1
		if c == '\r' && end < len(b) && b[end] == '\n' {
			end++
		}
		if prevEOL && i > start {
			out = append(out, b[start:end])
			start = end
		}
		prevEOL = true
		i = end - 1
	}
	if start < len(b) {
		out = append(out, b[start:])
	}
	return out
}

func TestSplitEvents(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"lf", "data: a\n\ndata: b\n\n", []string{"data: a\n\n", "data: b\n\n"}},
		{"crlf", "event: x\r\ndata: a\r\n\r\ndata: b\r\n\r\n", []string{"event: x\r\ndata: a\r\n\r\n", "data: b\r\n\r\n"}},
		{"cr", "data: a\r\rdata: b\r\r", []string{"data: a\r\r", "data: b\r\r"}},
		{"unterminated tail", "data: a\n\ndata: b\n", []string{"data: a\n\n", "data: b\n"}},
		{"multi-line event", "data: a\ndata: b\n\n", []string{"data: a\ndata: b\n\n"}},
		{"empty", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := splitEvents([]byte(tt.in))
			if len(got) != len(tt.want) {
				t.Fatalf("splitEvents(%q) = %q, want %q", tt.in, got, tt.want)
			}
			for i := range got {
				if string(got[i]) != tt.want[i] {
					t.Errorf("event %d = %q, want %q", i, got[i], tt.want[i])
				}
			}
			if joined := bytes.Join(got, nil); string(joined) != tt.in {
				t.Errorf("pieces join to %q, want the input back", joined)
			}
		})
	}
}
