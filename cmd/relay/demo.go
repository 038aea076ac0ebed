package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// demoKey is the client key of -demo. It is a demo key, printed at start,
// not a secret: the demo upstream is in-process and calls nothing.
const demoKey = "demo-key"

// demoPace is the demo upstream's delay between two events, slow enough
// for `curl -N` to show tokens arriving one by one.
const demoPace = 60 * time.Millisecond

// demoConfig is the configuration of -demo: 127.0.0.1:8080, three routes
// to the demo upstream at base, the demo key, and the defaults otherwise.
func demoConfig(base string) *fileConfig {
	c := defaultConfig()
	c.file = "(demo)"
	// Loopback only: the demo key is public. -addr :8080 exposes it (in a
	// container, say).
	c.Server.Host = "127.0.0.1"
	c.Routes = []routeConfig{
		{Name: "openai", Path: "/v1/chat/completions", Upstream: base, Kind: "sse", Provider: "openai"},
		{Name: "anthropic", Path: "/v1/messages", Upstream: base, Kind: "sse", Provider: "anthropic"},
		{Name: "audio", Path: "/v1/audio/speech", Upstream: base, Kind: "audio", Provider: "openai"},
	}
	c.Auth.APIKeys = []apiKeyConfig{{Key: demoKey, ID: "demo", Tenant: "demo"}}
	c.RateLimit = rateLimitConfig{Enabled: true, Default: 600, Burst: 60, FailOpen: true}
	c.Models = []string{"demo"}
	return &c
}

// demoUpstream is an in-process stand-in for LLM and TTS APIs: OpenAI
// chat completions, Anthropic messages and OpenAI-style speech, streamed
// event by event (or chunk by chunk) at the pace its step function sets.
type demoUpstream struct {
	srv  *http.Server
	url  string
	step func(ctx context.Context) error
	ids  atomic.Int64
}

// startDemoUpstream listens on a random loopback port. step is called
// between two events of a response (not before the first); it returns an
// error to end the response, as when the client has gone. Nil means a
// fixed pause of demoPace.
func startDemoUpstream(step func(ctx context.Context) error) (*demoUpstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo upstream: %w", err)
	}
	if step == nil {
		step = func(ctx context.Context) error { return pause(ctx, demoPace) }
	}
	d := &demoUpstream{url: "http://" + ln.Addr().String(), step: step}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", d.chat)
	mux.HandleFunc("POST /v1/messages", d.messages)
	mux.HandleFunc("POST /v1/audio/speech", d.speech)
	d.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = d.srv.Serve(ln) }()
	return d, nil
}

// Close stops the demo upstream, cutting any response still running.
func (d *demoUpstream) Close() error { return d.srv.Close() }

// pause waits for d or until ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// demoRequest is what the demo reads from a request body.
type demoRequest struct {
	Model    string `json:"model"`
	Stream   bool   `json:"stream"`
	Input    string `json:"input"` // speech
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
}

func readDemoRequest(w http.ResponseWriter, r *http.Request) (demoRequest, bool) {
	var req demoRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(w, `{"error":{"message":"the body is not JSON","type":"invalid_request_error"}}`, http.StatusBadRequest)
		return req, false
	}
	if req.Model == "" {
		req.Model = "demo"
	}
	return req, true
}

// lastUserText is the text of the last user message, whether its content
// is a string or a list of parts.
func (q demoRequest) lastUserText() string {
	for i := len(q.Messages) - 1; i >= 0; i-- {
		m := q.Messages[i]
		if m.Role != "user" {
			continue
		}
		var s string
		if json.Unmarshal(m.Content, &s) == nil {
			return s
		}
		var parts []struct {
			Text string `json:"text"`
		}
		if json.Unmarshal(m.Content, &parts) == nil {
			texts := make([]string, 0, len(parts))
			for _, p := range parts {
				texts = append(texts, p.Text)
			}
			return strings.Join(texts, " ")
		}
	}
	return ""
}

// promptTokens estimates a prompt's tokens as its words.
func (q demoRequest) promptTokens() int {
	n := 0
	for _, m := range q.Messages {
		n += len(strings.Fields(string(m.Content)))
	}
	return max(n, 1)
}

// reply is the demo's answer, split into tokens (words with their space).
func (q demoRequest) reply() []string {
	said := strings.Join(strings.Fields(q.lastUserText()), " ")
	if r := []rune(said); len(r) > 80 {
		said = string(r[:80]) + "…"
	}
	text := "Hello from the Stream Relay demo upstream!"
	if said != "" {
		text += " You said: \"" + said + "\"."
	}
	text += " Each word of this answer is its own event, paced so that you can watch it stream."
	words := strings.Fields(text)
	for i := range words[:len(words)-1] {
		words[i] += " "
	}
	return words
}

// sse writes one event and flushes it.
type sse struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func newSSE(w http.ResponseWriter) sse {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	s := sse{w: w, rc: http.NewResponseController(w)}
	_ = s.rc.Flush()
	return s
}

func (s sse) send(event string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	var out []byte
	if event != "" {
		out = append(out, "event: "+event+"\n"...)
	}
	out = append(append(append(out, "data: "...), b...), "\n\n"...)
	if _, err := s.w.Write(out); err != nil {
		return err
	}
	return s.rc.Flush()
}

