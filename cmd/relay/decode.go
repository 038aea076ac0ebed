package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// The configuration is parsed by go.yaml.in/yaml/v3 into a node tree (which
// carries line numbers) and decoded from it by the walker below rather than
// by Node.Decode, for three reasons: ${VAR} references are expanded inside
// parsed values, so an expanded value needs no YAML quoting; the walker is
// strict at every depth (Node.Decode has no KnownFields, and custom
// unmarshalers lose it), so an unknown key anywhere is refused with its
// line; and yaml's own type errors quote the offending value, which may be
// a secret, while the walker's messages never quote a value.

// maxNodes bounds the nodes visited, so that aliases cannot expand a small
// file into an enormous one.
const maxNodes = 100000

// maxProblems bounds how many problems one error lists.
const maxProblems = 20

// shorthand is implemented by structs that may also be written as a single
// scalar (a client key as a bare string).
type shorthand interface {
	fromScalar(s string)
}

// problems collects configuration errors, each with its line.
type problems struct {
	file string
	list []problem
	more int
}

type problem struct {
	line int
	msg  string
}

func (p *problems) add(line int, path, format string, args ...any) {
	if len(p.list) >= maxProblems {
		p.more++
		return
	}
	var b strings.Builder
	b.WriteString(p.file)
	if line > 0 {
		b.WriteString(":" + strconv.Itoa(line))
	}
	b.WriteString(": ")
	if path != "" {
		b.WriteString(path + ": ")
	}
	fmt.Fprintf(&b, format, args...)
	p.list = append(p.list, problem{line, b.String()})
}

// err lists the problems in the order of their lines.
func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	sort.SliceStable(p.list, func(i, j int) bool { return p.list[i].line < p.list[j].line })
	msgs := make([]string, len(p.list))
	for i, q := range p.list {
		msgs[i] = q.msg
	}
	msg := strings.Join(msgs, "\n")
	if p.more > 0 {
		msg += fmt.Sprintf("\n(and %d more)", p.more)
	}
	return errors.New(msg)
}

// decoder walks a node tree into a value.
type decoder struct {
	problems
	getenv  func(string) (string, bool)
	refs    []string // ${…} references hidden from the parser (protectRefs)
	lines   map[string]int
	fromEnv map[string]bool
	visits  int
}

// decodeYAML decodes src into c strictly: unknown keys, duplicated keys and
// values of the wrong type are refused, each with its line.
func decodeYAML(src []byte, name string, c *fileConfig, getenv func(string) (string, bool)) error {
	src, refs := protectRefs(src)
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return fmt.Errorf("%s: %s", name, yamlError(err, src))
	}
	d := &decoder{problems: problems{file: name}, getenv: getenv, refs: refs,
		lines: map[string]int{}, fromEnv: map[string]bool{}}
	if len(doc.Content) > 0 {
		d.value(doc.Content[0], reflect.ValueOf(c).Elem(), "")
	}
	c.lines, c.fromEnv = d.lines, d.fromEnv
	return d.err()
}

// value decodes node n into v, whose key path is path.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	d.visits++
	if d.visits > maxNodes {
		if d.visits == maxNodes+1 {
			d.add(n.Line, path, "the document is too large (more than %d values, aliases expanded)", maxNodes)
		}
		return
	}
	if path != "" {
		if _, seen := d.lines[path]; !seen || n.Kind != yaml.AliasNode {
			d.lines[path] = n.Line
		}
	}
	if n.Kind == yaml.AliasNode {
		d.value(n.Alias, v, path)
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		// "key:" with nothing after it: the key is present with defaults.
		if v.Kind() == reflect.Pointer && v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return
	}
	if v.Type() == reflect.TypeFor[duration]() {
		d.duration(n, v, path, false)
		return
	}
	if v.Type() == reflect.TypeFor[seconds]() {
		d.duration(n, v, path, true)
		return
	}
	if v.Type() == reflect.TypeFor[money]() {
		d.money(n, v, path)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.value(n, v.Elem(), path)
	case reflect.Struct:
		if sh, ok := v.Addr().Interface().(shorthand); ok && n.Kind == yaml.ScalarNode {
			if s, ok := d.scalar(n, path); ok {
				sh.fromScalar(s)
			}
			return
		}
		if n.Kind != yaml.MappingNode {
			d.add(n.Line, path, "want a mapping of keys, not %s", describe(n))
			return
		}
		d.mapping(n, v, path)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.add(n.Line, path, "want a list, not %s", describe(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.value(item, s.Index(i), path+"["+strconv.Itoa(i)+"]")
		}
		v.Set(s)
	case reflect.Map:
		d.stringMap(n, v, path)
	case reflect.String:
		if s, ok := d.scalar(n, path); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		if s, ok := d.scalar(n, path); ok {
			switch strings.ToLower(s) {
			case "true":
				v.SetBool(true)
			case "false":
				v.SetBool(false)
			default:
				d.add(n.Line, path, "want true or false")
			}
		}
	case reflect.Int, reflect.Int64:
		if s, ok := d.scalar(n, path); ok {
			i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 64)
			if err != nil || v.OverflowInt(i) {
				d.add(n.Line, path, "want a whole number")
				return
			}
			v.SetInt(i)
		}
	case reflect.Float64:
		if s, ok := d.scalar(n, path); ok {
			f, err := strconv.ParseFloat(strings.ReplaceAll(s, "_", ""), 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				d.add(n.Line, path, "want a number")
				return
			}
			v.SetFloat(f)
		}
	default:
		// Only a programming error in fileConfig gets here.
		panic("config: unsupported field type " + v.Type().String())
	}
}

