package relay

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
)

// smallReads makes every upstream body Read return at most n bytes.
type smallReads struct {
	rt http.RoundTripper
	n  int
}

func (t smallReads) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err == nil {
		resp.Body = &smallBody{ReadCloser: resp.Body, n: t.n}
	}
	return resp, err
}

type smallBody struct {
	io.ReadCloser
	n int
}

func (b *smallBody) Read(p []byte) (int, error) { return b.ReadCloser.Read(p[:min(len(p), b.n)]) }

// TestHidingEverySplit: the hidden stream equals the recording minus
// its usage chunk whatever size the upstream reads have (1..9 bytes), with
// LF, CRLF and CR endings, data without a space, and comments.
func TestHidingEverySplit(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(sharedFixtures(t), "openai_chat_stream_text_include_usage.sse"))
	assert.NoError(t, err)
	variants := map[string][]byte{
		"LF":       raw,
		"CRLF":     crlf(raw),
		"CR":       bytes.ReplaceAll(raw, []byte("\n"), []byte("\r")),
		"no space": bytes.ReplaceAll(raw, []byte("data: "), []byte("data:")),
		"comments": bytes.ReplaceAll(raw, []byte("\n\ndata: "), []byte("\n\n: ping\n\ndata: ")),
	}
	for name, stream := range variants {
		want, removed := withoutUsageChunks(stream)
		if name == "CR" {
			// withoutUsageChunks handles CR: check it found the chunk
			assert.Equal(t, 1, removed)
		}
		for n := 1; n <= 9; n++ {
			t.Run(fmt.Sprintf("%s/%d", name, n), func(t *testing.T) {
				e := newEnv(t, whole(stream), Route{Prefix: "/", Provider: ProviderOpenAI},
					WithTransport(smallReads{NewTransport(), n}))
				_, got := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true,"messages":[]}`))
				assert.Equal(t, string(want), string(got))
				assert.Equal(t, Usage{InputTokens: 78, OutputTokens: 9}, e.lastRecord().Usage)
			})
		}
	}
}

// eventReads serves each upstream body one event per Read, as a server
// that writes and flushes each event would, read as it arrives.
type eventReads struct{ rt http.RoundTripper }

func (t eventReads) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = &eventBody{b: b}
	return resp, nil
}

type eventBody struct{ b []byte }

func (e *eventBody) Read(p []byte) (int, error) {
	if len(e.b) == 0 {
		return 0, io.EOF
	}
	n := len(e.b)
	for _, sep := range []string{"\r\n\r\n", "\n\n"} {
		if i := bytes.Index(e.b, []byte(sep)); i >= 0 {
			n = min(n, i+len(sep))
		}
	}
	n = copy(p, e.b[:n])
	e.b = e.b[n:]
	return n, nil
}

func (e *eventBody) Close() error { return nil }

// TestHidingCRLFEventPerRead: a CRLF stream (sse-starlette's default
// separator) read one event per Read, as a server flushing each event is
// read: the client gets the stream minus the usage chunk, with no LF of
// that chunk's CRLF left behind.
func TestHidingCRLFEventPerRead(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(sharedFixtures(t), "openai_chat_stream_text_include_usage.sse"))
	assert.NoError(t, err)
	for name, stream := range map[string][]byte{"LF": raw, "CRLF": crlf(raw)} {
		t.Run(name, func(t *testing.T) {
			want, _ := withoutUsageChunks(stream)
			e := newEnv(t, whole(stream), Route{Prefix: "/", Provider: ProviderOpenAI},
				WithTransport(eventReads{NewTransport()}))
			_, got := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m","stream":true,"messages":[]}`))
			assert.Equal(t, string(want), string(got))
			assert.Equal(t, Usage{InputTokens: 78, OutputTokens: 9}, e.lastRecord().Usage)
		})
	}
}
