// Command realtime-server is a backend client of an OpenAI Realtime
// session through Stream Relay: it dials the relay's /v1/realtime with its
// relay key in the Authorization header, as any server-side client does,
// asks one question and prints the answer as it streams, then the usage.
// The relay injects the upstream key; this program never holds it.
//
//	cd examples
//	RELAY_CLIENT_KEY=my-browser-key go run ./realtime-browser -mock &   # a relay (and mock upstream) on :8080
//	RELAY_URL=ws://localhost:8080/v1/realtime?model=gpt-realtime \
//	  RELAY_CLIENT_KEY=my-browser-key go run ./realtime-server "Say hello"
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

func main() {
	url, key := os.Getenv("RELAY_URL"), os.Getenv("RELAY_CLIENT_KEY")
	if url == "" {
		url = "ws://localhost:8080/v1/realtime?model=gpt-realtime"
	}
	prompt := strings.Join(os.Args[1:], " ")
	if prompt == "" {
		prompt = "Say hello in five words."
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	u, err := converse(ctx, url, key, prompt, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "realtime-server:", err)
		os.Exit(1)
	}
	fmt.Printf("\n(%d input + %d output = %d tokens)\n", u.InputTokens, u.OutputTokens, u.TotalTokens)
}

// usage is response.done's usage.
type usage struct {
	TotalTokens  int `json:"total_tokens"`
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
}

// serverEvent is the part of an OpenAI Realtime server event read here.
type serverEvent struct {
	Type     string `json:"type"`
	Delta    string `json:"delta"`
	Response struct {
		Status string `json:"status"`
		Usage  usage  `json:"usage"`
	} `json:"response"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// converse opens a session at url with key, sends prompt as a user
// message, asks for a text response, writes its deltas to out as they
// arrive and returns the usage of response.done. It closes the session
// normally (1000) before it returns.
func converse(ctx context.Context, url, key, prompt string, out io.Writer) (usage, error) {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+key) // the relay key; the relay swaps it for the upstream's
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		// A refusal (bad key, rate limit, unknown route) is an ordinary
		// HTTP answer in OpenAI's error shape, before any upgrade.
		if resp != nil {
			return usage{}, fmt.Errorf("dial: %s: %w", resp.Status, err)
		}
		return usage{}, fmt.Errorf("dial: %w", err)
	}
	defer func() { _ = c.CloseNow() }()
	c.SetReadLimit(16 << 20) // audio deltas are large JSON messages

	send := func(v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		return c.Write(ctx, websocket.MessageText, b)
	}
	item := map[string]any{"type": "conversation.item.create", "item": map[string]any{
		"type": "message", "role": "user",
		"content": []any{map[string]any{"type": "input_text", "text": prompt}},
	}}
	if err := send(item); err != nil {
		return usage{}, err
	}
	if err := send(map[string]any{"type": "response.create",
		"response": map[string]any{"output_modalities": []string{"text"}}}); err != nil {
		return usage{}, err
	}
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			return usage{}, err
		}
		if typ != websocket.MessageText {
			continue
		}
		var ev serverEvent
		if err := json.Unmarshal(msg, &ev); err != nil {
			return usage{}, fmt.Errorf("event %.80q: %w", msg, err)
		}
		switch ev.Type {
		case "response.output_text.delta", "response.text.delta": // GA, beta
			if _, err := io.WriteString(out, ev.Delta); err != nil {
				return usage{}, err
			}
		case "error":
			if ev.Error != nil {
				return usage{}, errors.New("upstream error: " + ev.Error.Message)
			}
			return usage{}, errors.New("upstream error")
		case "response.done":
			return ev.Response.Usage, c.Close(websocket.StatusNormalClosure, "")
		}
	}
}
