package relay

import (
	"bytes"
	"time"
)

// sseParser observes a server-sent event stream incrementally, as the
// WHATWG specification parses it, without holding any byte back from the
// client: the relay writes each read through first and parses it after.
//
// It accepts LF, CR and CRLF line endings (a CRLF split across two reads
// counts once) and has no line-length limit. Only the "event" and "data"
// fields are kept: an event's data whole up to maxData bytes (its head);
// beyond that the event is reported as truncated but still counted, and,
// when tailCap is set, its last bytes are kept too (a window of tailCap to
// 2*tailCap bytes), since providers put usage at the end of their final
// events. So one event holds at most maxData+2*tailCap bytes however large
// it is. Buffers are reused, so steady-state parsing does not allocate;
// growth beyond the response's own allowance is charged to acct's budget,
// and when that refuses, the event is observed through what is already
// held and a tail window of minTail from the response's reserve. Charged
// buffers are kept while large events follow one another (a stream of
// base64 audio deltas costs no allocation per event) and given back at
// the first small event, or by release at the stream's end.
type sseParser struct {
	maxData int
	tailCap int
	// onEvent gets each event, with the time of the read that ended it
	// (feed's at): tail is nil unless the event outgrew the head and a
	// tail window was kept; data and tail are reused after it returns.
	onEvent func(at time.Time, name, data, tail []byte, truncated bool)
	acct    obsAccount

	field     []byte // field name of the current line, while it is read
	name      []byte // "event" field of the pending event
	data      []byte // joined "data" fields of the pending event (its head)
	tail      []byte // the last bytes of a pending event that outgrew data
	tailWin   int    // tail's window while it holds the end of the pending event; else 0
	hasData   bool   // a data field was seen for the pending event
	pending   bool   // a field (any name) was seen since the last blank line
	truncated bool

	state     uint8 // one of the parse* states
	skipSpace bool  // the next value byte may be the one optional space
	lineLen   int   // bytes seen on the current line, to spot blank lines
	lastCR    bool  // the previous read ended in CR: a leading LF is its pair

	events int64 // events dispatched

	// Holding back the usage chunk the relay's include_usage caused
	// (passHiding, includeusage.go); unused unless hide is set.
	hide    bool    // the stream is relayed run by run, the usage chunk dropped
	passing bool    // the pending event outgrew the hold: its bytes pass as they come
	dropLF  bool    // a hidden run ended with a CR: the LF after it is not sent either
	held    []byte  // the start of the pending event, read but not yet sent
	heldBuf *[]byte // held's pooled buffer, nil while nothing is held
}

const (
	parseField uint8 = iota // reading the field name
	parseData               // reading a data value
	parseEvent              // reading an event value
	parseSkip               // a comment or an ignored field: skip to end of line
)

// maxFieldName bounds the field-name buffer; longer names are not fields
// we keep, so the rest of the line is skipped.
const maxFieldName = 16

// maxEventName bounds a kept event name.
const maxEventName = 256

// midEvent reports whether the stream stopped inside a line or an event, so
// that an appended error event must first close it.
func (p *sseParser) midEvent() (midLine, pending bool) {
	return p.lineLen > 0, p.hasData || len(p.name) > 0
}

// feed parses the next bytes of the stream, read at at: the events they
// end are reported with that time.
func (p *sseParser) feed(b []byte, at time.Time) {
	for len(b) > 0 {
		b = b[p.feedTo(b, at):]
	}
}

// feedTo parses b as feed does, up to the first line end after which the
// stream is between events (see between), and returns how many bytes it
// parsed: all of b when it ends inside an event. So the bytes of a stream
// come in runs that each hold whole lines ending between two events: a
// blank line that ends an event (dispatched by then), or a comment line
// outside any event. The LF of a CRLF pair split at a run's end is the
// start of the next run.
func (p *sseParser) feedTo(b []byte, at time.Time) int {
	n := 0
	for n < len(b) {
		c := b[n:]
		if p.lastCR {
			p.lastCR = false
			if c[0] == '\n' {
				n++
				continue
			}
		}
		i := lineEnd(c)
		if i < 0 {
			p.line(c)
			return len(b)
		}
		p.line(c[:i])
		p.lastCR = c[i] == '\r'
		n += i + 1
		p.endLine(at)
		if !p.pending {
			return n
		}
	}
	return n
}

// between reports whether the bytes parsed so far end between two events:
// after a line end, with no field of an event seen since the last blank
// line.
func (p *sseParser) between() bool { return p.lineLen == 0 && !p.pending }

