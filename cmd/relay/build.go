package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/streamrelay/relay"
)

// relayOptions turns a validated configuration into the options of one
// generation's relay. Credentials named by auth_env are read through
// getenv here. The stores, limiters and upstream transport are the
// process's, shared by every generation; reg is the generation's own
// registry.
func relayOptions(c *fileConfig, st *storage, getenv func(string) (string, bool), lg *logs,
	reg prometheus.Registerer, transport http.RoundTripper) []relay.Option {
	routes := make([]relay.Route, 0, len(c.Routes))
	for _, r := range c.Routes {
		routes = append(routes, r.route(getenv))
	}
	defaults := c.RateLimit.limits()
	keys := make([]relay.APIKey, 0, len(c.Auth.APIKeys))
	for _, k := range c.Auth.APIKeys {
		ak := relay.APIKey{Key: k.Key, ID: k.ID, Tenant: k.Tenant, Labels: k.Labels}
		if l := k.Limits; l != nil {
			ak.Limits = &relay.Limits{RequestsPerMinute: l.RequestsPerMinute, Burst: l.Burst,
				TokensPerMinute: l.TokensPerMinute, TokenBurst: l.TokenBurst,
				SpendPerMinute: int64(l.SpendPerMinute), SpendPerDay: int64(l.SpendPerDay),
				SpendPerMonth: int64(l.SpendPerMonth),
				MaxConcurrent: l.MaxConcurrent, MaxSessions: l.MaxSessions,
				QueueTimeout: time.Duration(l.QueueTimeout), MaxQueued: l.MaxQueued}
		} else if c.RateLimit.Enabled {
			// Each key carries the defaults, not the shared limiter: a
			// reload changes them for new requests, and the limiter adapts
			// the tenant's bucket in place, keeping what was spent.
			ak.Limits = &defaults
		}
		keys = append(keys, ak)
	}
	s := &c.Server
	opts := []relay.Option{
		relay.WithRoutes(routes...),
		relay.WithAPIKeys(keys...),
		relay.WithLogger(lg.log),
		relay.WithRegisterer(reg),
		relay.WithTransport(transport),
		relay.WithMaxBodyBytes(s.MaxBodySize),
		// server.timeout bounds the wait for response headers only, so it
		// limits a non-streamed request as a whole but never cuts a stream.
		relay.WithTimeouts(relay.Timeouts{FirstByte: time.Duration(s.Timeout)}),
		relay.WithClientWriteTimeout(time.Duration(s.ClientWriteTimeout)),
		relay.WithLimiterFailOpen(c.RateLimit.FailOpen),
		relay.WithRecordQueue(c.Storage.Queue.options(c.has("storage.queue.max_retries"))),
	}
	opts = append(opts, c.bounds()...)
	stores := st.stores
	if c.Observability.DetailedLogs {
		stores = append(stores[:len(stores):len(stores)], store{"detailed_logs", detailRecorder(lg.detail)})
	}
	if len(stores) > 0 {
		// A fanout per generation: it tracks its own queue's batch.
		opts = append(opts, relay.WithRecorder(newFanout(stores)))
	}
	if len(c.Models) > 0 {
		opts = append(opts, relay.WithModels(c.Models...))
	}
	if c.prices != nil {
		opts = append(opts, relay.WithPrices(c.prices))
	}
	if l := st.limiter(c); l != nil {
		opts = append(opts, relay.WithLimiter(l))
	}
	if ks := st.keySlots(c); ks != nil {
		opts = append(opts, relay.WithKeySlots(ks))
	}
	return opts
}