func (s sse) done() error {
	if _, err := io.WriteString(s.w, "data: [DONE]\n\n"); err != nil {
		return err
	}
	return s.rc.Flush()
}

type obj = map[string]any

// chat answers an OpenAI chat completion.
func (d *demoUpstream) chat(w http.ResponseWriter, r *http.Request) {
	req, ok := readDemoRequest(w, r)
	if !ok {
		return
	}
	id := "chatcmpl-demo-" + strconv.FormatInt(d.ids.Add(1), 10)
	created := time.Now().Unix()
	tokens := req.reply()
	usage := obj{"prompt_tokens": req.promptTokens(), "completion_tokens": len(tokens),
		"total_tokens": req.promptTokens() + len(tokens)}
	if !req.Stream {
		writeJSON(w, obj{"id": id, "object": "chat.completion", "created": created, "model": req.Model,
			"choices": []obj{{"index": 0, "finish_reason": "stop",
				"message": obj{"role": "assistant", "content": strings.Join(tokens, "")}}},
			"usage": usage})
		return
	}
	chunk := func(delta obj, finish any) obj {
		return obj{"id": id, "object": "chat.completion.chunk", "created": created, "model": req.Model,
			"choices": []obj{{"index": 0, "delta": delta, "finish_reason": finish}}}
	}
	s := newSSE(w)
	events := []func() error{func() error { return s.send("", chunk(obj{"role": "assistant", "content": ""}, nil)) }}
	for _, t := range tokens {
		events = append(events, func() error { return s.send("", chunk(obj{"content": t}, nil)) })
	}
	events = append(events,
		func() error { return s.send("", chunk(obj{}, "stop")) },
		func() error {
			return s.send("", obj{"id": id, "object": "chat.completion.chunk", "created": created,
				"model": req.Model, "choices": []obj{}, "usage": usage})
		},
		s.done)
	d.play(r.Context(), events)
}

// messages answers an Anthropic Messages request.
func (d *demoUpstream) messages(w http.ResponseWriter, r *http.Request) {
	req, ok := readDemoRequest(w, r)
	if !ok {
		return
	}
	id := "msg_demo_" + strconv.FormatInt(d.ids.Add(1), 10)
	tokens := req.reply()
	if !req.Stream {
		writeJSON(w, obj{"id": id, "type": "message", "role": "assistant", "model": req.Model,
			"content":     []obj{{"type": "text", "text": strings.Join(tokens, "")}},
			"stop_reason": "end_turn", "stop_sequence": nil,
			"usage": obj{"input_tokens": req.promptTokens(), "output_tokens": len(tokens)}})
		return
	}
	s := newSSE(w)
	events := []func() error{
		func() error {
			return s.send("message_start", obj{"type": "message_start", "message": obj{
				"id": id, "type": "message", "role": "assistant", "model": req.Model, "content": []obj{},
				"stop_reason": nil, "stop_sequence": nil,
				"usage": obj{"input_tokens": req.promptTokens(), "output_tokens": 1}}})
		},
		func() error {
			return s.send("content_block_start", obj{"type": "content_block_start", "index": 0,
				"content_block": obj{"type": "text", "text": ""}})
		},
	}
	for _, t := range tokens {
		events = append(events, func() error {
			return s.send("content_block_delta", obj{"type": "content_block_delta", "index": 0,
				"delta": obj{"type": "text_delta", "text": t}})
		})
	}
	events = append(events,
		func() error {
			return s.send("content_block_stop", obj{"type": "content_block_stop", "index": 0})
		},
		func() error {
			return s.send("message_delta", obj{"type": "message_delta",
				"delta": obj{"stop_reason": "end_turn", "stop_sequence": nil},
				"usage": obj{"output_tokens": len(tokens)}})
		},
		func() error { return s.send("message_stop", obj{"type": "message_stop"}) })
	d.play(r.Context(), events)
}

// speech answers an OpenAI-style speech request with silent MP3 audio,
// one chunk per word of the input.
func (d *demoUpstream) speech(w http.ResponseWriter, r *http.Request) {
	req, ok := readDemoRequest(w, r)
	if !ok {
		return
	}
	words := min(max(len(strings.Fields(req.Input)), 1), 50)
	w.Header().Set("Content-Type", "audio/mpeg")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	chunk := silentMP3(4)
	events := make([]func() error, words)
	for i := range events {
		events[i] = func() error {
			if _, err := w.Write(chunk); err != nil {
				return err
			}
			return rc.Flush()
		}
	}
	d.play(r.Context(), events)
}

// play sends events in turn, calling step between two of them, and stops
// when one fails or the request ends.
func (d *demoUpstream) play(ctx context.Context, events []func() error) {
	for i, send := range events {
		if i > 0 {
			if err := d.step(ctx); err != nil {
				return
			}
		}
		if err := send(); err != nil {
			return
		}
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

// silentMP3 returns n frames of silent MPEG-1 Layer III audio (128 kbit/s,
// 44.1 kHz, mono): a valid header and all-zero side information, which
// decoders play as 26 ms of silence each.
func silentMP3(n int) []byte {
	const frameLen = 417 // 144 * 128000 / 44100, no padding
	b := make([]byte, n*frameLen)
	for i := range n {
		copy(b[i*frameLen:], []byte{0xFF, 0xFB, 0x90, 0xC0})
	}
	return b
}
