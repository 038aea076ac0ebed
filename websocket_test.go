package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamrelay/relay/internal/testkit"
	"github.com/streamrelay/relay/internal/wsframe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// wsEnv is a relay in front of a WebSocket upstream running script.
func wsEnv(t *testing.T, script func(p *wsPeerConn), route Route, opts ...Option) (*env, chan *http.Request) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leakOptions(ignore)...) })
	reqs := make(chan *http.Request, 8)
	if route.AuthHeader == "" {
		route.AuthHeader, route.AuthValue = "Authorization", "Bearer up-secret"
	}
	e := newEnv(t, wsUpstream(t, reqs, script), route, opts...)
	return e, reqs
}

// TestSessionPassesFramesByteForByte: every frame type passes both ways
// with its bytes unchanged (a 1 MiB binary message, a fragmented one
// with control frames between its fragments, ping and pong, a close
// with its code and reason), and the session is recorded.
func TestSessionPassesFramesByteForByte(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	client := &wsPeerConn{mask: true}
	server := &wsPeerConn{}
	in := bytes.Join([][]byte{
		client.frame(true, wsframe.OpText, []byte(`{"type":"session.update"}`)),
		client.frame(true, wsframe.OpBinary, big),
		client.frame(false, wsframe.OpText, []byte("frag")),
		client.frame(true, wsframe.OpPing, []byte("p1")),
		client.frame(false, wsframe.OpContinuation, []byte("ment")),
		client.frame(true, wsframe.OpPong, nil),
		client.frame(true, wsframe.OpContinuation, []byte("ed")),
	}, nil)
	out := bytes.Join([][]byte{
		server.frame(true, wsframe.OpText, []byte(`{"type":"session.created"}`)),
		server.frame(true, wsframe.OpBinary, big),
		server.frame(false, wsframe.OpBinary, []byte{1, 2}),
		server.frame(true, wsframe.OpPong, []byte("p1")),
		server.frame(true, wsframe.OpContinuation, []byte{3}),
		server.frame(true, wsframe.OpPing, nil),
	}, nil)
	closeIn := client.frame(true, wsframe.OpClose, wsframe.ClosePayload(nil, 1000, "bye"))
	closeOut := server.frame(true, wsframe.OpClose, wsframe.ClosePayload(nil, 1000, "bye too"))
	got := make(chan []byte, 2)
	e, reqs := wsEnv(t, func(p *wsPeerConn) {
		got <- p.readRaw(len(in))
		p.writeRaw(out)
		got <- p.readRaw(len(closeIn))
		p.writeRaw(closeOut)
		_, err := p.readFrame() // the relay closes the connection
		assert.Error(t, err)
	}, Route{Prefix: "/v1"})
	resp, c := wsDial(t, e.front.URL+"/v1/realtime?model=gpt-realtime", bearer(testKey))
	require.NotNil(t, c, "status %d", resp.StatusCode)
	assert.NotEmpty(t, resp.Header.Get("X-Request-Id"))
	r := testkit.Recv(t, reqs, "the upstream handshake")
	assert.Equal(t, "Bearer up-secret", r.Header.Get("Authorization"), "the route's credential")
	assert.Equal(t, "websocket", r.Header.Get("Upgrade"))
	assert.Equal(t, testWSKey, r.Header.Get("Sec-WebSocket-Key"))
	assert.Equal(t, "gpt-realtime", r.URL.Query().Get("model"))
	// Written in odd pieces: frames pass whatever the split.
	for rest := in; len(rest) > 0; {
		k := min(len(rest), 7777)
		c.writeRaw(rest[:k])
		rest = rest[k:]
	}
	assert.Equal(t, in, testkit.Recv(t, got, "the client's frames upstream"))
	assert.Equal(t, out, c.readRaw(len(out)))
	c.writeRaw(closeIn)
	assert.Equal(t, closeIn, testkit.Recv(t, got, "the client's close upstream"))
	f := c.mustFrame()
	assert.Equal(t, 1000, closeCode(t, f))
	assert.Equal(t, "bye too", string(f.payload[2:]))
	_, err := c.readFrame()
	assert.Error(t, err, "the relay closes the client's connection after the close handshake")
	e.handled()
	rec := e.lastRecord()
	assert.Equal(t, KindWebSocket, rec.Kind)
	assert.Equal(t, http.StatusSwitchingProtocols, rec.Status)
	assert.Equal(t, int64(len(in)+len(closeIn)), rec.BytesIn)
	assert.Equal(t, int64(len(out)+len(closeOut)), rec.BytesOut)
	assert.Equal(t, int64(8), rec.FramesIn)
	assert.Equal(t, int64(7), rec.FramesOut)
	assert.Equal(t, 1000, rec.CloseCode)
	assert.Equal(t, "client", rec.ClosedBy)
	assert.Equal(t, ErrTypeNone, rec.ErrorType)
	assert.Equal(t, "acme", rec.Tenant)
	m := e.relay.metrics
	assert.Equal(t, 1.0, testutil.ToFloat64(m.requests.WithLabelValues("test", "1xx")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.sessions.WithLabelValues("test", "client")))
	assert.Equal(t, 8.0, testutil.ToFloat64(m.frames.WithLabelValues("test", "in")))
	assert.Equal(t, 7.0, testutil.ToFloat64(m.frames.WithLabelValues("test", "out")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.closeCodes.WithLabelValues("test", "1000")))
	assert.Equal(t, 0.0, testutil.ToFloat64(m.active.WithLabelValues("test")), "relay_active_connections is back to 0")
}

