package relay

import (
	"net/http"
	"strings"

	"github.com/streamrelay/relay/internal/usage"
)

// usageOptions configure what the relay reads from requests and responses.
type usageOptions struct {
	includeUsage     bool
	defaultMaxTokens int64
}

// isLLMPath reports whether a request is billed in tokens (TTS is billed
// in characters).
func isLLMPath(p Provider, path string) bool {
	return p != ProviderAzureTTS && !strings.Contains(path, "/audio/")
}

// inspectRequest reads the model, stream flag and budgets from the body,
// estimates the tokens to reserve, and asks OpenAI-style streams to report
// usage. It refuses nothing.
func (ex *exchange) inspectRequest() error {
	t := ex.target
	if len(ex.body) == 0 {
		return nil
	}
	ct := ex.r.Header.Get("Content-Type")
	info := usage.ParseRequest(string(t.Provider), ex.r.URL.Path, ct, ex.body)
	ex.rec.Model = info.Model
	ex.rec.Stream = info.Stream
	ex.rec.Characters = info.Characters
	if isLLMPath(t.Provider, ex.r.URL.Path) && (info.Model != "" || info.PromptEstimate > 0) {
		out := info.MaxOutputTokens
		if out <= 0 && !strings.Contains(ex.r.URL.Path, "/embeddings") {
			out = ex.rl.cfg.usage.defaultMaxTokens // embeddings generate no output
		}
		ex.limitReq.Cost.Tokens = info.PromptEstimate + out
	}
	if ex.rl.cfg.usage.includeUsage && info.Stream && !info.IncludeUsage &&
		(t.Provider == ProviderOpenAI || t.Provider == ProviderAzure) {
		if b, ok := usage.AddIncludeUsage(ex.r.URL.Path, ex.body); ok {
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

// beginBody prepares to observe a response body.
func (ex *exchange) beginBody(kind StreamKind, resp *http.Response) {
	if kind == KindAudio {
		return // audio carries no usage; its record holds bytes and timing
	}
	if kind == KindJSON {
		mt := mediaType(resp.Header.Get("Content-Type"))
		if mt != "application/json" && !strings.HasSuffix(mt, "+json") && mt != "application/x-ndjson" {
			return
		}
	}
	obs, _ := ex.rl.streams.Get().(*usage.Stream)
	obs.Reset(string(ex.target.Provider))
	ex.stream.obs = obs
	ex.stream.acct.budget = &ex.rl.observed
}
