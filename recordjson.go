package relay

import (
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// appendRecordJSON appends rec as the same JSON object json.Marshal makes
// of it (field names, order, omitempty, escaping), without reflection: the
// JSON-lines recorder encodes every request, and reflection dominated its
// cost. (A Start after year 9999, which json.Marshal refuses, is written
// anyway.)
func appendRecordJSON(b []byte, r *Record) []byte {
	b = append(b, `{"request_id":`...)
	b = appendJSONString(b, r.RequestID)
	if r.ClientRequestID != "" {
		b = appendStringField(b, "client_request_id", r.ClientRequestID)
	}
	b = append(b, `,"start":`...)
	b = appendJSONTime(b, r.Start)
	b = appendStringField(b, "tenant", r.Tenant)
	b = appendStringField(b, "key_id", r.KeyID)
	b = appendStringField(b, "route", r.Route)
	b = appendStringField(b, "upstream", r.Upstream)
	b = appendStringField(b, "method", r.Method)
	b = appendStringField(b, "path", r.Path)
	if r.Model != "" {
		b = appendStringField(b, "model", r.Model)
	}
	if r.ResponseModel != "" {
		b = appendStringField(b, "response_model", r.ResponseModel)
	}
	if r.Provider != "" {
		b = appendStringField(b, "provider", string(r.Provider))
	}
	b = appendStringField(b, "kind", string(r.Kind))
	b = append(b, `,"stream":`...)
	b = strconv.AppendBool(b, r.Stream)
	b = appendIntField(b, "status", int64(r.Status))
	if r.ErrorType != "" {
		b = appendStringField(b, "error_type", string(r.ErrorType))
	}
	b = appendIntField(b, "bytes_in", r.BytesIn)
	b = appendIntField(b, "bytes_out", r.BytesOut)
	b = appendIntField(b, "events", r.Events)
	b = appendIntField(b, "ttfb_ns", int64(r.TTFB))
	if r.TTFT != 0 {
		b = appendIntField(b, "ttft_ns", int64(r.TTFT))
	}
	b = appendIntField(b, "duration_ns", int64(r.Duration))
	b = append(b, `,"client_gone":`...)
	b = strconv.AppendBool(b, r.ClientGone)
	if r.Truncated {
		b = append(b, `,"truncated":true`...)
	}
	b = append(b, `,"usage":{"input_tokens":`...)
	b = strconv.AppendInt(b, r.Usage.InputTokens, 10)
	b = appendIntField(b, "output_tokens", r.Usage.OutputTokens)
	b = appendIntField(b, "cached_input_tokens", r.Usage.CachedInputTokens)
	b = appendIntField(b, "cache_creation_input_tokens", r.Usage.CacheCreationInputTokens)
	b = appendIntField(b, "reasoning_tokens", r.Usage.ReasoningTokens)
	b = appendIntField(b, "audio_input_tokens", r.Usage.AudioInputTokens)
	b = appendIntField(b, "audio_output_tokens", r.Usage.AudioOutputTokens)
	b = append(b, `,"estimated":`...)
	b = strconv.AppendBool(b, r.Usage.Estimated)
	b = append(b, '}')
	b = append(b, `,"cost":{"known":`...)
	b = strconv.AppendBool(b, r.Cost.Known)
	b = appendIntField(b, "amount_micros", int64(r.Cost.Amount))
	if r.Cost.Currency != "" {
		b = appendStringField(b, "currency", r.Cost.Currency)
	}
	if r.Cost.PriceVersion != "" {
		b = appendStringField(b, "price_version", r.Cost.PriceVersion)
	}
	b = append(b, '}')
	b = appendIntField(b, "attempts", int64(r.Attempts))
	if len(r.AttemptLog) > 0 {
		b = append(b, `,"attempt_log":[`...)
		for i, at := range r.AttemptLog {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"upstream":`...)
			b = appendJSONString(b, at.Upstream)
			b = appendIntField(b, "status", int64(at.Status))
			if at.ErrorType != "" {
				b = appendStringField(b, "error_type", string(at.ErrorType))
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if r.Characters != 0 {
		b = appendIntField(b, "characters", r.Characters)
	}
	if len(r.Labels) > 0 {
		b = append(b, `,"labels":{`...)
		keys := make([]string, 0, len(r.Labels))
		for k := range r.Labels {
			keys = append(keys, k)
		}
		slices.Sort(keys) // json.Marshal sorts map keys
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, k)
			b = append(b, ':')
			b = appendJSONString(b, r.Labels[k])
		}
		b = append(b, '}')
	}
	if r.FramesIn != 0 {
		b = appendIntField(b, "frames_in", r.FramesIn)
	}
	if r.FramesOut != 0 {
		b = appendIntField(b, "frames_out", r.FramesOut)
	}
	if r.CloseCode != 0 {
		b = appendIntField(b, "close_code", int64(r.CloseCode))
	}
	if r.ClosedBy != "" {
		b = appendStringField(b, "closed_by", r.ClosedBy)
	}
	return append(b, '}')
}

func appendStringField(b []byte, name, v string) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendJSONString(b, v)
}

func appendIntField(b []byte, name string, v int64) []byte {
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return strconv.AppendInt(b, v, 10)
}

func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendJSONString quotes s as encoding/json does: <, > and & escaped
// for HTML safety, control characters as \u00XX, invalid UTF-8 as U+FFFD,
// and U+2028/U+2029 escaped.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
