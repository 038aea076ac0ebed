package relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"
)

// ErrorType classifies why a request did not end well. The set is fixed
// and documented, so it is safe as a metric label.
type ErrorType string

// Error types, as recorded and as the "type" label of relay_errors_total.
const (
	ErrTypeNone              ErrorType = ""
	ErrTypeAuth              ErrorType = "auth"                 // 401: missing or wrong key
	ErrTypeRateLimited       ErrorType = "rate_limited"         // 429 from the relay's limiter
	ErrTypeBodyTooLarge      ErrorType = "body_too_large"       // 413
	ErrTypeBadRequest        ErrorType = "bad_request"          // 400: unreadable request body
	ErrTypeNoRoute           ErrorType = "no_route"             // 404: no route for the path
	ErrTypeUpstreamConnect   ErrorType = "upstream_connect"     // 502: dial, TLS or protocol failure before the response
	ErrTypeUpstreamTimeout   ErrorType = "upstream_timeout"     // 504 before the first byte; or an idle/total timeout mid-stream
	ErrTypeUpstreamStatus    ErrorType = "upstream_status"      // the upstream answered 4xx/5xx, passed through
	ErrTypeStreamInterrupted ErrorType = "stream_interrupted"   // the upstream broke off after the first byte
	ErrTypeClientCanceled    ErrorType = "client_canceled"      // 499: the client went away
	ErrTypeLimiter           ErrorType = "limiter"              // the limiter failed (counted whether failing open or closed)
	ErrTypeStorage           ErrorType = "storage"              // a record batch could not be written
	ErrTypeShuttingDown      ErrorType = "shutting_down"        // 503 while draining
	ErrTypeUpstreamEvent     ErrorType = "upstream_error_event" // the stream carried the provider's own error event
)

// Usage is the token accounting of one request, as the provider reported
// it. Zero fields mean "not reported".
type Usage struct {
	InputTokens       int64 `json:"input_tokens"`
	OutputTokens      int64 `json:"output_tokens"`
	CachedInputTokens int64 `json:"cached_input_tokens"`
	ReasoningTokens   int64 `json:"reasoning_tokens"`
}

// Total is input plus output tokens (cached and reasoning tokens are
// already part of those).
func (u Usage) Total() int64 { return u.InputTokens + u.OutputTokens }

// Record describes one finished request, rejected and failed ones included.
// It is a struct, passed by value, so that fields can be added without
// breaking Recorder implementations. It never holds a credential.
type Record struct {
	RequestID string    `json:"request_id"`
	Start     time.Time `json:"start"`
	Tenant    string    `json:"tenant"`
	KeyID     string    `json:"key_id"`
	Route     string    `json:"route"`
	Upstream  string    `json:"upstream"`
	Method    string    `json:"method"`
	// Path is the client's request path, without the query string (which
	// may carry secrets).
	Path string `json:"path"`
	// Model is the model the request named, when its body is JSON with a
	// "model" field.
	Model string `json:"model,omitempty"`
	// ResponseModel is the model the upstream said it used, when it differs.
	ResponseModel string     `json:"response_model,omitempty"`
	Provider      Provider   `json:"provider,omitempty"`
	Kind          StreamKind `json:"kind"`
	// Stream reports whether the request asked for a streamed response.
	Stream bool `json:"stream"`
	// Status is what the client got: 499 when it went away.
	Status    int       `json:"status"`
	ErrorType ErrorType `json:"error_type,omitempty"`
	BytesIn   int64     `json:"bytes_in"`
	BytesOut  int64     `json:"bytes_out"`
	// Events counts SSE events for SSE responses and body chunks written
	// otherwise.
	Events int64 `json:"events"`
	// TTFB is the time from the request's arrival to the first body byte
	// sent to the client.
	TTFB time.Duration `json:"ttfb_ns"`
	// TTFT is the time to the first event that carries generated content.
	TTFT     time.Duration `json:"ttft_ns,omitempty"`
	Duration time.Duration `json:"duration_ns"`
	// ClientGone reports that the client disconnected before the end.
	ClientGone bool  `json:"client_gone"`
	Usage      Usage `json:"usage"`
	// Attempts is how many upstream attempts were made (failover).
	Attempts int `json:"attempts"`
	// Characters is the number of characters sent for synthesis (TTS).
	Characters int64 `json:"characters,omitempty"`
	// Labels are the Identity's labels.
	Labels map[string]string `json:"labels,omitempty"`
}

