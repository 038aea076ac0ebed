package main

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/streamrelay/relay"
)

// countingStore counts the records written to it and fails the first
// failures batches.
type countingStore struct {
	mu       sync.Mutex
	failures int
	written  map[string]int // by request ID
	attempts int
}

func (s *countingStore) Record(ctx context.Context, rec relay.Record) error {
	return s.RecordBatch(ctx, []relay.Record{rec})
}

func (s *countingStore) RecordBatch(_ context.Context, recs []relay.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempts++
	if s.failures != 0 {
		if s.failures > 0 {
			s.failures--
		}
		return errors.New("store down")
	}
	if s.written == nil {
		s.written = map[string]int{}
	}
	for _, r := range recs {
		s.written[r.RequestID]++
	}
	return nil
}

func (s *countingStore) counts() (map[string]int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string]int{}
	for k, v := range s.written {
		m[k] = v
	}
	return m, s.attempts
}

// A batch that one store fails is retried on that store only: the others,
// which stored it, do not get it again; and the next batch goes to every
// store again.
func TestFanoutRetriesOnlyFailedStores(t *testing.T) {
	cases := []struct {
		name         string
		failures     int // of the failing store; -1: always
		wantFailing  int // times the failing store stored each record
		wantAttempts int // batch writes the failing store saw for batch one
	}{
		{"recovers on the second retry", 2, 1, 3},
		{"never recovers", -1, 0, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			good, bad, logs := &countingStore{}, &countingStore{failures: tc.failures}, &countingStore{}
			f := newFanout([]store{{"redis", good}, {"clickhouse", bad}, {"detailed_logs", logs}})
			a := relay.NewAsyncRecorder(f, relay.AsyncOptions{MaxRetries: 3, RetryBackoff: time.Millisecond, FlushInterval: time.Millisecond})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = a.Record(ctx, relay.Record{RequestID: "r1"})
			if err := a.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if _, n := bad.counts(); n != tc.wantAttempts {
				t.Errorf("the failing store saw %d writes of the batch, want %d", n, tc.wantAttempts)
			}
			for name, s := range map[string]*countingStore{"redis": good, "detailed_logs": logs} {
				if got, n := s.counts(); got["r1"] != 1 || n != 1 {
					t.Errorf("%s stored the record %d times in %d writes, want once", name, got["r1"], n)
				}
			}
			if got, _ := bad.counts(); got["r1"] != tc.wantFailing {
				t.Errorf("the failing store stored the record %d times, want %d", got["r1"], tc.wantFailing)
			}
			bad.mu.Lock()
			bad.failures = 0
			bad.mu.Unlock()
			// The next batch, possibly in the same buffer, is a new batch.
			_ = a.Record(ctx, relay.Record{RequestID: "r2"})
			if err := a.Close(ctx); err != nil {
				t.Fatal(err)
			}
			for name, s := range map[string]*countingStore{"redis": good, "clickhouse": bad, "detailed_logs": logs} {
				if got, _ := s.counts(); got["r2"] != 1 {
					t.Errorf("%s stored the second record %d times, want once", name, got["r2"])
				}
			}
		})
	}
}
