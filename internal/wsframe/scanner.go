// Package wsframe scans RFC 6455 WebSocket frames as they stream past, so
// that a relay can observe a session without buffering it: fed the bytes
// of one direction in chunks split anywhere, a Scanner reports each
// frame's header, the ranges of its payload within the chunks, its end,
// and protocol errors. It never copies or allocates; the caller unmasks a
// copy of the payload bytes it wants to look at (Unmask).
package wsframe

import "encoding/binary"

// Opcode is a frame's opcode (RFC 6455, section 5.2).
type Opcode uint8

// Opcodes. The others are reserved and scanned as errors.
const (
	OpContinuation Opcode = 0x0
	OpText         Opcode = 0x1
	OpBinary       Opcode = 0x2
	OpClose        Opcode = 0x8
	OpPing         Opcode = 0x9
	OpPong         Opcode = 0xA
)

// IsControl reports whether op is a control opcode (close, ping, pong).
func (op Opcode) IsControl() bool { return op&0x8 != 0 }

// Header is one frame's header.
type Header struct {
	Fin    bool
	RSV    uint8 // the three reserved bits, as bits 2..0 (RSV1 is 4)
	Op     Opcode
	Masked bool
	Mask   [4]byte
	Length uint64 // the payload's length
}

// Kind says what an Event reports.
type Kind uint8

// Event kinds.
const (
	None    Kind = iota // nothing more in the bytes given
	Frame               // a frame's header is complete: Scanner.Header
	Payload             // Data is payload bytes, starting at Offset within the frame's payload
	End                 // the frame's payload is complete
	Error               // a protocol error: Err; the scanner stops
)

// Event is one thing the scanner found.
type Event struct {
	Kind   Kind
	Data   []byte // Payload: a slice of the bytes given, still masked
	Offset uint64 // Payload: the position of Data[0] in the frame's payload
	Err    error  // Error
}

// ProtocolError is a protocol error (a constant, so that no package state is
// mutable).
type ProtocolError string

func (e ProtocolError) Error() string { return string(e) }

// Protocol errors.
const (
	ErrReservedOpcode     = ProtocolError("wsframe: reserved opcode")
	ErrControlTooLong     = ProtocolError("wsframe: control frame payload over 125 bytes")
	ErrControlFragmented  = ProtocolError("wsframe: fragmented control frame")
	ErrLength             = ProtocolError("wsframe: payload length not minimally encoded or over 2^63-1")
	ErrUnexpectedContinue = ProtocolError("wsframe: continuation frame outside a fragmented message")
	ErrExpectedContinue   = ProtocolError("wsframe: data frame inside a fragmented message")
)

// Scanner scans one direction of a WebSocket connection. Its zero value
// is ready. It is not safe for concurrent use.
type Scanner struct {
	hdr       Header
	buf       [14]byte // header bytes gathered so far
	n         uint8    // len of buf in use
	need      uint8    // header bytes needed (2 until the length byte is seen)
	inHeader  bool     // between a frame's first header byte and its end
	pending   bool     // the header is complete and reported; payload or End follows
	done      uint64   // payload bytes reported
	inMessage bool     // a fragmented data message is open
	msgOp     Opcode   // its opcode (text or binary)
	err       error
}

// Header is the header of the frame being scanned (valid from its Frame
// event to its End).
func (s *Scanner) Header() *Header { return &s.hdr }

// MessageOp is the opcode of the data message the current frame belongs
// to: the frame's own, or, for a continuation, the first frame's.
func (s *Scanner) MessageOp() Opcode {
	if s.hdr.Op == OpContinuation {
		return s.msgOp
	}
	return s.hdr.Op
}

// AtBoundary reports whether the bytes scanned so far end between frames:
// a frame of the relay's own may be inserted there.
func (s *Scanner) AtBoundary() bool { return !s.inHeader && !s.pending && s.err == nil }

// InMessage reports whether a fragmented data message is open (its final
// frame not yet scanned).
func (s *Scanner) InMessage() bool { return s.inMessage }

// Err is the protocol error the scanner stopped at, if any.
func (s *Scanner) Err() error { return s.err }

