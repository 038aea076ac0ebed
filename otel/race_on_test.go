//go:build race

package relayotel_test

// raceEnabled: the race detector is on (sync.Pool then drops a quarter of
// what is put in it, so pooled buffers are allocated again now and then).
const raceEnabled = true
