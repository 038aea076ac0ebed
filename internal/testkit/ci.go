// Package testkit holds what every module's tests share: the rule for
// "running in CI" and bounded waits. It is internal to the repository (the
// nested modules' import paths sit under the root's, so they may import
// it) and is imported only by _test.go files.
package testkit

import (
	"os"
	"testing"
)

// MissingPrefix starts the message of every test skipped, or failed in CI,
// because a service or an external file it needs is missing. .ci/run fails
// when a skip carries it.
const MissingPrefix = "service missing: "

// InCI reports whether the tests run in CI: the CI environment variable is
// set to anything but "", "false" or "0". CI=true, CI=1 and CI=yes all
// count, so every module decides the same way.
func InCI() bool {
	switch os.Getenv("CI") {
	case "", "false", "0":
		return false
	}
	return true
}

// Missing fails the test in CI, where a missing service is a broken setup,
// and skips it elsewhere. The message is prefixed with MissingPrefix.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf(MissingPrefix+format+" (required in CI: CI=%q)", append(args, os.Getenv("CI"))...)
		return
	}
	t.Skipf(MissingPrefix+format, args...)
}
