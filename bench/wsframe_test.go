package bench

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/url"
	"testing"
	"time"
)

func TestWSHeaderRoundTrip(t *testing.T) {
	mask := [4]byte{1, 2, 3, 4}
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, wsMaxPayload} {
		for _, op := range []byte{opCont, opText, opBinary} {
			for _, m := range []*[4]byte{nil, &mask} {
				for _, fin := range []bool{false, true} {
					b := appendWSHeader(nil, fin, op, n, m)
					h, size, err := parseWSHeader(b)
					if err != nil {
						t.Fatalf("n=%d op=%d masked=%v: %v", n, op, m != nil, err)
					}
					if size != len(b) || h.fin != fin || h.op != op || h.length != int64(n) || h.masked != (m != nil) ||
						(m != nil && h.mask != mask) {
						t.Errorf("n=%d op=%d masked=%v fin=%v: parsed %+v (size %d of %d)", n, op, m != nil, fin, h, size, len(b))
					}
					if _, _, err := parseWSHeader(b[:len(b)-1]); !errors.Is(err, errWSShort) {
						t.Errorf("n=%d: a header cut by a byte gave %v, want errWSShort", n, err)
					}
				}
			}
		}
	}
}

func TestWSHeaderRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"reserved bit", []byte{0x80 | 0x40 | opText, 0}, errWSReserved},
		{"unknown opcode", []byte{0x80 | 0x3, 0}, errWSOpcode},
		{"fragmented ping", []byte{opPing, 0}, errWSControl},
		{"control frame over 125 bytes", []byte{0x80 | opClose, 126, 0, 126}, errWSControl},
		{"16-bit length under 126", []byte{0x80 | opText, 126, 0, 125}, errWSLength},
		{"64-bit length under 65536", []byte{0x80 | opText, 127, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, errWSLength},
		{"64-bit length with its top bit set", []byte{0x80 | opText, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, errWSLength},
		{"payload over the harness's bound", appendWSHeader(nil, true, opBinary, wsMaxPayload+1, nil), errWSTooLarge},
		{"one byte", []byte{0x81}, errWSShort},
	} {
		if _, _, err := parseWSHeader(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestMaskWS(t *testing.T) {
	key := [4]byte{0xa1, 0x5b, 0x03, 0xfe}
	src := appendAudio(nil, 3, 0, 100)
	for pos := range 4 {
		for n := range 40 {
			got := append([]byte(nil), src[:n]...)
			maskWS(key, pos, got)
			for i := range n {
				if want := src[i] ^ key[(pos+i)&3]; got[i] != want {
					t.Fatalf("pos %d, n %d: byte %d is %#x, want %#x", pos, n, i, got[i], want)
				}
			}
		}
	}
}

// TestWSConnFrames sends frames from a client end to a server end and
// back over a real socket: masked one way, unmasked the other, payloads
// intact, and each end refusing the other's masking rule broken.
func TestWSConnFrames(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	var sc net.Conn
	select {
	case sc = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
	}
	if sc == nil {
		t.Fatal("accept failed")
	}
	defer sc.Close()
	deadline := time.Now().Add(10 * time.Second)
	_ = cc.SetDeadline(deadline)
	_ = sc.SetDeadline(deadline)
	client := newWSConn(cc, bufio.NewReader(cc), true, 42)
	server := newWSConn(sc, bufio.NewReader(sc), false, 0)
	frames := []wsFrame{
		{true, opText, []byte("hello")},
		{false, opBinary, appendAudio(nil, 1, 0, 70000)},
		{true, opCont, nil},
		{true, opPing, []byte("p")},
	}
	go func() {
		for _, f := range frames {
			_ = client.writeFrame(f.fin, f.op, f.payload)
		}
		_ = client.writeClose(4001, "bye")
	}()
	for i, want := range frames {
		got, err := server.readFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if got.fin != want.fin || got.op != want.op || !bytes.Equal(got.payload, want.payload) {
			t.Fatalf("frame %d: got fin %v op %d %q, want %+v", i, got.fin, got.op, clip(got.payload), want)
		}
		if err := server.writeFrame(got.fin, got.op, got.payload); err != nil {
			t.Fatal(err)
		}
	}
	f, err := server.readFrame()
	if err != nil {
		t.Fatal(err)
	}
	if code, reason, err := parseClose(f.payload); f.op != opClose || code != 4001 || reason != "bye" || err != nil {
		t.Fatalf("close frame: op %d, %d %q, %v", f.op, code, reason, err)
	}
	for i, want := range frames {
		got, err := client.readFrame()
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if got.fin != want.fin || got.op != want.op || !bytes.Equal(got.payload, want.payload) {
			t.Fatalf("echo %d: got fin %v op %d %q, want %+v", i, got.fin, got.op, clip(got.payload), want)
		}
	}
	// A server frame arriving masked, and a client frame unmasked, are refused.
	if err := client.writeFrame(true, opText, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := newWSConn(sc, server.br, true, 0).readFrame(); !errors.Is(err, errWSMaskBanned) {
		t.Errorf("a masked frame to a client: %v, want errWSMaskBanned", err)
	}
	_, _ = sc.Write(appendWSHeader(nil, true, opText, 0, nil))
	if _, err := client.readFrame(); err != nil {
		t.Fatalf("an empty unmasked frame to the client: %v", err)
	}
	_, _ = cc.Write(appendWSHeader(nil, true, opText, 0, nil))
	if _, err := server.readFrame(); !errors.Is(err, errWSMaskWanted) {
		t.Errorf("an unmasked frame to a server: %v, want errWSMaskWanted", err)
	}
	_ = cc.Close()
	if _, err := server.readFrame(); !errors.Is(err, io.EOF) {
		t.Errorf("after the client closed: %v, want EOF", err)
	}
}

func TestParseClose(t *testing.T) {
	for _, tc := range []struct {
		p      []byte
		code   int
		reason string
		bad    bool
	}{
		{nil, 1005, "", false},
		{[]byte{0x03, 0xe8}, 1000, "", false},
		{append([]byte{0x0f, 0xa1}, "bye ✓"...), 4001, "bye ✓", false},
		{[]byte{0x03}, 0, "", true},
	} {
		code, reason, err := parseClose(tc.p)
		if (err != nil) != tc.bad || code != tc.code || reason != tc.reason {
			t.Errorf("parseClose(%q) = %d %q %v", tc.p, code, reason, err)
		}
	}
}

func TestWSAccept(t *testing.T) {
	// RFC 6455, section 1.3.
	if got := wsAccept("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Errorf("wsAccept = %q", got)
	}
}

func TestWSSpecRoundTrip(t *testing.T) {
	for _, want := range []wsSpec{
		{seed: 1},
		{seed: 1 << 63, n: 200, r: 1, interval: time.Millisecond, closeCode: 1000},
		{seed: 7, n: 5, r: 3, size: 100, hold: "ws-memory-relay-1 &x", closeCode: 4002},
	} {
		q, err := url.ParseQuery(want.query())
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseWSSpec(q)
		if err != nil {
			t.Fatalf("%+v: %v", want, err)
		}
		if got != want {
			t.Errorf("round trip of %+v gave %+v", want, got)
		}
	}
	for _, q := range []string{"", "seed=x", "seed=1&n=-1", "seed=1&n=100001", "seed=1&close=999", "seed=1&close=5000",
		"seed=1&interval=x", "seed=1&size=2000000", "seed=1&r=1001"} {
		v, _ := url.ParseQuery(q)
		if _, err := parseWSSpec(v); err == nil {
			t.Errorf("parseWSSpec(%q) accepted it", q)
		}
	}
}

// TestWSPayloadStamps: every upstream message carries exactly one stamp,
// which the driver reads back to rebuild the message.
func TestWSPayloadStamps(t *testing.T) {
	const at = 1764400000123456789
	delta, _ := appendAudioDelta(nil, nil, 9, 1, 2, wsAudioBytes, at)
	for _, p := range [][]byte{appendSessionCreated(nil, 9, at), delta, appendResponseDone(nil, 9, 1, 20, at)} {
		if got, err := stamp(p); err != nil || got != at {
			t.Errorf("stamp(%q) = %d, %v", clip(p), got, err)
		}
		if bytes.Count(p, []byte(stampField)) != 1 {
			t.Errorf("%q has more than one stamp", clip(p))
		}
	}
	if u := sessionUsage(9, 2, 20); u != responseUsage(9, 0, 20).plus(responseUsage(9, 1, 20)) || u.total() == 0 {
		t.Errorf("sessionUsage = %+v", u)
	}
}
