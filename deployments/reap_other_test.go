//go:build !linux

package deployments

import "os/exec"

// dieWithParent does nothing here: only Linux can tie a child's life to
// its parent's, elsewhere the test's cleanup alone kills Prometheus.
func dieWithParent(*exec.Cmd) {}
