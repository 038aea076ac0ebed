package sdktest

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/realtime"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamrelay/relay"
	"github.com/streamrelay/relay/internal/testkit"
)

// realtimeModel is the model the SDK asks for in the URL (?model=).
const realtimeModel = "gpt-realtime"

// realtimeUpstream answers sessions the way the OpenAI Realtime API does,
// in the GA event names the SDK decodes: session.created on open,
// conversation.item.added for an item, and for response.create a
// response.created, one response.output_text.delta and a response.done
// with usage (132 in, 121 out, 64 of the input cached). It accepts only
// the relay's injected credential and reports each handshake's headers
// (with the request URI under ":uri") and the close code it saw.
type realtimeUpstream struct {
	handshakes chan http.Header
	closed     chan websocket.StatusCode
}

func (u *realtimeUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := r.Header.Clone()
	h.Set(":uri", r.URL.RequestURI())
	u.handshakes <- h
	if r.Header.Get("Authorization") != "Bearer "+upstreamSecret {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","code":"invalid_api_key"}}`))
		return
	}
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer func() { _ = c.CloseNow() }()
	ctx := r.Context()
	send := func(s string) error { return c.Write(ctx, websocket.MessageText, []byte(s)) }
	if send(`{"type":"session.created","event_id":"event_1","session":{"type":"realtime","object":"realtime.session","id":"sess_1","model":"`+realtimeModel+`","output_modalities":["text"]}}`) != nil {
		return
	}
	for {
		_, msg, err := c.Read(ctx)
		if err != nil {
			u.closed <- websocket.CloseStatus(err)
			return
		}
		var ev struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(msg, &ev)
		var out []string
		switch ev.Type {
		case "conversation.item.create":
			out = []string{`{"type":"conversation.item.added","event_id":"event_2","previous_item_id":null,"item":{"id":"item_1","object":"realtime.item","type":"message","status":"completed","role":"user","content":[{"type":"input_text","text":"Hello"}]}}`}
		case "response.create":
			out = []string{
				`{"type":"response.created","event_id":"event_3","response":{"id":"resp_1","object":"realtime.response","status":"in_progress","output":[]}}`,
				`{"type":"response.output_text.delta","event_id":"event_4","response_id":"resp_1","item_id":"item_2","output_index":0,"content_index":0,"delta":"Hello back"}`,
				`{"type":"response.done","event_id":"event_5","response":{"id":"resp_1","object":"realtime.response","status":"completed","output":[],` +
					`"usage":{"total_tokens":253,"input_tokens":132,"output_tokens":121,` +
					`"input_token_details":{"text_tokens":132,"audio_tokens":0,"image_tokens":0,"cached_tokens":64,"cached_tokens_details":{"text_tokens":64,"audio_tokens":0,"image_tokens":0}},` +
					`"output_token_details":{"text_tokens":121,"audio_tokens":0}}}}`,
			}
		default:
			out = []string{`{"type":"error","event_id":"event_e","error":{"type":"invalid_request_error","message":"unexpected event"}}`}
		}
		for _, s := range out {
			if err := send(s); err != nil {
				u.closed <- websocket.CloseStatus(err)
				return
			}
		}
	}
}