// mapping decodes a mapping node into a struct, refusing unknown and
// duplicated keys.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	fields := map[string]int{}
	t := v.Type()
	for i := range t.NumField() {
		if tag := t.Field(i).Tag.Get("yaml"); tag != "" {
			fields[tag] = i
		}
	}
	seen := map[string]int{}
	for _, p := range d.pairs(n, path) {
		k, val := p[0], p[1]
		if k.Kind != yaml.ScalarNode {
			d.add(k.Line, path, "a key must be a plain name")
			continue
		}
		key := restoreRefs(k.Value, d.refs)
		name := keyName(k, key, secretKeys(path) || !keyLike(key))
		if first, dup := seen[key]; dup && p[2] == nil {
			d.add(k.Line, path, "key %s appears twice (first at line %d)", name, first)
			continue
		}
		if p[2] == nil {
			seen[key] = k.Line
		}
		i, ok := fields[key]
		if !ok {
			where := path
			if where == "" {
				where = "the top level"
			}
			d.add(k.Line, "", "unknown key %s in %s (valid keys: %s)", name, where, validKeys(fields))
			continue
		}
		d.value(val, v.Field(i), join(path, key))
	}
}

// pairs lists a mapping's key/value pairs, those of merged mappings ("<<:
// *anchor") first so that the mapping's own keys override them. The third
// element is non-nil for merged pairs.
func (d *decoder) pairs(n *yaml.Node, path string) [][3]*yaml.Node {
	var merged, own [][3]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			srcs := []*yaml.Node{val}
			if val.Kind == yaml.SequenceNode {
				srcs = val.Content
			}
			for _, s := range srcs {
				for s.Kind == yaml.AliasNode {
					s = s.Alias
				}
				if s.Kind != yaml.MappingNode {
					d.add(k.Line, path, "a merge (<<) must name a mapping")
					continue
				}
				for _, p := range d.pairs(s, path) {
					merged = append(merged, [3]*yaml.Node{p[0], p[1], k})
				}
			}
			continue
		}
		own = append(own, [3]*yaml.Node{k, val, nil})
	}
	return append(merged, own...)
}

// stringMap decodes a mapping of strings (headers, labels).
func (d *decoder) stringMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.add(n.Line, path, "want a mapping, not %s", describe(n))
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	seen := map[string]int{}
	for _, p := range d.pairs(n, path) {
		k, val := p[0], p[1]
		if k.Kind != yaml.ScalarNode {
			d.add(k.Line, path, "a key must be a plain name")
			continue
		}
		key := restoreRefs(k.Value, d.refs)
		secret := secretKeys(path)
		if first, dup := seen[key]; dup && p[2] == nil {
			d.add(k.Line, path, "key %s appears twice (first at line %d)", keyName(k, key, secret), first)
			continue
		}
		if p[2] == nil {
			seen[key] = k.Line
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		sub := join(path, key)
		if secret {
			sub = path + "[" + keyName(k, key, true) + "]"
		}
		d.value(val, elem, sub)
		m.SetMapIndex(reflect.ValueOf(key), elem)
	}
	v.Set(m)
}

