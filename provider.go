package relay

import (
	"net/http"

	"github.com/streamrelay/relay/internal/provider"
)

// usageOptions configure what the relay reads from requests and responses.
type usageOptions struct {
	includeUsage     bool
	defaultMaxTokens int64
}

// inspectRequest reads the model, stream flag and budgets from the body
// as the route's provider family reads them, estimates the tokens to
// reserve (none when the family bills otherwise) and prices them as the
// spend to reserve, and keeps the family's
// edit that makes the response report usage (OpenAI's include_usage;
// each attempt decides whether to send it: includeusage.go). It refuses
// nothing.
func (ex *exchange) inspectRequest() error {
	if len(ex.src.b) == 0 {
		return nil
	}
	f, path := ex.family, ex.r.URL.Path
	req := f.Request(path, ex.r.Header.Get("Content-Type"), ex.src.b)
	ex.rec.Model, ex.rec.Stream, ex.rec.Characters = req.Model, req.Stream, req.Characters
	ex.stream.prompt = req.PromptEstimate // for the estimate of a stream cut short
	tokens := f.TokenEstimate(path, req, ex.rl.cfg.usage.defaultMaxTokens)
	ex.cost.Tokens = tokens
	if tokens > 0 {
		in := min(req.PromptEstimate, tokens)
		ex.cost.Spend = ex.reserveSpend(in, tokens-in)
	}
	// Only a provider named as such: a resolver's Target with no Provider,
	// or one the relay does not know, is read as OpenAI-compatible but its
	// body is never edited (a strict upstream may refuse stream_options).
	if ex.rl.cfg.usage.includeUsage && f.Name() == string(ex.target.Provider) {
		ex.src.edit, _ = f.UsageEdit(path, ex.src.b, req)
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