// Recorder stores Records.
//
// Write it as plainly as you like: the relay never calls a Recorder on the
// request path. New wraps any Recorder that is not already an
// *AsyncRecorder in one, which queues records and calls Record (or
// RecordBatch) from a single worker goroutine, so implementations need not
// be fast. Return an error to have the batch retried with backoff; honour
// ctx, which is cancelled when a write takes too long or on shutdown.
type Recorder interface {
	Record(ctx context.Context, rec Record) error
}

// BatchRecorder is implemented by Recorders that can store many records in
// one round trip (a database insert, a pipeline). The async worker prefers
// it over Record. The slice is reused after RecordBatch returns: copy what
// you keep.
type BatchRecorder interface {
	Recorder
	RecordBatch(ctx context.Context, recs []Record) error
}

// RecorderFunc adapts a function to the Recorder interface.
type RecorderFunc func(ctx context.Context, rec Record) error

// Record calls f(ctx, rec).
func (f RecorderFunc) Record(ctx context.Context, rec Record) error { return f(ctx, rec) }

// NopRecorder discards records.
type NopRecorder struct{}

// Record implements Recorder.
func (NopRecorder) Record(context.Context, Record) error { return nil }

// MultiRecorder sends each record to every recorder in turn. The errors of
// all of them are joined; one failing recorder does not stop the others.
// Note that a retried batch is sent again to all of them.
func MultiRecorder(recs ...Recorder) Recorder { return multiRecorder(recs) }

type multiRecorder []Recorder

func (m multiRecorder) Record(ctx context.Context, rec Record) error {
	var errs []error
	for _, r := range m {
		if err := r.Record(ctx, rec); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// JSONLinesRecorder writes each record as one JSON object per line. It is
// safe for concurrent use; each line is written with a single Write call.
type JSONLinesRecorder struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

// NewJSONLinesRecorder returns a recorder writing to w (a file, os.Stdout).
func NewJSONLinesRecorder(w io.Writer) *JSONLinesRecorder { return &JSONLinesRecorder{w: w} }

// Record implements Recorder. The object is the one json.Marshal makes of
// the Record, encoded without reflection.
func (j *JSONLinesRecorder) Record(_ context.Context, rec Record) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.buf = append(appendRecordJSON(j.buf[:0], &rec), '\n')
	_, err := j.w.Write(j.buf)
	return err
}

// RecordBatch implements BatchRecorder with one Write per batch.
func (j *JSONLinesRecorder) RecordBatch(_ context.Context, recs []Record) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.buf = j.buf[:0]
	for i := range recs {
		j.buf = append(appendRecordJSON(j.buf, &recs[i]), '\n')
	}
	_, err := j.w.Write(j.buf)
	return err
}

// SlogRecorder logs each record at Info level with the message "relay
// request".
type SlogRecorder struct{ Logger *slog.Logger }

// Record implements Recorder.
func (s SlogRecorder) Record(ctx context.Context, rec Record) error {
	attrs := []slog.Attr{
		slog.String("request_id", rec.RequestID),
		slog.String("tenant", rec.Tenant),
		slog.String("key_id", rec.KeyID),
		slog.String("route", rec.Route),
		slog.String("upstream", rec.Upstream),
		slog.String("method", rec.Method),
		slog.String("path", rec.Path),
		slog.String("model", rec.Model),
		slog.String("kind", string(rec.Kind)),
		slog.Int("status", rec.Status),
		slog.String("error_type", string(rec.ErrorType)),
		slog.Int64("bytes_in", rec.BytesIn),
		slog.Int64("bytes_out", rec.BytesOut),
		slog.Int64("events", rec.Events),
		slog.Duration("ttfb", rec.TTFB),
		slog.Duration("ttft", rec.TTFT),
		slog.Duration("duration", rec.Duration),
		slog.Bool("client_gone", rec.ClientGone),
		slog.Int64("input_tokens", rec.Usage.InputTokens),
		slog.Int64("output_tokens", rec.Usage.OutputTokens),
	}
	s.Logger.LogAttrs(ctx, slog.LevelInfo, "relay request", attrs...)
	return nil
}