// scalar returns a scalar's value with ${VAR} references expanded.
func (d *decoder) scalar(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.add(n.Line, path, "want a single value, not %s", describe(n))
		return "", false
	}
	s, expanded, err := expandEnv(restoreRefs(n.Value, d.refs), d.getenv)
	if err != nil {
		d.add(n.Line, path, "%v", err)
		return "", false
	}
	if expanded {
		d.fromEnv[path] = true
	}
	return s, true
}

// duration decodes a Go duration ("90s", "1m30s"); a bare 0 is allowed,
// and with bareSeconds any bare whole number, read as seconds.
func (d *decoder) duration(n *yaml.Node, v reflect.Value, path string, bareSeconds bool) {
	s, ok := d.scalar(n, path)
	if !ok {
		return
	}
	if s == "0" {
		v.SetInt(0)
		return
	}
	if bareSeconds {
		if secs, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 10, 64); err == nil {
			if secs < 0 || secs > int64(math.MaxInt64/time.Second) {
				d.add(n.Line, path, "want a positive number of seconds or a duration such as 1h")
				return
			}
			v.SetInt(secs * int64(time.Second))
			return
		}
	}
	t, err := time.ParseDuration(s)
	if err != nil {
		if bareSeconds {
			d.add(n.Line, path, "want a number of seconds or a duration with a unit, such as 3600 or 1h")
		} else {
			d.add(n.Line, path, "want a duration with a unit, such as 300s, 5m or 1m30s")
		}
		return
	}
	if t < 0 {
		d.add(n.Line, path, "a duration cannot be negative")
		return
	}
	v.SetInt(int64(t))
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	default:
		return "a single value"
	}
}

func validKeys(fields map[string]int) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// printable shortens a key for a message and drops control characters.
func printable(s string) string {
	const most = 40
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > most {
		s = s[:most] + "…"
	}
	return s
}

// secretKeys reports whether a key of the mapping at path may be a secret
// put in the wrong place: a client key written as a mapping's key ("-
// sk-…: x") or as a label's name, or an upstream's key beside its keys
// list. Such keys are named in errors by their line and column only.
func secretKeys(path string) bool { return secretKeyPaths.MatchString(path) }

var secretKeyPaths = regexp.MustCompile(`^auth\.api_keys\[\d+\](\.labels)?$|^routes\[\d+\]\.upstreams\[\d+\]$`)

// keyLike reports whether an unknown key looks like a misspelt
// configuration key (the schema's are short snake_case names), so that it
// may be quoted. Anything else — a password or API key pasted where a key
// belongs, beside storage.redis.password or in a route — is named by its
// position only.
func keyLike(key string) bool {
	if len(key) == 0 || len(key) > 32 {
		return false
	}
	digits := 0
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c >= 'a' && c <= 'z', c == '_':
		case c >= '0' && c <= '9':
			digits++
		default:
			return false
		}
	}
	return digits <= 2
}

// keyName names a mapping's key in a message: quoted, or by its position
// when it may be a secret.
func keyName(k *yaml.Node, key string, secret bool) string {
	if secret {
		return fmt.Sprintf("at line %d, column %d", k.Line, k.Column)
	}
	return strconv.Quote(printable(key))
}

// yamlAnchor matches the anchor names yaml quotes in its errors: an alias
// such as "- *sk-…" in a list of client keys would otherwise be echoed.
var yamlAnchor = regexp.MustCompile(`(unknown )?anchor '(.*)' (referenced|value contains itself)`)

// yamlError is a parse error without yaml's prefix and without any anchor
// name; syntax errors otherwise name a line and a construct, not a value.
// The line of an unknown alias, which yaml does not give, is found in src.
func yamlError(err error, src []byte) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	m := yamlAnchor.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	repl := "an alias names an anchor that is not defined"
	if m[3] != "referenced" {
		repl = "an anchor's value contains itself"
	}
	if line := aliasLine(src, m[2]); line > 0 && !strings.HasPrefix(msg, "line ") {
		repl = "line " + strconv.Itoa(line) + ": " + repl
	}
	return strings.Replace(msg, m[0], repl, 1)
}

// aliasLine is the line of the first "*name" in src, or 0.
func aliasLine(src []byte, name string) int {
	i := bytes.Index(src, []byte("*"+name))
	if i < 0 {
		return 0
	}
	return bytes.Count(src[:i], []byte("\n")) + 1
}
