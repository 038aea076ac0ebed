package sdktest

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
	"go.uber.org/goleak"
)

// Credentials used throughout. The client key is what the SDKs present to
// the relay; the upstream secret is what the relay injects on the Anthropic
// route. Neither may reach the other side.
const (
	clientKey      = "sk-client"
	wrongKey       = "sk-wrong-key-never-valid"
	upstreamSecret = "sk-ant-upstream"
	tenant         = "t1"
)

// Model names the SDKs request. The replayed answers name their own; the
// record keeps the requested one.
const (
	openAIModel    = "gpt-4o-mini"
	anthropicModel = "claude-sonnet-4-5"
)

// waitTimeout bounds every wait on the relay; a healthy run takes
// milliseconds, so reaching it means something hangs.
const waitTimeout = 10 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// harness is a relay served on 127.0.0.1 in front of a replaying upstream,
// with the records it writes collected.
type harness struct {
	relay    *relay.Relay
	url      string // the relay's base URL, without a trailing slash
	upstream *replayUpstream
	sink     *recordSink
	served   chan struct{} // one value each time the relay handler returns
}

// newHarness starts a relay with the project's two standard routes (OpenAI
// on /v1, Anthropic on /v1/messages) pointing at up. Extra options are
// applied after the defaults. Everything is shut down when the test ends.
func newHarness(t *testing.T, up *replayUpstream, extra ...relay.Option) *harness {
	t.Helper()
	sink := &recordSink{}
	opts := []relay.Option{
		relay.WithRoutes(
			relay.Route{Name: "openai", Prefix: "/v1", Upstream: up.URL(), Kind: relay.KindAuto},
			relay.Route{Name: "anthropic", Prefix: "/v1/messages", Upstream: up.URL(),
				Provider: relay.ProviderAnthropic, AuthHeader: "x-api-key", AuthValue: upstreamSecret},
		),
		relay.WithAPIKeys(relay.APIKey{Key: clientKey, Tenant: tenant}),
		relay.WithRegisterer(prometheus.NewRegistry()),
		relay.WithRecorder(sink),
	}
	rl, err := relay.New(append(opts, extra...)...)
	if err != nil {
		t.Fatalf("relay.New: %v", err)
	}
	h := &harness{relay: rl, upstream: up, sink: sink, served: make(chan struct{}, 16)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { h.served <- struct{}{} }()
		rl.ServeHTTP(w, r)
	}))
	h.url = srv.URL
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := rl.Shutdown(ctx); err != nil {
			t.Errorf("relay Shutdown: %v", err)
		}
		srv.Close()
	})
	return h
}

// record waits until the relay has finished one more request, flushes its
// record queue and returns that request's record. An SDK may see its stream
// end (at "[DONE]", say) before the relay handler returns, so waiting on
// the handler rather than on the client is what makes this deterministic.
func (h *harness) record(t *testing.T) relay.Record {
	t.Helper()
	select {
	case <-h.served:
	case <-time.After(waitTimeout):
		t.Fatal("the relay did not finish the request")
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := h.relay.Recorder().Flush(ctx); err != nil {
		t.Fatalf("flushing records: %v", err)
	}
	recs := h.sink.take()
	if len(recs) != 1 {
		t.Fatalf("got %d records, want 1: %+v", len(recs), recs)
	}
	return recs[0]
}

// recordSink is a Recorder that keeps what it is given.
type recordSink struct {
	mu   sync.Mutex
	recs []relay.Record
}

// Record implements relay.Recorder.
func (s *recordSink) Record(_ context.Context, rec relay.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, rec)
	return nil
}

// take returns the records kept so far and forgets them.
func (s *recordSink) take() []relay.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	recs := s.recs
	s.recs = nil
	return recs
}

// source is where a test stream comes from.
type source int

const (
	// ownStreams are the project's made-up streams in testdata/.
	ownStreams source = iota
	// sharedFixtures are the real recordings beside the repository.
	sharedFixtures
)

func (s source) String() string {
	if s == sharedFixtures {
		return "fixtures"
	}
	return "testdata"
}

// readStream returns the stream file name from src. Shared fixtures are
// required in CI, where a silently skipped test would hide a broken
// checkout, and skipped elsewhere when absent.
func readStream(t *testing.T, src source, name string) []byte {
	t.Helper()
	dir := "testdata"
	if src == sharedFixtures {
		dir = fixturesDir(t)
	}
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatalf("reading stream: %v", err)
	}
	return b
}

// fixturesDir finds ../shared/fixtures beside the repository root, the
// directory holding go.work above the test's working directory.
func fixturesDir(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			testkit.Missing(t, "no go.work above the test's directory, so the repository root is unknown")
		}
		dir = parent
	}
	fixtures := filepath.Join(dir, "..", "shared", "fixtures")
	if _, err := os.Stat(fixtures); err != nil {
		testkit.Missing(t, "shared fixtures not available: %v", err)
	}
	return fixtures
}
