package provider

import (
	"encoding/json"
	"testing"
)

func TestSkipValue(t *testing.T) {
	tests := []struct {
		in   string
		want int // index past the value, -1 if incomplete
	}{
		{`"abc"`, 5},
		{`"a\"b"x`, 6},
		{`"a\\"x`, 5},
		{`"a\\\"b"`, 8},
		{`"abc`, -1},
		{`"a\"`, -1},
		{`{"a":[1,{"b":"}"}]} tail`, 19},
		{`{"a":[1,2}`, -1},
		{`[1, 2`, -1},
		{`  123,`, 5},
		{`true}`, 4},
		{`null`, 4},
		{``, -1},
		{`,`, -1},
	}
	for _, tt := range tests {
		if got := skipValue([]byte(tt.in), 0); got != tt.want {
			t.Errorf("skipValue(%q) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func TestObjectIteration(t *testing.T) {
	tests := []struct {
		in   string
		want []string // key=value
	}{
		{`{"a":1,"b":"x","c":{"d":[1,2]},"e":null}`, []string{`a=1`, `b="x"`, `c={"d":[1,2]}`, `e=null`}},
		{" {\n \"a\" : 1 ,\t\"b\":true }  ", []string{`a=1`, `b=true`}},
		{`{"a\"q":1}`, []string{`a\"q=1`}},
		{`{}`, nil},
		{`{"a":1,"b":{"c":`, []string{`a=1`}}, // cut: stop at the incomplete member
		{`{"a" 1}`, nil},
		{`[1]`, nil},
		{``, nil},
	}
	for _, tt := range tests {
		var got []string
		o := openObject([]byte(tt.in))
		for {
			k, v, ok := o.next()
			if !ok {
				break
			}
			got = append(got, string(k)+"="+string(v))
		}
		if len(got) != len(tt.want) {
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
			}
		}
	}
}

func TestIntValue(t *testing.T) {
	tests := []struct {
		in   string
		n    int64
		isOK bool
	}{
		{"0", 0, true},
		{"1234", 1234, true},
		{"-5", -5, true},
		{"12.0", 12, true},
		{"12.9", 12, true},
		{"1e3", 0, false},
		{"null", 0, false},
		{`"12"`, 0, false},
		{"", 0, false},
		{"-", 0, false},
		{"99999999999999999999999", 0, false},
	}
	for _, tt := range tests {
		n, ok := intValue([]byte(tt.in))
		if n != tt.n || ok != tt.isOK {
			t.Errorf("intValue(%q) = %d, %v; want %d, %v", tt.in, n, ok, tt.n, tt.isOK)
		}
	}
}

func TestRuneLen(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{`""`, 0},
		{`"abc"`, 3},
		{`"a\nb\"c"`, 5},
		{`"\u00e9t\u00e9"`, 3},
		{`"\ud83d\ude00!"`, 2},
		{`"😀é"`, 2},
		{`"\\u0041"`, 6}, // escaped backslash, then "u0041"
		{`5`, 0},
	}
	for _, tt := range tests {
		if got := runeLen([]byte(tt.in)); got != tt.want {
			t.Errorf("runeLen(%s) = %d, want %d", tt.in, got, tt.want)
		}
		// Cross-check with encoding/json where the input is a string.
		var s string
		if json.Unmarshal([]byte(tt.in), &s) == nil {
			if n := int64(len([]rune(s))); n != tt.want {
				t.Errorf("test table wrong for %s: json says %d", tt.in, n)
			}
		}
	}
}

func TestKeyChecks(t *testing.T) {
	d := []byte(`{"a":{"content":""},"b":{"content" : "x"},"t":"\"content\":\"y\"","u":null,"v":{"usage":{}}}`)
	if !hasNonEmptyString(d, `"content"`) {
		t.Error("second content occurrence not found")
	}
	if hasNonEmptyString([]byte(`{"t":"\"content\":\"y\""}`), `"content"`) {
		t.Error("key inside an escaped string matched")
	}
	if !hasObjectKey(d, `"usage"`) || hasObjectKey([]byte(`{"usage":null}`), `"usage"`) {
		t.Error("hasObjectKey")
	}
	if !hasNonEmptyArray([]byte(`{"x":[],"x":[ 1]}`), `"x"`) || hasNonEmptyArray([]byte(`{"x":[ ]}`), `"x"`) {
		t.Error("hasNonEmptyArray")
	}
}