// TestSessionRefusedBeforeUpgrade: a session the relay refuses gets an
// ordinary HTTP error in the caller's shape, and no upstream is asked.
func TestSessionRefusedBeforeUpgrade(t *testing.T) {
	for _, tc := range []struct {
		name   string
		route  Route
		hdr    http.Header
		path   string
		status int
		code   string
	}{
		{"no key", Route{Prefix: "/v1"}, nil, "/v1/realtime", 401, "invalid_api_key"},
		{"wrong key", Route{Prefix: "/v1"}, bearer("sk-wrong"), "/v1/realtime", 401, "invalid_api_key"},
		{"wrong subprotocol key", Route{Prefix: "/v1"},
			http.Header{"Sec-WebSocket-Protocol": {"realtime, openai-insecure-api-key.sk-wrong"}}, "/v1/realtime", 401, "invalid_api_key"},
		{"no route", Route{Prefix: "/v1"}, bearer(testKey), "/other", 404, "not_found"},
		{"route without sessions", Route{Prefix: "/v1", NoWebSocket: true}, bearer(testKey), "/v1/realtime", 404, "not_found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, reqs := wsEnv(t, func(*wsPeerConn) { t.Error("upstream reached") }, tc.route)
			resp, c := wsDial(t, e.front.URL+tc.path, tc.hdr)
			require.Nil(t, c)
			assert.Equal(t, tc.status, resp.StatusCode)
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			var body struct {
				Error struct{ Code string } `json:"error"`
			}
			require.NoError(t, json.Unmarshal(b, &body), "%s", b)
			assert.Equal(t, tc.code, body.Error.Code)
			e.handled()
			assert.Empty(t, reqs)
			rec := e.lastRecord()
			assert.Equal(t, tc.status, rec.Status)
			assert.NotContains(t, string(appendRecordJSON(nil, &rec)), "sk-wrong")
		})
	}
}

