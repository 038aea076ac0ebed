package relay

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamrelay/relay/internal/provider"
)

// An SSE event is observed whole up to maxObservedHead bytes; a longer one
// through that head and a window over its last observedTail (up to twice
// that) bytes, where providers put usage. Longer events still pass through
// whole. defaultObserveBudget bounds, over all responses, what observation
// buffers hold beyond each response's own observeFree.
const (
	maxObservedHead      = 64 << 10
	observedTail         = 32 << 10
	defaultObserveBudget = 64 << 20
)

// A non-streamed JSON response is observed through its first
// maxCapturedHead bytes (model, and everything when it is small) and its
// last capturedTail bytes (where OpenAI puts "usage" after megabytes of
// embeddings); the client gets the whole body regardless.
const (
	maxCapturedHead = 64 << 10
	capturedTail    = 16 << 10
)

// observer is what the relay learns from a response as it passes, after
// each read was sent on to the client: usage, the model and error events
// (through obs, for the response's provider), the head and tail of a JSON
// body, and the timing of content events. beginBody (provider.go) starts
// it; observeUsage moves what it learnt into the record and the metrics.
// An SSE body reaches it event by event through the parser (onEvent), any
// other body read by read (chunk).
type observer struct {
	obs         *provider.Stream    // nil: the response is not observed
	acct        obsAccount          // capture and tail
	capture     []byte              // start of a JSON body
	tail        []byte              // its end, once capture is full
	prompt      int64               // the request's prompt estimate, in tokens (inspectRequest)
	lastContent time.Duration       // when the last content event was read, since the request's start
	interChunk  prometheus.Observer // resolved once per stream, not per event
	// Small fields together, so that the exchange keeps to its allocation
	// size class (TestExchangeFitsSizeClass).
	tailWin     int32 // tail's window: capturedTail, or minTail without budget
	captureFull bool  // the body was longer than capture
	cut         bool  // the response ended short: the client left, or the upstream broke off
	// incl is the request's include_usage edit: inclNone, inclSent,
	// inclRefused (includeusage.go); it outlives attempts, like the
	// observer.
	incl   uint8
	hideEv bool // the SSE event just dispatched is the usage chunk to hide
}

// onEvent observes one SSE event, ended by the read made at at, after
// its bytes were sent on: whole, or through its head and tail when it was
// too large to hold.
func (ex *exchange) onEvent(at time.Time, name, data, tail []byte, truncated bool) {
	if ex.stream.event(name, data, tail, truncated) {
		ex.contentAt(at)
	}
	if ex.hk != nil {
		ex.hookUsage()
	}
	if ex.stream.incl == inclSent {
		ex.stream.hideEv = !truncated && ex.stream.obs != nil && ex.stream.obs.UsageChunk()
	}
}

// event observes one SSE event and reports whether it carried generated
// content.
func (o *observer) event(name, data, tail []byte, truncated bool) bool {
	switch {
	case o.obs == nil:
		return false
	case tail != nil:
		return o.obs.LargeEvent(name, data, tail)
	default:
		return o.obs.Event(name, data, truncated)
	}
}

// contentAt times content read at at: the first is the request's time to
// first token, each later one observes the gap since the one before.
func (ex *exchange) contentAt(at time.Time) {
	o := &ex.stream
	since := at.Sub(ex.rec.Start)
	if ex.rec.TTFT == 0 {
		ex.rec.TTFT = max(since, 1)
		ex.up.a.contentSeen()
		if ex.hk != nil {
			ex.hookFirstContent()
		}
	} else {
		if o.interChunk == nil {
			o.interChunk = ex.rl.metrics.interChunk.WithLabelValues(ex.route, ex.rl.modelLabel(ex.rec.Model))
		}
		o.interChunk.Observe(ms(since - o.lastContent))
	}
	o.lastContent = since
}