// TestOpenAIRealtimeSDK drives a session with the official SDK's realtime
// client (client.Realtime.Connect, openai-go v3) through the relay, with
// only its base URL and key pointing at the relay: the SDK's handshake
// (Authorization: Bearer, /v1/realtime?model=…) is authenticated and
// relayed with the injected upstream credential, typed events decode, the
// SDK's close reaches the upstream, and the session's record carries the
// usage.
func TestOpenAIRealtimeSDK(t *testing.T) {
	up := &realtimeUpstream{handshakes: make(chan http.Header, 4), closed: make(chan websocket.StatusCode, 4)}
	upstream := httptest.NewServer(up)
	defer upstream.Close()
	sink := &recordSink{}
	rl, err := relay.New(
		relay.WithRoutes(relay.Route{Name: "openai", Prefix: "/v1", Upstream: upstream.URL,
			AuthHeader: "Authorization", AuthValue: upstreamSecret}),
		relay.WithAPIKeys(relay.APIKey{Key: clientKey, Tenant: tenant}),
		relay.WithRegisterer(prometheus.NewRegistry()),
		relay.WithRecorder(sink),
	)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{}, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { served <- struct{}{} }()
		rl.ServeHTTP(w, r)
	}))
	defer srv.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := rl.Shutdown(ctx); err != nil {
			t.Errorf("relay Shutdown: %v", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	client := openai.NewClient(option.WithBaseURL(srv.URL+"/v1/"), option.WithAPIKey(clientKey),
		option.WithUnsafeAllowHTTP(), option.WithMaxRetries(0))
	conn, err := client.Realtime.Connect(ctx, realtime.RealtimeConnectionOptions{}, option.WithQuery("model", realtimeModel))
	if err != nil {
		t.Fatalf("Realtime.Connect through the relay: %v", err)
	}
	defer conn.Abort()

	hs := testkit.Recv(t, up.handshakes, "the SDK's session did not reach the upstream")
	if hs.Get(":uri") != "/v1/realtime?model="+realtimeModel || hs.Get("Authorization") != "Bearer "+upstreamSecret {
		t.Errorf("upstream handshake: %s, Authorization %q", hs.Get(":uri"), hs.Get("Authorization"))
	}
	for name, vs := range hs {
		if strings.Contains(name+strings.Join(vs, ","), clientKey) {
			t.Errorf("the client key reached the upstream in %s", name)
		}
	}

	ev, err := conn.Recv(ctx)
	if err != nil || ev.Type != "session.created" || ev.AsSessionCreatedEvent().EventID != "event_1" {
		t.Fatalf("first event: %v %+v", err, ev.Type)
	}
	item := realtime.ConversationItemUnionParam{OfRealtimeUserMessageItem: &realtime.RealtimeConversationItemUserMessageParam{
		Content: []realtime.RealtimeConversationItemUserMessageContentParam{{Type: "input_text", Text: openai.String("Hello")}},
	}}
	if err := conn.Send(ctx, realtime.RealtimeClientEventUnionParam{
		OfConversationItemCreate: &realtime.ConversationItemCreateEventParam{Item: item},
	}); err != nil {
		t.Fatal(err)
	}
	if ev, err := conn.Recv(ctx); err != nil || ev.Type != "conversation.item.added" {
		t.Fatalf("after conversation.item.create: %v %q", err, ev.Type)
	}
	if err := conn.Send(ctx, realtime.RealtimeClientEventUnionParam{OfResponseCreate: &realtime.ResponseCreateEventParam{}}); err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	var usage realtime.RealtimeResponseUsage
	for i := 0; ; i++ {
		if i == 10 {
			t.Fatal("no response.done")
		}
		ev, err := conn.Recv(ctx)
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		if ev.Type == "error" {
			t.Fatalf("error event: %s", ev.RawJSON())
		}
		if ev.Type == "response.output_text.delta" {
			text.WriteString(ev.AsResponseTextDeltaEvent().Delta)
		}
		if ev.Type == "response.done" {
			usage = ev.AsResponseDoneEvent().Response.Usage
			break
		}
	}
	if text.String() != "Hello back" || usage.TotalTokens != 253 || usage.InputTokenDetails.CachedTokens != 64 {
		t.Errorf("text %q, usage %+v", text.String(), usage)
	}
	if err := conn.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if code := testkit.Recv(t, up.closed, "the SDK's close did not reach the upstream"); code != websocket.StatusNormalClosure {
		t.Errorf("upstream saw close %d, want 1000", code)
	}

	testkit.Recv(t, served, "the relay did not finish the session")
	if err := rl.Recorder().Flush(ctx); err != nil {
		t.Fatal(err)
	}
	recs := sink.take()
	if len(recs) != 1 {
		t.Fatalf("%d records, want 1: %+v", len(recs), recs)
	}
	rec := recs[0]
	if rec.Kind != "websocket" || rec.Status != http.StatusSwitchingProtocols || rec.Tenant != tenant ||
		rec.Usage.InputTokens != 132 || rec.Usage.OutputTokens != 121 || rec.Usage.CachedInputTokens != 64 {
		t.Errorf("record: kind %q status %d tenant %q usage %+v", rec.Kind, rec.Status, rec.Tenant, rec.Usage)
	}
	b, _ := json.Marshal(rec)
	for _, secret := range []string{clientKey, upstreamSecret} {
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s in the record", secret)
		}
	}
}