// TestSessionBrowserKeyAndHandshake: a browser's key subprotocol
// authenticates the session and never goes upstream (nor into the
// record); the route's credential is injected; the extension offer is
// removed; the upstream's chosen subprotocol reaches the client.
func TestSessionBrowserKeyAndHandshake(t *testing.T) {
	done := make(chan struct{})
	e, reqs := wsEnv(t, func(p *wsPeerConn) {
		p.sendClose(1000, "")
		<-done
	}, Route{Prefix: "/v1"})
	resp, c := wsDial(t, e.front.URL+"/v1/realtime", http.Header{
		"Sec-WebSocket-Protocol":   {"realtime, openai-insecure-api-key." + testKey, "openai-beta.realtime-v1"},
		"Sec-WebSocket-Extensions": {"permessage-deflate; client_max_window_bits"},
		"Cookie":                   {"session=secret"},
	})
	require.NotNil(t, c, "status %d", resp.StatusCode)
	assert.Equal(t, "realtime", resp.Header.Get("Sec-WebSocket-Protocol"))
	r := testkit.Recv(t, reqs, "the upstream handshake")
	assert.Equal(t, "realtime, openai-beta.realtime-v1", r.Header.Get("Sec-WebSocket-Protocol"))
	assert.Empty(t, r.Header.Values("Sec-WebSocket-Extensions"))
	assert.Equal(t, []string{"Bearer up-secret"}, r.Header.Values("Authorization"))
	assert.Empty(t, r.Header.Get("Cookie"))
	for k, vv := range r.Header {
		assert.NotContains(t, strings.Join(vv, ","), testKey, "header %s carries the client's key", k)
	}
	assert.Equal(t, 1000, closeCode(t, c.mustFrame()))
	c.sendClose(1000, "")
	close(done)
	e.handled()
	rec := e.lastRecord()
	assert.Equal(t, "acme", rec.Tenant)
	assert.Equal(t, "upstream", rec.ClosedBy)
	assert.NotContains(t, string(appendRecordJSON(nil, &rec)), testKey)
}

