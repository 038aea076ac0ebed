package relay

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// Which methods, request headers and response headers cross the relay,
// beyond the hop-by-hop and credential rules of forward.go.

// defaultMethods are the methods LLM and TTS APIs use: GET (models, files,
// stored responses), HEAD, POST (generation), PUT and PATCH (some
// management endpoints) and DELETE (files, stored responses, batches).
// OPTIONS is left out: a CORS preflight carries no credential, so it would
// only be refused by the authenticator, and answering preflights is the
// host's job; WithAllowedMethods can add it.
func defaultMethods() []string {
	return []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}
}

// maxMethodLen bounds a method name given to WithAllowedMethods. Records
// cap Method at recordMaxMeth, which must not be smaller, so that an
// allowed method is always recorded whole.
const maxMethodLen = 32

// An allowed method longer than the record cap would be cut in records:
// this fails to compile if recordMaxMeth < maxMethodLen.
const _ = uint(recordMaxMeth - maxMethodLen)

// checkMethods validates a method list for WithAllowedMethods.
func checkMethods(methods []string) error {
	if len(methods) == 0 {
		return fmt.Errorf("relay: no allowed methods")
	}
	for _, m := range methods {
		switch {
		case m == http.MethodConnect || m == http.MethodTrace:
			// CONNECT would tunnel and TRACE echo the request, injected
			// credential included, back to the client.
			return fmt.Errorf("relay: method %s cannot be allowed", m)
		case m == "" || len(m) > maxMethodLen || !isToken(m):
			return fmt.Errorf("relay: %q is not a method name", m)
		}
	}
	return nil
}

// checkMethod refuses (405, with an Allow header) a method that is not
// allowed. It runs before authentication: nothing is worth checking a key
// for, and nothing reaches an upstream.
func (ex *exchange) checkMethod() error {
	if slices.Contains(ex.rl.methods, ex.r.Method) {
		return nil
	}
	ex.client.header()["Allow"] = ex.rl.allowHdr
	return &ex.rl.answers.methodNotAllowed
}

// isAccountHeader reports client headers that select which account,
// organization, project or deployment an upstream bills or serves: sent
// with the relay's credential they would let a client spend another
// account the credential can reach. They are dropped unless the route's
// PassHeaders names them.
//
//   - OpenAI-Organization, OpenAI-Project: OpenAI's organization and project.
//   - X-Goog-User-Project: Google Cloud's quota and billing project.
//   - X-HF-Bill-To: the Hugging Face organization billed for inference.
//   - Azureml-Model-Deployment: the Azure ML online-endpoint deployment,
//     bypassing the endpoint's traffic split.
//
// Anthropic selects the organization and workspace by key alone, and
// headers such as anthropic-beta, anthropic-version and OpenAI-Beta choose
// features, not accounts: they pass.
func isAccountHeader(k string) bool {
	switch k {
	case "Openai-Organization", "Openai-Project", "X-Goog-User-Project", "X-Hf-Bill-To",
		"Azureml-Model-Deployment":
		return true
	}
	return false
}

// isMethodOverride reports client headers that ask an upstream (Google
// APIs, and frameworks such as ASP.NET, Rails and Express middleware) to
// treat a request as another method: they would defeat WithAllowedMethods,
// a POST carrying "X-HTTP-Method-Override: DELETE" being forwarded as an
// allowed POST. They are always dropped.
func isMethodOverride(k string) bool {
	switch k {
	case "X-Http-Method-Override", "X-Method-Override", "X-Http-Method":
		return true
	}
	return false
}

// isAccountParam reports query parameters that select the account an
// upstream bills, as isAccountHeader does for headers: Google APIs take
// the quota and billing project as the system parameter $userProject
// (Cloud Storage as userProject), equivalent to X-Goog-User-Project, and
// follow PassHeaders' X-Goog-User-Project entry.
func isAccountParam(name string) bool {
	return name == "$userProject" || name == "userProject"
}

// dropAccountParams returns the client's raw query without its
// account-selecting parameters (isAccountParam), names compared after
// percent-decoding so that %24userProject is caught too. A query without
// any is returned as is, without allocating: the common case costs a
// substring search.
func dropAccountParams(q string) string {
	if !strings.Contains(q, "serProject") && strings.IndexByte(q, '%') < 0 {
		return q
	}
	account := func(pair string) bool {
		name, _, _ := strings.Cut(pair, "=")
		if un, err := url.QueryUnescape(name); err == nil {
			name = un
		}
		return isAccountParam(name)
	}
	found := false
	for pair := range strings.SplitSeq(q, "&") {
		if account(pair) {
			found = true
			break
		}
	}
	if !found {
		return q
	}
	var b strings.Builder
	b.Grow(len(q))
	for pair := range strings.SplitSeq(q, "&") {
		if account(pair) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('&')
		}
		b.WriteString(pair)
	}
	return b.String()
}

