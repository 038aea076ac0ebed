//go:build race

package provider

// raceEnabled: allocation counts are not asserted under the race
// detector, as in the root package.
const raceEnabled = true
