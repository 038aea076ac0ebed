package bench

import (
	"os"
	"testing"
)

// TestMain lets the test binary serve as the harness's children: the
// smoke test starts it again with RELAYBENCH_ROLE set.
func TestMain(m *testing.M) {
	if code, ok := RunChild(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}
