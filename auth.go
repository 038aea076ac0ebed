package relay

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Identity is who a request belongs to, as established by an Authenticator.
//
// Tenant is the unit that limits and usage records are kept for. It must come
// from the credential (a key, a verified token), never from a header the
// client can set.
type Identity struct {
	// Tenant owns the request; limits and usage are kept per tenant.
	Tenant string
	// KeyID names the credential used, for records and audits. It must not
	// be the secret itself.
	KeyID string
	// Limits overrides the limiter's defaults for this tenant. Nil means the
	// defaults apply.
	Limits *Limits
	// Labels are free-form attributes copied into every Record. They are
	// never used as metric labels, so they may have any cardinality.
	Labels map[string]string
}

// Authenticator establishes the Identity behind a request.
//
// Authenticate must be safe for concurrent use. It returns an error wrapping
// ErrUnauthenticated when the request carries no valid credential; the relay
// then answers 401 without calling the upstream. Any other error is also
// answered with 401 and counted as an auth error, but is logged, so it should
// not contain the credential.
type Authenticator interface {
	Authenticate(r *http.Request) (Identity, error)
}

// AuthenticatorFunc adapts a function to the Authenticator interface.
type AuthenticatorFunc func(r *http.Request) (Identity, error)

// Authenticate calls f(r).
func (f AuthenticatorFunc) Authenticate(r *http.Request) (Identity, error) { return f(r) }

// AllowAll returns an Authenticator that accepts every request as the given
// tenant. It is meant for demos and for hosts that authenticate callers in
// their own middleware before the relay; never expose it to the internet.
func AllowAll(tenant string) Authenticator {
	return AuthenticatorFunc(func(*http.Request) (Identity, error) {
		return Identity{Tenant: tenant, KeyID: "anonymous"}, nil
	})
}

// APIKey is one static client key accepted by the built-in authenticator.
type APIKey struct {
	// Key is the secret the client presents. It is hashed with SHA-256 when
	// the authenticator is built; the plain text is not retained.
	Key string
	// ID names the key in records and logs. Empty means a short, non-secret
	// fingerprint of the key's hash ("key-" and 8 hex digits).
	ID string
	// Tenant owns requests made with the key. Empty means the ID.
	Tenant string
	// Limits overrides the default limits for this key's tenant.
	Limits *Limits
	// Labels are copied into each Record of the key's requests.
	Labels map[string]string
}

// keyEntry is an APIKey with its secret replaced by its hash.
type keyEntry struct {
	hash     [sha256.Size]byte
	identity Identity
}

// staticKeys is the built-in Authenticator: a list of hashed keys.
type staticKeys struct {
	keys []keyEntry
}

// NewStaticKeys returns an Authenticator that accepts the given keys.
//
// Keys are held only as SHA-256 hashes and compared in constant time. A key
// is read from "Authorization: Bearer <key>", then "x-api-key" (Anthropic
// style), then "api-key" (Azure style). Every configured key is compared on
// every request, so the time taken does not reveal which key matched or how
// much of it did. It returns an error for an empty or duplicated key.
func NewStaticKeys(keys ...APIKey) (Authenticator, error) {
	s := &staticKeys{keys: make([]keyEntry, 0, len(keys))}
	seen := make(map[[sha256.Size]byte]bool, len(keys))
	for i, k := range keys {
		if k.Key == "" {
			return nil, fmt.Errorf("relay: API key %d is empty", i)
		}
		h := sha256.Sum256([]byte(k.Key))
		if seen[h] {
			return nil, fmt.Errorf("relay: API key %d (id %q) is a duplicate", i, k.ID)
		}
		seen[h] = true
		id := k.ID
		if id == "" {
			id = fmt.Sprintf("key-%x", h[:4])
		}
		tenant := k.Tenant
		if tenant == "" {
			tenant = id
		}
		s.keys = append(s.keys, keyEntry{hash: h, identity: Identity{
			Tenant: tenant, KeyID: id, Limits: k.Limits, Labels: k.Labels,
		}})
	}
	return s, nil
}

// Authenticate implements Authenticator.
func (s *staticKeys) Authenticate(r *http.Request) (Identity, error) {
	key := ClientKey(r)
	if key == "" {
		return Identity{}, fmt.Errorf("%w: no API key", ErrUnauthenticated)
	}
	h := sha256.Sum256([]byte(key))
	found := -1
	for i := range s.keys {
		// No early exit: the loop's duration must not depend on the match.
		if subtle.ConstantTimeCompare(h[:], s.keys[i].hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Identity{}, fmt.Errorf("%w: unknown API key", ErrUnauthenticated)
	}
	return s.keys[found].identity, nil
}

// ClientKey returns the credential a client presented, from
// "Authorization: Bearer …", "x-api-key" or "api-key", in that order, or ""
// when there is none. It is exported for custom Authenticators. The value is
// a secret: never log it.
func ClientKey(r *http.Request) string {
	if v := r.Header.Get("Authorization"); v != "" {
		scheme, token, ok := strings.Cut(v, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(token)
		}
	}
	if v := r.Header.Get("X-Api-Key"); v != "" {
		return strings.TrimSpace(v)
	}
	return strings.TrimSpace(r.Header.Get("Api-Key"))
}

// ErrUnauthenticated is wrapped by Authenticator errors that mean the
// request has no valid credential.
const ErrUnauthenticated = Error("unauthenticated")

// Error is the type of the relay's sentinel errors. Being a string constant,
// a sentinel cannot be reassigned by other packages.
type Error string

func (e Error) Error() string { return string(e) }

// isUnauthenticated reports whether err means "no valid credential".
func isUnauthenticated(err error) bool { return errors.Is(err, ErrUnauthenticated) }