// chunk observes one read of a body that is not SSE: it keeps the head of
// a JSON body and, once it is longer than the head, at least its last
// capturedTail bytes. Growth beyond the response's own observeFree is
// charged to the observation budget; when that refuses, the body is
// observed through what is already held and a tail of minTail bytes from
// the response's reserve.
func (o *observer) chunk(b []byte) {
	if o.obs == nil {
		return
	}
	if !o.captureFull {
		if need := len(o.capture) + len(b); need > cap(o.capture) && cap(o.capture) < maxCapturedHead {
			o.capture = o.acct.growSome(o.capture, need, maxCapturedHead)
		}
		room := min(cap(o.capture), maxCapturedHead) - len(o.capture)
		if len(b) <= room {
			o.capture = append(o.capture, b...)
			return
		}
		o.capture = append(o.capture, b[:room]...)
		o.captureFull = true
		b = b[room:]
		var w int
		o.tail, w = o.acct.tailBuf(o.tail, capturedTail)
		o.tailWin = int32(w)
		// The tail starts with the end of the head, so that a usage object
		// straddling the boundary is found whole.
		k := min(len(o.capture), int(o.tailWin))
		o.tail = append(o.tail, o.capture[len(o.capture)-k:]...)
	}
	o.tail = appendWindow(o.tail, b, int(o.tailWin))
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

// observeUsage moves what was observed into the record, and the record's
// timings and tokens into the metrics.
func (ex *exchange) observeUsage() (label string) {
	rl := ex.rl
	ex.stream.end(&ex.rec, &rl.streams, ex.streamed())
	if ex.rec.TTFB > 0 {
		rl.metrics.ttfb.WithLabelValues(ex.route).Observe(ms(ex.rec.TTFB))
	}
	model := ex.rec.Model
	if model == "" {
		model = ex.rec.ResponseModel
	}
	label = rl.modelLabel(model)
	if ex.rec.TTFT > 0 {
		rl.metrics.ttft.WithLabelValues(ex.route, label).Observe(ms(ex.rec.TTFT))
	}
	u := &ex.rec.Usage
	var estimated int64
	if u.Estimated {
		estimated = u.Total()
	}
	for _, t := range [...]struct {
		typ string
		n   int64
	}{
		{"input", u.InputTokens},
		{"output", u.OutputTokens},
		{"cached_input", u.CachedInputTokens},
		{"cache_creation_input", u.CacheCreationInputTokens},
		{"reasoning", u.ReasoningTokens},
		{"audio_input", u.AudioInputTokens},
		{"audio_output", u.AudioOutputTokens},
		{"estimated", estimated},
	} {
		if t.n > 0 {
			rl.metrics.tokens.WithLabelValues(ex.route, label, t.typ).Add(float64(t.n))
		}
	}
	return label
}

// streamed reports whether the response is a successful stream (SSE, a
// status below 400): one whose usage is estimated when it ends short.
func (ex *exchange) streamed() bool {
	return ex.rec.Kind == KindSSE && ex.up.resp != nil && ex.up.resp.StatusCode < 400
}

// end moves what o observed (usage, the model the upstream answered with
// when the request named another, a provider's error event) into rec, and
// gives back its buffers and its usage stream (to streams).
//
// A successful stream (streamed) that ended short — the client left, the
// upstream broke off or timed out, or the provider's own error event
// ended it — is recorded with the best count there is: what the provider
// reported so far, and an estimate of what it did not (Usage.Estimated).
// So is a whole stream that carried content but reported no usage at all
// (an Azure api-version that refuses include_usage, a server that ignores
// it, WithIncludeUsage(false)): the provider billed it all the same.
// Any other response is recorded as reported: a JSON body is generated
// whole before it is sent, so the part that passed tells nothing of it.
func (o *observer) end(rec *Record, streams *sync.Pool, streamed bool) {
	if o.obs == nil {
		return
	}
	if len(o.capture) > 0 {
		o.obs.Body(o.capture, o.captureFull)
	}
	if o.captureFull {
		o.obs.BodyTail(o.tail)
	}
	u, estimated := o.obs.Usage(), false
	if streamed && (o.cut || o.obs.ErrorType() != "" || (!o.obs.HasUsage() && o.obs.OutputEstimate() > 0)) {
		u, estimated = o.obs.Estimate(o.prompt)
	}
	rec.Usage = Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens,
		CachedInputTokens: u.CachedInputTokens, CacheCreationInputTokens: u.CacheCreationInputTokens,
		ReasoningTokens: u.ReasoningTokens, AudioInputTokens: u.AudioInputTokens,
		AudioOutputTokens: u.AudioOutputTokens, Estimated: estimated}
	if m := o.obs.Model(); m != "" && m != rec.Model {
		rec.ResponseModel = m
	}
	if o.obs.ErrorType() != "" && rec.ErrorType == ErrTypeNone {
		rec.ErrorType = ErrTypeUpstreamEvent
	}
	streams.Put(o.obs)
	o.obs = nil
	o.capture, o.tail = nil, nil
	o.acct.release()
}

// modelLabel bounds the model label to the models named by WithModels.
func (rl *Relay) modelLabel(model string) string {
	if rl.models[model] {
		return model
	}
	return "other"
}
