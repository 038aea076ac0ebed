package bench

import (
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// serveWS is the mock upstream's realtime endpoint (wsPath): it completes
// the WebSocket handshake itself, after the credential checks of
// ServeHTTP, and runs the session wsSpec describes.
func (u *upstream) serveWS(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Sec-WebSocket-Key")
	switch {
	case r.Method != http.MethodGet, !headerHasToken(r.Header, "Connection", "upgrade"),
		!strings.EqualFold(r.Header.Get("Upgrade"), "websocket"), r.Header.Get("Sec-WebSocket-Version") != "13", key == "":
		http.Error(w, `{"error":{"message":"not a WebSocket handshake"}}`, http.StatusBadRequest)
		return
	case r.Header.Get("Sec-WebSocket-Extensions") != "":
		// Neither proxy may pass an offer on (the relay removes it, the
		// driver makes none); answering without the extension is allowed,
		// but an offer here means a header was invented on the way.
		http.Error(w, `{"error":{"message":"unexpected extension offer"}}`, http.StatusBadRequest)
		return
	}
	s, err := parseWSSpec(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Time{})
	if _, err := conn.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: " + wsAccept(key) + "\r\n\r\n")); err != nil {
		return
	}
	u.wsSession(newWSConn(conn, brw.Reader, false, 0), s)
}

// headerHasToken reports whether a comma-separated header holds token.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// wsSession runs one session on an upgraded connection (see wsSpec).
func (u *upstream) wsSession(c *wsConn, s wsSpec) {
	var closing atomic.Bool // the upstream has sent its close
	if s.hold != "" {
		defer u.hold()()
	}
	buf := appendSessionCreated(make([]byte, 0, 2048), s.seed, time.Now().UnixNano())
	if c.writeFrame(true, opText, buf) != nil {
		return
	}
	read := make(chan struct{})
	go func() { defer close(read); u.wsRead(c, &closing) }()
	if s.hold != "" {
		select {
		case <-u.gate(s.hold):
		case <-u.done:
		case <-read:
			return
		}
	}
	var tm *time.Timer
	if s.interval > 0 {
		tm = time.NewTimer(time.Hour)
		defer tm.Stop()
	}
	var scratch []byte
	for j := range s.r {
		for i := range s.n {
			if (i > 0 || j > 0) && tm != nil {
				tm.Reset(s.interval)
				select {
				case <-tm.C:
				case <-read:
					return
				}
			}
			buf, scratch = appendAudioDelta(buf[:0], scratch, s.seed, j, i, s.audioSize(), time.Now().UnixNano())
			if c.writeFrame(true, opText, buf) != nil {
				return
			}
		}
		buf = appendResponseDone(buf[:0], s.seed, j, s.n, time.Now().UnixNano())
		if c.writeFrame(true, opText, buf) != nil {
			return
		}
	}
	if s.closeCode != 0 {
		closing.Store(true)
		if c.writeClose(s.closeCode, upstreamReason) != nil {
			return
		}
	}
	// The reader ends with the client's close (or the connection); a
	// client that never sends one is cut off when the upstream stops.
	select {
	case <-read:
	case <-u.done:
	}
}

// Asking the upstream to ping: the client sends wsPingMe; the upstream
// pings it with wsUpstreamPing and, once the pong with that payload is
// back, sends wsPingMe in return.
const (
	wsPingMe       = `{"type":"bench.ping_me"}`
	wsUpstreamPing = "upstream ping"
)

// wsRead reads the client's frames until its close: data frames are
// echoed as they came (wsPingMe excepted), pings answered, a close echoed
// unless the upstream closed first (then it is the answer).
func (u *upstream) wsRead(c *wsConn, closing *atomic.Bool) {
	for {
		f, err := c.readFrame()
		if err != nil {
			return
		}
		switch {
		case f.op == opText && string(f.payload) == wsPingMe:
			// The upstream pings the client; the pong is answered below.
			err = c.writeFrame(true, opPing, []byte(wsUpstreamPing))
		case f.op == opPong && string(f.payload) == wsUpstreamPing:
			err = c.writeFrame(true, opText, []byte(wsPingMe))
		case f.op == opPong:
		case f.op == opPing:
			err = c.writeFrame(true, opPong, f.payload)
		case f.op == opClose:
			if !closing.Load() {
				_ = c.writeFrame(true, opClose, f.payload)
			}
			return
		default:
			err = c.writeFrame(f.fin, f.op, f.payload)
		}
		if err != nil {
			return
		}
	}
}