// route converts a route, resolving auth_env through getenv.
func (r routeConfig) route(getenv func(string) (string, bool)) relay.Route {
	rt := relay.Route{
		Name:          r.Name,
		Prefix:        r.Path,
		StripPrefix:   r.StripPrefix,
		RewritePrefix: r.RewritePrefix,
		Kind:          r.kind(),
		Provider:      relay.Provider(r.Provider),
		Headers:       r.Headers,
		MaxAttempts:   r.MaxAttempts,
		Backoff:       relay.Backoff{Base: time.Duration(r.Backoff.Base), Max: time.Duration(r.Backoff.Max)},
		PassHeaders:   r.PassHeaders,
		Timeouts: relay.Timeouts{
			Connect:    time.Duration(r.Timeouts.Connect),
			FirstByte:  time.Duration(r.Timeouts.FirstByte),
			FirstToken: time.Duration(r.Timeouts.FirstToken),
			Idle:       time.Duration(r.Timeouts.Idle),
			Total:      time.Duration(r.Timeouts.Total),
		},
		NoFirstContentHold: r.NoFirstContentHold,
		NoWebSocket:        r.NoWebSocket,
		KeepAlive:          time.Duration(r.KeepAlive),
		QueueTimeout:       time.Duration(r.QueueTimeout),
		Sticky: relay.Sticky{Source: relay.StickySource(r.Sticky.Source), Header: r.Sticky.Header,
			TTL: time.Duration(r.Sticky.TTL), MaxPins: r.Sticky.MaxPins, PromptBytes: r.Sticky.PromptBytes},
	}
	if len(r.Upstreams) == 0 {
		rt.Upstream = r.Upstream
		rt.AuthHeader = r.AuthHeader
		rt.AuthValue = credential(r.AuthEnv, r.AuthValue, getenv)
		return rt
	}
	for _, u := range r.Upstreams {
		rt.Upstreams = append(rt.Upstreams, relay.Upstream{
			Name:        u.Name,
			URL:         u.URL,
			AuthHeader:  u.AuthHeader,
			AuthValue:   credential(u.AuthEnv, u.AuthValue, getenv),
			Keys:        u.Keys,
			Weight:      u.Weight,
			MaxInFlight: u.MaxInFlight,
		})
	}
	return rt
}

// kind is the route's stream kind; the original project's "raw" is
// "audio": binary chunks passed through as they arrive.
func (r routeConfig) kind() relay.StreamKind {
	if r.Kind == "raw" {
		return relay.KindAudio
	}
	return relay.StreamKind(r.Kind)
}

func credential(env, value string, getenv func(string) (string, bool)) string {
	if env == "" {
		return value
	}
	v, _ := getenv(env)
	return v
}

// options converts the queue settings; an explicit max_retries of 0 means
// no retry (the relay's zero means its default).
func (q queueConfig) options(retriesSet bool) relay.AsyncOptions {
	o := relay.AsyncOptions{
		QueueSize:     q.Size,
		BatchSize:     q.BatchSize,
		FlushInterval: time.Duration(q.FlushInterval),
		WriteTimeout:  time.Duration(q.WriteTimeout),
		MaxRetries:    q.MaxRetries,
		MaxQueueBytes: q.MaxBytes,
	}
	if retriesSet && q.MaxRetries == 0 {
		o.MaxRetries = -1
	}
	return o
}

// bounds are the options of the server keys that bound what a client can
// make the relay hold; a key left out keeps the library's default.
func (c *fileConfig) bounds() []relay.Option {
	s := &c.Server
	var opts []relay.Option
	if c.has("server.body_min_rate") || c.has("server.body_grace") {
		rate, grace := int64(240), 5*time.Second // the library's defaults
		if c.has("server.body_min_rate") {
			rate = s.BodyMinRate
		}
		if c.has("server.body_grace") {
			grace = time.Duration(s.BodyGrace)
		}
		opts = append(opts, relay.WithRequestBodyRate(rate, grace))
	}
	if c.has("server.body_timeout") {
		opts = append(opts, relay.WithRequestBodyTimeout(time.Duration(s.BodyTimeout)))
	}
	if c.has("server.body_budget") {
		opts = append(opts, relay.WithRequestBodyBudget(s.BodyBudget))
	}
	if c.has("server.refusal_memo") {
		opts = append(opts, relay.WithRefusalMemo(time.Duration(s.RefusalMemo)))
	}
	if c.has("server.body_tenant_budget") {
		opts = append(opts, relay.WithRequestBodyTenantBudget(s.BodyTenantBudget))
	}
	if c.has("server.observation_budget") {
		opts = append(opts, relay.WithObservationBudget(s.ObservationBudget))
	}
	if c.has("server.methods") {
		opts = append(opts, relay.WithAllowedMethods(s.Methods...))
	}
	if c.has("server.drain_on_client_gone") {
		opts = append(opts, relay.WithDrainOnClientGone(time.Duration(s.DrainOnClientGone)))
	}
	return opts
}

// checkRelay builds (and at once shuts down) a relay from c, without its
// stores, so that -check also applies the library's own rules: keys with
// surrounding whitespace or control characters, methods, header names.
func checkRelay(c *fileConfig, getenv func(string) (string, bool)) error {
	st := &storage{memory: relay.NewMemoryLimiter(relay.Limits{})}
	t := relay.NewTransport()
	defer t.CloseIdleConnections()
	rl, err := relay.New(relayOptions(c, st, getenv, newLogs(c.Log, io.Discard), prometheus.NewRegistry(), t)...)
	if err != nil {
		return fmt.Errorf("%s: %w", c.file, err)
	}
	return rl.Shutdown(context.Background())
}
