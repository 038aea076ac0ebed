package provider

import (
	"bytes"
	"encoding/json"
	"unicode/utf8"
)

// This file is a tiny read-only JSON scanner. It exists so that the hot
// path can pull a few fields out of a chunk without allocating and without
// decoding the parts it does not care about. It is not a validator: it
// only guarantees that it never reads past the buffer and that any value it
// hands back was complete (so a chunk cut short by a size cap can never
// yield a half-read number).

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r'
}

func skipWS(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// skipString returns the index just past the string whose opening quote is
// at b[i], or -1 if the string is not terminated inside b.
func skipString(b []byte, i int) int {
	j := i + 1
	for {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return -1
		}
		k += j
		// The quote is escaped only if preceded by an odd run of backslashes.
		n := 0
		for m := k - 1; m > i && b[m] == '\\'; m-- {
			n++
		}
		if n%2 == 0 {
			return k + 1
		}
		j = k + 1
	}
}

// skipContainer returns the index just past the object or array that starts
// at b[i], or -1 if it is not closed inside b.
func skipContainer(b []byte, i int) int {
	depth := 0
	for i < len(b) {
		switch b[i] {
		case '"':
			j := skipString(b, i)
			if j < 0 {
				return -1
			}
			i = j
			continue
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
		i++
	}
	return -1
}

// skipValue returns the index just past the value that starts at b[i]
// (leading whitespace allowed), or -1 if there is none or it is incomplete.
// A scalar that runs to the end of b is accepted; callers only read scalars
// from inside containers that skipContainer proved closed.
func skipValue(b []byte, i int) int {
	i = skipWS(b, i)
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		return skipContainer(b, i)
	case ',', ':', '}', ']':
		return -1
	}
	j := i
	for j < len(b) && !isSpace(b[j]) && b[j] != ',' && b[j] != '}' && b[j] != ']' {
		j++
	}
	return j
}

// object iterates over the members of one JSON object.
type object struct {
	b    []byte
	i    int
	done bool
}

// openObject starts iterating the object that b holds (leading whitespace
// allowed). If b is not an object, the iterator yields nothing.
func openObject(b []byte) object {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return object{done: true}
	}
	return object{b: b, i: i + 1}
}

// next returns the next member: the raw key (without quotes, escapes left
// as they are) and the raw value. ok is false at the end of the object or
// at the first sign of malformed or truncated input.
func (o *object) next() (key, val []byte, ok bool) {
	if o.done {
		return nil, nil, false
	}
	b := o.b
	i := skipWS(b, o.i)
	if i < len(b) && b[i] == ',' {
		i = skipWS(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		o.done = true
		return nil, nil, false
	}
	ke := skipString(b, i)
	if ke < 0 {
		o.done = true
		return nil, nil, false
	}
	key = b[i+1 : ke-1]
	i = skipWS(b, ke)
	if i >= len(b) || b[i] != ':' {
		o.done = true
		return nil, nil, false
	}
	vs := skipWS(b, i+1)
	ve := skipValue(b, vs)
	if ve < 0 {
		o.done = true
		return nil, nil, false
	}
	o.i = ve
	return key, b[vs:ve], true
}

// firstKey returns the raw name of the first member of the object d
// starts with ('{' at d[0]), or nil. Many formats put a telling key first,
// so it is a cheap first look at an object's shape.
func firstKey(d []byte) []byte {
	i := skipWS(d, 1)
	if i >= len(d) || d[i] != '"' {
		return nil
	}
	e := skipString(d, i)
	if e < 0 {
		return nil
	}
	return d[i+1 : e-1]
}

// member returns the raw value of the first member named key in the object
// held by b, or nil.
func member(b []byte, key string) []byte {
	o := openObject(b)
	for {
		k, v, ok := o.next()
		if !ok {
			return nil
		}
		if string(k) == key {
			return v
		}
	}
}

// isObject reports whether v is a (complete) JSON object value.
func isObject(v []byte) bool {
	return len(v) >= 2 && v[0] == '{' && v[len(v)-1] == '}'
}

// intValue parses an integer value. A fractional part is dropped (some
// compatible servers write 12.0); exponents and non-numbers give ok=false.
func intValue(v []byte) (n int64, ok bool) {
	i := 0
	neg := false
	if i < len(v) && v[i] == '-' {
		neg = true
		i++
	}
	start := i
	for i < len(v) && v[i] >= '0' && v[i] <= '9' {
		if n > (1<<62)/10 {
			return 0, false // absurdly large: refuse rather than overflow
		}
		n = n*10 + int64(v[i]-'0')
		i++
	}
	if i == start {
		return 0, false
	}
	if i < len(v) && v[i] == '.' {
		i++
		for i < len(v) && v[i] >= '0' && v[i] <= '9' {
			i++
		}
	}
	if i != len(v) {
		return 0, false
	}
	if neg {
		n = -n
	}
	return n, true
}

// rawString returns the bytes between the quotes of a string value and
// whether they contain escapes. ok is false if v is not a string.
func rawString(v []byte) (s []byte, escaped, ok bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return nil, false, false
	}
	s = v[1 : len(v)-1]
	return s, bytes.IndexByte(s, '\\') >= 0, true
}

