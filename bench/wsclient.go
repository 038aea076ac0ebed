package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The driver's side of WebSocket sessions: a raw client that checks every
// frame it receives against what the mock upstream generates.

// wsClientKey makes a Sec-WebSocket-Key from a seed (any 16 bytes will
// do; the harness needs no unpredictability).
func wsClientKey(seed uint64) string {
	var k [16]byte
	binary.LittleEndian.PutUint64(k[:], splitmix(seed))
	binary.LittleEndian.PutUint64(k[8:], splitmix(seed+1))
	return base64.StdEncoding.EncodeToString(k[:])
}

// wsErr classifies an error on an established session.
func wsErr(err error, what string) error {
	var ce *checkError
	switch {
	case errors.As(err, &ce):
		return err
	case errors.Is(err, os.ErrDeadlineExceeded):
		return failf(failTimeout, "%s: %v", what, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return failf(failTruncated, "%s: %v", what, err)
	}
	var be benchError
	if errors.As(err, &be) {
		return failf(failAltered, "%s: %v", what, err)
	}
	return failf(failTruncated, "%s: %v", what, err)
}

// wsDial opens a session through a, asking the upstream for s. Every
// operation on the session must end by ctx's deadline.
func (d *driver) wsDial(ctx context.Context, a *arm, s wsSpec) (*wsConn, error) {
	return d.wsDialHeaders(ctx, a, s, "Authorization: Bearer "+a.key+"\r\n")
}

// wsDialHeaders is wsDial with the credential header lines given.
func (d *driver) wsDialHeaders(ctx context.Context, a *arm, s wsSpec, headers string) (*wsConn, error) {
	addr := strings.TrimPrefix(a.base, "http://")
	a.sent.Add(1)
	if s.r > 0 {
		a.addWSUsage(sessionUsage(s.seed, s.r, s.n))
	}
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, wrapTransport(err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	key := wsClientKey(s.seed)
	req := "GET " + wsPath + "?" + s.query() + " HTTP/1.1\r\nHost: " + addr +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
		"\r\nSec-WebSocket-Version: 13\r\n" + headers + "\r\n"
	if _, err := io.WriteString(conn, req); err != nil {
		_ = conn.Close()
		return nil, failf(failTransport, "writing the handshake: %v", err)
	}
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		_ = conn.Close()
		return nil, wsErr(err, "reading the handshake's answer")
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		_ = conn.Close()
		return nil, &checkError{kind: failStatus, status: resp.StatusCode, msg: fmt.Sprintf("handshake: %s: %s", resp.Status, snippet)}
	}
	switch {
	case !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") || !headerHasToken(resp.Header, "Connection", "upgrade"):
		_ = conn.Close()
		return nil, failf(failAltered, "101 without Upgrade: websocket and Connection: upgrade")
	case resp.Header.Get("Sec-WebSocket-Accept") != wsAccept(key):
		_ = conn.Close()
		return nil, failf(failAltered, "Sec-WebSocket-Accept %q, want %q", resp.Header.Get("Sec-WebSocket-Accept"), wsAccept(key))
	case resp.Header.Get("Sec-WebSocket-Extensions") != "":
		_ = conn.Close()
		return nil, failf(failAltered, "an extension was negotiated: %q", resp.Header.Get("Sec-WebSocket-Extensions"))
	}
	return newWSConn(conn, br, true, s.seed), nil
}

// next reads the next frame, answering any ping a proxy sends on its own
// (liveness checks) and skipping it.
func (c *wsConn) next() (wsFrame, error) {
	for range 1000 {
		f, err := c.readFrame()
		if err != nil || f.op != opPing {
			return f, err
		}
		if err := c.writeFrame(true, opPong, f.payload); err != nil {
			return f, err
		}
	}
	return wsFrame{}, failf(failAltered, "1,000 pings in a row")
}

// expectMessage reads a whole unfragmented message of opcode op.
func (c *wsConn) expectMessage(op byte, what string) ([]byte, error) {
	f, err := c.next()
	if err != nil {
		return nil, wsErr(err, what)
	}
	switch {
	case f.op == opClose:
		code, reason, _ := parseClose(f.payload)
		return nil, failf(failTruncated, "%s: closed with %s", what, closeString(code, reason))
	case f.op != op || !f.fin:
		return nil, failf(failAltered, "%s: frame opcode %d fin %v, want opcode %d fin true", what, f.op, f.fin, op)
	}
	return f.payload, nil
}

// expectHello reads the session.created that opens every session.
func (c *wsConn) expectHello(seed uint64) error {
	p, err := c.expectMessage(opText, "session.created")
	if err != nil {
		return err
	}
	t, err := stamp(p)
	if err != nil {
		return failf(failAltered, "session.created: %v", err)
	}
	if want := appendSessionCreated(nil, seed, t); !bytes.Equal(p, want) {
		return failf(failAltered, "session.created differs: got %q, want %q", clip(p), clip(want))
	}
	return nil
}

// readStream reads the stream phase of s, checking every message byte for
// byte but its stamp; lat, when not nil, receives each delta's latency
// (receive time minus send stamp).
func (c *wsConn) readStream(s wsSpec, lat *[]time.Duration) error {
	var want, scratch []byte
	for j := range s.r {
		for i := range s.n + 1 {
			what := fmt.Sprintf("response %d, message %d of %d", j, i, s.n+1)
			p, err := c.expectMessage(opText, what)
			if err != nil {
				return err
			}
			now := time.Now()
			t, err := stamp(p)
			if err != nil {
				return failf(failAltered, "%s: %v: %q", what, err, clip(p))
			}
			if i < s.n {
				want, scratch = appendAudioDelta(want[:0], scratch, s.seed, j, i, s.audioSize(), t)
				if lat != nil {
					*lat = append(*lat, time.Duration(now.UnixNano()-t))
				}
			} else {
				want = appendResponseDone(want[:0], s.seed, j, s.n, t)
			}
			if !bytes.Equal(p, want) {
				return failf(failAltered, "%s differs: got %q, want %q", what, clip(p), clip(want))
			}
		}
	}
	return nil
}

// echo sends one message and checks that it comes back unchanged (a
// ping as a pong with its payload), returning the round trip.
func (c *wsConn) echo(op byte, msg []byte) (time.Duration, error) {
	start := time.Now()
	if err := c.writeFrame(true, op, msg); err != nil {
		return 0, wsErr(err, "sending a message")
	}
	want := op
	if op == opPing {
		want = opPong
	}
	p, err := c.expectMessage(want, "echo of a "+strconv.Itoa(len(msg))+"-byte message")
	rtt := time.Since(start)
	if err != nil {
		return 0, err
	}
	if !bytes.Equal(p, msg) {
		return 0, failf(failAltered, "echo differs: got %q, want %q", clip(p), clip(msg))
	}
	return rtt, nil
}

// wsEOFWait bounds the wait for the connection's end after the close
// handshake: the issue wants a close through within a second.
const wsEOFWait = 5 * time.Second

// closeByClient sends a close and checks that the upstream's answer
// carries the same code and reason and that the connection then ends.
func (c *wsConn) closeByClient(code int, reason string) error {
	defer c.conn.Close()
	if err := c.writeClose(code, reason); err != nil {
		return wsErr(err, "sending the close")
	}
	return c.expectClose(code, reason, false)
}

// closeByUpstream expects the upstream's close with code and
// upstreamReason, answers it with the same, and checks that the
// connection then ends.
func (c *wsConn) closeByUpstream(code int) error {
	defer c.conn.Close()
	return c.expectClose(code, upstreamReason, true)
}

func (c *wsConn) expectClose(code int, reason string, answer bool) error {
	start := time.Now()
	f, err := c.next()
	if err != nil {
		return wsErr(err, "waiting for the close ("+time.Since(start).Round(time.Millisecond).String()+")")
	}
	if f.op != opClose {
		return failf(failAltered, "frame opcode %d where the close was due", f.op)
	}
	gotCode, gotReason, err := parseClose(f.payload)
	if err != nil {
		return failf(failAltered, "close: %v", err)
	}
	if code == 0 {
		code = 1005 // a close without a payload
	}
	if gotCode != code || gotReason != reason {
		return failf(failAltered, "close %s, want %s", closeString(gotCode, gotReason), closeString(code, reason))
	}
	if answer {
		if err := c.writeFrame(true, opClose, f.payload); err != nil {
			return wsErr(err, "answering the close")
		}
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(wsEOFWait))
	for range 100 {
		f, err := c.readFrame()
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
			return nil
		case err != nil:
			return failf(failTruncated, "after the close handshake: %v (want the connection's end)", err)
		case f.op != opPing && f.op != opPong:
			return failf(failAltered, "frame opcode %d after the close", f.op)
		}
	}
	return failf(failAltered, "control frames without end after the close")
}
