package wsframe

import (
	"bytes"
	"fmt"
	"testing"
)

// rec is one scanned event, payload bytes gathered and unmasked.
type rec struct {
	Kind    Kind
	Hdr     Header
	Payload string
	Err     error
}

// scanAll feeds chunks to a fresh scanner and returns its events, with
// a frame's payload ranges joined (and unmasked) into its End.
func scanAll(t testing.TB, chunks ...[]byte) []rec {
	t.Helper()
	var s Scanner
	var out []rec
	var payload []byte
	for _, c := range chunks {
		for range 2*len(c) + 3 { // each call consumes a byte, or ends a frame of at least two: bounded
			ev, n := s.Next(c)
			c = c[n:]
			switch ev.Kind {
			case None:
			case Frame:
				out = append(out, rec{Kind: Frame, Hdr: *s.Header()})
				payload = payload[:0]
			case Payload:
				if uint64(len(payload)) != ev.Offset {
					t.Fatalf("payload offset %d, have %d bytes", ev.Offset, len(payload))
				}
				d := append([]byte(nil), ev.Data...)
				if h := s.Header(); h.Masked {
					Unmask(d, h.Mask, ev.Offset)
				}
				payload = append(payload, d...)
			case End:
				out = append(out, rec{Kind: End, Payload: string(payload)})
			case Error:
				return append(out, rec{Kind: Error, Err: ev.Err})
			}
			if ev.Kind == None {
				break
			}
		}
		if len(c) != 0 {
			t.Fatalf("chunk not consumed: %d bytes left", len(c))
		}
	}
	return out
}

var key = [4]byte{0x37, 0xfa, 0x21, 0x3d}

func frame(fin bool, op Opcode, mask bool, payload []byte) []byte {
	return AppendFrame(nil, fin, op, mask, key, payload)
}

func TestScanFrames(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 70000/16) // 64-bit length? no: 70000 > 65535
	mid := bytes.Repeat([]byte("x"), 300)                     // 16-bit length
	edge := bytes.Repeat([]byte("y"), 125)                    // largest 7-bit
	e126 := bytes.Repeat([]byte("z"), 126)                    // smallest 16-bit
	e64k := bytes.Repeat([]byte("w"), 65536)                  // smallest 64-bit
	type want struct {
		fin    bool
		op     Opcode
		length uint64
		body   string
	}
	for _, tc := range []struct {
		name   string
		stream []byte
		want   []want
	}{
		{"text unmasked", frame(true, OpText, false, []byte("hello")), []want{{true, OpText, 5, "hello"}}},
		{"text masked", frame(true, OpText, true, []byte("hello")), []want{{true, OpText, 5, "hello"}}},
		{"empty", frame(true, OpBinary, true, nil), []want{{true, OpBinary, 0, ""}}},
		{"7-bit edge", frame(true, OpBinary, false, edge), []want{{true, OpBinary, 125, string(edge)}}},
		{"16-bit edge", frame(true, OpBinary, true, e126), []want{{true, OpBinary, 126, string(e126)}}},
		{"16-bit", frame(true, OpBinary, false, mid), []want{{true, OpBinary, 300, string(mid)}}},
		{"64-bit edge", frame(true, OpBinary, true, e64k), []want{{true, OpBinary, 65536, string(e64k)}}},
		{"64-bit", frame(true, OpText, false, big), []want{{true, OpText, uint64(len(big)), string(big)}}},
		{"fragmented with control frames between", bytes.Join([][]byte{
			frame(false, OpText, true, []byte("hel")),
			frame(true, OpPing, true, []byte("p")),
			frame(false, OpContinuation, true, nil),
			frame(true, OpPong, true, nil),
			frame(true, OpContinuation, true, []byte("lo")),
			frame(true, OpClose, true, ClosePayload(nil, 1000, "bye")),
		}, nil), []want{
			{false, OpText, 3, "hel"}, {true, OpPing, 1, "p"}, {false, OpContinuation, 0, ""},
			{true, OpPong, 0, ""}, {true, OpContinuation, 2, "lo"}, {true, OpClose, 5, "\x03\xe8bye"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, split := range []int{0, 1, 2, 3, 7, 1000} {
				var chunks [][]byte
				if split == 0 {
					chunks = [][]byte{tc.stream}
				} else {
					for b := tc.stream; len(b) > 0; {
						k := min(split, len(b))
						chunks, b = append(chunks, b[:k]), b[k:]
					}
				}
				got := scanAll(t, chunks...)
				if len(got) != 2*len(tc.want) {
					t.Fatalf("split %d: %d events, want %d: %+v", split, len(got), 2*len(tc.want), got)
				}
				for i, w := range tc.want {
					h, e := got[2*i], got[2*i+1]
					if h.Kind != Frame || e.Kind != End {
						t.Fatalf("split %d: events %d: %v %v", split, i, h.Kind, e.Kind)
					}
					if h.Hdr.Fin != w.fin || h.Hdr.Op != w.op || h.Hdr.Length != w.length || e.Payload != w.body {
						t.Fatalf("split %d: frame %d: %+v %q, want %+v", split, i, h.Hdr, e.Payload[:min(len(e.Payload), 20)], w)
					}
				}
			}
		})
	}
}

func TestScanErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stream []byte
		err    ProtocolError
	}{
		{"reserved opcode", []byte{0x83, 0x00}, ErrReservedOpcode},
		{"reserved control opcode", []byte{0x8b, 0x00}, ErrReservedOpcode},
		{"control too long", frame(true, OpPing, false, make([]byte, 126)), ErrControlTooLong},
		{"control fragmented", frame(false, OpClose, false, nil), ErrControlFragmented},
		{"16-bit length under 126", []byte{0x82, 126, 0, 125}, ErrLength},
		{"64-bit length under 65536", []byte{0x82, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, ErrLength},
		{"64-bit length top bit", []byte{0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, ErrLength},
		{"lone continuation", frame(true, OpContinuation, false, nil), ErrUnexpectedContinue},
		{"data inside a message", append(frame(false, OpText, false, nil), frame(true, OpBinary, false, nil)...), ErrExpectedContinue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := scanAll(t, tc.stream)
			last := got[len(got)-1]
			if last.Kind != Error || last.Err != error(tc.err) {
				t.Fatalf("got %+v, want error %v", got, tc.err)
			}
		})
	}
}

func TestAtBoundary(t *testing.T) {
	var s Scanner
	f := frame(true, OpText, true, []byte("abc"))
	if !s.AtBoundary() {
		t.Fatal("fresh scanner not at a boundary")
	}
	for i := range f {
		p := f[i : i+1]
		for range 3 {
			ev, n := s.Next(p)
			p = p[n:]
			if ev.Kind == None {
				break
			}
		}
		if at := s.AtBoundary(); at != (i == len(f)-1) {
			t.Fatalf("after byte %d: AtBoundary %v", i, at)
		}
	}
}

func TestRSVReported(t *testing.T) {
	got := scanAll(t, []byte{0xc1, 0x00}) // FIN, RSV1, text
	if got[0].Hdr.RSV != 4 {
		t.Fatalf("RSV %d", got[0].Hdr.RSV)
	}
}

func TestNoAllocation(t *testing.T) {
	stream := bytes.Join([][]byte{frame(false, OpText, true, []byte("hello")), frame(true, OpContinuation, true, []byte("x"))}, nil)
	allocs := testing.AllocsPerRun(100, func() {
		var s Scanner
		p := stream
		for range 20 {
			ev, n := s.Next(p)
			p = p[n:]
			if ev.Kind == None {
				return
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per scan", allocs)
	}
}

// FuzzSplit: any split of a byte stream scans to the same events as the
// whole stream.
func FuzzSplit(f *testing.F) {
	f.Add(bytes.Join([][]byte{
		frame(false, OpText, true, []byte("hel")), frame(true, OpPing, false, []byte("p")),
		frame(true, OpContinuation, true, []byte("lo")), frame(true, OpBinary, false, make([]byte, 300)),
	}, nil), uint16(1), uint16(3))
	f.Add([]byte{0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3}, uint16(2), uint16(5))
	f.Add([]byte{0x83, 0x00, 0x01}, uint16(0), uint16(1))
	f.Fuzz(func(t *testing.T, stream []byte, a, b uint16) {
		whole := scanAll(t, stream)
		i, j := min(int(a), len(stream)), min(int(b), len(stream))
		if i > j {
			i, j = j, i
		}
		split := scanAll(t, stream[:i], stream[i:j], stream[j:])
		if fmt.Sprint(whole) != fmt.Sprint(split) {
			t.Fatalf("split at %d,%d:\n%v\nwhole:\n%v", i, j, split, whole)
		}
	})
}
