package testkit

import (
	"sync"
	"testing"
	"time"
)

func TestRecvReturnsWhatArrives(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	if got := Recv(t, ch, "nothing arrived"); got != 7 {
		t.Errorf("Recv = %d, want 7", got)
	}
	Send(t, ch, 8, "no room")
	if got := RecvWithin(t, ch, time.Second, "nothing arrived"); got != 8 {
		t.Errorf("RecvWithin = %d, want 8", got)
	}
	var wg sync.WaitGroup
	wg.Go(func() {})
	Wait(t, wg.Wait, "the goroutine did not end")
	if err := Context(t).Err(); err != nil {
		t.Errorf("a fresh Context is done: %v", err)
	}
	if _, ok := Context(t).Deadline(); !ok {
		t.Error("Context has no deadline")
	}
}

// TestRecvFailsNamingWhatDidNotHappen: a wait that times out fails the
// test with its message instead of blocking.
func TestRecvFailsNamingWhatDidNotHappen(t *testing.T) {
	r := &recordingTB{}
	start := time.Now()
	got := RecvWithin(r, make(chan error), 10*time.Millisecond, "the upstream was not cancelled")
	if got != nil || r.fatal != "timed out after 10ms: the upstream was not cancelled" {
		t.Errorf("got %v, fatal %q", got, r.fatal)
	}
	if took := time.Since(start); took > Timeout {
		t.Errorf("took %v", took)
	}
	r = &recordingTB{}
	block := make(chan struct{})
	defer close(block) // ends the abandoned wait
	WaitWithin(r, func() { <-block }, 10*time.Millisecond, "the workers did not finish")
	if r.fatal != "timed out after 10ms: the workers did not finish" {
		t.Errorf("fatal %q", r.fatal)
	}
}
