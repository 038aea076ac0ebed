package relay

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMethodPolicy(t *testing.T) {
	var hits atomic.Int32
	up := func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, `{}`)
	}
	oai := newEnv(t, up, Route{Prefix: "/v1"})
	ant := newEnv(t, up, Route{Prefix: "/v1", Provider: ProviderAnthropic})

	tests := []struct {
		method string
		key    bool
	}{
		{"TRACE", true},
		{"PROPFIND", true},
		{"OPTIONS", true},
		{"BREW", false}, // refused before the key is even looked at
		{"get", true},   // methods are case-sensitive
	}
	for _, tt := range tests {
		for _, e := range []*env{oai, ant} {
			req := e.request(tt.method, "/v1/chat/completions", "")
			if !tt.key {
				req.Header.Del("Authorization")
			}
			resp, body := e.do(req)
			assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, tt.method)
			assert.Equal(t, "GET, HEAD, POST, PUT, PATCH, DELETE", resp.Header.Get("Allow"))
			var m map[string]any
			require.NoError(t, json.Unmarshal(body, &m), string(body))
			if e == ant {
				assert.Equal(t, "invalid_request_error", m["error"].(map[string]any)["type"])
				assert.Equal(t, "error", m["type"])
			} else {
				assert.Equal(t, "method_not_allowed", m["error"].(map[string]any)["code"])
			}
			rec := e.lastRecord()
			assert.Equal(t, ErrTypeMethodNotAllowed, rec.ErrorType)
			assert.Equal(t, 405, rec.Status)
			assert.Empty(t, rec.Tenant, "the key was not looked at")
		}
	}
	assert.Equal(t, float64(len(tests)), testutil.ToFloat64(oai.relay.metrics.errors.WithLabelValues("test", "method_not_allowed")))

	// CONNECT, sent raw: net/http's client would treat it as a proxy tunnel.
	conn, err := net.Dial("tcp", oai.front.Listener.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(conn, "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\nAuthorization: Bearer "+testKey+"\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)

	assert.Zero(t, hits.Load(), "nothing reached the upstream")

	// Allowed methods still pass.
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} {
		resp, _ := oai.do(oai.request(m, "/v1/files", ""))
		assert.Equal(t, 200, resp.StatusCode, m)
	}
	assert.Equal(t, int32(6), hits.Load())
}

func TestWithAllowedMethods(t *testing.T) {
	var got atomic.Value
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) { got.Store(r.Method) }, Route{Prefix: "/v1"},
		WithAllowedMethods("POST", "OPTIONS"))
	resp, _ := e.do(e.request("OPTIONS", "/v1/x", ""))
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "OPTIONS", got.Load())
	resp, _ = e.do(e.request("GET", "/v1/x", ""))
	assert.Equal(t, 405, resp.StatusCode)
	assert.Equal(t, "POST, OPTIONS", resp.Header.Get("Allow"))

	for _, bad := range [][]string{{"TRACE"}, {"POST", "CONNECT"}, {}, {""}, {"GE T"}, {strings.Repeat("X", 33)}} {
		_, err := New(WithAllowedMethods(bad...), WithAPIKeys(APIKey{Key: "k"}), WithRoutes(Route{Name: "r", Upstream: "http://x"}))
		assert.Error(t, err, "%q", bad)
	}
}

