// Package idempotency lets a client retry a creation without creating
// twice. With --redis-wait-replicas, a creation that no replica confirmed
// in time is answered 503 although the master may have applied it; a
// client that retries would then create a second channel, API key or
// client certificate. A client that sends the same Idempotency-Key header
// with both attempts gets one resource instead.
//
// The key names the resource rather than a stored answer: the new
// resource's id is derived from the tenant, the route and the key
// (Request.ID), so the retry's write finds the first attempt's resource
// under the same id, in the same atomic step that would create it. The
// store then compares the request's fingerprint (a hash of the parsed
// request, saved with the resource): the same request answers as the
// first would have (a replay), another request with the same key is
// refused (ErrMismatch). Nothing is stored beside the resource and
// nothing expires; a resource deleted since is created again by a retry
// of its creation. A secret shown only in the first answer (an API key)
// cannot be shown again: that replay is refused with *SecretShown, which
// names the resource to revoke.
package idempotency

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// Header is the request header carrying the key (as in the IETF draft
// "The Idempotency-Key HTTP Header Field" and Stripe's API).
const Header = "Idempotency-Key"

// MaxLen is the longest key accepted, in bytes.
const MaxLen = 255

// Request is the idempotency of one creation: none (the zero value) or a
// key, with the fingerprint of the request it came with.
type Request struct {
	seed        [sha256.Size]byte
	fingerprint string
}

// ErrBadKey is a malformed Idempotency-Key header.
var ErrBadKey = fmt.Errorf("the %s header must be 1 to %d visible ASCII characters (a UUID is a good choice)", Header, MaxLen)

// ErrMismatch is a key sent again with another request.
var ErrMismatch = fmt.Errorf("the %s was used before with a different request; send a new key for a new request", Header)

// SecretShown is a replayed creation whose answer held a secret that is
// not kept (an API key's): the resource exists, and the secret is lost
// if the first answer was.
type SecretShown struct {
	// What names the kind of resource ("API key"); ID is its id; Revoke
	// says how to revoke it.
	What, ID, Revoke string
}

func (e *SecretShown) Error() string {
	return fmt.Sprintf("an earlier request with this %s created %s %s; its secret was shown only in that answer and is not kept. "+
		"If that answer was lost, revoke it (%s) and create another with a new key", Header, e.What, e.ID, e.Revoke)
}

// New returns the idempotency of a creation of tenant on route (a
// stable name such as "POST /api/v1/channels") with the header value key
// ("" for none: the zero Request) and body, the parsed request: its JSON
// encoding is the fingerprint, so a retry spelled differently (spaces,
// field order) is the same request. Leave secrets out of body (they would
// be fingerprinted into the stored record).
func New(tenant, route, key string, body any) (Request, error) {
	if key == "" {
		return Request{}, nil
	}
	if len(key) > MaxLen {
		return Request{}, ErrBadKey
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x21 || key[i] > 0x7e {
			return Request{}, ErrBadKey
		}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return Request{}, fmt.Errorf("fingerprint request: %w", err)
	}
	fp := sha256.Sum256(append([]byte(route+"\x00"), b...))
	return Request{
		seed:        sha256.Sum256([]byte("certfleet idempotency\x00" + tenant + "\x00" + route + "\x00" + key)),
		fingerprint: hex.EncodeToString(fp[:16]),
	}, nil
}

// Set tells whether the request carries a key.
func (r Request) Set() bool { return r.fingerprint != "" }

// Fingerprint identifies the request; "" when no key was sent.
func (r Request) Fingerprint() string { return r.fingerprint }

// ID is the id of the resource the request creates, as prefix and the
// first n bytes of the key's digest in hex (n at most 32): the same for
// every retry of the request, another for another tenant, route or key.
func (r Request) ID(prefix string, n int) string {
	return prefix + hex.EncodeToString(r.seed[:n])
}

// UUID is the id of the resource the request creates as a UUID (version
// 8, RFC 9562: its bits come from the key's digest).
func (r Request) UUID() string {
	var u [16]byte
	copy(u[:], r.seed[:16])
	u[6] = u[6]&0x0f | 0x80
	u[8] = u[8]&0x3f | 0x80
	h := hex.EncodeToString(u[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// Check compares the fingerprint stored with an existing resource the
// request's id found: nil for the same request (a replay), ErrMismatch
// for another.
func (r Request) Check(stored string) error {
	if stored != r.fingerprint {
		return ErrMismatch
	}
	return nil
}

// IsReplayRefused tells whether err is an answer to a replay the API
// refuses (ErrMismatch, *SecretShown).
func IsReplayRefused(err error) bool {
	var s *SecretShown
	return errors.Is(err, ErrMismatch) || errors.As(err, &s)
}