// Next scans p and returns the next event and how many bytes of p it
// consumed. Call it again with p[n:] until it returns None (which it
// does, consuming nothing, once p is used up and nothing is pending). An
// End is reported even when p is empty, so that a frame whose last bytes
// came in the previous chunk ends at once.
func (s *Scanner) Next(p []byte) (Event, int) {
	if s.err != nil {
		return Event{Kind: Error, Err: s.err}, 0
	}
	if s.pending {
		left := s.hdr.Length - s.done
		if left == 0 {
			s.pending = false
			s.endFrame()
			return Event{Kind: End}, 0
		}
		if len(p) == 0 {
			return Event{}, 0
		}
		n := len(p)
		if uint64(n) > left {
			n = int(left)
		}
		ev := Event{Kind: Payload, Data: p[:n], Offset: s.done}
		s.done += uint64(n)
		return ev, n
	}
	// Gather the header.
	used := 0
	for used < len(p) {
		if !s.inHeader {
			s.inHeader, s.n, s.need = true, 0, 2
		}
		k := min(int(s.need-s.n), len(p)-used)
		copy(s.buf[s.n:], p[used:used+k])
		s.n += uint8(k)
		used += k
		if s.n < s.need {
			continue
		}
		if s.n == 2 {
			// The length byte tells the header's full size.
			need := uint8(2)
			switch s.buf[1] & 0x7f {
			case 126:
				need += 2
			case 127:
				need += 8
			}
			if s.buf[1]&0x80 != 0 {
				need += 4
			}
			if need > 2 {
				s.need = need
				continue
			}
		}
		if err := s.parseHeader(); err != nil {
			s.err = err
			return Event{Kind: Error, Err: err}, used
		}
		s.inHeader, s.pending, s.done = false, true, 0
		return Event{Kind: Frame}, used
	}
	return Event{}, used
}

// parseHeader decodes the complete header in buf and checks it.
func (s *Scanner) parseHeader() error {
	b := s.buf[:s.n]
	h := Header{Fin: b[0]&0x80 != 0, RSV: b[0] >> 4 & 0x7, Op: Opcode(b[0] & 0xf), Masked: b[1]&0x80 != 0}
	i := 2
	switch l := b[1] & 0x7f; l {
	case 126:
		h.Length = uint64(binary.BigEndian.Uint16(b[2:]))
		i += 2
		if h.Length < 126 {
			return ErrLength
		}
	case 127:
		h.Length = binary.BigEndian.Uint64(b[2:])
		i += 8
		if h.Length <= 0xffff || h.Length>>63 != 0 {
			return ErrLength
		}
	default:
		h.Length = uint64(l)
	}
	if h.Masked {
		copy(h.Mask[:], b[i:i+4])
	}
	switch h.Op {
	case OpContinuation:
		if !s.inMessage {
			return ErrUnexpectedContinue
		}
	case OpText, OpBinary:
		if s.inMessage {
			return ErrExpectedContinue
		}
	case OpClose, OpPing, OpPong:
		if h.Length > 125 {
			return ErrControlTooLong
		}
		if !h.Fin {
			return ErrControlFragmented
		}
	default:
		return ErrReservedOpcode
	}
	s.hdr = h
	return nil
}

// endFrame updates the message state when a frame ends.
func (s *Scanner) endFrame() {
	switch s.hdr.Op {
	case OpText, OpBinary:
		s.msgOp = s.hdr.Op
		s.inMessage = !s.hdr.Fin
	case OpContinuation:
		s.inMessage = !s.hdr.Fin
	}
}

// Unmask XORs b, payload bytes starting at offset within a frame masked
// with key, in place. Masking is its own inverse.
func Unmask(b []byte, key [4]byte, offset uint64) {
	k := offset & 3
	for i := range b {
		b[i] ^= key[k]
		k = (k + 1) & 3
	}
}

// AppendFrame appends one frame with payload to b: masked with key when
// mask is set (frames a client sends), else plain.
func AppendFrame(b []byte, fin bool, op Opcode, mask bool, key [4]byte, payload []byte) []byte {
	b0 := byte(op)
	if fin {
		b0 |= 0x80
	}
	var m byte
	if mask {
		m = 0x80
	}
	n := len(payload)
	switch {
	case n < 126:
		b = append(b, b0, m|byte(n))
	case n <= 0xffff:
		b = append(b, b0, m|126, byte(n>>8), byte(n))
	default:
		b = append(b, b0, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if mask {
		b = append(b, key[:]...)
	}
	start := len(b)
	b = append(b, payload...)
	if mask {
		Unmask(b[start:], key, 0)
	}
	return b
}

// ClosePayload appends a close frame's payload (code and reason) to b.
func ClosePayload(b []byte, code uint16, reason string) []byte {
	b = binary.BigEndian.AppendUint16(b, code)
	return append(b, reason...)
}
