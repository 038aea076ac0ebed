package relayredis

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/streamrelay/relay"
)

// EncodeRecord returns the stream entry of a record as field, value pairs,
// every field always present so that consumers see one schema:
//
//	request_id, client_request_id, start (RFC 3339 with nanoseconds, UTC),
//	tenant, key_id, route, upstream, method, path, model, response_model,
//	provider, kind, stream (true/false), status, error_type, bytes_in,
//	bytes_out, events, ttfb_ms, ttft_ms, duration_ms (milliseconds, to the
//	microsecond), client_gone (true/false), input_tokens, output_tokens,
//	cached_input_tokens, cache_creation_input_tokens, reasoning_tokens,
//	audio_input_tokens, audio_output_tokens, usage_estimated (true/false),
//	cost_known (true/false), cost_micros (Record.Cost.Amount, an integer
//	in millionths of cost_currency; 0 when cost_known is false, which is
//	not a zero cost), cost_currency, cost_price_version, attempts, attempt_log (Record.AttemptLog as a JSON array of
//	{"upstream", "status", "error_type"} objects, "[]" for a request of
//	one attempt), characters, labels (a JSON object, "{}" when there are
//	none), truncated (true/false)
//
// A Record holds no credential, so neither does its entry.
func EncodeRecord(rec relay.Record) []string {
	labels := []byte("{}")
	if len(rec.Labels) > 0 {
		// A map of strings always marshals.
		labels, _ = json.Marshal(rec.Labels)
	}
	attemptLog := []byte("[]")
	if len(rec.AttemptLog) > 0 {
		// Strings and ints always marshal.
		attemptLog, _ = json.Marshal(rec.AttemptLog)
	}
	itoa := func(n int64) string { return strconv.FormatInt(n, 10) }
	return []string{
		"request_id", rec.RequestID,
		"client_request_id", rec.ClientRequestID,
		"start", rec.Start.UTC().Format(time.RFC3339Nano),
		"tenant", rec.Tenant,
		"key_id", rec.KeyID,
		"route", rec.Route,
		"upstream", rec.Upstream,
		"method", rec.Method,
		"path", rec.Path,
		"model", rec.Model,
		"response_model", rec.ResponseModel,
		"provider", string(rec.Provider),
		"kind", string(rec.Kind),
		"stream", strconv.FormatBool(rec.Stream),
		"status", strconv.Itoa(rec.Status),
		"error_type", string(rec.ErrorType),
		"bytes_in", itoa(rec.BytesIn),
		"bytes_out", itoa(rec.BytesOut),
		"events", itoa(rec.Events),
		"ttfb_ms", formatMs(rec.TTFB),
		"ttft_ms", formatMs(rec.TTFT),
		"duration_ms", formatMs(rec.Duration),
		"client_gone", strconv.FormatBool(rec.ClientGone),
		"input_tokens", itoa(rec.Usage.InputTokens),
		"output_tokens", itoa(rec.Usage.OutputTokens),
		"cached_input_tokens", itoa(rec.Usage.CachedInputTokens),
		"cache_creation_input_tokens", itoa(rec.Usage.CacheCreationInputTokens),
		"reasoning_tokens", itoa(rec.Usage.ReasoningTokens),
		"audio_input_tokens", itoa(rec.Usage.AudioInputTokens),
		"audio_output_tokens", itoa(rec.Usage.AudioOutputTokens),
		"usage_estimated", strconv.FormatBool(rec.Usage.Estimated),
		"cost_known", strconv.FormatBool(rec.Cost.Known),
		"cost_micros", itoa(int64(rec.Cost.Amount)),
		"cost_currency", rec.Cost.Currency,
		"cost_price_version", rec.Cost.PriceVersion,
		"attempts", strconv.Itoa(rec.Attempts),
		"attempt_log", string(attemptLog),
		"characters", itoa(rec.Characters),
		"labels", string(labels),
		"truncated", strconv.FormatBool(rec.Truncated),
		"frames_in", itoa(rec.FramesIn),
		"frames_out", itoa(rec.FramesOut),
		"close_code", strconv.Itoa(rec.CloseCode),
		"closed_by", rec.ClosedBy,
	}
}

func formatMs(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', -1, 64)
}

