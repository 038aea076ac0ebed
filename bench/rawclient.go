package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// rawClient is a minimal HTTP/1.1 keep-alive client for one address, used
// by the throughput scenario. The driver shares a core with the mock
// upstream, so the cheaper the load side, the more of the server's own
// capacity the scenario can reach; net/http's client costs several times
// more per request. It is not safe for concurrent use: each worker has
// its own.
type rawClient struct {
	addr string // host:port
	conn net.Conn
	br   *bufio.Reader
	req  []byte
	body []byte
	want []byte
}

func newRawClient(addr string) *rawClient { return &rawClient{addr: addr} }

func (c *rawClient) close() {
	if c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
}

// post sends a JSON request for s and returns the status and body. On
// any error the connection is closed, so the next call dials afresh.
func (c *rawClient) post(s spec, key, body string, timeout time.Duration) (int, []byte, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 10*time.Second)
		if err != nil {
			return 0, nil, err
		}
		c.conn = conn
		if c.br == nil {
			c.br = bufio.NewReaderSize(conn, 16<<10)
		} else {
			c.br.Reset(conn)
		}
	}
	r := c.req[:0]
	r = append(r, "POST "...)
	r = append(r, s.path()...)
	r = append(r, '?')
	r = append(r, s.query()...)
	r = append(r, " HTTP/1.1\r\nHost: "...)
	r = append(r, c.addr...)
	r = append(r, "\r\nAuthorization: Bearer "...)
	r = append(r, key...)
	r = append(r, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	r = strconv.AppendInt(r, int64(len(body)), 10)
	r = append(r, "\r\n\r\n"...)
	r = append(r, body...)
	c.req = r
	_ = c.conn.SetDeadline(time.Now().Add(timeout))
	if _, err := c.conn.Write(r); err != nil {
		c.close()
		return 0, nil, err
	}
	status, b, keep, err := c.readResponse()
	if err != nil || !keep {
		c.close()
	}
	return status, b, err
}

// readResponse reads one response with a Content-Length or chunked body.
func (c *rawClient) readResponse() (status int, body []byte, keep bool, err error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return 0, nil, false, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, nil, false, fmt.Errorf("malformed status line %q", line)
	}
	status, err = strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, nil, false, fmt.Errorf("malformed status line %q", line)
	}
	length, chunked, keep := -1, false, true
	for {
		line, err = c.br.ReadSlice('\n')
		if err != nil {
			return status, nil, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return status, nil, false, fmt.Errorf("malformed header line %q", line)
		}
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Content-Length")):
			if length, err = strconv.Atoi(string(v)); err != nil || length < 0 {
				return status, nil, false, fmt.Errorf("malformed Content-Length %q", v)
			}
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Connection")):
			keep = !bytes.EqualFold(v, []byte("close"))
		}
	}
	body = c.body[:0]
	switch {
	case chunked:
		body, err = c.readChunked(body)
	case length >= 0:
		if cap(body) < length {
			body = make([]byte, 0, length)
		}
		body = body[:length]
		_, err = io.ReadFull(c.br, body)
	default:
		return status, nil, false, fmt.Errorf("response has neither Content-Length nor chunked encoding")
	}
	c.body = body
	if err != nil {
		return status, nil, false, fmt.Errorf("reading the body: %w", err)
	}
	return status, body, keep, nil
}

func (c *rawClient) readChunked(body []byte) ([]byte, error) {
	for {
		line, err := c.br.ReadSlice('\n')
		if err != nil {
			return body, err
		}
		hex, _, _ := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(";"))
		n, err := strconv.ParseUint(string(hex), 16, 31)
		if err != nil {
			return body, fmt.Errorf("malformed chunk size %q", line)
		}
		if n == 0 {
			// Trailers, if any, end with a blank line.
			for {
				line, err = c.br.ReadSlice('\n')
				if err != nil {
					return body, err
				}
				if len(bytes.TrimRight(line, "\r\n")) == 0 {
					return body, nil
				}
			}
		}
		start := len(body)
		body = append(body, make([]byte, n)...)
		if _, err := io.ReadFull(c.br, body[start:]); err != nil {
			return body, err
		}
		if crlf, err := c.br.ReadSlice('\n'); err != nil || len(bytes.TrimRight(crlf, "\r\n")) != 0 {
			return body, fmt.Errorf("malformed chunk end")
		}
	}
}

// do sends one JSON request for s and checks the response.
func (c *rawClient) do(s spec, key string) error {
	status, got, err := c.post(s, key, chatBody, requestTimeout)
	if err != nil {
		return failf(failTransport, "%v", err)
	}
	if status != 200 {
		return failf(failStatus, "status %d: %s", status, clip(got))
	}
	t, err := stamp(got)
	if err != nil {
		return failf(failAltered, "JSON body: %v", err)
	}
	c.want = appendCompletion(c.want[:0], s.seed, s.n, t)
	if !bytes.Equal(got, c.want) {
		return failf(failAltered, "JSON body differs: got %q, want %q", clip(got), clip(c.want))
	}
	return nil
}
