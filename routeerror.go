package relay

import (
	"errors"
	"strconv"
	"strings"
)

// RouteError is a problem with one field of one route given to
// NewRouteTable (or WithRoutes). It is the single source of the route
// rules: a caller that builds routes from its own configuration (the
// standalone server's YAML, say) maps Index, Upstream, Field and Key to
// where it read the value, and shows Reason there, instead of checking
// the routes itself.
//
// NewRouteTable reports every problem it finds: its error is a
// *RouteError when there is one, or an errors.Join of them; errors.As
// finds the first.
type RouteError struct {
	// Index is the route's position in the routes given (WithRoutes calls
	// add up, in order).
	Index int
	// Route is the route's Name, empty when it has none.
	Route string
	// Upstream is the position in Route.Upstreams of the upstream at
	// fault, or -1 when the field is the route's own. The short form
	// (Route.Upstream, AuthHeader, AuthValue, AuthEnv) is upstream 0, and
	// its fields are then named as Upstream's: URL, AuthHeader, AuthValue,
	// AuthEnv.
	Upstream int
	// UpstreamName is that upstream's Name, if it has one.
	UpstreamName string
	// Field names the field at fault as Route or Upstream spells it:
	// Name, Prefix, RewritePrefix, Kind, Provider, Headers, PassHeaders,
	// MaxAttempts, Sticky.Source, Sticky.Header, Sticky.TTL,
	// Sticky.MaxPins, Sticky.PromptBytes and Upstream (a route with no
	// upstream at all) for a route; URL, AuthHeader, AuthValue, AuthEnv, Keys and Weight for an
	// upstream.
	Field string
	// Key picks the element of a map or list field: the header name, as
	// written, for Headers; the decimal index for PassHeaders and Keys.
	// Empty for other fields.
	Key string
	// Reason says what is wrong, as a clause that reads after the field's
	// name ("routes[2].kind: unknown kind …"). It never quotes a
	// credential, a header value or an upstream URL, which may hold one.
	Reason string

	// phrase is Reason as Error words it, naming the field, when that
	// differs from Reason.
	phrase string
}

// Error reads "relay: route <name or index>[ upstream <i>[ (<name>)]]: ..."
// and, like Reason, never quotes a secret.
func (e *RouteError) Error() string {
	var b strings.Builder
	b.WriteString("relay: route ")
	if e.Route != "" {
		b.WriteString(strconv.Quote(e.Route))
	} else {
		b.WriteString(strconv.Itoa(e.Index))
	}
	if e.Upstream >= 0 {
		b.WriteString(" upstream " + strconv.Itoa(e.Upstream))
		if e.UpstreamName != "" {
			b.WriteString(" (" + strconv.Quote(e.UpstreamName) + ")")
		}
	}
	b.WriteString(": ")
	if e.phrase != "" {
		b.WriteString(e.phrase)
	} else {
		b.WriteString(e.Reason)
	}
	return b.String()
}

// routeProblems collects the RouteErrors of one NewRouteTable call.
type routeProblems struct {
	list []error
	// The route and upstream being checked.
	index    int
	route    string
	upstream int
	upName   string
}

// add records a problem with field (and key) of the current route or
// upstream. phrase, when not empty, is how Error words it.
func (p *routeProblems) add(field, key, reason, phrase string) {
	p.list = append(p.list, &RouteError{Index: p.index, Route: p.route, Upstream: p.upstream,
		UpstreamName: p.upName, Field: field, Key: key, Reason: reason, phrase: phrase})
}

// err is nil, the one problem, or all of them joined.
func (p *routeProblems) err() error {
	if len(p.list) == 1 {
		return p.list[0]
	}
	return errors.Join(p.list...) // nil for none
}
