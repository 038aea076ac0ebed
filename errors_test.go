package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"testing"
	"unsafe"

	"github.com/streamrelay/relay/internal/provider"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestClassify is the table of failures: one classification serves the
// body read, the attempt loop (before the response) and an interrupted
// stream.
func TestClassify(t *testing.T) {
	an := newAnswers(10<<20, "GET, POST")
	dialTimeout := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	wrapped := &url.Error{Op: "Post", URL: "http://u.test", Err: dialTimeout}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	for _, tc := range []struct {
		name       string
		cause, err error
		// before the response, and mid-stream
		before, mid relayError
	}{
		{"connect refused", nil, refused,
			relayError{502, ErrTypeUpstreamConnect, "The upstream service could not be reached."},
			relayError{502, ErrTypeStreamInterrupted, "The upstream stream was interrupted."}},
		{"canceled without a cause of ours", context.Canceled, context.Canceled,
			relayError{502, ErrTypeUpstreamConnect, "The upstream service could not be reached."},
			relayError{502, ErrTypeStreamInterrupted, "The upstream stream was interrupted."}},
		{"connect timeout", errConnectTimeout, context.Canceled,
			relayError{504, ErrTypeUpstreamTimeout, "The upstream service did not answer in time."},
			relayError{504, ErrTypeUpstreamTimeout, "The upstream stream stalled."}},
		{"first byte timeout", errFirstByteTimeout, errFirstByteTimeout,
			relayError{504, ErrTypeUpstreamTimeout, "The upstream service did not answer in time."},
			relayError{504, ErrTypeUpstreamTimeout, "The upstream stream stalled."}},
		{"idle timeout", errIdleTimeout, context.Canceled,
			relayError{504, ErrTypeUpstreamTimeout, "The upstream service did not answer in time."},
			relayError{504, ErrTypeUpstreamTimeout, "The upstream stream stalled."}},
		{"total timeout", errTotalTimeout, context.DeadlineExceeded,
			relayError{504, ErrTypeUpstreamTimeout, "The upstream service did not answer in time."},
			relayError{504, ErrTypeUpstreamTimeout, "The upstream stream stalled."}},
		{"the transport's own timeout", nil, wrapped,
			relayError{504, ErrTypeUpstreamTimeout, "The upstream service did not answer in time."},
			relayError{504, ErrTypeUpstreamTimeout, "The upstream stream stalled."}},
		{"shutdown", errShutdown, context.Canceled,
			relayError{503, ErrTypeShuttingDown, "The gateway is shutting down; retry on another instance."},
			relayError{503, ErrTypeShuttingDown, "The gateway is shutting down; the stream was cut."}},
		{"shutdown wins over a timeout error", errShutdown, wrapped,
			relayError{503, ErrTypeShuttingDown, "The gateway is shutting down; retry on another instance."},
			relayError{503, ErrTypeShuttingDown, "The gateway is shutting down; the stream was cut."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.before, *an.classify(beforeResponse, tc.cause, tc.err, false), "before the response")
			assert.Equal(t, tc.mid, *an.classify(midStream, tc.cause, tc.err, false), "mid-stream")
			assert.Nil(t, an.classify(beforeResponse, tc.cause, tc.err, true), "a client that left, before the response")
			assert.Nil(t, an.classify(midStream, tc.cause, tc.err, true), "a client that left, mid-stream")
		})
	}
}

// TestClassifyBodyRead: the body read's failures, in the same table. A
// read deadline also ends the request's context on HTTP/1, so there a
// timeout (and a shutdown) is told before a client that went away.
func TestClassifyBodyRead(t *testing.T) {
	an := newAnswers(10<<20, "GET, POST")
	deadline := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	for _, tc := range []struct {
		name       string
		cause, err error
		gone       bool
		want       *relayError // nil: the client went away
	}{
		{"unreadable", nil, io.ErrUnexpectedEOF, false,
			&relayError{400, ErrTypeBadRequest, "The request body could not be read."}},
		{"read deadline", nil, deadline, false,
			&relayError{408, ErrTypeBodyTimeout, "The request body was not received in time."}},
		{"read deadline, request context ended by it", nil, deadline, true,
			&relayError{408, ErrTypeBodyTimeout, "The request body was not received in time."}},
		{"the cutReader's deadline", nil, os.ErrDeadlineExceeded, false,
			&relayError{408, ErrTypeBodyTimeout, "The request body was not received in time."}},
		{"cut by Shutdown", errShutdown, context.Canceled, false,
			&relayError{503, ErrTypeShuttingDown, "The gateway is shutting down; retry on another instance."}},
		{"cut by Shutdown past the deadline", errShutdown, deadline, true,
			&relayError{503, ErrTypeShuttingDown, "The gateway is shutting down; retry on another instance."}},
		{"client gone", context.Canceled, io.ErrUnexpectedEOF, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, an.classify(readingBody, tc.cause, tc.err, tc.gone))
		})
	}
	assert.Equal(t, an.draining, an.failures[readingBody][failedShutdown], "a cut body read is answered as a request while draining")
}

