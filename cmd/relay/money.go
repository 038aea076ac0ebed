package main

import (
	"errors"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// money is an amount of currency in micro-units (1,000,000 to the unit),
// written in the file as a decimal of currency units ("10.00", "0.5",
// 25) and parsed exactly, never through a float.
type money int64

// maxMoney is the largest amount: 2^53 micro-units, where the relay's
// spend arithmetic stays exact.
const maxMoney = 1 << 53

// parseMoney reads a non-negative decimal with at most six decimal places
// as micro-units.
func parseMoney(s string) (int64, error) {
	whole, frac, dot := strings.Cut(s, ".")
	if whole == "" && (!dot || frac == "") || !digits(whole) || dot && (frac == "" || !digits(frac)) {
		return 0, errors.New("want an amount of currency units such as 10, 10.00 or 0.005")
	}
	if len(frac) > 6 {
		return 0, errors.New("at most six decimal places (micro-units)")
	}
	var v int64
	for _, c := range whole + frac + strings.Repeat("0", 6-len(frac)) {
		v = v*10 + int64(c-'0')
		if v > maxMoney {
			return 0, errors.New("too large (at most 9007199254.740992)")
		}
	}
	return v, nil
}

func digits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// money decodes a money field.
func (d *decoder) money(n *yaml.Node, v reflect.Value, path string) {
	s, ok := d.scalar(n, path)
	if !ok {
		return
	}
	m, err := parseMoney(s)
	if err != nil {
		d.add(n.Line, path, "%s", err.Error())
		return
	}
	v.SetInt(m)
}