// TestSessionHandshakeAnswers: an upstream's answer other than a 101 is
// relayed as an ordinary response; a 101 with an extension is a 502; a
// 503 fails over to the next upstream before any 101.
func TestSessionHandshakeAnswers(t *testing.T) {
	t.Run("non-101 relayed", func(t *testing.T) {
		e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"error":{"message":"no realtime for you"}}`)
		}, Route{Prefix: "/v1"})
		resp, c := wsDial(t, e.front.URL+"/v1/realtime", bearer(testKey))
		require.Nil(t, c)
		assert.Equal(t, http.StatusForbidden, resp.StatusCode)
		b, _ := io.ReadAll(resp.Body)
		assert.Contains(t, string(b), "no realtime for you")
		e.handled()
		rec := e.lastRecord()
		assert.Equal(t, http.StatusForbidden, rec.Status)
		assert.Equal(t, KindWebSocket, rec.Kind)
		assert.Equal(t, ErrTypeUpstreamStatus, rec.ErrorType)
	})
	t.Run("extension is 502", func(t *testing.T) {
		e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
			c, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			_, _ = c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Accept: " + wsAccept(r.Header.Get("Sec-WebSocket-Key")) + "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"))
		}, Route{Prefix: "/v1"})
		resp, c := wsDial(t, e.front.URL+"/v1/realtime", bearer(testKey))
		require.Nil(t, c)
		assert.Equal(t, http.StatusBadGateway, resp.StatusCode)
		e.handled()
		assert.Equal(t, http.StatusBadGateway, e.lastRecord().Status)
	})
	t.Run("failover before the 101", func(t *testing.T) {
		ignore := goleak.IgnoreCurrent()
		t.Cleanup(func() { goleak.VerifyNone(t, leakOptions(ignore)...) })
		down := newEnv(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }, Route{})
		reqs := make(chan *http.Request, 2)
		up := newEnv(t, wsUpstream(t, reqs, func(p *wsPeerConn) {
			p.send(true, wsframe.OpText, []byte("hi"))
			p.sendClose(1000, "")
			_, _ = p.readFrame()
		}), Route{})
		e := newEnv(t, nil, Route{Prefix: "/v1", Upstreams: []Upstream{
			{Name: "down", URL: down.upstream.URL}, {Name: "up", URL: up.upstream.URL},
		}})
		resp, c := wsDial(t, e.front.URL+"/v1/realtime", bearer(testKey))
		require.NotNil(t, c, "status %d", resp.StatusCode)
		assert.Equal(t, "hi", string(c.mustFrame().payload))
		assert.Equal(t, 1000, closeCode(t, c.mustFrame()))
		c.sendClose(1000, "")
		e.handled()
		rec := e.lastRecord()
		assert.Equal(t, "up", rec.Upstream)
		assert.Equal(t, 2, rec.Attempts)
		assert.Equal(t, http.StatusSwitchingProtocols, rec.Status)
	})
}

// TestSessionEnds: how each end of a session reaches the other side and
// the record.
func TestSessionEnds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		upstream func(p *wsPeerConn, fromClient <-chan wsFrame)
		client   func(t *testing.T, c *wsPeerConn)
		code     int
		by       string
		wait     time.Duration // SessionTimeouts.Close; 0: the default
	}{
		{"upstream closes first", func(p *wsPeerConn, fromClient <-chan wsFrame) {
			p.sendClose(4000, "done")
			<-fromClient
		}, func(t *testing.T, c *wsPeerConn) {
			f := c.mustFrame()
			assert.Equal(t, 4000, closeCode(t, f))
			assert.Equal(t, "done", string(f.payload[2:]))
			c.sendClose(4000, "done")
		}, 4000, "upstream", 0},
		{"upstream vanishes", func(p *wsPeerConn, _ <-chan wsFrame) {
			p.send(true, wsframe.OpText, []byte("last"))
		}, func(t *testing.T, c *wsPeerConn) {
			assert.Equal(t, "last", string(c.mustFrame().payload))
			assert.Equal(t, 1014, closeCode(t, c.mustFrame()), "the relay's close for a vanished upstream")
		}, 1006, "upstream", 0},
		{"client vanishes", func(p *wsPeerConn, fromClient <-chan wsFrame) {
			f := <-fromClient
			assert.Equal(t, 1001, closeCode(t, f), "the relay's close for a vanished client")
			assert.True(t, f.masked, "frames to the upstream are masked")
		}, func(t *testing.T, c *wsPeerConn) {
			c.c.Close()
		}, 1006, "client", 0},
		{"close without an answer", func(p *wsPeerConn, fromClient <-chan wsFrame) {
			assert.Equal(t, 1000, closeCode(t, <-fromClient))
			<-fromClient // never answered: the relay closes the connection
		}, func(t *testing.T, c *wsPeerConn) {
			c.sendClose(1000, "")
			_, err := c.readFrame()
			assert.Error(t, err, "closed within the close wait")
			var ne net.Error
			assert.False(t, errors.As(err, &ne) && ne.Timeout(), "closed by the relay, not by the read deadline")
		}, 1000, "client", 100 * time.Millisecond},
		{"close without a code", func(p *wsPeerConn, fromClient <-chan wsFrame) {
			f := <-fromClient
			assert.Empty(t, f.payload)
			p.send(true, wsframe.OpClose, nil)
		}, func(t *testing.T, c *wsPeerConn) {
			c.send(true, wsframe.OpClose, nil)
			assert.Equal(t, wsframe.OpClose, c.mustFrame().op)
		}, 1005, "client", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := wsEnv(t, func(p *wsPeerConn) {
				frames := make(chan wsFrame, 8)
				go func() {
					defer close(frames)
					for range 8 {
						f, err := p.readFrame()
						if err != nil {
							return
						}
						frames <- f
					}
				}()
				tc.upstream(p, frames)
				p.c.Close()
				for range frames { // the reader ends with the connection
				}
			}, Route{Prefix: "/v1"}, WithSessionTimeouts(SessionTimeouts{Close: tc.wait}))
			resp, c := wsDial(t, e.front.URL+"/v1/realtime", bearer(testKey))
			require.NotNil(t, c, "status %d", resp.StatusCode)
			tc.client(t, c)
			e.handled()
			rec := e.lastRecord()
			assert.Equal(t, tc.code, rec.CloseCode)
			assert.Equal(t, tc.by, rec.ClosedBy)
		})
	}
}

// TestSessionShutdown: Shutdown closes live sessions with 1001 (going
// away) on both sides and records them.
func TestSessionShutdown(t *testing.T) {
	upClose := make(chan int, 1)
	e, _ := wsEnv(t, func(p *wsPeerConn) {
		p.send(true, wsframe.OpText, []byte("ready"))
		f, err := p.readFrame()
		if err == nil && f.op == wsframe.OpClose {
			upClose <- closeCode(t, f)
		}
	}, Route{Prefix: "/v1"})
	resp, c := wsDial(t, e.front.URL+"/v1/realtime", bearer(testKey))
	require.NotNil(t, c, "status %d", resp.StatusCode)
	assert.Equal(t, "ready", string(c.mustFrame().payload))
	assert.Equal(t, 1.0, testutil.ToFloat64(e.relay.metrics.active.WithLabelValues("test")), "relay_active_connections holds the session")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- e.relay.Shutdown(ctx) }()
	assert.Equal(t, 1001, closeCode(t, c.mustFrame()))
	assert.Equal(t, 1001, testkit.Recv(t, upClose, "the upstream's close"))
	testkit.Recv(t, shut, "Shutdown returns")
	e.handled()
	rec := e.lastRecord()
	assert.Equal(t, 1001, rec.CloseCode)
	assert.Equal(t, "relay", rec.ClosedBy)
	// New sessions are refused.
	resp, c = wsDial(t, e.front.URL+"/v1/realtime", bearer(testKey))
	assert.Nil(t, c)
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
}

// TestSessionDeadPeer: the relay pings a silent side (masked toward the
// upstream), and a side that stays silent past Idle ends the session;
// Max ends any session.
func TestSessionDeadPeer(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		pinged := make(chan wsFrame, 1)
		e, _ := wsEnv(t, func(p *wsPeerConn) {
			for range 20 { // the upstream answers pings; the client does not
				f, err := p.readFrame()
				if err != nil {
					return
				}
				if f.op == wsframe.OpPing {
					select {
					case pinged <- f:
					default:
					}
					p.send(true, wsframe.OpPong, f.payload)
				}
			}
		}, Route{Prefix: "/v1"}, WithSessionTimeouts(SessionTimeouts{Ping: 20 * time.Millisecond, Idle: 200 * time.Millisecond}))
		resp, c := wsDial(t, e.front.URL+"/v1/realtime", bearer(testKey))
		require.NotNil(t, c, "status %d", resp.StatusCode)
		f := testkit.Recv(t, pinged, "the relay's ping upstream")
		assert.True(t, f.masked)
		sawPing := false
		for range 20 {
			f := c.mustFrame()
			if f.op == wsframe.OpPing {
				sawPing = true
				assert.False(t, f.masked)
			}
			if f.op == wsframe.OpClose {
				assert.Equal(t, 1001, closeCode(t, f))
				break
			}
		}
		assert.True(t, sawPing, "the silent client was pinged")
		e.handled()
		rec := e.lastRecord()
		assert.Equal(t, "relay", rec.ClosedBy)
		assert.Equal(t, 1001, rec.CloseCode)
	})
	t.Run("max", func(t *testing.T) {
		e, _ := wsEnv(t, func(p *wsPeerConn) {
			for range 4 {
				if _, err := p.readFrame(); err != nil {
					return
				}
			}
		}, Route{Prefix: "/v1"}, WithSessionTimeouts(SessionTimeouts{Ping: -1, Idle: -1, Max: 50 * time.Millisecond}))
		resp, c := wsDial(t, e.front.URL+"/v1/realtime", bearer(testKey))
		require.NotNil(t, c, "status %d", resp.StatusCode)
		f := c.mustFrame()
		assert.Equal(t, 1001, closeCode(t, f))
		assert.Equal(t, "session time limit", string(f.payload[2:]))
		e.handled()
		assert.Equal(t, "relay", e.lastRecord().ClosedBy)
	})
}

// fakeRealtime is a sessionObserver that keeps what it is handed.
type fakeRealtime struct {
	mu       sync.Mutex
	upstream []obsMsg
	client   []obsMsg
}

type obsMsg struct {
	msg, tail      string
	text, complete bool
}

func (f *fakeRealtime) upstreamMsg(m obsMsg) sessionFact {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.upstream = append(f.upstream, m)
	switch {
	case strings.Contains(m.msg, "response.done"):
		return sessionFact{Tokens: 100}
	case strings.Contains(m.msg, `"error"`):
		return sessionFact{Error: true}
	case strings.Contains(m.msg, "delta"):
		return sessionFact{Content: true}
	}
	return sessionFact{}
}

func (f *fakeRealtime) upstreamFn(msg, tail []byte, text, complete bool) sessionFact {
	return f.upstreamMsg(obsMsg{string(msg), string(tail), text, complete})
}

type fakeObserver struct{ f *fakeRealtime }

func (o fakeObserver) upstream(msg, tail []byte, text, complete bool) sessionFact {
	return o.f.upstreamFn(msg, tail, text, complete)
}

func (o fakeObserver) client(msg, tail []byte, text, complete bool) {
	o.f.mu.Lock()
	defer o.f.mu.Unlock()
	o.f.client = append(o.f.client, obsMsg{string(msg), string(tail), text, complete})
}

func (o fakeObserver) observesClient() bool { return true }

func (o fakeObserver) result(rec *Record) {
	o.f.mu.Lock()
	defer o.f.mu.Unlock()
	for _, m := range o.f.client {
		rec.Characters += int64(len(m.msg))
	}
}

// settleSpy admits everything and reports each settlement.
type settleSpy struct{ settled chan int64 }

func (s settleSpy) Allow(context.Context, LimitRequest) (Decision, error) {
	return Decision{Allowed: true}, nil
}

func (s settleSpy) Settle(_ context.Context, req LimitRequest, used int64) error {
	if req.Cost.Tokens != 0 {
		return errors.New("a session reserves no tokens")
	}
	s.settled <- used
	return nil
}

// TestSessionObserved: the observer is handed each message whole and
// unmasked (fragments reassembled, control frames between them left
// out), a large one by its head and tail; its facts set the TTFT and the
// error type, and settle tokens as they are reported.
func TestSessionObserved(t *testing.T) {
	large := "{\"type\":\"big\",\"x\":\"" + strings.Repeat("a", 100<<10) + "\",\"end\":true}"
	spy := settleSpy{settled: make(chan int64, 4)}
	e, _ := wsEnv(t, func(p *wsPeerConn) {
		f, err := p.readFrame()
		if err != nil || f.op != wsframe.OpText {
			t.Errorf("upstream read %v %v", f.op, err)
			return
		}
		p.send(false, wsframe.OpText, []byte(`{"type":"response.`))
		p.send(true, wsframe.OpPing, []byte("x"))
		p.send(false, wsframe.OpContinuation, []byte(`audio.delta"`))
		p.send(true, wsframe.OpContinuation, []byte(`}`))
		p.send(true, wsframe.OpText, []byte(large))
		p.send(true, wsframe.OpText, []byte(`{"type":"response.done"}`))
		p.send(true, wsframe.OpText, []byte(`{"type":"error"}`))
		p.send(true, wsframe.OpBinary, []byte{0, 1, 2})
		p.sendClose(1000, "")
		_, _ = p.readFrame()
	}, Route{Prefix: "/v1"}, WithLimiter(spy))
	fake := &fakeRealtime{}
	e.relay.newSessionObserver = func(provider string) sessionObserver {
		assert.Equal(t, "openai", provider, "the route's provider")
		return fakeObserver{fake}
	}
	resp, c := wsDial(t, e.front.URL+"/v1/realtime", bearer(testKey))
	require.NotNil(t, c, "status %d", resp.StatusCode)
	c.send(true, wsframe.OpText, []byte("hello tts"))
	for range 8 {
		if c.mustFrame().op == wsframe.OpClose {
			break
		}
	}
	c.sendClose(1000, "")
	assert.Equal(t, int64(100), testkit.Recv(t, spy.settled, "the response's tokens settled"))
	e.handled()
	rec := e.lastRecord()
	assert.Positive(t, rec.TTFT)
	assert.Equal(t, ErrTypeUpstreamEvent, rec.ErrorType)
	assert.Equal(t, int64(9), rec.Characters)

	fake.mu.Lock()
	defer fake.mu.Unlock()
	require.Len(t, fake.upstream, 5)
	assert.Equal(t, obsMsg{`{"type":"response.audio.delta"}`, "", true, true}, fake.upstream[0])
	big := fake.upstream[1]
	assert.False(t, big.complete)
	assert.Equal(t, large[:maxObservedHead], big.msg)
	assert.True(t, strings.HasSuffix(large, big.tail), "the tail is the message's end")
	assert.GreaterOrEqual(t, len(big.tail), observedTail)
	assert.Equal(t, obsMsg{"\x00\x01\x02", "", false, true}, fake.upstream[4])
	assert.Equal(t, []obsMsg{{"hello tts", "", true, true}}, fake.client)
}

