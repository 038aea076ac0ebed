package relay

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/streamrelay/relay/internal/testkit"
	"github.com/streamrelay/relay/internal/wsframe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// wsEnv is a relay in front of a WebSocket upstream running script.
func wsEnv(t *testing.T, script func(p *wsPeerConn), route Route, opts ...Option) (*env, chan *http.Request) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leakOptions(ignore)...) })
	reqs := make(chan *http.Request, 8)
	if route.AuthHeader == "" {
		route.AuthHeader, route.AuthValue = "Authorization", "Bearer up-secret"
	}
	e := newEnv(t, wsUpstream(t, reqs, script), route, opts...)
	return e, reqs
}

// TestSessionPassesFramesByteForByte: every frame type passes both ways
// with its bytes unchanged (a 1 MiB binary message, a fragmented one
// with control frames between its fragments, ping and pong, a close
// with its code and reason), and the session is recorded.
func TestSessionPassesFramesByteForByte(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	client := &wsPeerConn{mask: true}
	server := &wsPeerConn{}
	in := bytes.Join([][]byte{
		client.frame(true, wsframe.OpText, []byte(`{"type":"session.update"}`)),
		client.frame(true, wsframe.OpBinary, big),
		client.frame(false, wsframe.OpText, []byte("frag")),
		client.frame(true, wsframe.OpPing, []byte("p1")),
		client.frame(false, wsframe.OpContinuation, []byte("ment")),
		client.frame(true, wsframe.OpPong, nil),
		client.frame(true, wsframe.OpContinuation, []byte("ed")),
	}, nil)
	out := bytes.Join([][]byte{
		server.frame(true, wsframe.OpText, []byte(`{"type":"session.created"}`)),
		server.frame(true, wsframe.OpBinary, big),
		server.frame(false, wsframe.OpBinary, []byte{1, 2}),
		server.frame(true, wsframe.OpPong, []byte("p1")),
		server.frame(true, wsframe.OpContinuation, []byte{3}),
		server.frame(true, wsframe.OpPing, nil),
	}, nil)
	closeIn := client.frame(true, wsframe.OpClose, wsframe.ClosePayload(nil, 1000, "bye"))
	closeOut := server.frame(true, wsframe.OpClose, wsframe.ClosePayload(nil, 1000, "bye too"))
	got := make(chan []byte, 2)
	e, reqs := wsEnv(t, func(p *wsPeerConn) {
		got <- p.readRaw(len(in))
		p.writeRaw(out)
		got <- p.readRaw(len(closeIn))
		p.writeRaw(closeOut)
		_, err := p.readFrame() // the relay closes the connection
		assert.Error(t, err)
	}, Route{Prefix: "/v1"})
	resp, c := wsDial(t, e.front.URL+"/v1/realtime?model=gpt-realtime", bearer(testKey))
	require.NotNil(t, c, "status %d", resp.StatusCode)
	assert.NotEmpty(t, resp.Header.Get("X-Request-Id"))
	r := testkit.Recv(t, reqs, "the upstream handshake")
	assert.Equal(t, "Bearer up-secret", r.Header.Get("Authorization"), "the route's credential")
	assert.Equal(t, "websocket", r.Header.Get("Upgrade"))
	assert.Equal(t, testWSKey, r.Header.Get("Sec-WebSocket-Key"))
	assert.Equal(t, "gpt-realtime", r.URL.Query().Get("model"))
	// Written in odd pieces: frames pass whatever the split.
	for rest := in; len(rest) > 0; {
		k := min(len(rest), 7777)
		c.writeRaw(rest[:k])
		rest = rest[k:]
	}
	assert.Equal(t, in, testkit.Recv(t, got, "the client's frames upstream"))
	assert.Equal(t, out, c.readRaw(len(out)))
	c.writeRaw(closeIn)
	assert.Equal(t, closeIn, testkit.Recv(t, got, "the client's close upstream"))
	f := c.mustFrame()
	assert.Equal(t, 1000, closeCode(t, f))
	assert.Equal(t, "bye too", string(f.payload[2:]))
	_, err := c.readFrame()
	assert.Error(t, err, "the relay closes the client's connection after the close handshake")
	e.handled()
	rec := e.lastRecord()
	assert.Equal(t, KindWebSocket, rec.Kind)
	assert.Equal(t, http.StatusSwitchingProtocols, rec.Status)
	assert.Equal(t, int64(len(in)+len(closeIn)), rec.BytesIn)
	assert.Equal(t, int64(len(out)+len(closeOut)), rec.BytesOut)
	assert.Equal(t, int64(8), rec.FramesIn)
	assert.Equal(t, int64(7), rec.FramesOut)
	assert.Equal(t, 1000, rec.CloseCode)
	assert.Equal(t, "client", rec.ClosedBy)
	assert.Equal(t, ErrTypeNone, rec.ErrorType)
	assert.Equal(t, "acme", rec.Tenant)
}
