package relayclickhouse

import (
	"maps"
	"math"
	"slices"
	"time"

	"github.com/streamrelay/relay"
)

// columns holds a batch of records column by column, in the shapes the
// driver appends without reflection per value.
type columns struct {
	date, start                                     []time.Time
	startUS                                         []uint32
	requestID, clientRequestID                      []string
	tenant, keyID, route, upstream                  []string
	method, path, model, responseModel              []string
	provider, kind                                  []string
	stream                                          []uint8
	status                                          []uint16
	errorType                                       []string
	bytesIn, bytesOut, events                       []uint64
	ttfbUS, ttftUS, durationUS                      []uint64
	clientGone                                      []uint8
	inputTokens, outputTokens, cachedInput, reasons []uint64
	cacheCreation, audioInput, audioOutput          []uint64
	estimated                                       []uint8
	costKnown                                       []uint8
	costMicros                                      []int64
	costCurrency, costPriceVersion                  []string
	attempts                                        []uint16
	attemptUpstreams, attemptErrorTypes             [][]string // Record.AttemptLog, parallel arrays
	attemptStatuses                                 [][]uint16
	characters                                      []uint64
	labelKeys, labelValues                          [][]string
	truncated                                       []uint8
	framesIn, framesOut                             []uint64 // WebSocket sessions
	closeCode                                       []uint16
	closedBy                                        []string
}

// toColumns converts recs. Values a column cannot hold are clamped rather
// than rejected, because one odd record must not fail the whole batch:
// negative counts and durations become 0, times before 1970 become the
// epoch and times after 2105 the last second of 2105.
func toColumns(recs []relay.Record) *columns {
	n := len(recs)
	c := &columns{
		date: make([]time.Time, 0, n), start: make([]time.Time, 0, n), startUS: make([]uint32, 0, n),
		requestID: make([]string, 0, n), clientRequestID: make([]string, 0, n), tenant: make([]string, 0, n), keyID: make([]string, 0, n),
		route: make([]string, 0, n), upstream: make([]string, 0, n), method: make([]string, 0, n),
		path: make([]string, 0, n), model: make([]string, 0, n), responseModel: make([]string, 0, n),
		provider: make([]string, 0, n), kind: make([]string, 0, n), stream: make([]uint8, 0, n),
		status: make([]uint16, 0, n), errorType: make([]string, 0, n), bytesIn: make([]uint64, 0, n),
		bytesOut: make([]uint64, 0, n), events: make([]uint64, 0, n), ttfbUS: make([]uint64, 0, n),
		ttftUS: make([]uint64, 0, n), durationUS: make([]uint64, 0, n), clientGone: make([]uint8, 0, n),
		inputTokens: make([]uint64, 0, n), outputTokens: make([]uint64, 0, n),
		cachedInput: make([]uint64, 0, n), reasons: make([]uint64, 0, n), cacheCreation: make([]uint64, 0, n),
		audioInput: make([]uint64, 0, n), audioOutput: make([]uint64, 0, n), estimated: make([]uint8, 0, n),
		costKnown: make([]uint8, 0, n), costMicros: make([]int64, 0, n),
		costCurrency: make([]string, 0, n), costPriceVersion: make([]string, 0, n),
		attempts:         make([]uint16, 0, n),
		attemptUpstreams: make([][]string, 0, n), attemptStatuses: make([][]uint16, 0, n),
		attemptErrorTypes: make([][]string, 0, n),
		characters:        make([]uint64, 0, n), labelKeys: make([][]string, 0, n), labelValues: make([][]string, 0, n),
		truncated: make([]uint8, 0, n),
		framesIn:  make([]uint64, 0, n), framesOut: make([]uint64, 0, n), closeCode: make([]uint16, 0, n),
		closedBy: make([]string, 0, n),
	}
	for i := range recs {
		r := &recs[i]
		start := clampTime(r.Start)
		c.date = append(c.date, time.Date(start.Year(), start.Month(), start.Day(), 0, 0, 0, 0, time.UTC))
		c.start = append(c.start, start.Truncate(time.Second))
		c.startUS = append(c.startUS, uint32(start.Nanosecond()/1000))
		c.requestID = append(c.requestID, r.RequestID)
		c.clientRequestID = append(c.clientRequestID, r.ClientRequestID)
		c.tenant = append(c.tenant, r.Tenant)
		c.keyID = append(c.keyID, r.KeyID)
		c.route = append(c.route, r.Route)
		c.upstream = append(c.upstream, r.Upstream)
		c.method = append(c.method, r.Method)
		c.path = append(c.path, r.Path)
		c.model = append(c.model, r.Model)
		c.responseModel = append(c.responseModel, r.ResponseModel)
		c.provider = append(c.provider, string(r.Provider))
		c.kind = append(c.kind, string(r.Kind))
		c.stream = append(c.stream, flag(r.Stream))
		c.status = append(c.status, uint16(min(max(r.Status, 0), math.MaxUint16)))
		c.errorType = append(c.errorType, string(r.ErrorType))
		c.bytesIn = append(c.bytesIn, unsigned(r.BytesIn))
		c.bytesOut = append(c.bytesOut, unsigned(r.BytesOut))
		c.events = append(c.events, unsigned(r.Events))
		c.ttfbUS = append(c.ttfbUS, unsigned(r.TTFB.Microseconds()))
		c.ttftUS = append(c.ttftUS, unsigned(r.TTFT.Microseconds()))
		c.durationUS = append(c.durationUS, unsigned(r.Duration.Microseconds()))
		c.clientGone = append(c.clientGone, flag(r.ClientGone))
		c.inputTokens = append(c.inputTokens, unsigned(r.Usage.InputTokens))
		c.outputTokens = append(c.outputTokens, unsigned(r.Usage.OutputTokens))
		c.cachedInput = append(c.cachedInput, unsigned(r.Usage.CachedInputTokens))
		c.cacheCreation = append(c.cacheCreation, unsigned(r.Usage.CacheCreationInputTokens))
		c.reasons = append(c.reasons, unsigned(r.Usage.ReasoningTokens))
		c.audioInput = append(c.audioInput, unsigned(r.Usage.AudioInputTokens))
		c.audioOutput = append(c.audioOutput, unsigned(r.Usage.AudioOutputTokens))
		c.estimated = append(c.estimated, flag(r.Usage.Estimated))
		c.costKnown = append(c.costKnown, flag(r.Cost.Known))
		c.costMicros = append(c.costMicros, int64(r.Cost.Amount))
		c.costCurrency = append(c.costCurrency, r.Cost.Currency)
		c.costPriceVersion = append(c.costPriceVersion, r.Cost.PriceVersion)
		c.attempts = append(c.attempts, uint16(min(max(r.Attempts, 0), math.MaxUint16)))
		ups, statuses, types := make([]string, len(r.AttemptLog)), make([]uint16, len(r.AttemptLog)), make([]string, len(r.AttemptLog))
		for j, at := range r.AttemptLog {
			ups[j], types[j] = at.Upstream, string(at.ErrorType)
			statuses[j] = uint16(min(max(at.Status, 0), math.MaxUint16))
		}
		c.attemptUpstreams = append(c.attemptUpstreams, ups)
		c.attemptStatuses = append(c.attemptStatuses, statuses)
		c.attemptErrorTypes = append(c.attemptErrorTypes, types)
		c.characters = append(c.characters, unsigned(r.Characters))
		// Sorted keys make equal label sets store equal arrays.
		keys := slices.Sorted(maps.Keys(r.Labels))
		values := make([]string, len(keys))
		for j, k := range keys {
			values[j] = r.Labels[k]
		}
		c.labelKeys = append(c.labelKeys, keys)
		c.labelValues = append(c.labelValues, values)
		c.truncated = append(c.truncated, flag(r.Truncated))
		c.framesIn = append(c.framesIn, unsigned(r.FramesIn))
		c.framesOut = append(c.framesOut, unsigned(r.FramesOut))
		c.closeCode = append(c.closeCode, uint16(min(max(r.CloseCode, 0), math.MaxUint16)))
		c.closedBy = append(c.closedBy, r.ClosedBy)
	}
	return c
}