// lineEnd returns the index of the first CR or LF in b, or -1. Two
// vectorised IndexByte scans beat IndexAny's byte-at-a-time loop; the CR
// scan only covers the bytes before the first LF.
func lineEnd(b []byte) int {
	lf := bytes.IndexByte(b, '\n')
	head := b
	if lf >= 0 {
		head = b[:lf]
	}
	if cr := bytes.IndexByte(head, '\r'); cr >= 0 {
		return cr
	}
	return lf
}

// line handles part of a line's content (no line ending in it).
func (p *sseParser) line(b []byte) {
	if len(b) == 0 {
		return
	}
	p.lineLen += len(b)
	for len(b) > 0 {
		switch p.state {
		case parseField:
			if p.lineLen == len(b) && len(p.field) == 0 && b[0] == ':' {
				p.state = parseSkip // a comment
				return
			}
			i := bytes.IndexByte(b, ':')
			part := b
			if i >= 0 {
				part = b[:i]
			}
			if len(p.field)+len(part) > maxFieldName {
				p.state = parseSkip
				return
			}
			p.field = append(p.field, part...)
			if i < 0 {
				return
			}
			b = b[i+1:]
			p.startValue()
		case parseData:
			if p.skipSpace {
				p.skipSpace = false
				if b[0] == ' ' {
					b = b[1:]
					continue
				}
			}
			p.appendData(b)
			return
		case parseEvent:
			if p.skipSpace {
				p.skipSpace = false
				if b[0] == ' ' {
					b = b[1:]
					continue
				}
			}
			if room := maxEventName - len(p.name); room > 0 {
				p.name = append(p.name, b[:min(room, len(b))]...)
			}
			return
		default: // parseSkip
			return
		}
	}
}

// startValue switches to reading the value of the field just named.
func (p *sseParser) startValue() {
	p.skipSpace = true
	p.pending = true
	switch string(p.field) { // no allocation: the compiler special-cases this
	case "data":
		p.state = parseData
		if p.hasData {
			p.appendData([]byte{'\n'})
		}
		p.hasData = true
	case "event":
		p.state = parseEvent
		p.name = p.name[:0]
	default:
		p.state = parseSkip
	}
}

func (p *sseParser) appendData(b []byte) {
	if !p.truncated {
		if need := len(p.data) + len(b); need > cap(p.data) && cap(p.data) < p.maxData {
			p.data = p.acct.growSome(p.data, need, p.maxData)
		}
		n := min(len(b), min(cap(p.data), p.maxData)-len(p.data))
		p.data = append(p.data, b[:n]...)
		b = b[n:]
		if len(b) == 0 {
			return
		}
		p.truncated = true
		p.startTail()
	}
	if p.tailWin > 0 {
		p.tail = appendWindow(p.tail, b, p.tailWin)
	}
}

// startTail begins the tail window of an event that outgrew its head. The
// window starts with the head's last bytes, so that an object straddling
// the boundary is found whole. Without budget for a full window, the
// window is the reserve's minTail: the usage object is small.
func (p *sseParser) startTail() {
	if p.tailCap <= 0 {
		return
	}
	p.tail, p.tailWin = p.acct.tailBuf(p.tail, p.tailCap)
	k := min(len(p.data), p.tailWin)
	p.tail = append(p.tail, p.data[len(p.data)-k:]...)
}

// release drops the buffers and gives back what they took from the budget.
func (p *sseParser) release() {
	p.data, p.tail = nil, nil
	p.acct.release()
}

// endLine handles a line ending.
func (p *sseParser) endLine(at time.Time) {
	if p.lineLen == 0 {
		p.dispatch(at)
		return
	}
	if p.state == parseField {
		// A line with no colon names a field with an empty value.
		p.startValue()
	}
	p.state = parseField
	p.field = p.field[:0]
	p.lineLen = 0
	p.skipSpace = false
}

// dispatch ends the pending event at a blank line.
func (p *sseParser) dispatch(at time.Time) {
	if p.hasData {
		p.events++
		if p.onEvent != nil {
			var tail []byte
			if p.tailWin > 0 {
				tail = p.tail
			}
			p.onEvent(at, p.name, p.data, tail, p.truncated)
		}
	}
	// A large event is one the response's own allowance could not hold.
	// Its buffers stay for the next event, which is often large too; the
	// first small one gives them back to the budget.
	small := !p.truncated && len(p.data) <= headFree
	p.name = p.name[:0]
	p.data = p.data[:0]
	p.hasData = false
	p.pending = false
	p.truncated = false
	p.tailWin = 0
	if small && p.acct.held > 0 {
		p.release()
	}
}
