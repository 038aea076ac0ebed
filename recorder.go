package relay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
)

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

// SlogRecorder logs each record at Level (zero: Info) with Message (empty:
// "relay request"), one attribute per Record field, every field every time. The
// keys are the Record's JSON names (see JSONLinesRecorder) with two
// differences made for logs: durations are slog durations under "ttfb",
// "ttft" and "duration" (not "ttfb_ns"…), and the Usage fields are top-level
// keys ("input_tokens", "output_tokens", "cached_input_tokens",
// "cache_creation_input_tokens", "reasoning_tokens", "audio_input_tokens",
// "audio_output_tokens", and "usage_estimated" for Usage.Estimated), and
// the Cost fields are "cost_known", "cost_amount_micros", "cost_currency"
// and "cost_price_version".
// Labels form a group "labels", in key order; "attempt_log" is the
// []AttemptInfo itself (nil for one attempt), which a JSON handler writes
// as the JSON recorder does.
type SlogRecorder struct {
	Logger  *slog.Logger
	Level   slog.Level // zero is slog.LevelInfo
	Message string     // empty is "relay request"
}

// Record implements Recorder.
func (s SlogRecorder) Record(ctx context.Context, rec Record) error {
	attrs := []slog.Attr{
		slog.String("request_id", rec.RequestID),
		slog.String("client_request_id", rec.ClientRequestID),
		slog.Time("start", rec.Start),
		slog.String("tenant", rec.Tenant),
		slog.String("key_id", rec.KeyID),
		slog.String("route", rec.Route),
		slog.String("upstream", rec.Upstream),
		slog.String("method", rec.Method),
		slog.String("path", rec.Path),
		slog.String("model", rec.Model),
		slog.String("response_model", rec.ResponseModel),
		slog.String("provider", string(rec.Provider)),
		slog.String("kind", string(rec.Kind)),
		slog.Bool("stream", rec.Stream),
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
		slog.Int64("cached_input_tokens", rec.Usage.CachedInputTokens),
		slog.Int64("cache_creation_input_tokens", rec.Usage.CacheCreationInputTokens),
		slog.Int64("reasoning_tokens", rec.Usage.ReasoningTokens),
		slog.Int64("audio_input_tokens", rec.Usage.AudioInputTokens),
		slog.Int64("audio_output_tokens", rec.Usage.AudioOutputTokens),
		slog.Bool("usage_estimated", rec.Usage.Estimated),
		slog.Bool("cost_known", rec.Cost.Known),
		slog.Int64("cost_amount_micros", int64(rec.Cost.Amount)),
		slog.String("cost_currency", rec.Cost.Currency),
		slog.String("cost_price_version", rec.Cost.PriceVersion),
		slog.Int("attempts", rec.Attempts),
		slog.Any("attempt_log", rec.AttemptLog),
		slog.Int64("characters", rec.Characters),
		slog.Attr{Key: "labels", Value: labelsValue(rec.Labels)},
		slog.Bool("truncated", rec.Truncated),
		slog.Int64("frames_in", rec.FramesIn),
		slog.Int64("frames_out", rec.FramesOut),
		slog.Int("close_code", rec.CloseCode),
		slog.String("closed_by", rec.ClosedBy),
	}
	msg := s.Message
	if msg == "" {
		msg = "relay request"
	}
	s.Logger.LogAttrs(ctx, s.Level, msg, attrs...)
	return nil
}

// labelsValue is a group of the labels in key order (handlers leave an
// empty group out).
func labelsValue(labels map[string]string) slog.Value {
	keys := slices.Sorted(maps.Keys(labels))
	attrs := make([]slog.Attr, len(keys))
	for i, k := range keys {
		attrs[i] = slog.String(k, labels[k])
	}
	return slog.GroupValue(attrs...)
}
