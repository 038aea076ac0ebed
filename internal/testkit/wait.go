package testkit

import (
	"context"
	"testing"
	"time"
)

// Timeout bounds one wait of a test for something that should happen at
// once: a regression then fails in seconds, naming what did not happen,
// instead of hanging until go test's own timeout loses the package's
// results. Waits for something slow by design take a deadline of their own.
const Timeout = 10 * time.Second

// Recv receives from ch within Timeout, or fails the test with what.
func Recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	return RecvWithin(t, ch, Timeout, what)
}

// RecvWithin receives from ch within d, or fails the test with what.
func RecvWithin[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %v: %s", d, what)
		var zero T
		return zero // not reached: Fatalf ends the test's goroutine
	}
}

// Wait runs a blocking wait, such as a sync.WaitGroup's Wait, and fails the
// test with what unless it returns within Timeout. On a timeout the wait
// goes on in a goroutine of its own; the test has failed by then.
func Wait(t testing.TB, wait func(), what string) {
	t.Helper()
	WaitWithin(t, wait, Timeout, what)
}

// WaitWithin is Wait with a deadline of d.
func WaitWithin(t testing.TB, wait func(), d time.Duration, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		wait()
	}()
	RecvWithin(t, done, d, what)
}

// Send sends v on ch within Timeout, or fails the test with what.
func Send[T any](t testing.TB, ch chan<- T, v T, what string) {
	t.Helper()
	timer := time.NewTimer(Timeout)
	defer timer.Stop()
	select {
	case ch <- v:
	case <-timer.C:
		t.Fatalf("timed out after %v: %s", Timeout, what)
	}
}

// Context returns a context that ends after Timeout, or when the test
// ends, for calls that wait until their context ends (Flush, Shutdown,
// Close, requests).
func Context(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	t.Cleanup(cancel)
	return ctx
}