// values returns the columns in the order of insertColumns.
func (c *columns) values() []any {
	return []any{
		c.date, c.start, c.startUS, c.requestID, c.clientRequestID, c.tenant, c.keyID, c.route, c.upstream,
		c.method, c.path, c.model, c.responseModel, c.provider, c.kind, c.stream, c.status, c.errorType, c.bytesIn,
		c.bytesOut, c.events, c.ttfbUS, c.ttftUS, c.durationUS, c.clientGone, c.inputTokens, c.outputTokens,
		c.cachedInput, c.cacheCreation, c.reasons, c.audioInput, c.audioOutput, c.estimated,
		c.costKnown, c.costMicros, c.costCurrency, c.costPriceVersion, c.attempts,
		c.attemptUpstreams, c.attemptStatuses, c.attemptErrorTypes, c.characters, c.labelKeys, c.labelValues, c.truncated,
		c.framesIn, c.framesOut, c.closeCode, c.closedBy,
	}
}

// DateTime holds seconds from 1970 to 2105 as a UInt32.
const (
	minUnix = 0
	maxUnix = math.MaxUint32
)

func clampTime(t time.Time) time.Time {
	switch u := t.Unix(); {
	case u < minUnix:
		return time.Unix(minUnix, 0).UTC()
	case u >= maxUnix:
		return time.Unix(maxUnix, 0).UTC()
	}
	return t.UTC()
}

func unsigned(v int64) uint64 { return uint64(max(v, 0)) }

func flag(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
