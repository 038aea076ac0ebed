package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/streamrelay/relay"
	relayotel "github.com/streamrelay/relay/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// otlpConfig is observability.otlp: OpenTelemetry traces and metrics
// exported over OTLP (package relayotel's spans and gen_ai.client.*
// metrics). Off unless enabled; a reload does not change it (a restart
// does).
type otlpConfig struct {
	Enabled bool `yaml:"enabled"`
	// Endpoint is the collector's host:port (grpc: 4317, http: 4318), or
	// a URL (http:// is sent in plain text; https:// with TLS).
	Endpoint string `yaml:"endpoint"`
	// Protocol is grpc or http (OTLP/HTTP protobuf); empty means grpc.
	Protocol string `yaml:"protocol"`
	// Insecure sends to a host:port endpoint without TLS.
	Insecure bool `yaml:"insecure"`
	// Headers are sent with every export (an API key: use ${VAR}).
	Headers map[string]string `yaml:"headers"`
	// SamplingRatio is the share of new traces sampled, 0 to 1; a request
	// that arrives with a sampled traceparent is always sampled (parent
	// based). Leaving it out means 1.
	SamplingRatio *float64 `yaml:"sampling_ratio"`
	// ServiceName is the resource's service.name; empty means
	// "stream-relay".
	ServiceName string `yaml:"service_name"`
	// Interval is how often metrics are exported; zero means 60s.
	Interval duration `yaml:"interval"`
}

func (c *fileConfig) validateOTLP(p *problems) {
	o := &c.Observability.OTLP
	if !o.Enabled {
		return
	}
	if o.Endpoint == "" {
		c.bad(p, "observability.otlp.endpoint", "is required when otlp.enabled is true")
	}
	switch o.Protocol {
	case "", "grpc", "http":
	default:
		c.bad(p, "observability.otlp.protocol", "want grpc or http, not %s", c.show("observability.otlp.protocol", o.Protocol))
	}
	if r := o.SamplingRatio; r != nil && (*r < 0 || *r > 1) {
		c.bad(p, "observability.otlp.sampling_ratio", "want a number from 0 to 1")
	}
	if o.Interval < 0 {
		c.bad(p, "observability.otlp.interval", "must not be negative")
	}
}

// telemetry is the process's OTLP export: its providers, and the hooks
// every generation's relay is given. nil when OTLP is off.
type telemetry struct {
	hooks  *relay.Hooks
	props  propagation.TextMapPropagator
	tp     *sdktrace.TracerProvider
	mp     *sdkmetric.MeterProvider
	closed bool
}

// newTelemetry starts the OTLP exporters o configures; nil when it is
// off. The exporters connect lazily: an unreachable collector costs
// dropped telemetry, never a request.
func newTelemetry(ctx context.Context, o otlpConfig) (*telemetry, error) {
	if !o.Enabled {
		return nil, nil
	}
	sx, mx, err := o.exporters(ctx)
	if err != nil {
		return nil, err
	}
	name := o.ServiceName
	if name == "" {
		name = "stream-relay"
	}
	res := resource.NewSchemaless(attribute.String("service.name", name))
	ratio := 1.0
	if o.SamplingRatio != nil {
		ratio = *o.SamplingRatio
	}
	interval := time.Duration(o.Interval)
	if interval == 0 {
		interval = time.Minute
	}
	t := &telemetry{
		props: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		tp: sdktrace.NewTracerProvider(sdktrace.WithBatcher(sx), sdktrace.WithResource(res),
			sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)))),
		mp: sdkmetric.NewMeterProvider(sdkmetric.WithResource(res),
			sdkmetric.WithReader(sdkmetric.NewPeriodicReader(mx, sdkmetric.WithInterval(interval)))),
	}
	if t.hooks, err = relayotel.New(relayotel.WithTracerProvider(t.tp), relayotel.WithMeterProvider(t.mp),
		relayotel.WithPropagator(t.props)); err != nil {
		_ = t.shutdown(ctx)
		return nil, err
	}
	return t, nil
}