// appendString appends the decoded text of string value v to dst. Escaped
// strings are rare in the fields we read (model names, error types), so
// they take the slow, allocating path through encoding/json.
func appendString(dst, v []byte) ([]byte, bool) {
	s, escaped, ok := rawString(v)
	if !ok {
		return dst, false
	}
	if !escaped {
		return append(dst, s...), true
	}
	var str string
	if json.Unmarshal(v, &str) != nil {
		return dst, false
	}
	return append(dst, str...), true
}

// stringValue decodes a string value (allocating); "" if v is not a string.
func stringValue(v []byte) string {
	s, escaped, ok := rawString(v)
	if !ok {
		return ""
	}
	if !escaped {
		return string(s)
	}
	var str string
	if json.Unmarshal(v, &str) != nil {
		return ""
	}
	return str
}

// runeLen counts the characters of a string value as decoded: an escape is
// one character, a surrogate pair written as two \u escapes is one, and
// invalid UTF-8 bytes count one each. It does not allocate.
func runeLen(v []byte) int64 {
	s, _, ok := rawString(v)
	if !ok {
		return 0
	}
	return countRunes(s)
}

// countRunes counts the characters of the raw text of a JSON string (the
// bytes between its quotes, or the start of them when the string is cut
// off), as runeLen does.
func countRunes(s []byte) (n int64) {
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && s[i+1] == 'u':
			// \uXXXX; a high surrogate followed by another \uXXXX is one rune.
			if i+6 <= len(s) && isHighSurrogate(s[i+2:i+6]) &&
				i+12 <= len(s) && s[i+6] == '\\' && s[i+7] == 'u' {
				i += 12
			} else {
				i += 6
			}
		case c == '\\':
			i += 2
		case c < utf8.RuneSelf:
			i++
		default:
			_, size := utf8.DecodeRune(s[i:])
			i += size
		}
		n++
	}
	return n
}

func isHighSurrogate(hex []byte) bool {
	if len(hex) != 4 {
		return false
	}
	c := hex[0] | 0x20
	d := hex[1] | 0x20
	return c == 'd' && (d == '8' || d == '9' || d == 'a' || d == 'b')
}

// keyValue finds an occurrence of the quoted key k (e.g. `"usage"`) used
// as an object key anywhere in b and returns the offset of its value, or
// -1. Because a quote inside a JSON string is always escaped, `"k"`
// followed by a colon can only be a real key, so a plain byte search is
// safe; it cannot tell nesting levels apart, which callers accept where
// they use it only as a cheap gate or for keys that are unambiguous.
// from lets the caller continue after a previous hit.
func keyValue(b []byte, k string, from int) int {
	for from < len(b) {
		j := bytes.Index(b[from:], []byte(k))
		if j < 0 {
			return -1
		}
		j += from + len(k)
		i := skipWS(b, j)
		if i < len(b) && b[i] == ':' {
			return skipWS(b, i+1)
		}
		from = j
	}
	return -1
}

// hasObjectKey reports whether key k occurs with an object as its value.
// It is the cheap gate in front of the structured walks: `"usage":null`
// on every OpenAI chunk must not trigger one.
func hasObjectKey(b []byte, k string) bool {
	for i := 0; ; {
		i = keyValue(b, k, i)
		if i < 0 {
			return false
		}
		if i < len(b) && b[i] == '{' {
			return true
		}
	}
}

// hasNonEmptyString reports whether key k occurs with a non-empty string
// value (e.g. "content":"x" but not "content":"" or "content":null).
func hasNonEmptyString(b []byte, k string) bool {
	for i := 0; ; {
		i = keyValue(b, k, i)
		if i < 0 {
			return false
		}
		if i+1 < len(b) && b[i] == '"' && b[i+1] != '"' {
			return true
		}
	}
}

// hasNonEmptyArray reports whether key k occurs with a non-empty array.
func hasNonEmptyArray(b []byte, k string) bool {
	for i := 0; ; {
		i = keyValue(b, k, i)
		if i < 0 {
			return false
		}
		if i < len(b) && b[i] == '[' {
			if j := skipWS(b, i+1); j < len(b) && b[j] != ']' {
				return true
			}
		}
	}
}

// stringBytes returns the total length, as written between the quotes
// (escapes included), of the string values of key k (e.g. `"text"`)
// anywhere in b; 0 when there are none or all are empty. A string cut
// off by the end of b (a truncated event) counts up to there. It is
// hasNonEmptyString's count: n > 0 exactly when that reports true.
func stringBytes(b []byte, k string) (n int64) {
	for i := 0; ; {
		i = keyValue(b, k, i)
		if i < 0 {
			return n
		}
		if i < len(b) && b[i] == '"' {
			e := skipString(b, i)
			if e < 0 {
				return n + int64(len(b)-i-1)
			}
			n += int64(e - i - 2)
			i = e
		}
	}
}

// objectBytes returns the total length of the object values of key k
// anywhere in b, braces included; 0 when there are none. An object cut off
// by the end of b counts up to there.
func objectBytes(b []byte, k string) (n int64) {
	for i := 0; ; {
		i = keyValue(b, k, i)
		if i < 0 {
			return n
		}
		if i < len(b) && b[i] == '{' {
			e := skipContainer(b, i)
			if e < 0 {
				return n + int64(len(b)-i)
			}
			n += int64(e - i)
			i = e
		}
	}
}
