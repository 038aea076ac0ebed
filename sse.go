package relay

import "bytes"

// sseParser observes a server-sent event stream incrementally, as the
// WHATWG specification parses it, without holding any byte back from the
// client: the relay writes each read through first and parses it after.
//
// It accepts LF, CR and CRLF line endings (a CRLF split across two reads
// counts once) and has no line-length limit. Only the "event" and "data"
// fields are kept, data up to maxData bytes per event (beyond that the
// event is reported as truncated but still counted). Buffers are reused, so
// steady-state parsing does not allocate.
type sseParser struct {
	maxData int
	onEvent func(name, data []byte, truncated bool)

	field     []byte // field name of the current line, while it is read
	name      []byte // "event" field of the pending event
	data      []byte // joined "data" fields of the pending event
	hasData   bool   // a data field was seen for the pending event
	truncated bool

	state     uint8 // one of the parse* states
	skipSpace bool  // the next value byte may be the one optional space
	lineLen   int   // bytes seen on the current line, to spot blank lines
	lastCR    bool  // the previous read ended in CR: a leading LF is its pair

	events int64 // events dispatched
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

// feed parses the next bytes of the stream.
func (p *sseParser) feed(b []byte) {
	for len(b) > 0 {
		if p.lastCR {
			p.lastCR = false
			if b[0] == '\n' {
				b = b[1:]
				continue
			}
		}
		i := lineEnd(b)
		if i < 0 {
			p.line(b)
			return
		}
		p.line(b[:i])
		p.lastCR = b[i] == '\r'
		b = b[i+1:]
		p.endLine()
	}
}

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
	room := p.maxData - len(p.data)
	if len(b) > room {
		p.truncated = true
		b = b[:max(room, 0)]
	}
	p.data = append(p.data, b...)
}

// endLine handles a line ending.
func (p *sseParser) endLine() {
	if p.lineLen == 0 {
		p.dispatch()
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
func (p *sseParser) dispatch() {
	if p.hasData {
		p.events++
		if p.onEvent != nil {
			p.onEvent(p.name, p.data, p.truncated)
		}
	}
	p.name = p.name[:0]
	p.data = p.data[:0]
	p.hasData = false
	p.truncated = false
}
