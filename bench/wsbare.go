package bench

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// bareWS is the baseline for WebSocket sessions: the plain hijack-and-copy
// proxy. It dials the upstream over TCP, writes the client's handshake
// with the upstream key swapped in, relays a non-101 answer as an ordinary
// response, and otherwise hijacks the client connection, forwards the 101
// and copies bytes both ways until either side ends, then closes both.
//
// The copies go through user space with 32 KiB buffers from a pool (the
// size io.Copy uses, and httputil.ReverseProxy's upgrade path), not
// through splice(2), which io.Copy between two TCP connections would
// pick: splice holds a kernel pipe (two descriptors) per direction for
// the session's life, so 5,000 sessions would need some 30,000
// descriptors, above this machine's hard limit, and its buffers would be
// kernel memory that the RSS comparison cannot see. Its cost is two
// goroutines and two copy buffers per session.
type bareWS struct {
	addr string // the upstream's host:port
	bufs *bufferPool
}

func newBareWS(addr string) *bareWS {
	return &bareWS{addr: addr, bufs: newBufferPool(copyBufSize, 1<<14)}
}

// isWebSocket reports whether r asks for a WebSocket upgrade.
func isWebSocket(r *http.Request) bool {
	return r.Method == http.MethodGet && r.ProtoMajor == 1 && headerHasToken(r.Header, "Connection", "upgrade") &&
		strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

func (p *bareWS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	up, err := net.DialTimeout("tcp", p.addr, 10*time.Second)
	if err != nil {
		http.Error(w, "upstream unreachable", http.StatusBadGateway)
		return
	}
	var hs bytes.Buffer
	hs.WriteString("GET " + r.URL.RequestURI() + " HTTP/1.1\r\nHost: " + p.addr + "\r\n")
	h := r.Header.Clone()
	h.Set("Authorization", "Bearer "+upstreamKey)
	_ = h.Write(&hs)
	hs.WriteString("\r\n")
	if _, err := up.Write(hs.Bytes()); err != nil {
		_ = up.Close()
		http.Error(w, "upstream write failed", http.StatusBadGateway)
		return
	}
	ubr := bufio.NewReaderSize(up, 4096)
	resp, err := http.ReadResponse(ubr, r)
	if err != nil {
		_ = up.Close()
		http.Error(w, "bad upstream answer", http.StatusBadGateway)
		return
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer up.Close()
		defer resp.Body.Close()
		for k, vv := range resp.Header {
			w.Header()[k] = vv
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
		return
	}
	client, cbr, err := http.NewResponseController(w).Hijack()
	if err != nil {
		_ = up.Close()
		return
	}
	_ = client.SetDeadline(time.Time{})
	hs.Reset()
	hs.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = resp.Header.Write(&hs)
	hs.WriteString("\r\n")
	// Frames the upstream sent right behind its 101 are in ubr already.
	if n := ubr.Buffered(); n > 0 {
		b, _ := ubr.Peek(n)
		hs.Write(b)
	}
	if _, err := client.Write(hs.Bytes()); err != nil {
		_ = client.Close()
		_ = up.Close()
		return
	}
	// So are frames the client sent right behind its handshake in cbr.
	if n := cbr.Reader.Buffered(); n > 0 {
		b, _ := cbr.Reader.Peek(n)
		if _, err := up.Write(b); err != nil {
			_ = client.Close()
			_ = up.Close()
			return
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.copy(up, client)
	}()
	p.copy(client, up)
	<-done
}

// copy copies src to dst until either fails, then closes both, which ends
// the other direction too.
func (p *bareWS) copy(dst, src net.Conn) {
	buf := p.bufs.Get()
	_, _ = io.CopyBuffer(plainWriter{dst}, plainReader{src}, buf)
	p.bufs.Put(buf)
	_ = dst.Close()
	_ = src.Close()
}

// plainReader and plainWriter hide ReadFrom and WriteTo, so that
// io.CopyBuffer copies through its buffer rather than by splice.
type plainReader struct{ r io.Reader }

func (p plainReader) Read(b []byte) (int, error) { return p.r.Read(b) }

type plainWriter struct{ w io.Writer }

func (p plainWriter) Write(b []byte) (int, error) { return p.w.Write(b) }
