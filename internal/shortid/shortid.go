// Package shortid writes ids the way the compact Redis layouts keep them:
// a UUID in its canonical form (as uuid.UUID.String writes it) as its 16
// bytes in 22 characters of unpadded base 64, any other id after "=",
// which no base 64 alphabet here uses. The coordinator's domain records
// and the views name tenants so (URL), the registration views their
// domains (with the projector's sortable alphabet). Bytes keeps a UUID as
// its 16 raw bytes instead, for members and fields of keys that list
// domain ids (the list indexes, the coordinator's schedule).
package shortid

import (
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/google/uuid"
)

// Codec writes and reads ids with one base 64 alphabet.
type Codec struct{ enc *base64.Encoding }

// With is the codec of enc, an unpadded alphabet without "=".
func With(enc *base64.Encoding) Codec { return Codec{enc: enc.Strict()} }

// URL is the codec of unpadded base64url (RFC 4648).
var URL = With(base64.RawURLEncoding)

// Canonical is the UUID id spells when it is one in the canonical form
// uuid.UUID.String writes (lowercase, dashed), which every id certfleet
// gives is: only such an id is kept as its 16 bytes, here and in the list
// indexes (domainindex.Member), so that it reads back as the same text.
func Canonical(id string) (uuid.UUID, bool) {
	u, err := uuid.Parse(id)
	return u, err == nil && u.String() == id
}

// Encode is id as kept ("=" for "").
func (c Codec) Encode(id string) string {
	if u, ok := Canonical(id); ok {
		return c.enc.EncodeToString(u[:])
	}
	return "=" + id
}

// Decode is the id s keeps (Encode's inverse); "" reads as "".
func (c Codec) Decode(s string) (string, error) {
	if id, ok := strings.CutPrefix(s, "="); ok || s == "" {
		return id, nil
	}
	b, err := c.enc.DecodeString(s)
	if err != nil || len(b) != 16 {
		return "", fmt.Errorf("id %q: not a UUID in 22 characters of base 64", s)
	}
	return uuid.UUID(b).String(), nil
}

// Bytes is how the Redis keys that list domain ids (the list indexes'
// members, the coordinator's schedule) keep the id id: a UUID in its
// canonical form (Canonical) as its 16 raw bytes, any other id as it is.
// Lowercase hex and the bytes it spells sort alike, so members of UUIDs
// keep their ids' order. An id of 16 bytes that is not a UUID would read
// back as one, so it is refused.
func Bytes(id string) (string, error) {
	if u, ok := Canonical(id); ok {
		return string(u[:]), nil
	}
	if len(id) == 16 {
		return "", fmt.Errorf("id %q: 16 bytes and not a UUID, cannot be kept as a member", id)
	}
	return id, nil
}

// FromBytes is the id m keeps (Bytes' inverse): 16 bytes are a UUID's,
// anything else the id itself, so an id kept as text (a layout before
// Bytes) reads as it is too.
func FromBytes(m string) string {
	if len(m) == 16 {
		return uuid.UUID([]byte(m)).String()
	}
	return m
}
