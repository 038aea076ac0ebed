package bench

import (
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"

	"github.com/streamrelay/relay"
)

// The bare baseline is the fairest plain reverse proxy we can build from
// the standard library: it flushes when the relay does (every write of an
// SSE stream or of a body of unknown length, which httputil does by
// itself; a body of known length only at its end), reuses its copy
// buffers, swaps the client's credential for the upstream's, and reads the
// request body in full before forwarding it, as the relay must in order to
// inspect it and fail over. Whatever the relay costs beyond this is the
// price of its features.
//
// FlushInterval stays 0: -1 would make httputil flush every response at
// once, including the headers of each known-length JSON response from a
// time.AfterFunc goroutine and then the body separately, work the relay
// does not do (it writes such a response in one piece).

// copyBufSize is httputil's own default copy buffer, and the size the
// relay's reads grow to (it starts each response with 4 KiB).
const copyBufSize = 32 << 10

// maxBodyBytes matches the relay's default request size limit.
const maxBodyBytes = 10 << 20

// newBareProxy returns the baseline handler forwarding to target.
// With h2c it speaks cleartext HTTP/2 to the upstream.
func newBareProxy(target *url.URL, h2c bool) http.Handler {
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			pr.Out.Header.Set("Authorization", "Bearer "+upstreamKey)
		},
		Transport:  upstreamTransport(h2c),
		BufferPool: newBufferPool(copyBufSize, 4096),
		ErrorLog:   log.New(io.Discard, "", 0),
	}
	return bodyFirst{next: rp}
}

// upstreamTransport is the relay's default transport, relay.NewTransport,
// so that the two arms dial and pool upstream connections alike. With h2c
// it speaks only cleartext HTTP/2 (prior knowledge), as a transport does
// over TLS to providers that offer HTTP/2; the relay is then given the
// same transport with relay.WithTransport.
func upstreamTransport(h2c bool) *http.Transport {
	t := relay.NewTransport()
	if h2c {
		t.Protocols = new(http.Protocols)
		t.Protocols.SetUnencryptedHTTP2(true)
	}
	return t
}

// bufferPool is an httputil.BufferPool. A bounded channel is used rather
// than a sync.Pool because putting a slice (not a pointer) in a sync.Pool
// allocates, which would charge the baseline an allocation per request.
type bufferPool struct {
	size int
	free chan []byte
}

func newBufferPool(size, keep int) *bufferPool {
	return &bufferPool{size: size, free: make(chan []byte, keep)}
}

func (p *bufferPool) Get() []byte {
	select {
	case b := <-p.free:
		return b
	default:
		return make([]byte, p.size)
	}
}

func (p *bufferPool) Put(b []byte) {
	select {
	case p.free <- b:
	default: // the pool is full; let the GC have it
	}
}

// bodyFirst reads the request body in full, up to maxBodyBytes, before
// handing the request on with the body in memory.
type bodyFirst struct{ next http.Handler }

func (h bodyFirst) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength > maxBodyBytes {
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return
	}
	if r.Body != nil && r.Body != http.NoBody {
		body, err := readBody(r.Body, r.ContentLength)
		if err != nil {
			http.Error(w, "request body could not be read", http.StatusBadRequest)
			return
		}
		if len(body) > maxBodyBytes {
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
	}
	h.next.ServeHTTP(w, r)
}

// readBody reads up to maxBodyBytes+1 bytes into a buffer sized from the
// declared length, so that a body of known size takes one allocation.
func readBody(r io.Reader, declared int64) ([]byte, error) {
	size := declared
	if size < 0 {
		size = 512
	}
	buf := make([]byte, 0, size+1)
	lr := io.LimitReader(r, maxBodyBytes+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
