package relay

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/streamrelay/relay/internal/wsframe"
)

// SessionTimeouts bound a WebSocket session (WithSessionTimeouts). Zero
// fields take the defaults; a negative one means no limit.
type SessionTimeouts struct {
	// Ping: after this much silence from a side, the relay sends it a
	// ping of its own (default 30s), at a frame boundary, so that a live
	// peer answers with a pong. The pong passes on to the other side as
	// an unsolicited pong, which RFC 6455 (section 5.5.3) allows.
	Ping time.Duration
	// Idle: a side silent this long (pings unanswered) is taken for dead
	// and the session is closed, both sides with 1001 (default 75s).
	Idle time.Duration
	// Max bounds a session's whole duration (default 2h): then both sides
	// are closed with 1001.
	Max time.Duration
	// Close: once a close frame has passed one way (or the relay sent its
	// own), how long the relay waits for the other side's answering close
	// before it closes both connections (default 5s). The close itself is
	// forwarded at once; this only bounds the echo, which a loaded
	// upstream may send late: too short a wait drops sessions that were
	// ending cleanly.
	Close time.Duration
}

// Session defaults (SessionTimeouts).
const (
	defaultSessionPing  = 30 * time.Second
	defaultSessionIdle  = 75 * time.Second
	defaultSessionMax   = 2 * time.Hour
	defaultSessionClose = 5 * time.Second
)

// WithSessionTimeouts sets the bounds of WebSocket sessions; see
// SessionTimeouts. Zero fields keep the defaults.
func WithSessionTimeouts(t SessionTimeouts) Option {
	return func(c *config) error { c.session = t; return nil }
}

// sessionTimeouts resolves the relay's session bounds: zero takes the
// default, negative means none (0 here).
func (c *config) sessionTimeouts() SessionTimeouts {
	t := c.session
	for _, f := range []struct {
		d   *time.Duration
		def time.Duration
	}{{&t.Ping, defaultSessionPing}, {&t.Idle, defaultSessionIdle}, {&t.Max, defaultSessionMax}, {&t.Close, defaultSessionClose}} {
		if *f.d == 0 {
			*f.d = f.def
		}
		*f.d = max(*f.d, 0)
	}
	return t
}

// Who ended a session (Record.ClosedBy).
const (
	closedByClient   = "client"
	closedByUpstream = "upstream"
	closedByRelay    = "relay"
)

// Close codes (RFC 6455, section 7.4.1) the relay records or sends.
const (
	closeNormal        = 1000
	closeGoingAway     = 1001
	closeProtocolError = 1002
	closeNoStatus      = 1005 // recorded: a close frame without a code
	closeAbnormal      = 1006 // recorded: a side ended without a close frame
	closeBadGateway    = 1014
)

// A direction reads into a pooled smallBufSize (2 KiB) buffer while
// messages are small: one realtime audio delta or audio append (some
// 1.4 KB) is then one read and one write, with no pool round trip. A read
// that fills it switches to a pooled copyBufSize one until reads come
// short again. The buffer is not part of the session, so the session
// itself stays small.

// session is one relayed WebSocket session, allocated only for sessions:
// the two sides, and how the session ends.
type session struct {
	ex     *exchange
	client wsPeer
	up     wsPeer
	obs    sessionObserver // nil: messages are not observed
	to     SessionTimeouts

	mu        sync.Mutex
	over      bool           // run has returned: callbacks do nothing
	cbs       sync.WaitGroup // callbacks under way
	closedBy  string
	closeCode int
	closing   bool // both connections are being closed
	sending   int  // relayClose calls writing their close frames
	ended     bool // a side's connection ended (srcEnded)

	timers [3]*time.Timer // watchdog, max duration, close wait
}

