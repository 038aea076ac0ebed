package bench

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"sync"
)

// A minimal RFC 6455 framing layer, shared by the mock upstream (server
// side: reads masked frames, writes unmasked ones) and the driver (client
// side: the reverse). The harness speaks raw frames rather than through a
// WebSocket library so that it sees every frame as sent — fragmentation,
// control frames between fragments, close codes and reasons — and can
// check each byte for byte, and so that the load side costs little.

// Opcodes.
const (
	opCont   byte = 0x0
	opText   byte = 0x1
	opBinary byte = 0x2
	opClose  byte = 0x8
	opPing   byte = 0x9
	opPong   byte = 0xA
)

// wsMaxPayload bounds a frame's payload: the largest message the harness
// sends is 1 MiB.
const wsMaxPayload = 2 << 20

// wsGUID is the handshake's fixed suffix (RFC 6455, section 1.3).
const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// wsAccept is the Sec-WebSocket-Accept answer to a Sec-WebSocket-Key.
func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + wsGUID))
	return base64.StdEncoding.EncodeToString(h[:])
}

// wsHeader is a parsed frame header.
type wsHeader struct {
	fin    bool
	op     byte
	masked bool
	mask   [4]byte
	length int64
}

const (
	errWSReserved   = benchError("websocket frame: reserved bits set (no extension was negotiated)")
	errWSOpcode     = benchError("websocket frame: unknown opcode")
	errWSControl    = benchError("websocket frame: fragmented or oversized control frame")
	errWSTooLarge   = benchError("websocket frame: payload larger than the harness allows")
	errWSLength     = benchError("websocket frame: non-minimal or negative length")
	errWSMaskWanted = benchError("websocket frame: a client frame must be masked")
	errWSMaskBanned = benchError("websocket frame: a server frame must not be masked")
	errWSShort      = benchError("websocket frame: header needs more bytes")
)

// parseWSHeader parses the frame header at the start of b and returns it
// with its size in bytes, errWSShort if b holds only part of it, or an
// error if it breaks RFC 6455's rules for a connection without extensions.
func parseWSHeader(b []byte) (wsHeader, int, error) {
	var h wsHeader
	if len(b) < 2 {
		return h, 0, errWSShort
	}
	if b[0]&0x70 != 0 {
		return h, 0, errWSReserved
	}
	h.fin, h.op = b[0]&0x80 != 0, b[0]&0x0f
	switch h.op {
	case opCont, opText, opBinary:
	case opClose, opPing, opPong:
		if !h.fin || b[1]&0x7f > 125 {
			return h, 0, errWSControl
		}
	default:
		return h, 0, errWSOpcode
	}
	h.masked = b[1]&0x80 != 0
	n := 2
	switch l := b[1] & 0x7f; l {
	case 126:
		if len(b) < 4 {
			return h, 0, errWSShort
		}
		h.length = int64(binary.BigEndian.Uint16(b[2:]))
		if h.length < 126 {
			return h, 0, errWSLength
		}
		n = 4
	case 127:
		if len(b) < 10 {
			return h, 0, errWSShort
		}
		v := binary.BigEndian.Uint64(b[2:])
		if v>>63 != 0 || v <= 0xffff {
			return h, 0, errWSLength
		}
		h.length = int64(v)
		n = 10
	default:
		h.length = int64(l)
	}
	if h.masked {
		if len(b) < n+4 {
			return h, 0, errWSShort
		}
		copy(h.mask[:], b[n:])
		n += 4
	}
	if h.length > wsMaxPayload {
		return h, 0, errWSTooLarge
	}
	return h, n, nil
}

// appendWSHeader appends a frame header for a payload of n bytes, masked
// with mask when it is not nil.
func appendWSHeader(b []byte, fin bool, op byte, n int, mask *[4]byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	var m byte
	if mask != nil {
		m = 0x80
	}
	switch {
	case n < 126:
		b = append(b, b0, m|byte(n))
	case n <= 0xffff:
		b = append(b, b0, m|126, byte(n>>8), byte(n))
	default:
		b = append(b, b0, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if mask != nil {
		b = append(b, mask[:]...)
	}
	return b
}

// maskWS XORs b with the masking key, b being the payload from offset pos
// on (masking is its own inverse).
func maskWS(key [4]byte, pos int, b []byte) {
	var k [4]byte
	for i := range k {
		k[i] = key[(pos+i)&3]
	}
	w := uint64(binary.LittleEndian.Uint32(k[:]))
	w |= w << 32
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^w)
	}
	for ; i < len(b); i++ {
		b[i] ^= k[i&3]
	}
}

