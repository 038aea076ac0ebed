package relay

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/streamrelay/relay/internal/testkit"
	"github.com/streamrelay/relay/internal/wsframe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSessionBadAcceptIs502: an upstream's 101 that is no WebSocket
// handshake (a Sec-WebSocket-Accept that does not answer the key sent,
// no Upgrade, no Connection: Upgrade) gets the client a 502, not a 101
// it would fail on (RFC 6455, section 4.1).
func TestSessionBadAcceptIs502(t *testing.T) {
	for _, tc := range []struct {
		name string
		head func(key string) string
	}{
		{"wrong accept", func(string) string {
			return "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + wsAccept("another key") + "\r\n"
		}},
		{"no accept", func(string) string { return "Upgrade: websocket\r\nConnection: Upgrade\r\n" }},
		{"no upgrade", func(key string) string {
			return "Connection: Upgrade\r\nSec-WebSocket-Accept: " + wsAccept(key) + "\r\n"
		}},
		{"no connection upgrade", func(key string) string {
			return "Upgrade: websocket\r\nSec-WebSocket-Accept: " + wsAccept(key) + "\r\n"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
				c, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					return
				}
				defer c.Close()
				_, _ = c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\n" + tc.head(r.Header.Get("Sec-WebSocket-Key")) + "\r\n"))
			}, Route{Prefix: "/v1"})
			resp, c := wsDial(t, e.front.URL+"/v1/realtime", bearer(testKey))
			require.Nil(t, c)
			assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
			e.handled()
			assert.Equal(t, http.StatusBadGateway, e.lastRecord().Status)
		})
	}
}

// TestSessionUpstreamNotReading: an upstream that stops reading while
// the client keeps sending blocks the client→upstream write (the
// upstream connection has no write deadline). The watchdog must still
// find the session dead after Idle rather than block behind that write:
// it used to wait for the upstream's write lock to ping it (once the
// upstream had been heard from again), and the session then lived until
// Max (2h by default).
func TestSessionUpstreamNotReading(t *testing.T) {
	stalled, release := make(chan struct{}), make(chan struct{})
	e, _ := wsEnv(t, func(p *wsPeerConn) {
		// It reads nothing; once the client's writes stall (every buffer
		// on the way is full, the relay's write to it blocked), it is
		// heard from, so that the relay pings it again.
		select {
		case <-stalled:
		case <-release:
			return
		}
		p.send(true, wsframe.OpText, []byte("x"))
		<-release
	}, Route{Prefix: "/v1"}, WithSessionTimeouts(SessionTimeouts{Ping: 50 * time.Millisecond, Idle: 500 * time.Millisecond}))
	defer close(release)
	resp, c := wsDial(t, e.front.URL+"/v1/realtime", bearer(testKey))
	require.NotNil(t, c, "status %d", resp.StatusCode)
	frame := c.frame(true, wsframe.OpBinary, bytes.Repeat([]byte{7}, 1<<20))
	go func() {
		for range 1024 { // 1 GiB at most: far beyond the sockets' buffers
			_ = c.c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := c.c.Write(frame); err != nil {
				break // no progress for 100ms: stalled (or closed)
			}
		}
		close(stalled)
	}()
	testkit.Recv(t, stalled, "the client's writes stall")
	// The session ends: the client's connection is closed (after the
	// relay's close frame when it could be written).
	var err error
	for range 20 {
		var f wsFrame
		if f, err = c.readFrame(); err != nil || f.op == wsframe.OpClose {
			break
		}
	}
	if err == nil {
		_, err = c.readFrame()
	}
	require.Error(t, err)
	require.NotErrorIs(t, err, os.ErrDeadlineExceeded, "the session ended within the test's timeout")
	e.handled()
	rec := e.lastRecord()
	assert.Equal(t, "relay", rec.ClosedBy)
	assert.Equal(t, 1001, rec.CloseCode)
}

// TestSessionKeyNeverUpstream: however a client spells its key into the
// subprotocol offer (several header lines, odd spacing, the prefix in
// another case, the bare key), it never reaches the upstream, while the
// other subprotocols do.
func TestSessionKeyNeverUpstream(t *testing.T) {
	for _, tc := range []struct {
		name string
		hdr  http.Header
		want string
	}{
		{"lines and spacing", http.Header{"Sec-WebSocket-Protocol": {" realtime ,\topenai-insecure-api-key." + testKey + " ", "openai-insecure-api-key." + testKey + ",x"}}, "realtime, x"},
		{"prefix in another case, key in a header", http.Header{"Authorization": {"Bearer " + testKey},
			"Sec-WebSocket-Protocol": {"realtime, OpenAI-Insecure-API-Key." + testKey}}, "realtime"},
		{"bare key, key in a header", http.Header{"X-Api-Key": {testKey},
			"Sec-WebSocket-Protocol": {testKey + ", realtime"}}, "realtime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan struct{})
			e, reqs := wsEnv(t, func(p *wsPeerConn) {
				p.sendClose(1000, "")
				<-done
			}, Route{Prefix: "/v1"})
			resp, c := wsDial(t, e.front.URL+"/v1/realtime", tc.hdr)
			require.NotNil(t, c, "status %d", resp.StatusCode)
			r := testkit.Recv(t, reqs, "the upstream handshake")
			assert.Equal(t, tc.want, r.Header.Get("Sec-WebSocket-Protocol"))
			for k, vv := range r.Header {
				assert.NotContains(t, strings.Join(vv, ","), testKey, "header %s carries the client's key", k)
			}
			assert.Equal(t, 1000, closeCode(t, c.mustFrame()))
			c.sendClose(1000, "")
			close(done)
			e.handled()
			assert.NotContains(t, string(appendRecordJSON(nil, ptr(e.lastRecord()))), testKey)
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestSessionFramesWithTheHandshake: frames a client sends in the same
// write as its handshake (before the 101) reach the upstream unchanged.
func TestSessionFramesWithTheHandshake(t *testing.T) {
	client := &wsPeerConn{mask: true}
	early := append(client.frame(true, wsframe.OpText, []byte("early")), client.frame(true, wsframe.OpBinary, []byte{1, 2, 3})...)
	got := make(chan []byte, 1)
	e, _ := wsEnv(t, func(p *wsPeerConn) {
		got <- p.readRaw(len(early))
		p.sendClose(1000, "")
		_, _ = p.readFrame()
	}, Route{Prefix: "/v1"})
	host := strings.TrimPrefix(e.front.URL, "http://")
	c, err := net.DialTimeout("tcp", host, testkit.Timeout)
	require.NoError(t, err)
	defer c.Close()
	p := &wsPeerConn{t: t, c: c, br: bufio.NewReader(c), mask: true}
	p.writeRaw(append([]byte("GET /v1/realtime HTTP/1.1\r\nHost: "+host+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: "+testWSKey+"\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer "+testKey+"\r\n\r\n"), early...))
	require.NoError(t, c.SetReadDeadline(time.Now().Add(testkit.Timeout)))
	resp, err := http.ReadResponse(p.br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	assert.Equal(t, early, testkit.Recv(t, got, "the early frames upstream"))
	assert.Equal(t, 1000, closeCode(t, p.mustFrame()))
	p.sendClose(1000, "")
	e.handled()
	assert.Equal(t, int64(len(early)+len(p.frame(true, wsframe.OpClose, wsframe.ClosePayload(nil, 1000, "")))), e.lastRecord().BytesIn)
}
