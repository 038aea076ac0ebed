package relayotel

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestCacheBounded: past cacheEntries entries, or with a key longer than
// cacheKeyLen, a value is not kept, so clients naming ever new (or huge)
// models cannot grow the hooks' memory.
func TestCacheBounded(t *testing.T) {
	var c cache[nameKey, string]
	for i := range cacheEntries + 100 {
		m := "m" + strconv.Itoa(i)
		c.put(nameKey{"chat", m}, "chat "+m, len(m))
	}
	assert.EqualValues(t, cacheEntries, c.n.Load())
	n := 0
	c.m.Range(func(any, any) bool { n++; return true })
	assert.Equal(t, cacheEntries, n)
	v, ok := c.get(nameKey{"chat", "m0"})
	assert.True(t, ok)
	assert.Equal(t, "chat m0", v)
	_, ok = c.get(nameKey{"chat", "m" + strconv.Itoa(cacheEntries)})
	assert.False(t, ok, "the first past the bound was not kept")

	var long cache[nameKey, string]
	m := strings.Repeat("x", cacheKeyLen+1)
	long.put(nameKey{"chat", m}, "chat "+m, len(m))
	_, ok = long.get(nameKey{"chat", m})
	assert.False(t, ok, "a key too long is not kept")
	assert.EqualValues(t, 0, long.n.Load())
}

// TestHeaderCarrier: the carrier writes the W3C keys, and any other, in
// their canonical form, as http.Header.Set does.
func TestHeaderCarrier(t *testing.T) {
	h := http.Header{"Authorization": {"Bearer secret"}}
	c := headerCarrier(h)
	for _, k := range []string{"traceparent", "tracestate", "baggage", "x-custom-key"} {
		c.Set(k, "v-"+k)
		assert.Equal(t, "v-"+k, h.Get(k), k)
		assert.Equal(t, "v-"+k, c.Get(k), k)
	}
	c.Set("traceparent", "again")
	assert.Equal(t, []string{"again"}, h.Values("Traceparent"), "Set replaces")
	assert.ElementsMatch(t, []string{"Authorization", "Traceparent", "Tracestate", "Baggage", "X-Custom-Key"}, c.Keys())
}

// TestCacheConcurrent: goroutines filling one cache past its bound keep
// it bounded, and every value found is its own key's (run with -race).
func TestCacheConcurrent(t *testing.T) {
	var c cache[nameKey, string]
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range cacheEntries {
				m := strconv.Itoa(i % (cacheEntries/2 + g*100))
				c.put(nameKey{"chat", m}, "chat "+m, len(m))
				if v, ok := c.get(nameKey{"chat", m}); ok && v != "chat "+m {
					t.Errorf("%q holds %q", m, v)
				}
			}
		}()
	}
	wg.Wait()
	assert.LessOrEqual(t, c.n.Load(), int32(cacheEntries))
	n := 0
	c.m.Range(func(any, any) bool { n++; return true })
	assert.Equal(t, int(c.n.Load()), n, "the count is the entries'")
}