func TestAccountHeadersAreDropped(t *testing.T) {
	var mu sync.Mutex
	var got http.Header
	up := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.Header.Clone()
		mu.Unlock()
		_, _ = io.WriteString(w, `{}`)
	}
	account := map[string]string{
		"OpenAI-Organization":      "org-other",
		"OpenAI-Project":           "proj-other",
		"X-Goog-User-Project":      "other-gcp-project",
		"X-HF-Bill-To":             "other-org",
		"Azureml-Model-Deployment": "expensive-deployment",
	}
	send := func(e *env) http.Header {
		req := e.request("POST", "/v1/chat/completions", `{}`)
		for k, v := range account {
			req.Header.Set(k, v)
		}
		req.Header.Set("Anthropic-Beta", "feature-x") // a feature flag, not an account
		req.Header.Set("OpenAI-Beta", "assistants=v2")
		resp, _ := e.do(req)
		require.Equal(t, 200, resp.StatusCode)
		mu.Lock()
		defer mu.Unlock()
		return got
	}

	t.Run("dropped by default", func(t *testing.T) {
		h := send(newEnv(t, up, Route{Prefix: "/v1"}))
		for k := range account {
			assert.Empty(t, h.Get(k), k)
		}
		assert.Equal(t, "feature-x", h.Get("Anthropic-Beta"))
		assert.Equal(t, "assistants=v2", h.Get("OpenAI-Beta"))
	})
	t.Run("passed when the route allows", func(t *testing.T) {
		h := send(newEnv(t, up, Route{Prefix: "/v1", PassHeaders: []string{"openai-project", "X-Goog-User-Project"}}))
		assert.Equal(t, "proj-other", h.Get("OpenAI-Project"))
		assert.Equal(t, "other-gcp-project", h.Get("X-Goog-User-Project"))
		assert.Empty(t, h.Get("OpenAI-Organization"))
		assert.Empty(t, h.Get("X-HF-Bill-To"))
	})
	t.Run("pinned by the route", func(t *testing.T) {
		h := send(newEnv(t, up, Route{Prefix: "/v1", Headers: map[string]string{"OpenAI-Organization": "org-mine"},
			PassHeaders: []string{"OpenAI-Organization"}}))
		assert.Equal(t, []string{"org-mine"}, h.Values("OpenAI-Organization"))
	})
	t.Run("a custom resolver's target drops them", func(t *testing.T) {
		var e *env
		e = newEnv(t, up, Route{Prefix: "/v1"}, withoutRoutes(), WithResolver(UpstreamResolverFunc(func(r *http.Request) (*Target, error) {
			u, err := url.Parse(e.upstream.URL + r.URL.Path)
			return &Target{Route: "custom", Backends: []Backend{{Name: "up", URL: u}}}, err
		})))
		h := send(e)
		for k := range account {
			assert.Empty(t, h.Get(k), k)
		}
	})

	for _, bad := range []string{"Authorization", "X-Api-Key", "X-Custom", "Connection"} {
		_, err := NewRouteTable([]Route{{Name: "r", Upstream: "http://x", PassHeaders: []string{bad}}}, nil)
		assert.ErrorContains(t, err, "not an account-selecting header", bad)
	}
}

// rawUpstream answers every request on a raw socket with head (status line
// and headers, CRLF-terminated, without the blank line) and body, then
// closes the connection.
func rawUpstream(t *testing.T, head, body string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				_, _ = io.WriteString(c, head+"Content-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// TestConnectionCloseDoesNotLeakHopHeaders: a header an upstream names in
// a Connection header is hop-by-hop and must not reach the client, also
// when the Connection header says close, which Go's transport removes.
func TestConnectionCloseDoesNotLeakHopHeaders(t *testing.T) {
	const head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Secret: s\r\n" +
		"X-Ratelimit-Remaining-Requests: 7\r\nX-Request-Id: up-1\r\nX-Other: o\r\n" +
		"X-Character-Count: 42\r\nHistory-Item-Id: h-1\r\n" // ElevenLabs TTS metadata

	t.Run("go's transport hides the Connection header", func(t *testing.T) {
		// The premise of copyResponseHeaders: if this starts failing, Go
		// keeps the header and the allowlist can go.
		url := rawUpstream(t, head+"Connection: X-Secret, close\r\n", "{}")
		req, _ := http.NewRequest("GET", url, nil)
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Empty(t, resp.Header.Values("Connection"))
		assert.Equal(t, "s", resp.Header.Get("X-Secret"))
		assert.True(t, resp.Close)
	})

	tests := []struct {
		name      string
		conn      string
		wantOther string // X-Other: kept when the Connection list is visible
	}{
		{"close and a name", "Connection: X-Secret, close\r\n", ""},
		{"close first", "Connection: close, X-Secret\r\n", ""},
		{"two headers", "Connection: close\r\nConnection: X-Secret\r\n", ""},
		{"keep-alive and a name", "Connection: X-Secret\r\n", "o"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := rawUpstream(t, head+tt.conn, "{}")
			unused := func(http.ResponseWriter, *http.Request) { t.Error("the raw upstream serves this route") }
			e := newEnv(t, unused, Route{Prefix: "/v1", Upstream: url})
			resp, body := e.do(e.request("POST", "/v1/chat/completions", `{}`))
			assert.Equal(t, 200, resp.StatusCode)
			assert.Equal(t, "{}", string(body))
			assert.Empty(t, resp.Header.Values("X-Secret"), "a hop-by-hop header leaked")
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			assert.Equal(t, "7", resp.Header.Get("X-Ratelimit-Remaining-Requests"))
			assert.Equal(t, "up-1", resp.Header.Get("X-Upstream-Request-Id"))
			assert.Equal(t, tt.wantOther, resp.Header.Get("X-Other"))
			assert.Equal(t, "42", resp.Header.Get("X-Character-Count"), "a TTS provider's metadata passes")
			assert.Equal(t, "h-1", resp.Header.Get("History-Item-Id"))
		})
	}
}

// TestMethodOverrideHeadersAreDropped: a method-override header would let
// a client have an upstream treat an allowed POST as a method
// WithAllowedMethods refuses.
func TestMethodOverrideHeadersAreDropped(t *testing.T) {
	var mu sync.Mutex
	var got http.Header
	var method string
	e := newEnv(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got, method = r.Header.Clone(), r.Method
		mu.Unlock()
		_, _ = io.WriteString(w, `{}`)
	}, Route{Prefix: "/v1"}, WithAllowedMethods("POST"))
	req := e.request("POST", "/v1/files/file-1", `{}`)
	for _, k := range []string{"X-HTTP-Method-Override", "X-Method-Override", "X-HTTP-Method"} {
		req.Header.Set(k, "DELETE")
	}
	req.Header.Set("X-Custom", "kept")
	resp, _ := e.do(req)
	require.Equal(t, 200, resp.StatusCode)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, "POST", method)
	for _, k := range []string{"X-HTTP-Method-Override", "X-Method-Override", "X-HTTP-Method"} {
		assert.Empty(t, got.Values(k), k)
	}
	assert.Equal(t, "kept", got.Get("X-Custom"))
}

