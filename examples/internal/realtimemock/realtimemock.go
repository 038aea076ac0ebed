// Package realtimemock is a mock of the OpenAI Realtime API's WebSocket
// endpoint, for the realtime examples and their tests. It is shaped like
// the real thing where the relay looks (session.created first, text deltas,
// response.done carrying usage) and deliberately simple elsewhere:
//
//   - it accepts a session only with "Authorization: Bearer <key>", the
//     credential the relay injects, and answers 401 before the upgrade
//     otherwise;
//   - it picks the "realtime" subprotocol when the client offers it;
//   - it echoes every text message it does not know, and every binary
//     message, unchanged;
//   - "response.create" gets response.created, one
//     response.output_text.delta ("echo: " and the last input_text it saw)
//     and a response.done with the usage in the Usage* constants;
//   - "session.update" gets session.updated.
//
// Every handshake it accepts or refuses is reported on Handshakes, and the
// close code each accepted session ended with on Closed, so tests can
// prove what reached the upstream (never the client's key) and that a
// client's close did.
package realtimemock

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/coder/websocket"
)

// The usage every response.done reports.
const (
	UsageInputTokens  = 132
	UsageOutputTokens = 121
	UsageTotalTokens  = UsageInputTokens + UsageOutputTokens
)

// Model is the model session.created names.
const Model = "gpt-realtime"

// readLimit bounds one message the mock reads; a 1 MiB binary message fits.
const readLimit = 2 << 20

// Handshake is what the mock saw of one upgrade request.
type Handshake struct {
	Path     string
	RawQuery string
	Header   http.Header
	Accepted bool // false: refused (wrong or missing credential)
}

// Contains reports whether s appears anywhere in the handshake: the path,
// the query or any header name or value. Tests use it to prove that a
// client's key never reached the upstream in any form.
func (h Handshake) Contains(s string) bool {
	if strings.Contains(h.Path, s) || strings.Contains(h.RawQuery, s) {
		return true
	}
	for name, vs := range h.Header {
		if strings.Contains(name, s) {
			return true
		}
		for _, v := range vs {
			if strings.Contains(v, s) {
				return true
			}
		}
	}
	return false
}

// Upstream is the mock; it is an http.Handler serving every path.
type Upstream struct {
	key string
	// Handshakes receives every handshake, accepted or refused. It is
	// buffered; when nobody reads it (the examples' -mock mode) reports
	// beyond its capacity are dropped, never blocking a session.
	Handshakes chan Handshake
	// Closed receives the close code each accepted session ended with, as
	// the mock saw it: the code of the client's close frame, or
	// websocket.StatusNoStatusRcvd (1005) / -1 when there was none.
	// Buffered and dropping like Handshakes.
	Closed chan websocket.StatusCode
	ids    atomic.Int64
}

// New returns a mock that accepts sessions carrying "Authorization:
// Bearer key".
func New(key string) *Upstream {
	return &Upstream{key: key, Handshakes: make(chan Handshake, 16), Closed: make(chan websocket.StatusCode, 16)}
}

// ServeHTTP implements http.Handler.
func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hs := Handshake{Path: r.URL.Path, RawQuery: r.URL.RawQuery, Header: r.Header.Clone()}
	if r.Header.Get("Authorization") != "Bearer "+u.key {
		report(u.Handshakes, hs)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = fmt.Fprint(w, `{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","code":"invalid_api_key"}}`)
		return
	}
	hs.Accepted = true
	report(u.Handshakes, hs)
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols: []string{"realtime"},
		// Browsers send their page's Origin and the relay passes it on;
		// the real API does not check it against its own host either.
		InsecureSkipVerify: true,
	})
	if err != nil {
		return // Accept has answered the client
	}
	c.SetReadLimit(readLimit)
	report(u.Closed, u.session(r.Context(), c))
}

// session runs one accepted session until either side closes it and
// returns the client's close code.
func (u *Upstream) session(ctx context.Context, c *websocket.Conn) websocket.StatusCode {
	defer func() { _ = c.CloseNow() }()
	id := u.ids.Add(1)
	if u.send(ctx, c, map[string]any{
		"type": "session.created", "event_id": fmt.Sprintf("event_%d_0", id),
		"session": map[string]any{"id": fmt.Sprintf("sess_mock_%d", id), "object": "realtime.session", "type": "realtime", "model": Model},
	}) != nil {
		return -1
	}
	lastInput := ""
	for n := 1; ; n++ {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			if code := websocket.CloseStatus(err); code != -1 {
				return code
			}
			return -1
		}
		if typ == websocket.MessageBinary {
			err = c.Write(ctx, typ, msg)
		} else {
			err = u.text(ctx, c, id, n, msg, &lastInput)
		}
		if err != nil {
			return websocket.CloseStatus(err)
		}
	}
}

// text answers one client event.
func (u *Upstream) text(ctx context.Context, c *websocket.Conn, id int64, n int, msg []byte, lastInput *string) error {
	var ev struct {
		Type string `json:"type"`
		Item struct {
			Content []struct {
				Type string `json:"type"`
				Text string `json:"text"`
			} `json:"content"`
		} `json:"item"`
	}
	_ = json.Unmarshal(msg, &ev) // not JSON: echoed below
	eid := func(i int) string { return fmt.Sprintf("event_%d_%d_%d", id, n, i) }
	switch ev.Type {
	case "response.create":
		resp := fmt.Sprintf("resp_%d_%d", id, n)
		for i, e := range []map[string]any{
			{"type": "response.created", "response": map[string]any{"id": resp, "object": "realtime.response", "status": "in_progress"}},
			{"type": "response.output_text.delta", "response_id": resp, "item_id": "item_" + resp, "output_index": 0, "content_index": 0, "delta": "echo: " + *lastInput},
			{"type": "response.done", "response": map[string]any{
				"id": resp, "object": "realtime.response", "status": "completed",
				"usage": map[string]any{
					"total_tokens": UsageTotalTokens, "input_tokens": UsageInputTokens, "output_tokens": UsageOutputTokens,
					"input_token_details":  map[string]any{"text_tokens": UsageInputTokens, "audio_tokens": 0, "cached_tokens": 0},
					"output_token_details": map[string]any{"text_tokens": UsageOutputTokens, "audio_tokens": 0},
				},
			}},
		} {
			e["event_id"] = eid(i)
			if err := u.send(ctx, c, e); err != nil {
				return err
			}
		}
		return nil
	case "session.update":
		return u.send(ctx, c, map[string]any{"type": "session.updated", "event_id": eid(0),
			"session": map[string]any{"id": fmt.Sprintf("sess_mock_%d", id), "object": "realtime.session", "type": "realtime", "model": Model}})
	}
	for _, part := range ev.Item.Content {
		if part.Type == "input_text" {
			*lastInput = part.Text
		}
	}
	return c.Write(ctx, websocket.MessageText, msg)
}

func (u *Upstream) send(ctx context.Context, c *websocket.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Write(ctx, websocket.MessageText, b)
}

// report sends v unless ch is full.
func report[T any](ch chan<- T, v T) {
	select {
	case ch <- v:
	default:
	}
}
