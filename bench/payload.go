package bench

import (
	"bytes"
	"compress/gzip"
	"hash/fnv"
	"strconv"
)

// The mock upstream and the driver share these wire formats, so that the
// driver can rebuild every byte it should have received and spot any
// alteration. Each payload carries exactly one send stamp, `"t":<unix ns>`,
// which is the only part the driver cannot predict.

// Credentials. The upstream accepts only upstreamKey; the bare proxy and
// the relay must replace the client's key with it.
const (
	upstreamKey = "sk-bench-upstream-7f3a9c"
	clientKey   = "sk-bench-client-41d2e8"
	modelName   = "bench-model"
	promptToks  = 12
)

// Modes of the mock upstream.
const (
	modeSSE   = "sse"
	modeJSON  = "json"
	modeAudio = "audio"
)

const stampField = `"t":`

// splitmix is a fast, well-mixed hash of one word (SplitMix64's finaliser).
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// appendToken appends the i-th generated token of a response: a space and
// one to four base-36 digits, like a short word.
func appendToken(b []byte, seed uint64, i int) []byte {
	b = append(b, ' ')
	return strconv.AppendUint(b, splitmix(seed^uint64(i)*0x2545f4914f6cdd1d)%(36*36*36*36), 36)
}

func appendHead(b []byte, seed uint64, object string, i int, t int64) []byte {
	b = append(b, `{"id":"chatcmpl-`...)
	b = strconv.AppendUint(b, seed, 16)
	b = append(b, `","object":"`...)
	b = append(b, object...)
	b = append(b, `","created":1700000000,"model":"`+modelName+`","i":`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `,`+stampField...)
	return strconv.AppendInt(b, t, 10)
}

func appendUsage(b []byte, n int) []byte {
	b = append(b, `"usage":{"prompt_tokens":`+strconv.Itoa(promptToks)+`,"completion_tokens":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(n+promptToks), 10)
	return append(b, '}')
}

// appendChunk appends the JSON of the i-th streamed chunk, sent at t.
func appendChunk(b []byte, seed uint64, i int, t int64) []byte {
	b = appendHead(b, seed, "chat.completion.chunk", i, t)
	b = append(b, `,"choices":[{"index":0,"delta":{"content":"`...)
	b = appendToken(b, seed, i)
	return append(b, `"},"finish_reason":null}]}`...)
}

// appendUsageChunk appends the final usage-only chunk of a stream of n
// content chunks, as OpenAI sends it when include_usage is asked for.
func appendUsageChunk(b []byte, seed uint64, n int, t int64) []byte {
	b = appendHead(b, seed, "chat.completion.chunk", n, t)
	b = append(b, `,"choices":[],`...)
	b = appendUsage(b, n)
	return append(b, '}')
}

// appendCompletion appends a non-streamed chat completion of n tokens.
func appendCompletion(b []byte, seed uint64, n int, t int64) []byte {
	b = appendHead(b, seed, "chat.completion", 0, t)
	b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":"`...)
	for i := range n {
		b = appendToken(b, seed, i)
	}
	b = append(b, `"},"finish_reason":"stop"}],`...)
	b = appendUsage(b, n)
	return append(b, '}')
}

// appendGzipStream appends the bytes the mock upstream sends for a
// gzip-compressed stream (serveSSE): each chunk written and the compressor
// flushed, then the usage chunk and [DONE] written together and the
// compressor closed; stamps are the chunks' send stamps, the usage
// chunk's last. zw is reset for the purpose. A compressor's output is a
// function of its input and flush points, so the bytes are the
// upstream's exactly.
func appendGzipStream(b []byte, zw *gzip.Writer, s spec, stamps []int64) []byte {
	out := bytes.NewBuffer(b)
	zw.Reset(out)
	buf := make([]byte, 0, 512)
	for i := range min(s.n, len(stamps)) {
		buf = append(buf[:0], "data: "...)
		buf = appendChunk(buf, s.seed, i, stamps[i])
		buf = append(buf, "\n\n"...)
		_, _ = zw.Write(buf)
		_ = zw.Flush()
	}
	if len(stamps) > s.n {
		buf = append(buf[:0], "data: "...)
		buf = appendUsageChunk(buf, s.seed, s.n, stamps[s.n])
		buf = append(buf, "\n\ndata: [DONE]\n\n"...)
		_, _ = zw.Write(buf)
	}
	_ = zw.Close()
	return out.Bytes()
}

// appendAudio appends the i-th audio chunk of size bytes.
func appendAudio(b []byte, seed uint64, i, size int) []byte {
	x := splitmix(seed + uint64(i))
	for range size / 8 {
		x = splitmix(x)
		b = append(b, byte(x), byte(x>>8), byte(x>>16), byte(x>>24), byte(x>>32), byte(x>>40), byte(x>>48), byte(x>>56))
	}
	for range size % 8 {
		x = splitmix(x)
		b = append(b, byte(x))
	}
	return b
}

// contentHash is the FNV-1a hash of the n tokens of a response, the
// figure a stream's received content is checked against.
func contentHash(seed uint64, n int) uint64 {
	h := fnv.New64a()
	var b []byte
	for i := range n {
		b = appendToken(b[:0], seed, i)
		_, _ = h.Write(b)
	}
	return h.Sum64()
}

// audioHash is the FNV-1a hash of a whole audio response.
func audioHash(seed uint64, n, size int) uint64 {
	h := fnv.New64a()
	var b []byte
	for i := range n {
		b = appendAudio(b[:0], seed, i, size)
		_, _ = h.Write(b)
	}
	return h.Sum64()
}

// benchError is the type of this package's sentinel errors; being
// constants, they cannot be reassigned.
type benchError string

func (e benchError) Error() string { return string(e) }

const errNoStamp = benchError("payload has no valid send stamp")

// stamp finds the send stamp in a payload.
func stamp(p []byte) (int64, error) {
	i := bytes.Index(p, []byte(stampField))
	if i < 0 {
		return 0, errNoStamp
	}
	rest := p[i+len(stampField):]
	var t int64
	j := 0
	for ; j < len(rest) && rest[j] >= '0' && rest[j] <= '9'; j++ {
		if j == 19 {
			return 0, errNoStamp // 20 digits would overflow; no real stamp is so long
		}
		t = t*10 + int64(rest[j]-'0')
	}
	if j == 0 {
		return 0, errNoStamp
	}
	return t, nil
}