// TestRelayErrorIsAnError: a step's *relayError is an error that names its
// status, type and client-safe message, and serve tells it from errEnded.
func TestRelayErrorIsAnError(t *testing.T) {
	an := newAnswers(1024, "GET, POST")
	var err error = &an.tooLarge
	assert.Equal(t, "relay: 413 body_too_large: Request body is larger than the gateway accepts (1024 bytes).", err.Error())
	var re *relayError
	require.ErrorAs(t, fmt.Errorf("step: %w", err), &re)
	assert.Equal(t, 413, re.status)
	assert.Equal(t, "This method is not allowed here; use one of GET, POST.", an.methodNotAllowed.message)
	_, isAnswer := error(errEnded).(*relayError)
	assert.False(t, isAnswer, "errEnded must not be answered")
}

// TestExchangeFitsSizeClass: every request allocates one exchange, in the
// 1024-byte size class; the runtime adds an 8-byte header to objects with
// pointers larger than 512 bytes, so past 1016 bytes it would take the
// next class (1152), 128 bytes more per request and per open stream.
func TestExchangeFitsSizeClass(t *testing.T) {
	assert.LessOrEqual(t, unsafe.Sizeof(exchange{}), uintptr(1024-8),
		"exchange grew past 1016 bytes: regroup its one-byte fields, or move a field out")
}

// TestErrorVocabulary: every error type the relay records maps to its
// meaning in each provider family's vocabulary (internal/provider), the
// relay's own types named by these constants.
func TestErrorVocabulary(t *testing.T) {
	for _, tc := range []struct {
		typ             ErrorType
		openAI, openAIc string // OpenAI's type and code
		anthropic       string
	}{
		{ErrTypeAuth, "invalid_request_error", "invalid_api_key", "authentication_error"},
		{ErrTypeRateLimited, "rate_limit_error", "rate_limit_exceeded", "rate_limit_error"},
		{ErrTypeBodyTooLarge, "invalid_request_error", "request_too_large", "request_too_large"},
		{ErrTypeBadRequest, "invalid_request_error", "invalid_request", "invalid_request_error"},
		{ErrTypeBodyTimeout, "invalid_request_error", "request_timeout", "invalid_request_error"},
		{ErrTypeNoRoute, "invalid_request_error", "not_found", "not_found_error"},
		{ErrTypeMethodNotAllowed, "invalid_request_error", "method_not_allowed", "invalid_request_error"},
		{ErrTypeClientCanceled, "invalid_request_error", "client_canceled", "invalid_request_error"},
		{ErrTypeUpstreamTimeout, "server_error", "upstream_timeout", "api_error"},
		{ErrTypeShuttingDown, "server_error", "service_unavailable", "overloaded_error"},
		{ErrTypeLimiter, "server_error", "service_unavailable", "overloaded_error"},
		{ErrTypeOverloaded, "server_error", "service_unavailable", "overloaded_error"},
		{ErrTypeUpstreamConnect, "server_error", "upstream_error", "api_error"},
		{ErrTypeStreamInterrupted, "server_error", "upstream_error", "api_error"},
	} {
		t.Run(string(tc.typ), func(t *testing.T) {
			e := &relayError{500, tc.typ, `Say "no".`}
			assert.JSONEq(t, `{"error":{"message":"Say \"no\".","type":"`+tc.openAI+`","param":null,"code":"`+tc.openAIc+`"}}`,
				string(appendErrorJSON(nil, provider.ShapeOpenAI, e)))
			assert.JSONEq(t, `{"type":"error","error":{"type":"`+tc.anthropic+`","message":"Say \"no\"."}}`,
				string(appendErrorJSON(nil, provider.ShapeAnthropic, e)))
			assert.Equal(t, "event: error\ndata: "+string(appendErrorJSON(nil, provider.ShapeAnthropic, e))+"\n\n",
				string(appendErrorEvent(nil, provider.ShapeAnthropic, e)))
		})
	}
}

// TestShapeFor: WithErrorShape wins; ShapeAuto takes the route's family's
// shape, and before a route is known the shape the request looks like.
func TestShapeFor(t *testing.T) {
	req := func(path, version string) *http.Request {
		r := httptest.NewRequest("POST", path, nil)
		if version != "" {
			r.Header.Set("Anthropic-Version", version)
		}
		return r
	}
	for _, tc := range []struct {
		name     string
		shape    ErrorShape
		r        *http.Request
		provider Provider // "" for no route
		want     provider.Shape
	}{
		{"openai route", ShapeAuto, req("/v1/messages", "2023-06-01"), ProviderOpenAI, provider.ShapeOpenAI},
		{"anthropic route", ShapeAuto, req("/v1/chat/completions", ""), ProviderAnthropic, provider.ShapeAnthropic},
		{"azure-tts route", ShapeAuto, req("/cognitiveservices/v1", ""), ProviderAzureTTS, provider.ShapeOpenAI},
		{"no route, messages path", ShapeAuto, req("/v1/messages", ""), "", provider.ShapeAnthropic},
		{"no route, anthropic-version", ShapeAuto, req("/x", "2023-06-01"), "", provider.ShapeAnthropic},
		{"no route, otherwise", ShapeAuto, req("/v1/chat/completions", ""), "", provider.ShapeOpenAI},
		{"configured openai", ShapeOpenAI, req("/v1/messages", ""), ProviderAnthropic, provider.ShapeOpenAI},
		{"configured anthropic", ShapeAnthropic, req("/v1/chat/completions", ""), ProviderOpenAI, provider.ShapeAnthropic},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ex := &exchange{r: tc.r}
			if tc.provider != "" {
				ex.target = &Target{Provider: tc.provider}
				ex.family, _ = provider.Lookup(string(tc.provider))
			}
			assert.Equal(t, tc.want, ex.shapeFor(tc.shape))
		})
	}
}
