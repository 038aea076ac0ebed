package relay

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/streamrelay/relay/internal/testkit"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDrainWithHiddenUsageChunk: WithDrainOnClientGone on an OpenAI
// chat stream where the relay injected include_usage (the default case).
// The drain reads on through the hiding path too: the record gets the
// provider's final usage, as the README's matrix promises.
func TestDrainWithHiddenUsageChunk(t *testing.T) {
	for _, tt := range []struct{ name, opts string }{
		{"client asked for usage (control)", `,"stream_options":{"include_usage":true}`},
		{"relay injected include_usage", ``},
	} {
		t.Run(tt.name, func(t *testing.T) { drainHidden(t, tt.opts) })
	}
}

func drainHidden(t *testing.T, opts string) {
	raw, err := os.ReadFile(filepath.Join(sharedFixtures(t), "openai_chat_stream_text_include_usage.sse"))
	require.NoError(t, err)
	head := fixtureHead(t, raw, `" London"`)
	body := `{"model":"m","stream":true` + opts + `,"max_tokens":300,"messages":[{"role":"user","content":"` + prompt40 + `"}]}`

	left := make(chan struct{}, 1)
	upstreamDone := make(chan struct{})
	tr := &watchTransport{rt: NewTransport(), reads: make(chan int64, 1024), closed: make(chan struct{})}
	cancelled := make(chan struct{}, 1)
	lim := newRecordingSettler(Limits{})
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		defer close(upstreamDone)
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = w.Write(head)
		w.(http.Flusher).Flush()
		select {
		case <-left:
		case <-r.Context().Done():
			cancelled <- struct{}{}
			return
		}
		// the rest, one event a write, so that the relay reads it in pieces
		rest := raw[len(head):]
		for len(rest) > 0 {
			n := len(rest)
			if i := indexBlank(rest); i >= 0 {
				n = i
			}
			if _, err := w.Write(rest[:n]); err != nil {
				cancelled <- struct{}{}
				return
			}
			w.(http.Flusher).Flush()
			rest = rest[n:]
			// wait until the relay has passed these bytes on and reads again,
			// or has closed the upstream body
			want := int64(len(raw) - len(rest))
		wait:
			for {
				select {
				case got := <-tr.reads:
					if got >= want {
						break wait
					}
				case <-tr.closed:
					cancelled <- struct{}{}
					return
				case <-r.Context().Done():
					cancelled <- struct{}{}
					return
				}
			}
		}
	}, Route{Prefix: "/", Provider: ProviderOpenAI}, WithLimiter(lim),
		WithTransport(tr), WithDrainOnClientGone(testkit.Timeout), WithLogger(slog.New(logHook{drainStarted, left})))

	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	defer cancel()
	resp, err := e.front.Client().Do(e.request("POST", "/v1/chat/completions", body).WithContext(ctx))
	require.NoError(t, err)
	got := make([]byte, len(head))
	_, err = io.ReadFull(resp.Body, got)
	require.NoError(t, err)
	cancel()
	resp.Body.Close()
	testkit.Recv(t, upstreamDone, "the upstream request did not end")
	e.handled()
	select {
	case <-cancelled:
		t.Error("the upstream was cancelled although the relay drains")
	default:
	}
	rec := e.lastRecord()
	assert.Equal(t, Usage{InputTokens: 78, OutputTokens: 9}, rec.Usage, "the provider's final usage, read by the drain")
}

func indexBlank(b []byte) int {
	for i := 0; i+1 < len(b); i++ {
		if b[i] == '\n' && b[i+1] == '\n' {
			return i + 2
		}
	}
	return -1
}

// watchTransport tells, at each Read of a response body, how many bytes
// earlier Reads returned, and when the body is closed.
type watchTransport struct {
	rt     http.RoundTripper
	reads  chan int64
	closed chan struct{}
}

func (t *watchTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err == nil {
		resp.Body = &watchBody{ReadCloser: resp.Body, t: t}
	}
	return resp, err
}

type watchBody struct {
	io.ReadCloser
	t    *watchTransport
	n    int64
	once bool
}

func (b *watchBody) Read(p []byte) (int, error) {
	select {
	case b.t.reads <- b.n:
	default:
	}
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

func (b *watchBody) Close() error {
	if !b.once {
		b.once = true
		close(b.t.closed)
	}
	return b.ReadCloser.Close()
}
