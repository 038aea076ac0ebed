package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// testCA signs server certificates for 127.0.0.1.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "relay test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue writes a certificate for 127.0.0.1 named cn, and its key, as PEM
// files, with the given modification time.
func (ca *testCA) issue(t *testing.T, certFile, keyFile, cn string, serial int64, mtime time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, certFile, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})))
	for _, f := range []string{certFile, keyFile} {
		if err := os.Chtimes(f, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

// servedName is the common name of the certificate a new TLS connection
// to addr gets.
func servedName(t *testing.T, addr string, pool *x509.CertPool) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// instantDemo is a demo upstream that sends its events without pause.
func instantDemo(t *testing.T) string {
	t.Helper()
	d, err := startDemoUpstream(func(context.Context) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d.url
}

// TLS with a generated certificate: the official OpenAI SDK streams a chat
// completion over HTTP/2 through the relay; a renewed certificate is served
// to new connections without a restart; a broken renewal keeps the last
// good certificate.
func TestTLSAndHTTP2(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	t0 := time.Now().Add(-time.Hour)
	ca.issue(t, certFile, keyFile, "first", 2, t0)
	cfg := filepath.Join(dir, "relay.yaml")
	writeFile(t, cfg, fmt.Sprintf(`
server: {tls: {cert_file: "%s", key_file: "%s"}}
routes: [{name: chat, path: /v1/chat/completions, upstream: "%s", kind: sse, provider: openai}]
auth: {api_keys: [sdk-key]}
storage: {discard: true}
`, certFile, keyFile, instantDemo(t)))
	// The renewal checks are paced by a clock the test steps past
	// certCheckEvery: a renewal is seen only once the step is taken.
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	step := func() { clock.Add(int64(certCheckEvery)) }
	s := startServer(t, []string{"-config", cfg}, hooks{now: func() time.Time { return time.Unix(0, clock.Load()) }})
	addr := strings.TrimPrefix(s.base, "http://")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool}, ForceAttemptHTTP2: true}
	defer transport.CloseIdleConnections()
	var protos atomic.Int32 // ProtoMajor of every response the SDK got, summed
	var responses atomic.Int32
	client := openai.NewClient(
		option.WithBaseURL("https://"+addr+"/v1/"),
		option.WithAPIKey("sdk-key"),
		option.WithMaxRetries(0),
		option.WithHTTPClient(&http.Client{Transport: transport}),
		option.WithMiddleware(func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			resp, err := next(req)
			if err == nil {
				responses.Add(1)
				protos.Add(int32(resp.ProtoMajor))
			}
			return resp, err
		}),
	)
	stream := client.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:    "demo",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Hello over h2")},
	})
	var text strings.Builder
	chunks := 0
	for stream.Next() {
		chunks++
		if c := stream.Current(); len(c.Choices) > 0 {
			text.WriteString(c.Choices[0].Delta.Content)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("SDK stream: %v", err)
	}
	if !strings.Contains(text.String(), `You said: "Hello over h2".`) || chunks < 5 {
		t.Errorf("SDK stream: %d chunks, text %q", chunks, text.String())
	}
	if responses.Load() != 1 || protos.Load() != 2 {
		t.Errorf("the SDK got %d responses with ProtoMajor summing to %d, want one over HTTP/2", responses.Load(), protos.Load())
	}

	// Plain HTTP on the TLS port gets nowhere.
	if resp, err := http.Get(s.base + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP was served on the TLS listener")
		}
	}

	if got := servedName(t, addr, ca.pool); got != "first" {
		t.Fatalf("served %q, want first", got)
	}
	// A renewal: new files, a newer modification time.
	ca.issue(t, certFile, keyFile, "renewed", 3, t0.Add(time.Minute))
	if got := servedName(t, addr, ca.pool); got != "first" {
		t.Errorf("within %v of the last check the server presents %q, want first: handshakes must not stat the files each time", certCheckEvery, got)
	}
	step()
	if got := servedName(t, addr, ca.pool); got != "renewed" {
		t.Errorf("after renewal the server presents %q, want renewed", got)
	}
	// A broken renewal (a key that does not match): the last good one stays.
	good, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ca.issue(t, filepath.Join(dir, "other.crt"), filepath.Join(dir, "other.key"), "other", 4, t0)
	other, err := os.ReadFile(filepath.Join(dir, "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, keyFile, string(other))
	if err := os.Chtimes(keyFile, t0.Add(2*time.Minute), t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		step()
		if got := servedName(t, addr, ca.pool); got != "renewed" {
			t.Errorf("after a broken renewal the server presents %q, want renewed", got)
		}
	}
	if n := strings.Count(s.stderr.String(), "the changed certificate files do not load"); n != 1 {
		t.Errorf("the broken renewal was logged %d times, want once:\n%s", n, s.stderr)
	}
	if strings.Contains(s.stderr.String(), string(other)) || strings.Contains(s.stderr.String(), string(good)) {
		t.Error("a private key reached the logs")
	}
}

// server.h2c: HTTP/2 without TLS (prior knowledge) for a proxy in front;
// without it, such a client gets no answer.
func TestH2C(t *testing.T) {
	up := instantDemo(t)
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	defer h2c.CloseIdleConnections()
	client := &http.Client{Transport: h2c, Timeout: 10 * time.Second}
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("h2c=%v", on), func(t *testing.T) {
			cfg := filepath.Join(t.TempDir(), "relay.yaml")
			writeFile(t, cfg, fmt.Sprintf(`
server: {h2c: %v}
routes: [{name: chat, path: /v1/chat/completions, upstream: "%s", kind: sse}]
auth: {api_keys: [k]}
storage: {discard: true}
`, on, up))
			s := startServer(t, []string{"-config", cfg}, hooks{})
			req, _ := http.NewRequest(http.MethodPost, s.base+"/v1/chat/completions", strings.NewReader(chatBody))
			req.Header.Set("Authorization", "Bearer k")
			resp, err := client.Do(req)
			if !on {
				if err == nil {
					resp.Body.Close()
					t.Errorf("an h2c client was answered (%s) with h2c off", resp.Proto)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			events, err := readAll(resp)
			if err != nil || resp.ProtoMajor != 2 || len(events) == 0 || events[len(events)-1].data != "[DONE]" {
				t.Errorf("h2c stream: %s, %d events, %v", resp.Proto, len(events), err)
			}
			// HTTP/1.1 still works beside it.
			if code, _ := get(t, s.base+"/healthz"); code != 200 {
				t.Errorf("HTTP/1.1 /healthz = %d", code)
			}
			h2c.CloseIdleConnections() // else the server's Shutdown waits for it
			if err := s.shutdown(t); err != nil {
				t.Error(err)
			}
		})
	}
}

// -check loads the certificate pair; a reload reads it again and may move
// it, and a reload naming a pair that does not load is refused, the
// running certificate staying.
func TestTLSCheckAndReload(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	t0 := time.Now().Add(-time.Hour)
	ca.issue(t, filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key"), "a", 2, t0)
	ca.issue(t, filepath.Join(dir, "b.crt"), filepath.Join(dir, "b.key"), "b", 3, t0)
	cfg := filepath.Join(dir, "relay.yaml")
	write := func(name string) {
		writeFile(t, cfg, fmt.Sprintf(`
server:
  tls: {cert_file: "%s", key_file: "%s"}
routes: [{name: chat, path: /v1, upstream: "https://up.example", kind: sse}]
auth: {api_keys: [k]}
storage: {discard: true}
`, filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")))
	}
	check := func() error {
		var out strings.Builder
		return runWith(context.Background(), []string{"-config", cfg, "-check"}, &out, &out, hooks{})
	}
	write("missing")
	if err := check(); err == nil || !strings.Contains(err.Error(), "relay.yaml:3: server.tls: tls:") {
		t.Errorf("-check with missing files: %v", err)
	}
	write("a")
	if err := check(); err != nil {
		t.Errorf("-check: %v", err)
	}
	rl := newReloader()
	s := startServer(t, []string{"-config", cfg}, rl.hooks(hooks{}))
	addr := strings.TrimPrefix(s.base, "http://")
	if got := servedName(t, addr, ca.pool); got != "a" {
		t.Fatalf("served %q", got)
	}
	write("b")
	if err := rl.reload(t); err != nil {
		t.Fatal(err)
	}
	if got := servedName(t, addr, ca.pool); got != "b" {
		t.Errorf("after a reload moving the pair: %q, want b", got)
	}
	write("missing")
	if err := rl.reload(t); err == nil || !strings.Contains(err.Error(), "server.tls") {
		t.Errorf("reload to missing files: %v, want rejected", err)
	}
	if got := servedName(t, addr, ca.pool); got != "b" {
		t.Errorf("after a rejected reload: %q, want b", got)
	}
}

// A reload that the watch saw rejected because the certificate files were
// not there yet is retried once they are, though the configuration file
// has not changed since.
func TestTLSReloadRetriedByWatch(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	t0 := time.Now().Add(-time.Hour)
	ca.issue(t, filepath.Join(dir, "a.crt"), filepath.Join(dir, "a.key"), "a", 2, t0)
	cfg := filepath.Join(dir, "relay.yaml")
	write := func(name string) {
		writeFile(t, cfg, fmt.Sprintf(`
server:
  watch_interval: 20ms
  tls: {cert_file: "%s", key_file: "%s"}
routes: [{name: chat, path: /v1, upstream: "https://up.example", kind: sse}]
auth: {api_keys: [k]}
storage: {discard: true}
`, filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")))
	}
	write("a")
	rl := newReloader()
	s := startServer(t, []string{"-config", cfg}, rl.hooks(hooks{}))
	addr := strings.TrimPrefix(s.base, "http://")
	write("c")
	if err := rl.wait(t); err == nil || !strings.Contains(err.Error(), "server.tls") {
		t.Fatalf("reload to missing files: %v, want rejected", err)
	}
	ca.issue(t, filepath.Join(dir, "c.crt"), filepath.Join(dir, "c.key"), "c", 3, t0)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := rl.wait(t) // fails the test after 10s without a reload
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still rejected 10s after the files were written: %v", err)
		}
	}
	if got := servedName(t, addr, ca.pool); got != "c" {
		t.Errorf("after the files appeared: %q, want c", got)
	}
}
