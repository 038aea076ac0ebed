package relay

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamrelay/relay/internal/provider"
)

// usageOptions configure what the relay reads from requests and responses.
type usageOptions struct {
	includeUsage     bool
	defaultMaxTokens int64
}

// A non-streamed JSON response is observed through its first
// maxCapturedHead bytes (model, and everything when it is small) and its
// last capturedTail bytes (where OpenAI puts "usage" after megabytes of
// embeddings); the client gets the whole body regardless.
const (
	maxCapturedHead = 64 << 10
	capturedTail    = 16 << 10
)

// streamFacts is what the relay learns from the response as it passes.
type streamFacts struct {
	obs         *provider.Stream
	acct        obsAccount // capture and tail
	capture     []byte     // start of a JSON body
	tail        []byte     // its end, once capture is full
	tailWin     int        // tail's window: capturedTail, or minTail without budget
	captureFull bool       // the body was longer than capture
	lastContent time.Time
	interChunk  prometheus.Observer // resolved once per stream, not per event
}

// inspectRequest reads the model, stream flag and budgets from the body
// as the route's provider family reads them, estimates the tokens to
// reserve (none when the family bills otherwise), and lets the family
// rewrite the body so that the response reports usage (OpenAI's
// include_usage). It refuses nothing.
func (ex *exchange) inspectRequest() error {
	if len(ex.body) == 0 {
		return nil
	}
	f, path := ex.family, ex.r.URL.Path
	req := f.Request(path, ex.r.Header.Get("Content-Type"), ex.body)
	ex.rec.Model, ex.rec.Stream, ex.rec.Characters = req.Model, req.Stream, req.Characters
	ex.limitReq.Cost.Tokens = f.TokenEstimate(path, req, ex.rl.cfg.usage.defaultMaxTokens)
	if ex.rl.cfg.usage.includeUsage {
		if b, ok := f.Rewrite(path, ex.body, req); ok {
			// A new buffer, a few bytes longer: its growth is taken from
			// the body budget whatever is left of it.
			if d := cap(b) - cap(ex.body); d != 0 {
				ex.forceBody(int64(d))
			}
			ex.body = b
		}
	}
	return nil
}

// beginBody prepares to observe a response body, as the route's provider
// family reads it.
func (ex *exchange) beginBody(kind StreamKind, resp *http.Response) {
	if kind == KindAudio {
		return // audio carries no usage; its record holds bytes and timing
	}
	if kind == KindJSON && !provider.ReadsBody(mediaType(resp.Header.Get("Content-Type"))) {
		return
	}
	obs, _ := ex.rl.streams.Get().(*provider.Stream)
	obs.Reset(ex.family)
	ex.stream.obs = obs
	ex.stream.acct.budget = &ex.rl.observed
}

// onEvent observes one SSE event, after its bytes were sent on: whole, or
// through its head and tail when it was too large to hold.
func (ex *exchange) onEvent(name, data, tail []byte, truncated bool) {
	s := &ex.stream
	if s.obs == nil {
		return
	}
	var content bool
	if tail != nil {
		content = s.obs.LargeEvent(name, data, tail)
	} else {
		content = s.obs.Event(name, data, truncated)
	}
	if !content {
		return
	}
	now := ex.now
	if ex.rec.TTFT == 0 {
		ex.rec.TTFT = max(now.Sub(ex.rec.Start), 1)
	} else {
		if s.interChunk == nil {
			s.interChunk = ex.rl.metrics.interChunk.WithLabelValues(ex.route, ex.rl.modelLabel(ex.rec.Model))
		}
		s.interChunk.Observe(ms(now.Sub(s.lastContent)))
	}
	s.lastContent = now
}

// observeChunk keeps the head of a JSON body and, once it is longer than
// the head, at least its last capturedTail bytes. Growth beyond the
// response's own observeFree is charged to the observation budget; when
// that refuses, the body is observed through what is already held and a
// tail of minTail bytes from the response's reserve.
func (ex *exchange) observeChunk(b []byte) {
	s := &ex.stream
	if s.obs == nil {
		return
	}
	if !s.captureFull {
		if need := len(s.capture) + len(b); need > cap(s.capture) && cap(s.capture) < maxCapturedHead {
			s.capture = s.acct.growSome(s.capture, need, maxCapturedHead)
		}
		room := min(cap(s.capture), maxCapturedHead) - len(s.capture)
		if len(b) <= room {
			s.capture = append(s.capture, b...)
			return
		}
		s.capture = append(s.capture, b[:room]...)
		s.captureFull = true
		b = b[room:]
		s.tail, s.tailWin = s.acct.tailBuf(s.tail, capturedTail)
		// The tail starts with the end of the head, so that a usage object
		// straddling the boundary is found whole.
		k := min(len(s.capture), s.tailWin)
		s.tail = append(s.tail, s.capture[len(s.capture)-k:]...)
	}
	s.tail = appendWindow(s.tail, b, s.tailWin)
}

// appendWindow appends b to w, a window over the end of a byte stream,
// keeping at least its last t bytes and never more than 2t, so that a
// window made with capacity 2t never reallocates.
func appendWindow(w, b []byte, t int) []byte {
	if len(b) >= t {
		return append(w[:0], b[len(b)-t:]...)
	}
	if len(w)+len(b) > 2*t {
		keep := t - len(b)
		w = w[:copy(w, w[len(w)-keep:])]
	}
	return append(w, b...)
}

// observeUsage moves what was observed into the record and the metrics.
func (ex *exchange) observeUsage() {
	rl, s := ex.rl, &ex.stream
	if s.obs != nil {
		if len(s.capture) > 0 {
			s.obs.Body(s.capture, s.captureFull)
		}
		if s.captureFull {
			s.obs.BodyTail(s.tail)
		}
		u := s.obs.Usage()
		ex.rec.Usage = Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens,
			CachedInputTokens: u.CachedInputTokens, ReasoningTokens: u.ReasoningTokens}
		if m := s.obs.Model(); m != "" && m != ex.rec.Model {
			ex.rec.ResponseModel = m
		}
		if s.obs.ErrorType() != "" && ex.rec.ErrorType == ErrTypeNone {
			ex.rec.ErrorType = ErrTypeUpstreamEvent
		}
		rl.streams.Put(s.obs)
		s.obs = nil
		s.capture, s.tail = nil, nil
		s.acct.release()
	}
	if ex.rec.TTFB > 0 {
		rl.metrics.ttfb.WithLabelValues(ex.route).Observe(ms(ex.rec.TTFB))
	}
	model := ex.rec.Model
	if model == "" {
		model = ex.rec.ResponseModel
	}
	label := rl.modelLabel(model)
	if ex.rec.TTFT > 0 {
		rl.metrics.ttft.WithLabelValues(ex.route, label).Observe(ms(ex.rec.TTFT))
	}
	for _, t := range [...]struct {
		typ string
		n   int64
	}{
		{"input", ex.rec.Usage.InputTokens},
		{"output", ex.rec.Usage.OutputTokens},
		{"cached_input", ex.rec.Usage.CachedInputTokens},
		{"reasoning", ex.rec.Usage.ReasoningTokens},
	} {
		if t.n > 0 {
			rl.metrics.tokens.WithLabelValues(ex.route, label, t.typ).Add(float64(t.n))
		}
	}
}

// modelLabel bounds the model label to the models named by WithModels.
func (rl *Relay) modelLabel(model string) string {
	if rl.models[model] {
		return model
	}
	return "other"
}