// TestSessionRealtimeUsage: a session of the recorded shape of OpenAI's
// Realtime API (GA events: two responses and a transcription) is
// metered through the provider's realtime observation: usage summed,
// tokens settled per response.done, the model the upstream reported, TTFT.
func TestSessionRealtimeUsage(t *testing.T) {
	b, err := os.ReadFile("internal/provider/testdata/realtime/openai_realtime_ga.session")
	require.NoError(t, err)
	var lines []string
	for l := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(l, "< ") || strings.HasPrefix(l, "> ") {
			lines = append(lines, l)
		}
	}
	spy := settleSpy{settled: make(chan int64, 8)}
	e, _ := wsEnv(t, func(p *wsPeerConn) {
		for _, l := range lines {
			if l[0] == '<' {
				p.send(true, wsframe.OpText, []byte(l[2:]))
				continue
			}
			f, err := p.readFrame()
			if err != nil || string(f.payload) != l[2:] {
				t.Errorf("upstream got %q (%v), want %q", f.payload, err, l[2:])
				return
			}
		}
		p.sendClose(1000, "")
		_, _ = p.readFrame()
	}, Route{Prefix: "/v1"}, WithLimiter(spy))
	resp, c := wsDial(t, e.front.URL+"/v1/realtime?model=gpt-realtime", bearer(testKey))
	require.NotNil(t, c, "status %d", resp.StatusCode)
	for _, l := range lines {
		if l[0] == '>' {
			c.send(true, wsframe.OpText, []byte(l[2:]))
			continue
		}
		assert.Equal(t, l[2:], string(c.mustFrame().payload))
	}
	assert.Equal(t, 1000, closeCode(t, c.mustFrame()))
	c.sendClose(1000, "")
	var settled []int64
	for range 3 {
		settled = append(settled, testkit.Recv(t, spy.settled, "a response's tokens settled"))
	}
	assert.ElementsMatch(t, []int64{26, 253, 420}, settled, "each settled on its own (in the background: any order)")
	e.handled()
	// The session's end settles no tokens again: Shutdown awaits the
	// background settlements, and whatever came after the three is 0.
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	defer cancel()
	require.NoError(t, e.relay.Shutdown(ctx))
	for len(spy.settled) > 0 {
		assert.Zero(t, <-spy.settled, "tokens settled twice")
	}
	rec := e.lastRecord()
	assert.Equal(t, Usage{InputTokens: 132 + 17 + 290, OutputTokens: 121 + 9 + 130, CachedInputTokens: 64 + 192,
		AudioInputTokens: 13 + 17 + 130, AudioOutputTokens: 91 + 105}, rec.Usage)
	assert.Equal(t, "gpt-realtime", rec.Model)
	assert.Equal(t, "gpt-realtime-2025-08-25", rec.ResponseModel)
	assert.Positive(t, rec.TTFT)
	assert.Equal(t, float64(121+9+130), testutil.ToFloat64(e.relay.metrics.tokens.WithLabelValues("test", e.relay.modelLabel("gpt-realtime"), "output")))
}

