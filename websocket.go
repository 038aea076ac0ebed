package relay

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
)

// WebSocket sessions (issue #12). A WebSocket upgrade on a path a route
// serves is relayed as a session through the same pipeline as any request
// — route, authenticate, limit, inject the upstream credential — all
// before the 101 is sent, so that a refused session gets an ordinary HTTP
// error in the caller's shape. Once the upstream has answered 101, the
// client's connection is hijacked and frames pass byte for byte both ways
// (wssession.go).

// wantsWebSocket reports whether r asks for a WebSocket session: a GET
// over HTTP/1.1 with Connection naming upgrade and Upgrade naming
// websocket. HTTP/2's extended CONNECT (RFC 8441) is not supported.
func wantsWebSocket(r *http.Request) bool {
	return r.Method == http.MethodGet && r.ProtoMajor == 1 &&
		connectionListed(r.Header["Connection"], "upgrade") &&
		connectionListed(r.Header["Upgrade"], "websocket")
}

// session reports whether the exchange is a WebSocket session: the
// record's kind says so (serveSession sets it), and the request is an
// upgrade (a resolver's Target of that kind does not make one).
func (ex *exchange) session() bool {
	return ex.rec.Kind == KindWebSocket && wantsWebSocket(ex.r)
}

// serveSession runs a session's request path, one step a line, as serve
// does an ordinary request's (see serve for what the steps return).
// Sessions are not subject to WithAllowedMethods: the method list guards
// ordinary requests; a route turns sessions off with Route.NoWebSocket.
func (ex *exchange) serveSession() {
	ex.bodyRead = true                           // an upgrade carries no body
	ex.rec.Kind = KindWebSocket                  // also of a refusal (resolve sets the route's, authSession this back)
	ex.rec.Model = ex.r.URL.Query().Get("model") // OpenAI Realtime names it there (capped by capRecord)
	for _, step := range [...]func(*exchange) error{
		(*exchange).enter,          // 503 while draining
		(*exchange).resolve,        // the route, labelling even a 401
		(*exchange).authSession,    // 401: the usual headers, or the browser's key subprotocol
		(*exchange).routed,         // 404
		(*exchange).sessionAllowed, // 404 on a route with NoWebSocket, 501 without Hijack
		(*exchange).admitEarly,     // 429 for a caller still refused
		(*exchange).ownDeadlines,   // the host's read and write timeouts give way to the relay's
		(*exchange).admitSession,   // 429 (requests, concurrent sessions), 503 when the limiter fails closed
		(*exchange).roundTrip,      // the handshake, with failover: 502, 503, 504; a non-101 answer is relayed
		(*exchange).relaySession,   // hijack, the upstream's 101, then frames both ways
	} {
		if err := step(ex); err != nil {
			if e, ok := err.(*relayError); ok {
				ex.fail(e)
			}
			return
		}
	}
}

// keyProtocol is the subprotocol prefix browsers carry a key in, as
// OpenAI's Realtime API defines it: a browser's WebSocket cannot set
// headers, only subprotocols.
const keyProtocol = "openai-insecure-api-key."

// authSession authenticates a session: as any request, or, when the
// request carries no key header, with the key of an
// openai-insecure-api-key.<key> subprotocol, which the authenticator
// sees as "Authorization: Bearer <key>" on a copy of the request. The
// forwarded request is never changed; the subprotocol is removed from
// what goes upstream (sessionHeaders), and the key is never logged.
func (ex *exchange) authSession() error {
	r := ex.r
	if ClientKey(r) == "" {
		if key := protocolKey(r.Header["Sec-Websocket-Protocol"]); key != "" {
			view := r.Clone(r.Context())
			view.Header.Del("Sec-Websocket-Protocol")
			view.Header.Set("Authorization", "Bearer "+key)
			ex.r = view
			defer func() { ex.r = r }()
		}
	}
	ex.rec.Kind = KindWebSocket // from here on (resolve set the route's)
	return ex.authenticate()
}

// protocolKey returns the key of the first openai-insecure-api-key
// subprotocol offered, or "".
func protocolKey(vals []string) string {
	for _, v := range vals {
		for f := range strings.SplitSeq(v, ",") {
			if k, ok := strings.CutPrefix(strings.TrimSpace(f), keyProtocol); ok && k != "" {
				return k
			}
		}
	}
	return ""
}

// forwardedProtocols is the client's Sec-WebSocket-Protocol offer without
// any key subprotocol (its prefix in any case), nor any subprotocol that
// holds key, the client's key however it was sent, or "" when nothing is
// left.
func forwardedProtocols(vals []string, key string) string {
	var b strings.Builder
	for _, v := range vals {
		for f := range strings.SplitSeq(v, ",") {
			f = strings.TrimSpace(f)
			if f == "" || (len(f) >= len(keyProtocol) && strings.EqualFold(f[:len(keyProtocol)], keyProtocol)) ||
				(key != "" && strings.Contains(f, key)) {
				continue
			}
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(f)
		}
	}
	return b.String()
}