// wsPeer is one side of a session: its connection and the frames
// written to it. Writes (the other direction's bytes, and the relay's
// own frames) take wmu.
type wsPeer struct {
	name   string // "client" or "upstream"
	conn   io.ReadWriteCloser
	nc     net.Conn      // the client's, for write deadlines; nil upstream
	pre    *bufio.Reader // bytes the client sent after the handshake, read first
	mask   bool          // frames the relay writes to it are masked (the upstream)
	last   atomic.Int64  // when it was last heard from, in Unix ns
	pinged atomic.Bool   // a ping of the relay's is unanswered

	wmu      sync.Mutex
	atEdge   bool          // the bytes written to it end between frames
	closed   bool          // a close frame was written to it: nothing more is
	queued   []byte        // a frame of the relay's, waiting for a frame boundary
	deadline time.Time     // the client's write deadline last set
	timeout  time.Duration // WithClientWriteTimeout, for the client; 0: none

	// The direction read from this side (its goroutine's alone until run
	// joins it).
	frames, bytes int64
	sawClose      atomic.Bool // it sent a close frame, passed on (read by the other direction)
}

func newSession(ex *exchange, conn net.Conn, br *bufio.Reader, up io.ReadWriteCloser) *session {
	s := &session{ex: ex, to: ex.rl.cfg.sessionTimeouts()}
	c, u := &s.client, &s.up
	c.name, c.conn, c.nc, c.atEdge, c.timeout = closedByClient, conn, conn, true, ex.rl.cfg.writeTimeout
	if br.Buffered() > 0 {
		c.pre = br
	}
	u.name, u.conn, u.mask, u.atEdge = closedByUpstream, up, true, true
	if ex.rl.newSessionObserver != nil {
		s.obs = ex.rl.newSessionObserver(string(ex.rec.Provider))
	}
	now := time.Now().UnixNano()
	s.client.last.Store(now)
	s.up.last.Store(now)
	return s
}

// run relays the session until both sides are closed, then moves what it
// saw into the record and the metrics.
func (s *session) run() {
	ex := s.ex
	stopCut := context.AfterFunc(ex.ctx, func() { s.callback(s.cut) })
	s.mu.Lock() // the timers' callbacks read timers under it
	if s.to.Ping > 0 || s.to.Idle > 0 {
		s.timers[0] = time.AfterFunc(s.watchInterval(), func() { s.callback(s.watch) })
	}
	if s.to.Max > 0 {
		s.timers[1] = time.AfterFunc(s.to.Max, func() { s.callback(func() { s.relayClose(closeGoingAway, "session time limit") }) })
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.pump(&s.client, &s.up)
	}()
	s.pump(&s.up, &s.client)
	<-done
	stopCut()
	s.mu.Lock()
	s.over = true
	for _, t := range s.timers {
		if t != nil {
			t.Stop()
		}
	}
	s.mu.Unlock()
	s.cbs.Wait()
	if s.obs != nil {
		s.obs.result(&ex.rec)
	}
	s.record()
}

// callback runs fn for a timer or the cut, unless the session is over.
func (s *session) callback(fn func()) {
	s.mu.Lock()
	if s.over {
		s.mu.Unlock()
		return
	}
	s.cbs.Add(1)
	s.mu.Unlock()
	defer s.cbs.Done()
	fn()
}

// record moves the session's counts into the record and the metrics.
func (s *session) record() {
	ex := s.ex
	rec := &ex.rec
	rec.FramesIn, rec.BytesIn = s.client.frames, s.client.bytes
	rec.FramesOut, rec.BytesOut = s.up.frames, s.up.bytes
	s.mu.Lock()
	rec.ClosedBy, rec.CloseCode = s.closedBy, s.closeCode
	s.mu.Unlock()
	m := ex.rl.metrics
	m.sessions.WithLabelValues(ex.route, rec.ClosedBy).Inc()
	m.frames.WithLabelValues(ex.route, "in").Add(float64(rec.FramesIn))
	m.frames.WithLabelValues(ex.route, "out").Add(float64(rec.FramesOut))
	m.closeCodes.WithLabelValues(ex.route, closeCodeLabel(rec.CloseCode)).Inc()
}

