package sdktest

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
)

// apiError is the part of an SDK's typed error the tests compare.
type apiError struct {
	status int
	typ    string // OpenAI "type" / Anthropic error type
	code   string // OpenAI "code"; empty for Anthropic
	raw    string // the error body as the SDK kept it
	header http.Header
}

// asOpenAIError extracts openai-go's typed error.
func asOpenAIError(t *testing.T, err error) apiError {
	t.Helper()
	var e *openai.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *openai.Error", err, err)
	}
	out := apiError{status: e.StatusCode, typ: e.Type, code: e.Code, raw: e.RawJSON()}
	if e.Response != nil {
		out.header = e.Response.Header
	}
	return out
}

// asAnthropicError extracts anthropic-sdk-go's typed error.
func asAnthropicError(t *testing.T, err error) apiError {
	t.Helper()
	var e *anthropic.Error
	if !errors.As(err, &e) {
		t.Fatalf("error = %v (%T), want *anthropic.Error", err, err)
	}
	out := apiError{status: e.StatusCode, typ: string(e.Type()), raw: e.RawJSON()}
	if e.Response != nil {
		out.header = e.Response.Header
	}
	return out
}

// TestRelayErrorsReachSDKs checks that the errors the relay answers with
// itself are the providers' shapes, which the SDKs turn into their typed
// errors: OpenAI style on the OpenAI route, Anthropic style on the
// Anthropic one.
func TestRelayErrorsReachSDKs(t *testing.T) {
	type sdk struct {
		name  string
		file  string
		call  sdkCall
		asErr func(*testing.T, error) apiError
		// want type and code for a bad key, then for a refusal by the limiter
		authType, authCode   string
		limitType, limitCode string
	}
	sdks := []sdk{
		{name: "openai chat", file: "openai_chat_stream.sse", call: chatCall, asErr: asOpenAIError,
			authType: "invalid_request_error", authCode: "invalid_api_key",
			limitType: "rate_limit_error", limitCode: "rate_limit_exceeded"},
		{name: "openai responses", file: "openai_responses_stream.sse", call: responsesCall, asErr: asOpenAIError,
			authType: "invalid_request_error", authCode: "invalid_api_key",
			limitType: "rate_limit_error", limitCode: "rate_limit_exceeded"},
		{name: "anthropic", file: "anthropic_messages_stream.sse", call: messagesCall, asErr: asAnthropicError,
			authType: "authentication_error", limitType: "rate_limit_error"},
	}
	for _, s := range sdks {
		t.Run(s.name+"/wrong key", func(t *testing.T) {
			up := newReplayUpstream(t, readStream(t, ownStreams, s.file), ending{})
			h := newHarness(t, up)

			_, err := s.call(testkit.Context(t), h.url, wrongKey)
			got := s.asErr(t, err)
			if got.status != http.StatusUnauthorized || got.typ != s.authType || got.code != s.authCode {
				t.Errorf("error status %d type %q code %q, want 401 %q %q", got.status, got.typ, got.code, s.authType, s.authCode)
			}
			if strings.Contains(got.raw, wrongKey) {
				t.Error("the error body echoes the presented key")
			}
			if n := len(up.requests()); n != 0 {
				t.Errorf("upstream got %d requests for an unauthenticated call, want 0", n)
			}
			rec := h.record(t)
			if rec.Status != http.StatusUnauthorized || rec.ErrorType != relay.ErrTypeAuth {
				t.Errorf("record status %d error %q, want 401 %q", rec.Status, rec.ErrorType, relay.ErrTypeAuth)
			}
			checkRecordHasNoSecret(t, rec, wrongKey)
		})

		t.Run(s.name+"/rate limited", func(t *testing.T) {
			up := newReplayUpstream(t, readStream(t, ownStreams, s.file), ending{})
			h := newHarness(t, up, relay.WithRateLimit(relay.Limits{RequestsPerMinute: 1, Burst: 1}))

			if _, err := s.call(testkit.Context(t), h.url, clientKey); err != nil {
				t.Fatalf("first call, within the limit: %v", err)
			}
			if rec := h.record(t); rec.Status != http.StatusOK {
				t.Fatalf("first call recorded status %d, want 200", rec.Status)
			}

			_, err := s.call(testkit.Context(t), h.url, clientKey)
			got := s.asErr(t, err)
			if got.status != http.StatusTooManyRequests || got.typ != s.limitType || got.code != s.limitCode {
				t.Errorf("error status %d type %q code %q, want 429 %q %q", got.status, got.typ, got.code, s.limitType, s.limitCode)
			}
			if got.header.Get("Retry-After") == "" {
				t.Error("the 429 carries no Retry-After")
			}
			if n := len(up.requests()); n != 1 {
				t.Errorf("upstream got %d requests, want 1 (the refused call must not reach it)", n)
			}
			rec := h.record(t)
			if rec.Status != http.StatusTooManyRequests || rec.ErrorType != relay.ErrTypeRateLimited || rec.Tenant != tenant {
				t.Errorf("record status %d error %q tenant %q, want 429 %q %q", rec.Status, rec.ErrorType, rec.Tenant, relay.ErrTypeRateLimited, tenant)
			}
			checkRecordHasNoSecret(t, rec, clientKey)
		})
	}
}

// checkRecordHasNoSecret fails when secret appears anywhere in the record.
func checkRecordHasNoSecret(t *testing.T, rec relay.Record, secret string) {
	t.Helper()
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), secret) {
		t.Errorf("the record holds a credential: %s", b)
	}
}
