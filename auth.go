package relay

import (
	"crypto/sha256"
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

// staticKeys is the built-in Authenticator: identities by key hash.
type staticKeys struct {
	byHash map[[sha256.Size]byte]Identity
}

// NewStaticKeys returns an Authenticator that accepts the given keys.
//
// Keys are held only as SHA-256 hashes. A key is read from "Authorization:
// Bearer <key>", then "x-api-key" (Anthropic style), then "api-key" (Azure
// style), hashed, and the hash is looked up in a map, so a lookup costs the
// same with 100,000 keys as with one.
//
// Timing: the lookup's duration may depend on the presented key's digest
// (where it falls in the map, which hashes with a per-process random seed,
// and how many leading bytes it shares with a stored digest), never on the
// key's bytes directly. A client cannot choose a key whose digest is near
// a stored one without already knowing it, and a stored digest, even if
// learnt, neither reveals its key (SHA-256 is preimage resistant) nor
// authenticates, since the relay hashes whatever is presented.
//
// It returns an error for an empty or duplicated key, and for a key with
// leading or trailing whitespace or a control character, which no client
// could present; the error names the key by index and ID, never by value.
func NewStaticKeys(keys ...APIKey) (Authenticator, error) {
	s := &staticKeys{byHash: make(map[[sha256.Size]byte]Identity, len(keys))}
	for i, k := range keys {
		if k.Key == "" {
			return nil, fmt.Errorf("relay: API key %d (id %q) is empty", i, k.ID)
		}
		if err := checkSecret(k.Key); err != nil {
			return nil, fmt.Errorf("relay: API key %d (id %q) %w", i, k.ID, err)
		}
		h := sha256.Sum256([]byte(k.Key))
		if _, dup := s.byHash[h]; dup {
			return nil, fmt.Errorf("relay: API key %d (id %q) is a duplicate", i, k.ID)
		}
		id := k.ID
		if id == "" {
			id = fmt.Sprintf("key-%x", h[:4])
		}
		tenant := k.Tenant
		if tenant == "" {
			tenant = id
		}
		s.byHash[h] = Identity{Tenant: tenant, KeyID: id, Limits: k.Limits, Labels: k.Labels}
	}
	return s, nil
}

// Authenticate implements Authenticator.
func (s *staticKeys) Authenticate(r *http.Request) (Identity, error) {
	key := ClientKey(r)
	if key == "" {
		return Identity{}, fmt.Errorf("%w: no API key", ErrUnauthenticated)
	}
	id, ok := s.byHash[sha256.Sum256([]byte(key))]
	if !ok {
		return Identity{}, fmt.Errorf("%w: unknown API key", ErrUnauthenticated)
	}
	return id, nil
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

// checkSecret refuses a credential that can never work: leading or
// trailing whitespace (clients' keys are trimmed when read, and a pasted
// newline is the usual culprit) or a control character, tab included
// (the relay's one rule for header values, stricter for credentials: see
// ctlFree). Its error completes a sentence naming the key and
// never contains the key.
func checkSecret(s string) error {
	if s != strings.TrimSpace(s) {
		return errSecretSpace
	}
	if !ctlFree(s, false) { // tab included: see ctlFree
		return errSecretControl
	}
	return nil
}

const (
	errSecretSpace   = Error("has leading or trailing whitespace")
	errSecretControl = Error("contains a control character")
)
