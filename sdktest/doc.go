// Package sdktest proves that the official OpenAI and Anthropic Go SDKs work
// through the relay unchanged: only their base URL and API key point at it.
//
// It holds tests only. Each test puts a relay.New handler in front of a
// replaying upstream, an httptest server that serves recorded server-sent
// event streams byte for byte, one flushed write per event, and then drives
// the SDKs' streaming calls through the relay. The streams come from two
// places: the project's own small made-up streams in testdata/, which make
// the suite runnable anywhere, and the real recordings in the shared
// fixtures folder (../shared/fixtures beside the repository), which the
// suite requires when CI is set and skips otherwise.
//
// TestOpenAIRealtimeSDK drives a WebSocket session with the SDK's own
// realtime client (client.Realtime.Connect in openai-go v3) through the
// relay to a mock upstream speaking the OpenAI Realtime events.
//
// It is a module of its own so that the SDKs never become dependencies of
// the relay itself.
package sdktest
