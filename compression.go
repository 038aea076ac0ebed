package relay

import (
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"io"
	"iter"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Compressed responses. The relay offers the upstream only the content
// codings it can observe (acceptEncoding), and observes a gzip or deflate
// body through a decoder that runs on a copy of each read, after the read
// was sent on to the client unchanged (decoder).

// coding is a response's content coding, as far as observation goes.
type coding uint8

const (
	codingIdentity coding = iota // none: observed as it comes
	codingGzip                   // gzip (or x-gzip): decoded on a copy
	codingDeflate                // deflate, zlib-wrapped as RFC 9110 says or raw: decoded on a copy
	codingOther                  // anything else (br, zstd, several codings): not observed
)

// contentCoding reads a response's Content-Encoding: the one rule for
// whether its body is decoded to be observed, and whether plain text may
// be appended to it (an error event) when it breaks off.
func contentCoding(h http.Header) coding {
	vv := h["Content-Encoding"]
	switch {
	case len(vv) == 0:
		return codingIdentity
	case len(vv) > 1:
		return codingOther
	}
	switch v := strings.TrimSpace(vv[0]); {
	case v == "" || strings.EqualFold(v, "identity"):
		return codingIdentity
	case strings.EqualFold(v, "gzip") || strings.EqualFold(v, "x-gzip"):
		return codingGzip
	case strings.EqualFold(v, "deflate"):
		return codingDeflate
	}
	return codingOther
}

// acceptEncoding returns the Accept-Encoding to send upstream for the
// values vv the request would carry: the client's elements naming gzip,
// deflate or identity, with their parameters (q-values), and nothing
// else, since the relay observes only what it can decode. When no element
// is left that accepts something (q above 0), it is identity, explicitly:
// a request without Accept-Encoding would let Go's transport, unless its
// DisableCompression is set, ask for gzip itself and decompress the
// response out of sight, changing the bytes the client gets. The client's
// slice is reused when it is one line and nothing is dropped.
func acceptEncoding(vv []string, identity []string) []string {
	dropped, accepts := false, false
	for _, v := range vv {
		for e := range strings.SplitSeq(v, ",") {
			if e = strings.TrimSpace(e); e == "" {
				continue
			}
			ok, q := observableCoding(e)
			if !ok {
				dropped = true
				continue
			}
			accepts = accepts || q
		}
	}
	switch {
	case !accepts:
		return identity
	case !dropped && len(vv) == 1:
		return vv
	}
	var b strings.Builder
	for _, v := range vv {
		for e := range strings.SplitSeq(v, ",") {
			if e = strings.TrimSpace(e); e == "" {
				continue
			}
			if ok, _ := observableCoding(e); ok {
				if b.Len() > 0 {
					b.WriteString(", ")
				}
				b.WriteString(e)
			}
		}
	}
	return []string{b.String()}
}

// observableCoding reports whether an Accept-Encoding element names a
// coding the relay can observe, and whether it accepts it (its q-value,
// when it has one, is above 0; a malformed one accepts nothing).
func observableCoding(e string) (ok, accepts bool) {
	name, params, _ := strings.Cut(e, ";")
	switch name = strings.TrimSpace(name); {
	case strings.EqualFold(name, "gzip"), strings.EqualFold(name, "deflate"), strings.EqualFold(name, "identity"):
	default:
		return false, false
	}
	for p := range strings.SplitSeq(params, ";") {
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(strings.TrimSpace(k), "q") {
			q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return true, err == nil && q > 0
		}
	}
	return true, true
}

// A decoder's memory (the inflater's 32 KiB window and Huffman tables,
// the buffer it decodes into, and its goroutine's stack) is taken from the
// observation budget as one sum, decoderMem, while the response lasts.
// Its output is bounded too: a body decodes to at most maxDecodeRatio
// times its compressed size plus decodeAllowance bytes, beyond which it is
// no longer observed (a decompression bomb costs bounded CPU; the
// observation windows bound what is held of it anyway).
const (
	decoderMem      = 64 << 10
	decodeOut       = 4 << 10 // the decoded bytes of one Read
	maxDecodeRatio  = 64
	decodeAllowance = 1 << 20
)

// decoder decodes a gzip or deflate body for observation, read by read,
// on a copy: the relay has already written and flushed each read to the
// client when it hands it to feed, so the client's bytes are the
// upstream's, unchanged and never delayed by decoding.
//
// Go's inflaters are pull-based: they read their input themselves and
// cannot resume after a short read. So the inflater runs as a coroutine
// (iter.Pull) over an input that yields back to the relaying goroutine
// whenever the read it was given is used up: feed switches to it, it
// decodes all it can and hands the decoded bytes to the observer, then
// switches back. The hand-off is synchronous, with no channel, lock or
// allocation per read, and costs about 100ns where a goroutine fed through
// channels costs about 400ns and a wake-up on another core; the observer
// is only ever run by one goroutine at a time, and a panic in it comes
// back to the relaying goroutine as any panic while relaying does.
//
// A body that is corrupt, truncated or decodes past its bound ends the
// decoding: observation stops there and the client's stream goes on.
// closeDecoder, deferred by relayResponse, ends the coroutine on every
// path; it holds no reference to a read once it has switched back. A decoder is reused between responses
// (Relay.decoders): its inflaters are reset, not reallocated.
type decoder struct {
	src    codedInput
	next   func() (struct{}, bool) // runs the coroutine until it needs input or ends
	stop   func()
	coding coding
	sse    bool      // decoded bytes go to parser, an SSE body's,
	o      *observer // or else to the chunk observer of any other body
	at     time.Time // when the read being decoded was made
	in     int64     // compressed bytes fed
	out    int64     // bytes decoded
	done   bool      // decoding ended: the body's end, a corrupt body or the bound
	inside bool      // the coroutine is running: a panic left it unfit for reuse

	// parser is the SSE parser of a compressed SSE body: it lives here,
	// where the coroutine can reach it, rather than on the relaying
	// goroutine's stack as a plain body's does.
	parser sseParser

	gz  *gzip.Reader
	fl  io.ReadCloser // raw deflate's inflater
	zl  io.ReadCloser // zlib's
	buf [decodeOut]byte
}

// newDecoder takes a decoder for a body of coding c, charging its memory
// to the observation budget; nil when the budget refuses.
func (rl *Relay) newDecoder(c coding) *decoder {
	if !rl.observed.take(decoderMem) {
		return nil
	}
	d, _ := rl.decoders.Get().(*decoder)
	if d == nil {
		d = new(decoder)
	}
	d.coding = c
	d.next, d.stop = iter.Pull(d.run)
	return d
}

// feed decodes the next read of the body, made at at, and has what it
// decodes observed before returning. b is not used after it returns.
func (d *decoder) feed(b []byte, at time.Time) {
	d.in += int64(len(b))
	if d.done {
		return
	}
	d.src.b, d.at = b, at
	d.resume()
	d.src.b = nil
}

// end tells the decoder that the body ended whole, so that it observes
// what it still holds (a gzip member's last bytes wait for its trailer
// and the check for another member).
func (d *decoder) end() {
	d.src.ended = true
	if !d.done {
		d.resume()
	}
}

// resume runs the coroutine until it needs more input or ends.
func (d *decoder) resume() {
	d.inside = true
	_, more := d.next()
	d.inside = false
	d.done = !more
}

// closeDecoder ends the coroutine (it sees no more input and returns,
// observing nothing more), gives the decoder back to rl for reuse unless
// a panic left it mid-decode, and returns its memory to the observation
// budget.
func (rl *Relay) closeDecoder(d *decoder) {
	d.stop()
	rl.observed.give(decoderMem)
	if d.inside {
		return // the coroutine panicked: its inflater's state is unknown
	}
	d.next, d.stop, d.o, d.sse = nil, nil, nil, false
	d.src = codedInput{}
	d.in, d.out, d.done = 0, 0, false
	d.parser = sseParser{field: d.parser.field[:0], name: d.parser.name[:0]}
	rl.decoders.Put(d)
}

// run is the coroutine: it decodes the body until it ends, is corrupt,
// reaches its bound, or closeDecoder stops it.
func (d *decoder) run(yield func(struct{}) bool) {
	d.src.yield = yield
	r := d.reader()
	if r == nil {
		return
	}
	for {
		// Each pass decodes at least a byte or consumes input: the loop
		// ends with the input, whose every wait returns to feed.
		room := maxDecodeRatio*d.in + decodeAllowance - d.out
		if room <= 0 {
			return // a decompression bomb: stop observing
		}
		n, err := r.Read(d.buf[:min(int64(len(d.buf)), room)])
		if d.src.stopped {
			return // closing: what the inflater flushes on its way out is not observed
		}
		if n > 0 {
			d.out += int64(n)
			if d.sse {
				d.parser.feed(d.buf[:n], d.at)
			} else {
				d.o.chunk(d.buf[:n])
			}
		}
		if err != nil {
			return // the end, or a corrupt or truncated body
		}
	}
}

// reader starts the inflater for the decoder's coding, reading the
// body's header; nil when the header is not one.
func (d *decoder) reader() io.Reader {
	if d.coding == codingGzip {
		if d.gz == nil {
			d.gz = new(gzip.Reader)
		}
		if d.gz.Reset(&d.src) != nil {
			return nil
		}
		return d.gz
	}
	// "deflate" is zlib-wrapped (RFC 9110), but some servers send raw
	// deflate: a valid zlib header tells them apart.
	in := &prefixed{src: &d.src}
	if _, err := io.ReadFull(&d.src, in.head[:]); err != nil {
		return nil
	}
	if h := in.head; h[0]&0x0f == 8 && (uint16(h[0])<<8|uint16(h[1]))%31 == 0 {
		if d.zl == nil {
			zr, err := zlib.NewReader(in)
			if err != nil {
				return nil
			}
			d.zl = zr
			return zr
		}
		if d.zl.(zlib.Resetter).Reset(in, nil) != nil {
			return nil
		}
		return d.zl
	}
	if d.fl == nil {
		d.fl = flate.NewReader(in)
	} else {
		_ = d.fl.(flate.Resetter).Reset(in, nil)
	}
	return d.fl
}

// codedInput is the inflater's input: the read being decoded. When it is
// used up, it yields to feed for the next one, until the body ends or the
// decoder is closed. It is a flate.Reader (a ByteReader), so that the
// inflaters read it directly and hold no buffered copy of their own.
type codedInput struct {
	b       []byte
	yield   func(struct{}) bool
	ended   bool // no more input: the body ended, or the decoder is closing
	stopped bool // the decoder is closing: decode no more
}

// more waits, yielding to feed, until there is input; false when none
// will come.
func (s *codedInput) more() bool {
	for len(s.b) == 0 { // each yield brings the next read, or the end
		if s.ended {
			return false
		}
		if !s.yield(struct{}{}) {
			s.ended, s.stopped = true, true
			return false
		}
	}
	return true
}

func (s *codedInput) ReadByte() (byte, error) {
	if !s.more() {
		return 0, io.EOF
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c, nil
}

func (s *codedInput) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if !s.more() {
		return 0, io.EOF
	}
	n := copy(p, s.b)
	s.b = s.b[n:]
	return n, nil
}

// prefixed gives a deflate body's first two bytes again, once read to
// tell zlib from raw deflate, then the rest of src.
type prefixed struct {
	head [2]byte
	used int
	src  *codedInput
}

func (p *prefixed) ReadByte() (byte, error) {
	if p.used < len(p.head) {
		p.used++
		return p.head[p.used-1], nil
	}
	return p.src.ReadByte()
}

func (p *prefixed) Read(b []byte) (int, error) {
	if p.used < len(p.head) {
		n := copy(b, p.head[p.used:])
		p.used += n
		return n, nil
	}
	return p.src.Read(b)
}