// sessionAllowed refuses a session on a route that turned sessions off,
// and one the host's ResponseWriter could not hand over (no Hijack: an
// HTTP/2 connection, or a framework's writer that hides it), before any
// upstream is asked.
func (ex *exchange) sessionAllowed() error {
	if ex.target.NoWebSocket {
		return &ex.rl.answers.noWebSocket
	}
	if !canHijack(ex.client.w) {
		ex.rl.log.Warn("relay: a WebSocket session cannot be served: the ResponseWriter does not support Hijack",
			"request_id", ex.rec.RequestID, "route", ex.route)
		return &ex.rl.answers.noHijack
	}
	return nil
}

// canHijack reports whether w, or a writer it wraps (Unwrap, as
// http.ResponseController follows), implements http.Hijacker.
func canHijack(w http.ResponseWriter) bool {
	for range 16 { // bounded: a wrapper chain is short
		if _, ok := w.(http.Hijacker); ok {
			return true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
	return false
}

// admitSession asks the limiter for the session as for one request
// (Cost.Requests 1, no tokens: they are settled as each response reports
// them), then takes the tenant's concurrency lease as a session
// (Limits.MaxSessions and MaxConcurrent: 429 before the upgrade), held
// until finish.
func (ex *exchange) admitSession() error {
	return ex.admitAs(true)
}

// sessionHeaders turns the headers of an upstream request into a
// WebSocket handshake's: the upgrade headers (hop-by-hop, so copyHeaders
// dropped them), the client's subprotocols without its key, no extension
// offer (permessage-deflate would hide frames from observation), and no
// Accept-Encoding (no body comes).
func sessionHeaders(h http.Header, r *http.Request) {
	client := r.Header
	h["Connection"] = []string{"Upgrade"}
	h["Upgrade"] = []string{"websocket"}
	delete(h, "Sec-Websocket-Extensions")
	delete(h, "Accept-Encoding")
	delete(h, "Sec-Websocket-Protocol")
	key := ClientKey(r)
	if key == "" {
		key = protocolKey(client["Sec-Websocket-Protocol"])
	}
	if p := forwardedProtocols(client["Sec-Websocket-Protocol"], key); p != "" {
		h["Sec-Websocket-Protocol"] = []string{p}
	}
}

// relaySession relays the upstream's answer to the handshake: any answer
// but a 101 as an ordinary response; a 101 by hijacking the client's
// connection, sending it the 101, and running the session until both
// sides are closed.
func (ex *exchange) relaySession() error {
	resp := ex.up.resp
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer func() { ex.rec.Kind = KindWebSocket }()
		return ex.relayResponse()
	}
	up, ok := resp.Body.(io.ReadWriteCloser)
	if !ok || !connectionListed(resp.Header["Upgrade"], "websocket") ||
		resp.Header.Get("Sec-Websocket-Accept") != acceptKey(ex.r.Header.Get("Sec-Websocket-Key")) ||
		len(resp.Header["Sec-Websocket-Extensions"]) > 0 {
		// An extension the client never offered (the relay removed the
		// offer) would make its frames unreadable to the client too; an
		// Accept that does not answer the key sent is no WebSocket server's
		// (the client would fail the handshake after a recorded 101).
		resp.Body.Close()
		ex.rl.log.Warn("relay: upstream answered the WebSocket handshake unacceptably", "request_id", ex.rec.RequestID,
			"route", ex.route, "upstream", ex.rec.Upstream, "extensions", len(resp.Header["Sec-Websocket-Extensions"]) > 0)
		ex.up.a.errType = ErrTypeUpstreamConnect
		return &ex.rl.answers.failures[beforeResponse][failedOther]
	}
	conn, brw, err := ex.client.rc.Hijack()
	if err != nil {
		up.Close()
		if errors.Is(err, http.ErrNotSupported) {
			return &ex.rl.answers.noHijack
		}
		return ex.clientGone()
	}
	_ = conn.SetDeadline(time.Time{}) // the host server's deadlines are for requests, not sessions
	hs := make([]byte, 0, 256)
	hs = append(hs, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	hs = append(hs, resp.Header.Get("Sec-Websocket-Accept")...)
	if p := resp.Header.Get("Sec-Websocket-Protocol"); p != "" {
		hs = append(append(append(hs, "\r\nSec-WebSocket-Protocol: "...), p...), "\r\n"...)
	} else {
		hs = append(hs, "\r\n"...)
	}
	hs = append(append(append(hs, "X-Request-Id: "...), ex.rec.RequestID...), "\r\n\r\n"...)
	ex.rec.Status = http.StatusSwitchingProtocols
	if _, err := conn.Write(hs); err != nil {
		conn.Close()
		up.Close()
		return ex.clientGone()
	}
	ex.rec.TTFB = ex.rl.clock.Now().Sub(ex.rec.Start)
	s := newSession(ex, conn, brw.Reader, up)
	s.run()
	return errEnded
}

// acceptKey is the Sec-WebSocket-Accept that answers a handshake's
// Sec-WebSocket-Key (RFC 6455, section 4.2.2).
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}