// closeCodeLabel bounds a close code as a metric label: the codes RFC
// 6455 and IANA define by number, the ranges for applications by range.
func closeCodeLabel(c int) string {
	switch {
	case c >= 1000 && c <= 1015:
		return strconv.Itoa(c)
	case c >= 3000 && c <= 3999:
		return "3xxx"
	case c >= 4000 && c <= 4999:
		return "4xxx"
	}
	return "other"
}

// noteClose records the first close of the session: by whom and with
// what code.
func (s *session) noteClose(by string, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closedBy == "" {
		s.closedBy, s.closeCode = by, code
	}
}

// closeSoon closes both connections after the Close wait, unless they
// are closed before: a close frame passed one way, the other side's is
// awaited that long (negative Close: no bound here; Idle still applies).
func (s *session) closeSoon() { s.closeAfter(s.to.Close) }

// closeAfter closes both connections after d, unless they are closed
// before; d <= 0: no bound.
func (s *session) closeAfter(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.timers[2] == nil && !s.over && d > 0 {
		s.timers[2] = time.AfterFunc(d, func() { s.callback(s.closeBoth) })
	}
}

// shutdownCloseWait bounds the wait for the sides' answering closes when
// Shutdown cuts a session: Shutdown's reserve is short (it cuts at most
// 2s before its deadline and gives cut requests 2/5 of that), and the
// session's record must be written before the record queue closes.
const shutdownCloseWait = 100 * time.Millisecond

// cut ends the session when its exchange's context ends: Shutdown (1001,
// "relay shutting down", a short wait for the answers), or the host's
// own request context (a router's timeout middleware, say: 1001, "request
// ended").
func (s *session) cut() {
	if context.Cause(s.ex.ctx) == errShutdown {
		w := shutdownCloseWait
		if s.to.Close > 0 {
			w = min(w, s.to.Close)
		}
		s.closeAfter(w)
		s.relayClose(closeGoingAway, "relay shutting down")
		return
	}
	s.relayClose(closeGoingAway, "request ended")
}

// closeBoth closes both connections: the pumps' reads end.
func (s *session) closeBoth() {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	s.closing = true
	s.mu.Unlock()
	s.client.conn.Close()
	s.up.conn.Close()
}

// relayClose ends the session from the relay's side (Shutdown, a time
// limit, a dead peer, a protocol error): a close frame with code to both
// sides, each at its next frame boundary, and both connections closed
// once the sides answer, or after the Close wait.
func (s *session) relayClose(code uint16, reason string) {
	s.noteClose(closedByRelay, int(code))
	s.closeSoon()
	s.mu.Lock()
	s.sending++
	s.mu.Unlock()
	key := maskKey()
	payload := wsframe.ClosePayload(make([]byte, 0, 2+len(reason)), code, reason)
	s.up.send(wsframe.AppendFrame(nil, true, wsframe.OpClose, true, key, payload), true)
	s.client.send(wsframe.AppendFrame(nil, true, wsframe.OpClose, false, key, payload), true)
	s.mu.Lock()
	s.sending--
	ended := s.ended && s.sending == 0
	s.mu.Unlock()
	if ended { // a side ended on the first close: the second is written, close both
		s.closeBoth()
	}
}

// watchInterval is how often the watchdog looks at the sides.
func (s *session) watchInterval() time.Duration {
	d := s.to.Ping
	if d <= 0 || (s.to.Idle > 0 && s.to.Idle < d) {
		d = s.to.Idle
	}
	return max(d/2, time.Millisecond)
}

// watch pings a side silent for Ping and ends the session when one is
// silent for Idle.
func (s *session) watch() {
	now := time.Now().UnixNano()
	for _, p := range [2]*wsPeer{&s.client, &s.up} {
		silent := time.Duration(now - p.last.Load())
		if s.to.Idle > 0 && silent >= s.to.Idle {
			s.relayClose(closeGoingAway, "peer timed out")
			s.closeBoth() // a dead peer does not answer: no wait
			return
		}
		if s.to.Ping > 0 && silent >= s.to.Ping && !p.pinged.Load() {
			key := maskKey()
			p.pinged.Store(p.ping(wsframe.AppendFrame(nil, true, wsframe.OpPing, p.mask, key, []byte("relay"))))
		}
	}
	s.mu.Lock()
	if !s.over {
		s.timers[0].Reset(s.watchInterval())
	}
	s.mu.Unlock()
}

