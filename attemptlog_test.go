package relay

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAttemptLog: Record.AttemptLog lists every attempt of a request that
// made more than one, in order, with its upstream, status and error type;
// one attempt leaves it nil.
func TestAttemptLog(t *testing.T) {
	unavailable := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"error":{"message":"busy"}}`)
	}
	ok := func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"x","choices":[]}`)
	}

	t.Run("one attempt: nil", func(t *testing.T) {
		e := newEnv(t, ok, Route{Prefix: "/v1"})
		resp, _ := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m"}`))
		require.Equal(t, 200, resp.StatusCode)
		rec := e.lastRecord()
		assert.Equal(t, 1, rec.Attempts)
		assert.Nil(t, rec.AttemptLog)
		assert.False(t, rec.Truncated)
	})

	t.Run("503, then 200 from the other upstream", func(t *testing.T) {
		e, n := newHoldEnv(t, Route{}, unavailable, ok)
		resp, _ := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m"}`))
		require.Equal(t, 200, resp.StatusCode)
		require.Equal(t, int32(2), n.Load())
		rec := e.lastRecord()
		first := map[string]string{"b1": "b2", "b2": "b1"}[rec.Upstream]
		require.NotEmpty(t, first, rec.Upstream)
		assert.Equal(t, 2, rec.Attempts)
		assert.Equal(t, []AttemptInfo{
			{Upstream: first, Status: 503, ErrorType: ErrTypeUpstreamStatus},
			{Upstream: rec.Upstream, Status: 200},
		}, rec.AttemptLog)
	})

	t.Run("every attempt fails: the last one's answer is listed too", func(t *testing.T) {
		e, _ := newHoldEnv(t, Route{}, unavailable)
		resp, _ := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m"}`))
		require.Equal(t, 503, resp.StatusCode)
		rec := e.lastRecord()
		require.Len(t, rec.AttemptLog, 2)
		for _, at := range rec.AttemptLog {
			assert.Equal(t, 503, at.Status)
			assert.Equal(t, ErrTypeUpstreamStatus, at.ErrorType)
		}
		assert.NotEqual(t, rec.AttemptLog[0].Upstream, rec.AttemptLog[1].Upstream)
		assert.Equal(t, rec.Upstream, rec.AttemptLog[1].Upstream)
	})

	// Connect failures, retried on one upstream: no status; and the list
	// keeps its first recordMaxAttemptLog entries.
	refused := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer l.Close()
		return "http://" + l.Addr().String()
	}()
	unused := func(http.ResponseWriter, *http.Request) { t.Error("upstream called") }
	for _, tt := range []struct {
		name     string
		attempts int
	}{
		{"connect failures, retried", 3},
		{"more attempts than the list keeps", recordMaxAttemptLog + 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, unused, Route{Prefix: "/v1", Upstream: refused, MaxAttempts: tt.attempts,
				Backoff: Backoff{Base: time.Microsecond, Max: time.Microsecond}})
			resp, _ := e.do(e.request("POST", "/v1/chat/completions", `{"model":"m"}`))
			require.Equal(t, 502, resp.StatusCode)
			rec := e.lastRecord()
			assert.Equal(t, tt.attempts, rec.Attempts)
			require.Len(t, rec.AttemptLog, min(tt.attempts, recordMaxAttemptLog))
			for _, at := range rec.AttemptLog {
				assert.Equal(t, AttemptInfo{Upstream: rec.Upstream, ErrorType: ErrTypeUpstreamConnect}, at)
			}
			assert.Equal(t, tt.attempts > recordMaxAttemptLog, rec.Truncated)
		})
	}
}

// TestAttemptLogCountsInRecordSize: the queue's estimate of a record
// grows with its AttemptLog, which is bounded.
func TestAttemptLogCountsInRecordSize(t *testing.T) {
	rec := Record{Upstream: "b"}
	base := recordSize(&rec)
	rec.AttemptLog = []AttemptInfo{{Upstream: "first-upstream", Status: 503, ErrorType: ErrTypeUpstreamStatus}, {Upstream: "b", Status: 200}}
	assert.Greater(t, recordSize(&rec), base+int64(len("first-upstream")+len(ErrTypeUpstreamStatus)+1))
}
