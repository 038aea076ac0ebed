package relay

import (
	"sync"

	"github.com/streamrelay/relay/internal/provider"
	"github.com/streamrelay/relay/internal/wsframe"
)

// sessionObserver is what the relay learns from a session's messages:
// the provider's realtime observation (internal/provider's Realtime, for
// OpenAI Realtime, Gemini Live and streaming TTS). upstream is called
// from the upstream→client goroutine only and client from the
// client→upstream one only; result once both have ended. A message's
// payload is unmasked and reassembled: whole when complete, else its
// first bytes in msg and its last in tail. The slices are valid only
// during the call.
type sessionObserver interface {
	upstream(msg, tail []byte, text, complete bool) sessionFact
	client(msg, tail []byte, text, complete bool)
	// observesClient reports whether client is worth calling: when it is
	// not (OpenAI Realtime, Gemini Live: nothing is read from what the
	// client sends), client messages are not reassembled at all, which
	// spares a copy and an unmasking of every audio chunk sent.
	observesClient() bool
	// result moves what was observed (usage, characters, the model the
	// upstream reported) into the record.
	result(rec *Record)
}

// sessionFact is what one upstream message told.
type sessionFact struct {
	Content bool  // generated content (audio, text, transcript): the session's TTFT
	Tokens  int64 // a response.done or usage update charged this many tokens: settled at once
	Error   bool  // an in-band error event
}

// fact acts on what an upstream message told: the time to first
// content, an in-band error, and tokens settled with the limiter as they
// are reported (reserved 0, used the response's total), so that budgets
// are charged during a session, not only at its end. Called from the
// upstream→client goroutine.
func (s *session) fact(f sessionFact) {
	ex := s.ex
	rl := ex.rl
	if f.Content && ex.rec.TTFT == 0 {
		ex.rec.TTFT = max(rl.clock.Now().Sub(ex.rec.Start), 1)
	}
	if f.Error && ex.rec.ErrorType == ErrTypeNone {
		ex.rec.ErrorType = ErrTypeUpstreamEvent
	}
	if f.Tokens > 0 && rl.settler != nil {
		req := ex.limitRequest(rl.clock.Now())
		req.Cost = Cost{} // nothing reserved: the tokens are charged, the spend is finish's
		rl.settle(ex.r.Context(), req, f.Tokens, ex.rec.RequestID)
	}
}

// wsKeepBuf: message buffers up to this capacity are kept between
// messages; larger ones are dropped (and their budget given back) once
// their message is observed, so that an idle session holds little.
const wsKeepBuf = 4 << 10

// wsMessages reassembles one direction's data messages for the
// observer, from the bytes already relayed: the head of each message up
// to maxObservedHead, and beyond it a window over its last observedTail
// bytes, charged as SSE observation is (obsAccount, rl.observed).
type wsMessages struct {
	s        *session
	upstream bool
	sc       wsframe.Scanner
	acct     obsAccount
	head     []byte
	tail     []byte
	tailWin  int
	over     bool // the message outgrew head: tail holds its end
	text     bool
}

func (m *wsMessages) init(s *session, upstream bool) {
	m.s, m.upstream = s, upstream
	m.acct.budget = &s.ex.rl.observed
}

// release gives back the buffers' budget.
func (m *wsMessages) release() {
	m.head, m.tail = nil, nil
	m.acct.release()
}

// scan observes a chunk that was relayed.
func (m *wsMessages) scan(chunk []byte) {
	for p := chunk; ; {
		ev, k := m.sc.Next(p)
		p = p[k:]
		switch ev.Kind {
		case wsframe.None, wsframe.Error:
			return
		case wsframe.Frame:
			if h := m.sc.Header(); h.Op == wsframe.OpText || h.Op == wsframe.OpBinary {
				m.head, m.tail, m.over, m.text = m.head[:0], m.tail[:0], false, h.Op == wsframe.OpText
			}
		case wsframe.Payload:
			if h := m.sc.Header(); !h.Op.IsControl() {
				m.add(ev.Data, h, ev.Offset)
			}
		case wsframe.End:
			if h := m.sc.Header(); !h.Op.IsControl() && h.Fin {
				m.deliver()
			}
		}
	}
}

// add appends payload bytes d (at offset off of their frame) to the
// message, unmasked.
func (m *wsMessages) add(d []byte, h *wsframe.Header, off uint64) {
	if !m.over {
		if need := len(m.head) + len(d); need > cap(m.head) && cap(m.head) < maxObservedHead {
			m.head = m.acct.growSome(m.head, need, maxObservedHead)
		}
		k := min(cap(m.head)-len(m.head), len(d))
		start := len(m.head)
		m.head = append(m.head, d[:k]...)
		if h.Masked {
			wsframe.Unmask(m.head[start:], h.Mask, off)
		}
		d, off = d[k:], off+uint64(k)
		if len(d) == 0 {
			return
		}
		m.over = true
		m.tail, m.tailWin = m.acct.tailBuf(m.tail, observedTail)
	}
	if len(d) >= m.tailWin { // only its last tailWin bytes can matter
		skip := len(d) - m.tailWin
		d, off, m.tail = d[skip:], off+uint64(skip), m.tail[:0]
	}
	if len(m.tail)+len(d) > cap(m.tail) { // keep the window, make room
		n := copy(m.tail, m.tail[len(m.tail)-m.tailWin:])
		m.tail = m.tail[:n]
	}
	start := len(m.tail)
	m.tail = append(m.tail, d...)
	if h.Masked {
		wsframe.Unmask(m.tail[start:], h.Mask, off)
	}
}

// deliver hands a complete message to the observer.
func (m *wsMessages) deliver() {
	var tail []byte
	if m.over {
		tail = m.tail
	}
	if m.upstream {
		m.s.fact(m.s.obs.upstream(m.head, tail, m.text, !m.over))
	} else {
		m.s.obs.client(m.head, tail, m.text, !m.over)
	}
	if cap(m.head)+cap(m.tail) > wsKeepBuf {
		m.release()
	}
}

// realtimeObserver observes a session through the provider's realtime
// observation (internal/provider's Realtime), pooled by the relay.
type realtimeObserver struct {
	rt   *provider.Realtime
	pool *sync.Pool
}

// newRealtimeObserver is the relay's sessionObserver for a route of
// provider p (a provider Realtime does not know observes nothing).
func (rl *Relay) newRealtimeObserver(p string) sessionObserver {
	rt := rl.realtimes.Get().(*provider.Realtime)
	rt.Reset(p)
	return realtimeObserver{rt: rt, pool: &rl.realtimes}
}

func (o realtimeObserver) upstream(msg, tail []byte, text, complete bool) sessionFact {
	f := o.rt.Upstream(msg, tail, text, complete)
	return sessionFact{Content: f.Content, Tokens: f.Tokens, Error: f.Error}
}

func (o realtimeObserver) client(msg, tail []byte, text, complete bool) {
	o.rt.Client(msg, tail, text, complete)
}

func (o realtimeObserver) observesClient() bool { return o.rt.ObservesClient() }

func (o realtimeObserver) result(rec *Record) {
	u := o.rt.Usage()
	rec.Usage = Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens,
		CachedInputTokens: u.CachedInputTokens, CacheCreationInputTokens: u.CacheCreationInputTokens,
		ReasoningTokens: u.ReasoningTokens, AudioInputTokens: u.AudioInputTokens,
		AudioOutputTokens: u.AudioOutputTokens}
	rec.Characters = o.rt.Characters()
	if m := o.rt.ResponseModel(); m != "" && m != rec.Model {
		rec.ResponseModel = m
	}
	o.pool.Put(o.rt)
}