// passes reports whether the target lets the client's account header k
// through.
func (ex *exchange) passes(k string) bool {
	for _, p := range ex.target.PassHeaders {
		if strings.EqualFold(p, k) {
			return true
		}
	}
	return false
}

// copyResponseHeaders copies the upstream's end-to-end response headers
// to the client.
//
// Go's transport deletes an HTTP/1.1 response's Connection header when it
// holds "close" (net/http's shouldClose), and with it the names of any
// other hop-by-hop headers it listed, which copyHeaders would have
// stripped. Such a response is recognisable (HTTP/1.1, resp.Close set, no
// Connection header left), but which headers were named is not. Then only
// the headers known to be end-to-end (endToEnd) are forwarded, so that a
// header an upstream meant for one hop, such as a proxy's internal secret,
// never reaches the client. Responses that are read until the connection
// closes look the same and are treated the same.
//
// When the relay's limiter reported the caller's quotas (setQuotaHeaders
// set them in dst), the upstream's rate-limit headers are not forwarded:
// they describe the operator's account with the provider, not the
// tenant's budget, and would both overwrite the relay's and tell every
// tenant the operator's capacity. Without a relay quota they pass, as the
// only ones the client has.
func copyResponseHeaders(dst http.Header, resp *http.Response) {
	ours := dst["X-Ratelimit-Limit-Requests"] != nil || dst["X-Ratelimit-Limit-Tokens"] != nil
	hidden := connectionHidden(resp)
	copyHeaders(dst, resp.Header, func(k string) bool {
		return k == "X-Request-Id" || (hidden && !endToEnd(k)) || (ours && isRateLimitHeader(k))
	})
}

// isRateLimitHeader reports the rate-limit header families providers
// send: X-Ratelimit-*, RateLimit and RateLimit-* (the IETF draft's), and
// Anthropic-Ratelimit-*.
func isRateLimitHeader(k string) bool {
	return k == "Ratelimit" || strings.HasPrefix(k, "X-Ratelimit-") ||
		strings.HasPrefix(k, "Ratelimit-") || strings.HasPrefix(k, "Anthropic-Ratelimit-")
}

// connectionHidden reports a response whose Connection header the
// transport may have removed; see copyResponseHeaders.
func connectionHidden(resp *http.Response) bool {
	return resp.ProtoMajor == 1 && resp.ProtoMinor >= 1 && resp.Close && len(resp.Header["Connection"]) == 0
}

// endToEnd reports response headers that are end-to-end by definition
// (RFC 9110 representation, caching and status metadata) or by the
// convention of LLM APIs (request ids, rate limits, provider metadata).
func endToEnd(k string) bool {
	switch k {
	case "Content-Type", "Content-Length", "Content-Encoding", "Content-Language", "Content-Disposition",
		"Content-Range", "Accept-Ranges", "Cache-Control", "Expires", "Last-Modified", "Etag", "Vary",
		"Date", "Age", "Retry-After", "Location", "Www-Authenticate",
		"X-Request-Id", "Request-Id", "Apim-Request-Id", "Ratelimit",
		"X-Character-Count", "History-Item-Id": // ElevenLabs TTS: characters billed, the history item
		return true
	}
	for _, p := range [...]string{"X-Ratelimit-", "Ratelimit-", "Anthropic-", "Openai-", "X-Ms-"} {
		if strings.HasPrefix(k, p) {
			return true
		}
	}
	return false
}

// The relay's one rule for control characters in the values it puts in
// headers (route Headers, client keys, upstream credentials): none of
// C0 (0x00-0x1f) or DEL (0x7f), which cannot travel in a header field
// (RFC 9110 field-value), with one exception. Horizontal tab is legal
// inside a field value, so operator-written header values may hold it
// (validHeaderValue); a credential may not (checkSecret): no key format
// contains a tab, and one inside a key is a paste error (from a
// spreadsheet or a TSV) that would pass New and then fail every request.

// ctlFree reports whether s has no control character, a horizontal tab
// counting as one unless tab is set.
func ctlFree(s string, tab bool) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && (c != '\t' || !tab)) || c == 0x7f {
			return false
		}
	}
	return true
}

// validHeaderValue reports whether v can be sent as a header value: no
// control character but horizontal tab (see ctlFree).
func validHeaderValue(v string) bool { return ctlFree(v, true) }

// isToken reports whether s is an RFC 9110 token (a method or header
// field name).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}