// DecodeRecord turns a stream entry's values (redis.XMessage.Values) back
// into a Record, for consumers that move the stream elsewhere. Missing
// fields stay zero and unknown ones are ignored, so entries written by
// older or newer versions decode; a malformed value is an error.
func DecodeRecord(values map[string]any) (relay.Record, error) {
	d := decoder{values: values}
	var rec relay.Record
	rec.RequestID = d.str("request_id")
	rec.ClientRequestID = d.str("client_request_id")
	if s := d.str("start"); s != "" {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return relay.Record{}, fmt.Errorf("relayredis: field start: %w", err)
		}
		rec.Start = t
	}
	rec.Tenant = d.str("tenant")
	rec.KeyID = d.str("key_id")
	rec.Route = d.str("route")
	rec.Upstream = d.str("upstream")
	rec.Method = d.str("method")
	rec.Path = d.str("path")
	rec.Model = d.str("model")
	rec.ResponseModel = d.str("response_model")
	rec.Provider = relay.Provider(d.str("provider"))
	rec.Kind = relay.StreamKind(d.str("kind"))
	rec.Stream = d.bool("stream")
	rec.Status = int(d.int("status"))
	rec.ErrorType = relay.ErrorType(d.str("error_type"))
	rec.BytesIn = d.int("bytes_in")
	rec.BytesOut = d.int("bytes_out")
	rec.Events = d.int("events")
	rec.TTFB = d.ms("ttfb_ms")
	rec.TTFT = d.ms("ttft_ms")
	rec.Duration = d.ms("duration_ms")
	rec.ClientGone = d.bool("client_gone")
	rec.Usage.InputTokens = d.int("input_tokens")
	rec.Usage.OutputTokens = d.int("output_tokens")
	rec.Usage.CachedInputTokens = d.int("cached_input_tokens")
	rec.Usage.CacheCreationInputTokens = d.int("cache_creation_input_tokens")
	rec.Usage.ReasoningTokens = d.int("reasoning_tokens")
	rec.Usage.AudioInputTokens = d.int("audio_input_tokens")
	rec.Usage.AudioOutputTokens = d.int("audio_output_tokens")
	rec.Usage.Estimated = d.bool("usage_estimated")
	rec.Cost.Known = d.bool("cost_known")
	rec.Cost.Amount = relay.Money(d.int("cost_micros"))
	rec.Cost.Currency = d.str("cost_currency")
	rec.Cost.PriceVersion = d.str("cost_price_version")
	rec.Attempts = int(d.int("attempts"))
	rec.Characters = d.int("characters")
	rec.Truncated = d.bool("truncated")
	rec.FramesIn = d.int("frames_in")
	rec.FramesOut = d.int("frames_out")
	rec.CloseCode = int(d.int("close_code"))
	rec.ClosedBy = d.str("closed_by")
	if s := d.str("labels"); s != "" && s != "{}" {
		if err := json.Unmarshal([]byte(s), &rec.Labels); err != nil && d.err == nil {
			d.err = fmt.Errorf("relayredis: field labels: %w", err)
		}
	}
	if s := d.str("attempt_log"); s != "" && s != "[]" {
		if err := json.Unmarshal([]byte(s), &rec.AttemptLog); err != nil && d.err == nil {
			d.err = fmt.Errorf("relayredis: field attempt_log: %w", err)
		}
	}
	if d.err != nil {
		return relay.Record{}, d.err
	}
	return rec, nil
}

// decoder reads typed fields, keeping the first error.
type decoder struct {
	values map[string]any
	err    error
}

func (d *decoder) str(k string) string {
	switch v := d.values[k].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

func (d *decoder) fail(k string, err error) {
	if d.err == nil {
		d.err = fmt.Errorf("relayredis: field %s: %w", k, err)
	}
}

func (d *decoder) int(k string) int64 {
	s := d.str(k)
	if s == "" {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		d.fail(k, err)
	}
	return n
}

func (d *decoder) bool(k string) bool {
	s := d.str(k)
	if s == "" {
		return false
	}
	b, err := strconv.ParseBool(s)
	if err != nil {
		d.fail(k, err)
	}
	return b
}

func (d *decoder) ms(k string) time.Duration {
	s := d.str(k)
	if s == "" {
		return 0
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		if err == nil {
			err = fmt.Errorf("%q is not a number", s)
		}
		d.fail(k, err)
		return 0
	}
	return time.Duration(math.Round(f*1000)) * time.Microsecond
}
