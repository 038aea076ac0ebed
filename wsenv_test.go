package relay

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamrelay/relay/internal/testkit"
	"github.com/streamrelay/relay/internal/wsframe"
	"github.com/stretchr/testify/require"
)

// A raw WebSocket peer for tests: frames written and read on a net.Conn
// with exact bytes (wsframe.AppendFrame), so that tests can check what
// passes byte for byte, split as they like.

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

type wsPeerConn struct {
	t    testing.TB
	c    net.Conn
	br   *bufio.Reader
	mask bool // a client: its frames are masked
}

// frame returns one frame as this peer sends it.
func (p *wsPeerConn) frame(fin bool, op wsframe.Opcode, payload []byte) []byte {
	return wsframe.AppendFrame(nil, fin, op, p.mask, [4]byte{1, 2, 3, 4}, payload)
}

func (p *wsPeerConn) writeRaw(b []byte) {
	p.t.Helper()
	require.NoError(p.t, p.c.SetWriteDeadline(time.Now().Add(testkit.Timeout)))
	_, err := p.c.Write(b)
	require.NoError(p.t, err)
}

func (p *wsPeerConn) send(fin bool, op wsframe.Opcode, payload []byte) {
	p.t.Helper()
	p.writeRaw(p.frame(fin, op, payload))
}

func (p *wsPeerConn) sendClose(code uint16, reason string) {
	p.t.Helper()
	p.send(true, wsframe.OpClose, wsframe.ClosePayload(nil, code, reason))
}

// readRaw reads exactly n bytes, within testkit.Timeout.
func (p *wsPeerConn) readRaw(n int) []byte {
	p.t.Helper()
	require.NoError(p.t, p.c.SetReadDeadline(time.Now().Add(testkit.Timeout)))
	b := make([]byte, n)
	_, err := io.ReadFull(p.br, b)
	require.NoError(p.t, err)
	return b
}

type wsFrame struct {
	fin     bool
	op      wsframe.Opcode
	masked  bool
	payload []byte
}

// readFrame reads one frame, unmasked, within testkit.Timeout.
func (p *wsPeerConn) readFrame() (wsFrame, error) {
	_ = p.c.SetReadDeadline(time.Now().Add(testkit.Timeout))
	var h [2]byte
	if _, err := io.ReadFull(p.br, h[:]); err != nil {
		return wsFrame{}, err
	}
	f := wsFrame{fin: h[0]&0x80 != 0, op: wsframe.Opcode(h[0] & 0xf), masked: h[1]&0x80 != 0}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(p.br, b[:]); err != nil {
			return f, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(p.br, b[:]); err != nil {
			return f, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	var key [4]byte
	if f.masked {
		if _, err := io.ReadFull(p.br, key[:]); err != nil {
			return f, err
		}
	}
	f.payload = make([]byte, n)
	if _, err := io.ReadFull(p.br, f.payload); err != nil {
		return f, err
	}
	if f.masked {
		wsframe.Unmask(f.payload, key, 0)
	}
	return f, nil
}

func (p *wsPeerConn) mustFrame() wsFrame {
	p.t.Helper()
	f, err := p.readFrame()
	require.NoError(p.t, err)
	return f
}

// closeCode reads a close frame's code.
func closeCode(t testing.TB, f wsFrame) int {
	t.Helper()
	require.Equal(t, wsframe.OpClose, f.op, "a close frame")
	require.GreaterOrEqual(t, len(f.payload), 2)
	return int(binary.BigEndian.Uint16(f.payload))
}

// wsUpstream is an upstream that accepts WebSocket handshakes and runs
// script on each session; each handshake's request is sent on reqs.
func wsUpstream(t *testing.T, reqs chan<- *http.Request, script func(p *wsPeerConn)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if reqs != nil {
			reqs <- r
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("upstream hijack: %v", err)
			return
		}
		defer c.Close()
		hs := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " +
			wsAccept(r.Header.Get("Sec-WebSocket-Key")) + "\r\n"
		if p := r.Header.Get("Sec-WebSocket-Protocol"); p != "" {
			first, _, _ := strings.Cut(p, ",")
			hs += "Sec-WebSocket-Protocol: " + strings.TrimSpace(first) + "\r\n"
		}
		if _, err := c.Write([]byte(hs + "\r\n")); err != nil {
			return
		}
		script(&wsPeerConn{t: t, c: c, br: brw.Reader})
	}
}

const testWSKey = "dGhlIHNhbXBsZSBub25jZQ=="

// wsDial opens a session through the relay at url (http://host/path)
// with the extra headers, and returns the response and, on a 101, the
// client's peer.
func wsDial(t *testing.T, url string, hdr http.Header) (*http.Response, *wsPeerConn) {
	t.Helper()
	host := strings.TrimPrefix(url, "http://")
	host, path, _ := strings.Cut(host, "/")
	c, err := net.DialTimeout("tcp", host, testkit.Timeout)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	req := "GET /" + path + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + testWSKey + "\r\nSec-WebSocket-Version: 13\r\n"
	for k, vv := range hdr {
		for _, v := range vv {
			req += k + ": " + v + "\r\n"
		}
	}
	p := &wsPeerConn{t: t, c: c, br: bufio.NewReader(c), mask: true}
	p.writeRaw([]byte(req + "\r\n"))
	require.NoError(t, c.SetReadDeadline(time.Now().Add(testkit.Timeout)))
	resp, err := http.ReadResponse(p.br, nil)
	require.NoError(t, err)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		return resp, nil
	}
	require.Equal(t, wsAccept(testWSKey), resp.Header.Get("Sec-WebSocket-Accept"))
	return resp, p
}

func bearer(key string) http.Header { return http.Header{"Authorization": {"Bearer " + key}} }
