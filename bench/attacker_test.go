package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestRawExchangeEnds checks that each way a hostile request can end is
// told apart: answered (with its status), still open when the attack
// ends, closed by the server without a response, a failed dial, and an
// attack over before the connection was opened.
func TestRawExchangeEnds(t *testing.T) {
	body := paddedBody(chatStreamBody, slowLength)
	reading := make(chan struct{}, 1) // the blocking handler has begun reading
	mux := http.NewServeMux()
	mux.HandleFunc("/refuse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close") // answer without waiting for the body
		http.Error(w, `{"error":{"message":"no key"}}`, http.StatusUnauthorized)
	})
	mux.HandleFunc("/read", func(w http.ResponseWriter, r *http.Request) {
		reading <- struct{}{}
		_, _ = io.Copy(io.Discard, r.Body) // held as long as the body trickles
	})
	mux.HandleFunc("/hangup", func(w http.ResponseWriter, r *http.Request) {
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = c.Close()
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	head := func(path string) []byte {
		h := requestHead(addr, spec{mode: modeSSE, seed: 1, n: 3}, clientKey, len(body))
		return bytes.Replace(h, []byte("/v1/chat/completions"), []byte(path), 1)
	}
	slow := trickle(body, time.Millisecond, 10*time.Millisecond)

	t.Run("answered", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e := rawExchange(ctx, addr, head("/refuse"), slow)
		if e.how != endAnswered || e.status != http.StatusUnauthorized || !e.sent || e.after <= 0 {
			t.Fatalf("got %+v, want a 401 answer", e)
		}
		if !bytes.Contains(e.body, []byte("no key")) {
			t.Errorf("body %q", e.body)
		}
	})
	t.Run("open at end", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		go func() {
			select {
			case <-reading:
				cancel() // the attack ends while the server still waits for the body
			case <-ctx.Done():
			}
		}()
		e := rawExchange(ctx, addr, head("/read"), slow)
		if e.how != endOpen || !e.sent || e.status != 0 {
			t.Fatalf("got %+v, want open at end", e)
		}
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("the exchange returned before the attack ended: %v", ctx.Err())
		}
	})
	t.Run("closed", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e := rawExchange(ctx, addr, head("/hangup"), slow)
		if e.how != endClosed || ctx.Err() != nil {
			t.Fatalf("got %+v (ctx %v), want closed", e, ctx.Err())
		}
	})
	t.Run("dial failed", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dead := ln.Addr().String()
		_ = ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if e := rawExchange(ctx, dead, head("/read"), slow); e.how != endDial || e.sent {
			t.Fatalf("got %+v, want dial failed", e)
		}
	})
	t.Run("not attempted", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if e := rawExchange(ctx, addr, head("/read"), slow); e.how != endAborted || e.sent {
			t.Fatalf("got %+v, want not attempted", e)
		}
	})
}

// TestLargeBodyServed sends a large body to the mock upstream and checks
// the JSON completion it answers with, as the hostile scenario does for
// every 200.
func TestLargeBodyServed(t *testing.T) {
	u := newUpstream()
	t.Cleanup(u.close)
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	body := largeChatBody(1 << 20)
	s := spec{mode: modeJSON, seed: 7, n: jsonTokens}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e := rawExchange(ctx, addr, requestHead(addr, s, upstreamKey, len(body)), whole(body))
	if e.how != endAnswered || e.status != http.StatusOK || e.bodyErr != nil {
		t.Fatalf("got %+v", e)
	}
	ts, err := stamp(e.body)
	if err != nil {
		t.Fatal(err)
	}
	if want := appendCompletion(nil, s.seed, s.n, ts); !bytes.Equal(e.body, want) {
		t.Errorf("body %q, want %q", clip(e.body), clip(want))
	}
}

// TestAttackRequests checks the hostile requests' wire form: heads that
// net/http parses as sent, with or without a key, and bodies of the exact
// size that are valid JSON.
func TestAttackRequests(t *testing.T) {
	for _, size := range []int{4096, 9 << 20} {
		b := largeChatBody(size)
		if len(b) != size || !json.Valid(b) {
			t.Errorf("largeChatBody(%d): %d bytes, valid JSON %v", size, len(b), json.Valid(b))
		}
	}
	if p := paddedBody(chatStreamBody, slowLength); len(p) != slowLength || !json.Valid(p) {
		t.Errorf("paddedBody: %d bytes, valid JSON %v", len(p), json.Valid(p))
	}
	s := spec{mode: modeJSON, seed: 3, n: 40, delay: time.Second}
	for _, key := range []string{"", clientKey} {
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(requestHead("127.0.0.1:1", s, key, 123))))
		if err != nil {
			t.Fatalf("key %q: %v", key, err)
		}
		if r.Method != http.MethodPost || r.URL.Path != s.path() || r.URL.RawQuery != s.query() ||
			r.ContentLength != 123 || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("key %q: parsed as %s %s ContentLength %d", key, r.Method, r.URL, r.ContentLength)
		}
		want := ""
		if key != "" {
			want = "Bearer " + key
		}
		if got := r.Header.Get("Authorization"); got != want {
			t.Errorf("Authorization %q, want %q", got, want)
		}
	}
}

// TestHostileTallies checks how ends are counted and listed: statuses
// first, then the most frequent.
func TestHostileTallies(t *testing.T) {
	at := newHostileTallies(hostilePlan{slow: 5, large: 2})
	for _, e := range []rawEnd{
		{how: endOpen}, {how: endAnswered, status: 408, after: time.Second},
		{how: endOpen}, {how: endAnswered, status: 401, after: time.Millisecond},
		{how: endAnswered, status: 408, after: 2 * time.Second}, {how: endClosed},
	} {
		at.add(kindSlowKey, e)
	}
	k := at.result()
	r := hostileResult{kinds: k}
	if got, want := k[kindSlowKey].endsString(), "408 × 2, 401 × 1, open at end × 2, closed × 1"; got != want {
		t.Errorf("ends %q, want %q", got, want)
	}
	if k[kindSlowNoKey].clients != 3 || k[kindSlowKey].clients != 2 || k[kindLarge].clients != 2 {
		t.Errorf("clients %d, %d, %d; want 3, 2, 2", k[kindSlowNoKey].clients, k[kindSlowKey].clients, k[kindLarge].clients)
	}
	if k[kindSlowKey].requests != 6 || len(k[kindSlowKey].answer) != 3 || r.slowOpenAtEnd() != 2 {
		t.Errorf("requests %d, answers %d, open %d; want 6, 3, 2", k[kindSlowKey].requests, len(k[kindSlowKey].answer), r.slowOpenAtEnd())
	}
	if got := k[kindLarge].endsString(); got != "none" {
		t.Errorf("no ends listed as %q", got)
	}
}