func TestDropAccountParams(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"alt=sse", "alt=sse"},
		{"alt=sse&key=1%202", "alt=sse&key=1%202"}, // escapes elsewhere, nothing to drop
		{"$userProject=other", ""},
		{"userProject=other&alt=sse", "alt=sse"},
		{"alt=sse&%24userProject=other&x=1", "alt=sse&x=1"},
		{"alt=sse&user%50roject=other", "alt=sse"},
		{"a=1&$userProject&b=2", "a=1&b=2"}, // without a value
		{"userproject=x", "userproject=x"},  // names are case-sensitive
		{"myuserProject=x&x=userProject", "myuserProject=x&x=userProject"},
		{"%zz=1&userProject=2", "%zz=1"}, // a bad escape is kept as it is
	}
	for _, tt := range tests {
		assert.Equal(t, tt.want, dropAccountParams(tt.in), tt.in)
	}
	q := "alt=sse&api-version=2024-10-21"
	assert.Zero(t, testing.AllocsPerRun(100, func() { _ = dropAccountParams(q) }), "the common case allocates nothing")
}

// TestAccountQueryParamsAreDropped: Google's quota project given as a
// query parameter is the header's twin, and follows the route's
// PassHeaders entry for X-Goog-User-Project.
func TestAccountQueryParamsAreDropped(t *testing.T) {
	var mu sync.Mutex
	var got string
	up := func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = r.URL.RawQuery
		mu.Unlock()
		_, _ = io.WriteString(w, `{}`)
	}
	send := func(e *env) string {
		resp, _ := e.do(e.request("POST", "/v1/models/gemini:streamGenerateContent?alt=sse&%24userProject=other&userProject=other2", `{}`))
		require.Equal(t, 200, resp.StatusCode)
		mu.Lock()
		defer mu.Unlock()
		return got
	}
	assert.Equal(t, "alt=sse", send(newEnv(t, up, Route{Prefix: "/v1"})))
	assert.Equal(t, "alt=sse&%24userProject=other&userProject=other2",
		send(newEnv(t, up, Route{Prefix: "/v1", PassHeaders: []string{"x-goog-user-project"}})))

	// A project the operator pins in the upstream URL stays.
	e := newEnv(t, up, Route{Prefix: "/v1"})
	pinned := newEnv(t, up, Route{Prefix: "/v1", Upstream: e.upstream.URL + "?userProject=mine"})
	assert.Equal(t, "userProject=mine&alt=sse", send(pinned))
}

// TestControlCharacterRule: one rule for header values, a tab allowed in
// operator-written values but not in credentials.
func TestControlCharacterRule(t *testing.T) {
	tests := []struct {
		v              string
		header, secret bool
	}{
		{"plain", true, true},
		{"a\tb", true, false},
		{"a\nb", false, false},
		{"a\x00b", false, false},
		{"a\x7fb", false, false},
		{"naïve", true, true},
	}
	for _, tt := range tests {
		assert.Equal(t, tt.header, validHeaderValue(tt.v), "%q", tt.v)
		assert.Equal(t, tt.secret, checkSecret(tt.v) == nil, "%q", tt.v)
	}
	_, err := NewRouteTable([]Route{{Name: "r", Upstream: "http://x", Headers: map[string]string{"X-Note": "a\tb"}}}, nil)
	assert.NoError(t, err, "a tab inside an operator's header value is legal")
}
