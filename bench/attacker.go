package bench

import (
	"bufio"
	"context"
	"net"
	"strconv"
	"strings"
	"time"
)

// The hostile-clients scenario's attackers speak raw HTTP/1.1 so that
// they can do what no well-behaved client does: declare a body and then
// trickle it, or keep writing a large body after the server has answered.
// Each request has its own connection, closed when the request ends.

// How a hostile request ended.
const (
	endAnswered = "answered"      // a response arrived (its status says which)
	endOpen     = "open at end"   // no response when the attack ended; the client closed the connection
	endClosed   = "closed"        // the server closed or reset the connection without a response
	endDial     = "dial failed"   // the connection could not be opened
	endAborted  = "not attempted" // the attack ended before the connection was opened
)

// rawEnd is how one raw request ended.
type rawEnd struct {
	how     string
	status  int           // when answered
	body    []byte        // the response body, when read in full
	bodyErr error         // reading the response's headers or body failed after its status line
	sent    bool          // the request head was written
	after   time.Duration // from the head written to the response read, when answered
}

// feeder writes a request's body to w. It returns when the body is
// written, when answered is closed (the response has arrived, or the
// connection failed), or when ctx ends; errors surface through the read
// side, so it need not report them.
type feeder func(ctx context.Context, w net.Conn, answered <-chan struct{})

// rawExchange opens a connection to addr, writes head, feeds the body
// while reading the response, and reports how the request ended. Ending
// ctx closes the connection, so it returns promptly whatever the server
// does.
func rawExchange(ctx context.Context, addr string, head []byte, feed feeder) rawEnd {
	if ctx.Err() != nil {
		return rawEnd{how: endAborted}
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := d.DialContext(dctx, "tcp", addr)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return rawEnd{how: endAborted}
		}
		return rawEnd{how: endDial, bodyErr: err}
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer func() {
		stop()
		_ = conn.Close()
	}()

	type answer struct {
		status int
		body   []byte
		err    error
		at     time.Time
	}
	answered := make(chan struct{})
	got := make(chan answer, 1)
	go func() {
		defer close(answered)
		rc := &rawClient{conn: conn, br: bufio.NewReaderSize(conn, 4096)}
		status, body, _, err := rc.readResponse()
		got <- answer{status, body, err, time.Now()}
	}()
	start := time.Now()
	sent := false
	if _, err := conn.Write(head); err == nil {
		sent = true
		feed(ctx, conn, answered)
	}
	// The read side ends on a response, on the server closing, or on ctx
	// closing the connection.
	a := <-got
	end := rawEnd{sent: sent, status: a.status}
	switch {
	case a.status > 0:
		end.how, end.after = endAnswered, a.at.Sub(start)
		if a.err != nil {
			end.bodyErr = a.err
		} else {
			end.body = a.body
		}
	case ctx.Err() != nil:
		end.how = endOpen
	default:
		end.how = endClosed
	}
	return end
}

// requestHead is the head of a POST for s with a Content-Length of n and,
// unless key is empty, a bearer key.
func requestHead(addr string, s spec, key string, n int) []byte {
	var b strings.Builder
	b.WriteString("POST " + s.path() + "?" + s.query() + " HTTP/1.1\r\nHost: " + addr + "\r\n")
	if key != "" {
		b.WriteString("Authorization: Bearer " + key + "\r\n")
	}
	b.WriteString("Content-Type: application/json\r\nContent-Length: " + strconv.Itoa(n) + "\r\n\r\n")
	return []byte(b.String())
}

// trickle sends body one byte at a time, the first after first and each
// next after tick, until it is all sent, the response arrives or ctx
// ends. The loop is bounded by the body's length.
func trickle(body []byte, first, tick time.Duration) feeder {
	return func(ctx context.Context, w net.Conn, answered <-chan struct{}) {
		t := time.NewTimer(first)
		defer t.Stop()
		for i := range body {
			select {
			case <-ctx.Done():
				return
			case <-answered:
				return
			case <-t.C:
			}
			if _, err := w.Write(body[i : i+1]); err != nil {
				return
			}
			t.Reset(tick)
		}
	}
}

// whole sends body at once; closing the connection (ctx ending, or the
// server giving up) interrupts it.
func whole(body []byte) feeder {
	return func(_ context.Context, w net.Conn, _ <-chan struct{}) {
		_, _ = w.Write(body)
	}
}

// largeChatBody is an OpenAI chat request of exactly size bytes (at least
// a few hundred): one user message of short words.
func largeChatBody(size int) []byte {
	head := `{"model":"` + modelName + `","max_tokens":16,"messages":[{"role":"system","content":"You are a benchmark."},` +
		`{"role":"user","content":"`
	const tail = `"}]}`
	b := make([]byte, 0, size)
	b = append(b, head...)
	fill := size - len(head) - len(tail)
	for i := 0; len(b) < len(head)+fill; i++ {
		w := byte('a' + i%26)
		if i%6 == 5 {
			w = ' '
		}
		b = append(b, w)
	}
	return append(b, tail...)
}

// paddedBody is body followed by spaces up to size bytes: still valid
// JSON, as a slow client's body would be if it ever arrived.
func paddedBody(body string, size int) []byte {
	b := make([]byte, max(size, len(body)))
	copy(b, body)
	for i := len(body); i < len(b); i++ {
		b[i] = ' '
	}
	return b
}
