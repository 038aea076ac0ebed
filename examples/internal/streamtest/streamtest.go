// Package streamtest holds the checks that every framework example must
// pass: through the framework's router and middleware, server-sent events
// arrive one at a time, a client disconnect cancels the upstream, and a
// mid-stream failure reaches the client.
//
// The upstream is a fake LLM API on a loopback port that sends its next
// event only once the client has received the previous one, so that any
// buffering on the way deadlocks and fails the test (within its timeout)
// rather than passing by luck of timing.
package streamtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// UpstreamKey is the credential the fake upstream expects; examples under
// test inject it as "Authorization: Bearer UpstreamKey".
const UpstreamKey = "upstream-test-key"

// ClientKey is the key the checks present to the relay.
const ClientKey = "client-test-key"

// handshakeEvents is how many events the handshake stream sends before
// [DONE].
const handshakeEvents = 5

// Upstream is the fake API. Its paths, below the relay's /v1 route:
//
//	/v1/handshake  events 0..4 then [DONE], each sent after Ack
//	/v1/hang       one event, then waits for the request to be cancelled
//	/v1/break      two events, then closes the connection (no clean end)
//	/v1/audio-break  audio/mpeg bytes, then closes the connection
type Upstream struct {
	URL string
	// Ack lets the handshake stream send its next event.
	Ack chan struct{}
	// Canceled is closed when /v1/hang sees its request cancelled.
	Canceled chan struct{}
	srv      *http.Server
}

// NewUpstream starts the fake upstream until the test ends.
func NewUpstream(t testing.TB) *Upstream {
	t.Helper()
	u := &Upstream{Ack: make(chan struct{}), Canceled: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/handshake", u.handshake)
	mux.HandleFunc("/v1/hang", u.hang)
	mux.HandleFunc("/v1/break", u.breakOff)
	mux.HandleFunc("/v1/audio-break", u.audioBreak)
	u.srv = &http.Server{Handler: u.authorized(mux), ReadHeaderTimeout: 5 * time.Second}
	u.URL = Serve(t, u.srv)
	return u
}

// Serve serves srv on a random loopback port until the test ends and
// returns its base URL.
func Serve(t testing.TB, srv *http.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// authorized refuses requests without the injected upstream credential.
func (u *Upstream) authorized(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+UpstreamKey {
			http.Error(w, `{"error":{"message":"bad upstream key"}}`, http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func startSSE(w http.ResponseWriter) *http.ResponseController {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	return rc
}

func event(w http.ResponseWriter, rc *http.ResponseController, data string) error {
	if _, err := fmt.Fprintf(w, "data: %s\n\n", data); err != nil {
		return err
	}
	return rc.Flush()
}

func (u *Upstream) handshake(w http.ResponseWriter, r *http.Request) {
	rc := startSSE(w)
	for i := range handshakeEvents {
		if i > 0 {
			select {
			case <-u.Ack:
			case <-r.Context().Done():
				return
			}
		}
		if event(w, rc, fmt.Sprintf(`{"n":%d}`, i)) != nil {
			return
		}
	}
	select {
	case <-u.Ack:
		_ = event(w, rc, "[DONE]")
	case <-r.Context().Done():
	}
}

func (u *Upstream) hang(w http.ResponseWriter, r *http.Request) {
	rc := startSSE(w)
	_ = event(w, rc, `{"n":0}`)
	<-r.Context().Done()
	close(u.Canceled)
}

func (u *Upstream) breakOff(w http.ResponseWriter, r *http.Request) {
	rc := startSSE(w)
	_ = event(w, rc, `{"n":0}`)
	_ = event(w, rc, `{"n":1}`)
	closeConn(rc)
}

func (u *Upstream) audioBreak(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "audio/mpeg")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_, _ = w.Write(make([]byte, 4096))
	_ = rc.Flush()
	closeConn(rc)
}

// closeConn drops the connection mid-response, as a crashing upstream
// would: no final chunk, no clean end.
func closeConn(rc *http.ResponseController) {
	conn, _, err := rc.Hijack()
	if err == nil {
		_ = conn.Close()
	}
}

// Event is one server-sent event.
type Event struct{ Name, Data string }

// ReadEvent reads the next event.
func ReadEvent(r *bufio.Reader) (Event, error) {
	var ev Event
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return ev, err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if ev.Data != "" || ev.Name != "" {
				return ev, nil
			}
		case strings.HasPrefix(line, "event:"):
			ev.Name = strings.TrimSpace(line[len("event:"):])
		case strings.HasPrefix(line, "data:"):
			ev.Data = strings.TrimPrefix(line[len("data:"):], " ")
		}
	}
}

// Post sends a chat-style request with the client key.
func Post(ctx context.Context, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url,
		strings.NewReader(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+ClientKey)
	return http.DefaultClient.Do(req)
}

// Check runs the streaming checks against handler, which must serve the
// relay under prefix (its /v1 route going to up) and answer GET /hello
// itself. The handler is served on a loopback port, whose base URL Check
// returns for further checks.
func Check(t *testing.T, up *Upstream, handler http.Handler, prefix string) string {
	t.Helper()
	base := Serve(t, &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second})

	t.Run("app route beside the relay", func(t *testing.T) {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + "/hello")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "hello") {
			t.Errorf("GET /hello = %d %q", resp.StatusCode, body)
		}
	})

	t.Run("events arrive one at a time", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := Post(ctx, base+prefix+"/v1/handshake")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("status %d: %s", resp.StatusCode, b)
		}
		r := bufio.NewReader(resp.Body)
		for i := 0; ; i++ {
			ev, err := ReadEvent(r)
			if err != nil {
				t.Fatalf("event %d: %v (something on the way buffers the stream)", i, err)
			}
			if i == handshakeEvents {
				if ev.Data != "[DONE]" {
					t.Errorf("last event = %+v, want [DONE]", ev)
				}
				return
			}
			if want := fmt.Sprintf(`{"n":%d}`, i); ev.Data != want {
				t.Fatalf("event %d = %+v, want data %s", i, ev, want)
			}
			// Only now may the upstream send the next event.
			select {
			case up.Ack <- struct{}{}:
			case <-ctx.Done():
				t.Fatalf("the upstream did not wait for event %d", i+1)
			}
		}
	})

	t.Run("client disconnect cancels the upstream", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cctx, disconnect := context.WithCancel(ctx)
		resp, err := Post(cctx, base+prefix+"/v1/hang")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ReadEvent(bufio.NewReader(resp.Body)); err != nil {
			t.Fatal(err)
		}
		disconnect()
		resp.Body.Close()
		select {
		case <-up.Canceled:
		case <-ctx.Done():
			t.Fatal("the upstream request was not cancelled after the client left")
		}
	})

	t.Run("mid-stream failure reaches the client", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := Post(ctx, base+prefix+"/v1/break")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		r := bufio.NewReader(resp.Body)
		var events []Event
		for {
			ev, err := ReadEvent(r)
			if err != nil {
				break
			}
			events = append(events, ev)
		}
		if len(events) != 3 || events[2].Name != "error" || !strings.Contains(events[2].Data, "interrupted") {
			t.Errorf("events = %+v, want two data events and a final error event", events)
		}
	})
	return base
}

// AudioBreak requests the audio stream whose upstream breaks off and
// reports whether the client saw the failure (an error reading the body)
// rather than a clean end, and how many bytes it got.
func AudioBreak(t *testing.T, base string) (sawError bool, n int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := Post(ctx, base+"/v1/audio-break")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err = io.Copy(io.Discard, resp.Body)
	return err != nil, n
}