// noHijackWriter hides the server's Hijack, as some middlewares do.
type noHijackWriter struct{ w http.ResponseWriter }

func (n noHijackWriter) Header() http.Header         { return n.w.Header() }
func (n noHijackWriter) Write(b []byte) (int, error) { return n.w.Write(b) }
func (n noHijackWriter) WriteHeader(c int)           { n.w.WriteHeader(c) }

// TestSessionWithoutHijack: a ResponseWriter that cannot be hijacked
// gets a clear 501 in the caller's shape before any upstream is asked.
func TestSessionWithoutHijack(t *testing.T) {
	e, reqs := wsEnv(t, func(*wsPeerConn) { t.Error("upstream reached") }, Route{Prefix: "/v1"})
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.relay.ServeHTTP(noHijackWriter{w}, r)
	}))
	defer front.Close()
	resp, c := wsDial(t, front.URL+"/v1/realtime", bearer(testKey))
	require.Nil(t, c)
	assert.Equal(t, http.StatusNotImplemented, resp.StatusCode)
	b, _ := io.ReadAll(resp.Body)
	assert.Contains(t, string(b), "Hijack")
	assert.Empty(t, reqs)
}

// TestSessionProtocolError: a frame that breaks the protocol (reserved
// bits without an extension) ends the session with 1002 to both sides.
func TestSessionProtocolError(t *testing.T) {
	upClose := make(chan int, 1)
	e, _ := wsEnv(t, func(p *wsPeerConn) {
		f, err := p.readFrame()
		if err == nil && f.op == wsframe.OpClose {
			upClose <- closeCode(t, f)
		}
	}, Route{Prefix: "/v1"})
	resp, c := wsDial(t, e.front.URL+"/v1/realtime", bearer(testKey))
	require.NotNil(t, c, "status %d", resp.StatusCode)
	f := c.frame(true, wsframe.OpText, []byte("x"))
	f[0] |= 0x40 // RSV1: permessage-deflate, never negotiated
	c.writeRaw(f)
	assert.Equal(t, 1002, closeCode(t, c.mustFrame()))
	assert.Equal(t, 1002, testkit.Recv(t, upClose, "the upstream's close"))
	e.handled()
	rec := e.lastRecord()
	assert.Equal(t, 1002, rec.CloseCode)
	assert.Equal(t, "relay", rec.ClosedBy)
}