// send writes a frame of the relay's own to the peer at its next frame
// boundary: now if the bytes written so far end one, else as soon as the
// frame under way is written. A close frame replaces a waiting ping, and
// nothing is written after a close.
func (p *wsPeer) send(frame []byte, isClose bool) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.closed {
		return
	}
	if !p.atEdge {
		if isClose || p.queued == nil {
			p.queued = frame
		}
		return
	}
	p.closed = isClose
	_ = p.write(frame)
}

// ping sends a ping of the relay's as send does, unless a write to the
// peer is under way: that write may be blocked (a peer that does not
// read; the upstream's connection has no write deadline), and the
// watchdog must never wait behind it, or it would stop looking for
// silent sides. It reports whether the ping was written or queued.
func (p *wsPeer) ping(frame []byte) bool {
	if !p.wmu.TryLock() {
		return false // bytes are on their way to it: the next look pings
	}
	defer p.wmu.Unlock()
	if p.closed {
		return false
	}
	if !p.atEdge {
		if p.queued == nil {
			p.queued = frame
		}
		return true
	}
	_ = p.write(frame)
	return true
}

// forward writes bytes read from the other side, which end at a frame
// boundary when edge is set, then a waiting frame of the relay's once at
// one. It reports false when the peer cannot be written to.
func (p *wsPeer) forward(b []byte, edge, closes bool) bool {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	if p.closed {
		return true // after a close frame nothing is sent: dropped
	}
	if err := p.write(b); err != nil {
		return false
	}
	p.atEdge = edge
	p.closed = closes
	if edge && p.queued != nil && !p.closed {
		q := p.queued
		p.queued = nil
		p.closed = q[0]&0x0f == byte(wsframe.OpClose)
		_ = p.write(q)
	}
	return true
}

// write writes b, under wmu, with the relay's client write deadline
// (WithClientWriteTimeout) on the client's connection, renewed at half
// life as clientWriter does.
func (p *wsPeer) write(b []byte) error {
	if p.nc != nil && p.timeout > 0 {
		now := time.Now()
		if p.deadline.Sub(now) < p.timeout/2 {
			p.deadline = now.Add(p.timeout)
			_ = p.nc.SetWriteDeadline(p.deadline)
		}
	}
	_, err := p.conn.Write(b)
	return err
}

// read reads from the peer: first what the client sent along with the
// handshake, then the connection.
func (p *wsPeer) read(b []byte) (int, error) {
	if p.pre != nil {
		n, err := p.pre.Read(b[:min(len(b), p.pre.Buffered())])
		if p.pre.Buffered() == 0 {
			p.pre = nil
		}
		return n, err
	}
	return p.conn.Read(b)
}

