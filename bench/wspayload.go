package bench

import (
	"encoding/base64"
	"strconv"
)

// The WebSocket messages of the mock realtime upstream, shaped like
// OpenAI Realtime's server events (GA names) so that the relay observes
// them as it would a real session: session.created, audio deltas with
// base64 audio, and response.done with usage. As for HTTP, each upstream
// message carries exactly one send stamp, `"t":<unix ns>`, the only part
// the driver cannot rebuild.

// wsAudioBytes is the audio in one delta or echoed message: 20 ms of
// 24 kHz 16-bit PCM, OpenAI Realtime's default format, 1,280 base64
// characters.
const wsAudioBytes = 960

// appendSessionCreated appends the first event of every mock session.
func appendSessionCreated(b []byte, seed uint64, t int64) []byte {
	b = append(b, `{"type":"session.created","event_id":"evt_`...)
	b = strconv.AppendUint(b, seed, 16)
	b = append(b, `_s","session":{"object":"realtime.session","id":"sess_`...)
	b = strconv.AppendUint(b, seed, 16)
	b = append(b, `","model":"`+modelName+`","modalities":["audio","text"]},`+stampField...)
	b = strconv.AppendInt(b, t, 10)
	return append(b, '}')
}

// appendAudioB64 appends size bytes of generated audio, base64-encoded,
// using scratch for the raw bytes; it returns both.
func appendAudioB64(b, scratch []byte, seed uint64, i, size int) ([]byte, []byte) {
	scratch = appendAudio(scratch[:0], seed, i, size)
	return base64.StdEncoding.AppendEncode(b, scratch), scratch
}

// appendAudioDelta appends delta i of response j, sent at t.
func appendAudioDelta(b, scratch []byte, seed uint64, j, i, size int, t int64) ([]byte, []byte) {
	b = append(b, `{"type":"response.output_audio.delta","event_id":"evt_`...)
	b = strconv.AppendUint(b, seed, 16)
	b = append(b, '_')
	b = strconv.AppendInt(b, int64(j), 10)
	b = append(b, '_')
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `","response_id":"resp_`...)
	b = strconv.AppendInt(b, int64(j), 10)
	b = append(b, `","item_id":"item_`...)
	b = strconv.AppendInt(b, int64(j), 10)
	b = append(b, `","output_index":0,"content_index":0,"delta":"`...)
	b, scratch = appendAudioB64(b, scratch, seed^uint64(j)<<32, i, size)
	b = append(b, `",`+stampField...)
	b = strconv.AppendInt(b, t, 10)
	return append(b, '}'), scratch
}

// wsUsage is the usage the mock upstream reports for a response, as
// OpenAI Realtime's response.done carries it.
type wsUsage struct {
	inText, inAudio, cached, outText, outAudio int64
}

func (u wsUsage) input() int64  { return u.inText + u.inAudio }
func (u wsUsage) output() int64 { return u.outText + u.outAudio }
func (u wsUsage) total() int64  { return u.input() + u.output() }

func (u wsUsage) plus(v wsUsage) wsUsage {
	return wsUsage{u.inText + v.inText, u.inAudio + v.inAudio, u.cached + v.cached,
		u.outText + v.outText, u.outAudio + v.outAudio}
}

// responseUsage is the usage of response j of n audio deltas.
func responseUsage(seed uint64, j, n int) wsUsage {
	x := splitmix(seed ^ uint64(j+1)*0x9e37)
	return wsUsage{inText: 20 + int64(x%40), inAudio: 50 + int64(x>>8%200), cached: int64(x >> 16 % 16),
		outText: 5 + int64(n), outAudio: 10 * int64(n)}
}

// sessionUsage is the usage of a whole stream phase: r responses of n
// deltas each.
func sessionUsage(seed uint64, r, n int) wsUsage {
	var u wsUsage
	for j := range r {
		u = u.plus(responseUsage(seed, j, n))
	}
	return u
}

// appendResponseDone appends response j's response.done, for n deltas.
func appendResponseDone(b []byte, seed uint64, j, n int, t int64) []byte {
	u := responseUsage(seed, j, n)
	b = append(b, `{"type":"response.done","event_id":"evt_`...)
	b = strconv.AppendUint(b, seed, 16)
	b = append(b, `_d`...)
	b = strconv.AppendInt(b, int64(j), 10)
	b = append(b, `","response":{"object":"realtime.response","id":"resp_`...)
	b = strconv.AppendInt(b, int64(j), 10)
	b = append(b, `","status":"completed","output":[],"usage":{"total_tokens":`...)
	b = strconv.AppendInt(b, u.total(), 10)
	b = append(b, `,"input_tokens":`...)
	b = strconv.AppendInt(b, u.input(), 10)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, u.output(), 10)
	b = append(b, `,"input_token_details":{"text_tokens":`...)
	b = strconv.AppendInt(b, u.inText, 10)
	b = append(b, `,"audio_tokens":`...)
	b = strconv.AppendInt(b, u.inAudio, 10)
	b = append(b, `,"cached_tokens":`...)
	b = strconv.AppendInt(b, u.cached, 10)
	b = append(b, `},"output_token_details":{"text_tokens":`...)
	b = strconv.AppendInt(b, u.outText, 10)
	b = append(b, `,"audio_tokens":`...)
	b = strconv.AppendInt(b, u.outAudio, 10)
	b = append(b, `}}},`+stampField...)
	b = strconv.AppendInt(b, t, 10)
	return append(b, '}')
}

// appendEchoMessage appends message i of an echo session: an audio delta
// without a stamp (the driver times the round trip itself). The upstream
// returns it unchanged, so the relay observes it in both directions as
// the common message of a voice session.
func appendEchoMessage(b, scratch []byte, seed uint64, i, size int) ([]byte, []byte) {
	b = append(b, `{"type":"response.output_audio.delta","event_id":"evt_`...)
	b = strconv.AppendUint(b, seed, 16)
	b = append(b, '_')
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `","response_id":"resp_e","item_id":"item_e","output_index":0,"content_index":0,"delta":"`...)
	b, scratch = appendAudioB64(b, scratch, seed, i, size)
	return append(b, `"}`...), scratch
}
