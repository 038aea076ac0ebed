package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// expandEnv replaces ${NAME} and ${NAME:-default} references in s with
// values from getenv; "$${" stands for a literal "${". The default applies
// when NAME is unset or empty. A lone "$" is kept as it is, so secrets
// containing "$" need no escaping unless "{" follows.
//
// Expansion runs on parsed values, so an expanded value is never read as
// YAML. Errors name the variable, never its value.
func expandEnv(s string, getenv func(string) (string, bool)) (string, bool, error) {
	if !strings.Contains(s, "${") {
		return s, false, nil
	}
	var b strings.Builder
	expanded := false
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			break
		}
		if i > 0 && s[i-1] == '$' {
			// "$${": a literal "${".
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			return "", false, fmt.Errorf("unterminated ${ reference (write $${ for a literal ${)")
		}
		ref := s[i+2 : i+end]
		s = s[i+end+1:]
		name, def, hasDef := strings.Cut(ref, ":-")
		if !validEnvName(name) {
			// The text between the braces is not quoted: it may be a
			// secret that was meant to be written as it is.
			return "", false, errors.New("a ${...} reference is not a valid environment variable name (letters, digits and _, not starting with a digit; write $${ for a literal ${)")
		}
		val, ok := getenv(name)
		switch {
		case (!ok || val == "") && hasDef:
			val = def
		case !ok:
			return "", false, fmt.Errorf("environment variable %s is not set (write ${%s:-default} to give a default)", name, name)
		}
		b.WriteString(val)
		expanded = true
	}
	return b.String(), expanded, nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || i > 0 && '0' <= c && c <= '9' {
			continue
		}
		return false
	}
	return true
}

// Sentinels stand in for ${…} references while the YAML is parsed: '{' and
// '}' are flow indicators, so an unquoted reference inside [ ] or { }
// would otherwise be a syntax error. The private-use characters are plain
// scalar characters that no configuration contains.
const (
	refOpen  = "\uE000"
	refClose = "\uE001"
)

// protectRefs replaces each ${…} reference (on one line) in src by a
// sentinel and returns the references, for restoreRefs. Line numbers are
// unchanged.
func protectRefs(src []byte) ([]byte, []string) {
	s := string(src)
	if !strings.Contains(s, "${") || strings.Contains(s, refOpen) || strings.Contains(s, refClose) {
		return src, nil
	}
	var b strings.Builder
	var refs []string
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			break
		}
		end := strings.IndexAny(s[i:], "}\n")
		if end < 0 || s[i+end] == '\n' {
			b.WriteString(s[:i+2])
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		b.WriteString(refOpen + strconv.Itoa(len(refs)) + refClose)
		refs = append(refs, s[i:i+end+1])
		s = s[i+end+1:]
	}
	b.WriteString(s)
	return []byte(b.String()), refs
}

// restoreRefs puts the references back in a parsed value.
func restoreRefs(s string, refs []string) string {
	if len(refs) == 0 || !strings.Contains(s, refOpen) {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, refOpen)
		if i < 0 {
			break
		}
		j := strings.Index(s[i:], refClose)
		if j < 0 {
			break
		}
		n, err := strconv.Atoi(s[i+len(refOpen) : i+j])
		if err != nil || n < 0 || n >= len(refs) {
			break
		}
		b.WriteString(s[:i])
		b.WriteString(refs[n])
		s = s[i+j+len(refClose):]
	}
	b.WriteString(s)
	return b.String()
}