// pump relays src's bytes to dst as they arrive, unchanged, until src
// ends; it scans their frames as they pass (counts, close frames,
// protocol errors) and, after each write, hands complete messages to the
// observer.
func (s *session) pump(src, dst *wsPeer) {
	rl := s.ex.rl
	var wire wsframe.Scanner // before each write: boundaries, close frames, errors
	var msgs wsMessages      // after it: messages, for the observer
	observe := s.obs != nil && (src == &s.up || s.obs.observesClient())
	if observe {
		msgs.init(s, src == &s.up)
		defer msgs.release()
	}
	var closeBuf [125]byte
	var closeLen int
	small := rl.smallBufs.Get().(*[]byte)
	buf := *small
	var big *[]byte
	defer func() {
		rl.smallBufs.Put(small)
		if big != nil {
			rl.bufs.Put(big)
		}
	}()
	for {
		n, err := src.read(buf)
		if n > 0 {
			src.last.Store(time.Now().UnixNano())
			src.pinged.Store(false)
			src.bytes += int64(n)
			chunk := buf[:n]
			closes, perr := false, error(nil)
			for p := chunk; ; {
				ev, k := wire.Next(p)
				p = p[k:]
				switch ev.Kind {
				case wsframe.Frame:
					src.frames++
					h := wire.Header()
					switch {
					case h.RSV != 0:
						perr = errRSV
					case h.Masked != (src == &s.client):
						perr = errMasking
					}
					closeLen = 0
				case wsframe.Payload:
					if h := wire.Header(); h.Op == wsframe.OpClose {
						closeLen += copy(closeBuf[closeLen:], ev.Data)
					}
				case wsframe.End:
					if h := wire.Header(); h.Op == wsframe.OpClose {
						wsframe.Unmask(closeBuf[:closeLen], h.Mask, 0)
						code := closeNoStatus
						if closeLen >= 2 {
							code = int(binary.BigEndian.Uint16(closeBuf[:2]))
						}
						s.noteClose(src.name, code)
						src.sawClose.Store(true)
						closes = true
					}
				case wsframe.Error:
					perr = ev.Err
				}
				if ev.Kind == wsframe.None || perr != nil {
					break
				}
			}
			if perr != nil {
				rl.log.Warn("relay: WebSocket protocol error", "request_id", s.ex.rec.RequestID,
					"route", s.ex.route, "from", src.name, "error", perr)
				s.relayClose(closeProtocolError, "protocol error")
				s.closeBoth()
				return
			}
			if !dst.forward(chunk, wire.AtBoundary(), closes) {
				s.noteClose(dst.name, closeAbnormal)
				s.srcEnded(dst, src)
				return
			}
			if closes {
				if dst.sawClose.Load() { // both closes have passed: the session is over
					s.closeBoth()
				} else {
					s.closeSoon()
				}
			}
			if observe {
				msgs.scan(chunk)
			}
		}
		if err != nil {
			s.srcEnded(src, dst)
			return
		}
		// Idle memory: a small buffer while reads come short, a pooled
		// large one while data keeps coming.
		switch {
		case big == nil && n == len(buf):
			big = rl.bufs.Get().(*[]byte)
			buf = *big
		case big != nil && n < smallBufSize:
			rl.bufs.Put(big)
			big, buf = nil, *small
		}
	}
}

// srcEnded ends the session when src's connection ended (or could not be
// written to): recorded as src closing without a close frame (1006)
// unless a close came first; dst is sent a close frame if it has none
// coming
// (1014 to the client when the upstream vanished, 1001 to the upstream
// when the client did), then both connections are closed at once.
func (s *session) srcEnded(src, dst *wsPeer) {
	s.noteClose(src.name, closeAbnormal)
	s.mu.Lock()
	s.ended = true
	relayClosing := s.closedBy == closedByRelay // its own close is on its way to dst
	sending := s.sending > 0
	s.mu.Unlock()
	if sending {
		return // relayClose closes both once its frames are written
	}
	if !src.sawClose.Load() && !relayClosing {
		code, reason := uint16(closeGoingAway), "client went away"
		if src == &s.up {
			code, reason = closeBadGateway, "upstream went away"
		}
		key := maskKey()
		dst.send(wsframe.AppendFrame(nil, true, wsframe.OpClose, dst.mask, key,
			wsframe.ClosePayload(nil, code, reason)), true)
	}
	s.closeBoth()
}

// maskKey is a fresh masking key for a frame of the relay's own toward
// the upstream (RFC 6455 wants it unpredictable: it keeps intermediaries
// from reading a frame's bytes as something else).
func maskKey() [4]byte {
	var k [4]byte
	binary.LittleEndian.PutUint32(k[:], rand.Uint32())
	return k
}

// Protocol errors the relay finds beyond the framing itself.
const (
	errRSV     = Error("relay: WebSocket frame with reserved bits set (no extension was negotiated)")
	errMasking = Error("relay: WebSocket frame masked the wrong way (client frames are masked, server frames not)")
)
