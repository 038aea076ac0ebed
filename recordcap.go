package relay

import (
	"net/http"
	"strings"
	"unicode/utf8"
)

// Caps on the client-controlled strings of a Record, in bytes. They are
// the one place these bounds are defined; the README's "Limits and abuse"
// table lists them.
const (
	recordMaxPath  = 2 << 10 // Path
	recordMaxModel = 256     // Model and ResponseModel
	recordMaxMeth  = 32      // Method (allowed methods are far shorter)
	// ClientRequestID is at most 128 bytes by wellFormedID's rule.
)

// capRecord cuts the client-controlled strings of rec to their caps and
// sets Truncated when it cut any. r is the request the record describes.
//
// It also detaches those strings from the request: r.URL.Path and
// r.Method are substrings of the request line, which a huge query string
// can make a megabyte long, and a queued record must not pin it. Known
// methods become constants; the path and model are copied only when the
// request line is longer than the path cap, so ordinary requests pay no
// allocation.
func capRecord(rec *Record, r *http.Request) {
	var cut bool
	rec.Method, cut = recordMethod(rec.Method)
	rec.Truncated = rec.Truncated || cut
	detach := len(r.RequestURI) > recordMaxPath
	rec.Path = capString(rec.Path, recordMaxPath, detach, &rec.Truncated)
	rec.Model = capString(rec.Model, recordMaxModel, detach, &rec.Truncated)
	rec.ResponseModel = capString(rec.ResponseModel, recordMaxModel, false, &rec.Truncated)
}

// recordMethod returns m as a constant when it is a standard method, or cut
// to its cap and copied.
func recordMethod(m string) (string, bool) {
	switch m {
	case http.MethodGet:
		return http.MethodGet, false
	case http.MethodHead:
		return http.MethodHead, false
	case http.MethodPost:
		return http.MethodPost, false
	case http.MethodPut:
		return http.MethodPut, false
	case http.MethodPatch:
		return http.MethodPatch, false
	case http.MethodDelete:
		return http.MethodDelete, false
	case http.MethodOptions:
		return http.MethodOptions, false
	case http.MethodConnect:
		return http.MethodConnect, false
	case http.MethodTrace:
		return http.MethodTrace, false
	}
	var cut bool
	return capString(m, recordMaxMeth, true, &cut), cut
}

// capString returns s cut to at most max bytes on a UTF-8 boundary, setting
// *cut when it cut. A cut string, or any string when detach is set, is
// copied so that it does not keep a larger backing array alive.
func capString(s string, max int, detach bool, cut *bool) string {
	if len(s) <= max {
		if detach && s != "" {
			return strings.Clone(s)
		}
		return s
	}
	*cut = true
	n := max
	// Back up over at most three continuation bytes to a rune start, so
	// that the cut never splits a character.
	for i := 0; i < utf8.UTFMax-1 && n > 0 && !utf8.RuneStart(s[n]); i++ {
		n--
	}
	return strings.Clone(s[:n])
}

// recordOverhead estimates the memory of a queued Record beyond its
// strings: the struct itself, its queue slot and string headers.
const recordOverhead = 512

// recordSize estimates the bytes a queued record holds, cheaply: the fixed
// overhead plus the lengths of its strings and labels. AsyncRecorder bounds
// its queue by the sum of these estimates.
func recordSize(rec *Record) int64 {
	n := recordOverhead + len(rec.RequestID) + len(rec.ClientRequestID) + len(rec.Tenant) +
		len(rec.KeyID) + len(rec.Route) + len(rec.Upstream) + len(rec.Method) + len(rec.Path) +
		len(rec.Model) + len(rec.ResponseModel) + len(rec.Provider) + len(rec.Kind) + len(rec.ErrorType)
	for k, v := range rec.Labels {
		n += len(k) + len(v) + 48 // a map entry's share of buckets and headers
	}
	for _, at := range rec.AttemptLog { // at most recordMaxAttemptLog
		n += len(at.Upstream) + len(at.ErrorType) + 40 // an AttemptInfo
	}
	return int64(n)
}