// wsFrame is a frame read: its payload is unmasked and valid until the
// next read on the same connection.
type wsFrame struct {
	fin     bool
	op      byte
	payload []byte
}

// wsConn is one end of a WebSocket connection. Reads are for one
// goroutine at a time; writes are serialised by a mutex, so that a
// reader answering a ping and a writer sending data may overlap.
type wsConn struct {
	conn   net.Conn
	br     *bufio.Reader
	client bool   // a client masks what it sends and expects unmasked frames
	seed   uint64 // the session's content seed (the driver's)

	rbuf []byte

	wmu  sync.Mutex
	wbuf []byte
	mask uint64 // masking-key generator state (client only)
}

func newWSConn(conn net.Conn, br *bufio.Reader, client bool, seed uint64) *wsConn {
	return &wsConn{conn: conn, br: br, client: client, seed: seed, mask: seed}
}

// readFrame reads the next frame.
func (c *wsConn) readFrame() (wsFrame, error) {
	var hb [14]byte
	if _, err := io.ReadFull(c.br, hb[:2]); err != nil {
		return wsFrame{}, err
	}
	need := 2
	switch hb[1] & 0x7f {
	case 126:
		need += 2
	case 127:
		need += 8
	}
	if hb[1]&0x80 != 0 {
		need += 4
	}
	if _, err := io.ReadFull(c.br, hb[2:need]); err != nil {
		return wsFrame{}, unexpected(err)
	}
	h, _, err := parseWSHeader(hb[:need])
	if err != nil {
		return wsFrame{}, err
	}
	switch {
	case c.client && h.masked:
		return wsFrame{}, errWSMaskBanned
	case !c.client && !h.masked:
		return wsFrame{}, errWSMaskWanted
	}
	if int64(cap(c.rbuf)) < h.length {
		c.rbuf = make([]byte, h.length)
	}
	p := c.rbuf[:h.length]
	if _, err := io.ReadFull(c.br, p); err != nil {
		return wsFrame{}, unexpected(err)
	}
	if h.masked {
		maskWS(h.mask, 0, p)
	}
	return wsFrame{fin: h.fin, op: h.op, payload: p}, nil
}

// unexpected turns an EOF in the middle of a frame into ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// writeFrame writes one frame in a single write.
func (c *wsConn) writeFrame(fin bool, op byte, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var mask *[4]byte
	var key [4]byte
	if c.client {
		c.mask = splitmix(c.mask)
		binary.LittleEndian.PutUint32(key[:], uint32(c.mask))
		mask = &key
	}
	b := appendWSHeader(c.wbuf[:0], fin, op, len(payload), mask)
	start := len(b)
	b = append(b, payload...)
	if mask != nil {
		maskWS(key, 0, b[start:])
	}
	c.wbuf = b
	_, err := c.conn.Write(b)
	if cap(c.wbuf) > 64<<10 {
		c.wbuf = nil // keep no 1 MiB buffer around after a large message
	}
	return err
}

// writeClose sends a close frame with a code and a reason (code 0: none).
func (c *wsConn) writeClose(code int, reason string) error {
	var p []byte
	if code != 0 {
		p = binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(reason)), uint16(code))
		p = append(p, reason...)
	}
	return c.writeFrame(true, opClose, p)
}

// parseClose splits a close frame's payload into its code (1005 when it
// has none) and reason.
func parseClose(p []byte) (int, string, error) {
	switch {
	case len(p) == 0:
		return 1005, "", nil
	case len(p) == 1:
		return 0, "", benchError("close frame with a 1-byte payload")
	}
	return int(binary.BigEndian.Uint16(p)), string(p[2:]), nil
}

// closeString renders a close code and reason for messages.
func closeString(code int, reason string) string {
	return strconv.Itoa(code) + " " + strconv.Quote(reason)
}