// TestSessionCap: a tenant at its concurrent-session cap gets a 429
// before the upgrade; the lease comes back when the session ends.
func TestSessionCap(t *testing.T) {
	release := make(chan struct{})
	e, _ := wsEnv(t, func(p *wsPeerConn) {
		<-release
		p.sendClose(1000, "")
		_, _ = p.readFrame()
	}, Route{Prefix: "/v1"}, WithRateLimit(Limits{MaxSessions: 1}))
	resp, c := wsDial(t, e.front.URL+"/v1/realtime", bearer(testKey))
	require.NotNil(t, c, "status %d", resp.StatusCode)
	resp, c2 := wsDial(t, e.front.URL+"/v1/realtime", bearer(testKey))
	require.Nil(t, c2)
	assert.Equal(t, http.StatusTooManyRequests, resp.StatusCode)
	e.handled()
	close(release)
	assert.Equal(t, 1000, closeCode(t, c.mustFrame()))
	c.sendClose(1000, "")
	e.handled()
	resp, c = wsDial(t, e.front.URL+"/v1/realtime", bearer(testKey))
	require.NotNil(t, c, "the lease came back: status %d", resp.StatusCode)
}

// TestSessionShutdownSilentPeers: Shutdown cuts a session whose sides
// never answer the relay's close within its own deadline, not the
// session's Close wait, and the session's record is written by the time
// it returns.
func TestSessionShutdownSilentPeers(t *testing.T) {
	e, _ := wsEnv(t, func(p *wsPeerConn) {
		p.send(true, wsframe.OpText, []byte("ready"))
		for range 100 { // read what comes, answer nothing, until the relay closes
			if _, err := p.readFrame(); err != nil {
				return
			}
		}
	}, Route{Prefix: "/v1"}, WithSessionTimeouts(SessionTimeouts{Close: time.Minute}))
	resp, c := wsDial(t, e.front.URL+"/v1/realtime", bearer(testKey))
	require.NotNil(t, c, "status %d", resp.StatusCode)
	assert.Equal(t, "ready", string(c.mustFrame().payload))
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- e.relay.Shutdown(ctx) }()
	assert.Equal(t, 1001, closeCode(t, c.mustFrame()), "the relay's close; the client does not answer it")
	testkit.Recv(t, shut, "Shutdown returns")
	assert.NoError(t, ctx.Err(), "Shutdown returned within its deadline")
	rec := e.lastRecord()
	assert.Equal(t, KindWebSocket, rec.Kind, "the session's record is written when Shutdown returns")
	assert.Equal(t, 1001, rec.CloseCode)
	assert.Equal(t, "relay", rec.ClosedBy)
}