// exporters makes the span and metric exporters of o's protocol.
func (o otlpConfig) exporters(ctx context.Context) (sdktrace.SpanExporter, sdkmetric.Exporter, error) {
	endpoint, insecure, isURL := o.Endpoint, o.Insecure, false
	if strings.HasPrefix(endpoint, "http://") || strings.HasPrefix(endpoint, "https://") {
		isURL, insecure = true, strings.HasPrefix(endpoint, "http://")
	}
	if o.Protocol == "http" {
		topts := []otlptracehttp.Option{otlptracehttp.WithHeaders(o.Headers)}
		mopts := []otlpmetrichttp.Option{otlpmetrichttp.WithHeaders(o.Headers)}
		if isURL {
			topts = append(topts, otlptracehttp.WithEndpointURL(strings.TrimSuffix(endpoint, "/")+"/v1/traces"))
			mopts = append(mopts, otlpmetrichttp.WithEndpointURL(strings.TrimSuffix(endpoint, "/")+"/v1/metrics"))
		} else {
			topts = append(topts, otlptracehttp.WithEndpoint(endpoint))
			mopts = append(mopts, otlpmetrichttp.WithEndpoint(endpoint))
			if insecure {
				topts = append(topts, otlptracehttp.WithInsecure())
				mopts = append(mopts, otlpmetrichttp.WithInsecure())
			}
		}
		sx, err := otlptracehttp.New(ctx, topts...)
		if err != nil {
			return nil, nil, fmt.Errorf("observability.otlp: %w", err)
		}
		mx, err := otlpmetrichttp.New(ctx, mopts...)
		if err != nil {
			_ = sx.Shutdown(ctx)
			return nil, nil, fmt.Errorf("observability.otlp: %w", err)
		}
		return sx, mx, nil
	}
	topts := []otlptracegrpc.Option{otlptracegrpc.WithHeaders(o.Headers)}
	mopts := []otlpmetricgrpc.Option{otlpmetricgrpc.WithHeaders(o.Headers)}
	if isURL {
		topts = append(topts, otlptracegrpc.WithEndpointURL(endpoint))
		mopts = append(mopts, otlpmetricgrpc.WithEndpointURL(endpoint))
	} else {
		topts = append(topts, otlptracegrpc.WithEndpoint(endpoint))
		mopts = append(mopts, otlpmetricgrpc.WithEndpoint(endpoint))
		if insecure {
			topts = append(topts, otlptracegrpc.WithInsecure())
			mopts = append(mopts, otlpmetricgrpc.WithInsecure())
		}
	}
	sx, err := otlptracegrpc.New(ctx, topts...)
	if err != nil {
		return nil, nil, fmt.Errorf("observability.otlp: %w", err)
	}
	mx, err := otlpmetricgrpc.New(ctx, mopts...)
	if err != nil {
		_ = sx.Shutdown(ctx)
		return nil, nil, fmt.Errorf("observability.otlp: %w", err)
	}
	return sx, mx, nil
}

// options are the relay options of the export: its hooks.
func (t *telemetry) options() []relay.Option {
	if t == nil {
		return nil
	}
	return []relay.Option{relay.WithHooks(t.hooks)}
}

// handler makes the relay's spans children of the client's trace: it
// reads the incoming traceparent into the request's context.
func (t *telemetry) handler(h http.Handler) http.Handler {
	if t == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := t.props.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// shutdown flushes what is buffered (the spans' batch, the last metrics)
// and stops the exporters, by ctx's deadline. It is idempotent.
func (t *telemetry) shutdown(ctx context.Context) error {
	if t == nil || t.closed {
		return nil
	}
	t.closed = true
	return errors.Join(t.tp.Shutdown(ctx), t.mp.Shutdown(ctx))
}
