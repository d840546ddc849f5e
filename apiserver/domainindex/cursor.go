package domainindex

import (
	"encoding/base64"
	"errors"
	"hash/fnv"
	"math"
	"strconv"
	"strings"
)

// cursor is where a page ended: the sort key of its last domain, and the
// query it belongs to.
type cursor struct {
	// Fingerprint is Query.fingerprint's hash (fnv-64a, hex).
	Fingerprint string
	// Phase is 0 for the domains with a value for the sort key, 1 for the
	// tail without one.
	Phase int
	// Score is the sort key's score (unix ms), Member the index member
	// (the domain id, or the hostname index's member) with the id as text
	// (IDOf), as cursors of layout 2 held it, which stay valid.
	Score  float64
	Member string
}

// maxCursorLen bounds what decodeCursor reads: a hostname member (253 +
// port + id) fits with room.
const maxCursorLen = 1024

// cursorVersion starts every cursor, so a later layout can refuse
// older ones.
const cursorVersion = "c1"

func encodeCursor(c cursor) string {
	raw := strings.Join([]string{cursorVersion, c.Fingerprint, strconv.Itoa(c.Phase),
		strconv.FormatFloat(c.Score, 'g', -1, 64), c.Member}, "|")
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// decodeCursor reads a cursor a client sent back: outside input, checked
// field by field.
func decodeCursor(s string) (cursor, error) {
	bad := errors.New("bad cursor")
	if len(s) > maxCursorLen {
		return cursor{}, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, bad
	}
	f := strings.SplitN(string(raw), "|", 5)
	if len(f) != 5 || f[0] != cursorVersion || f[4] == "" {
		return cursor{}, bad
	}
	c := cursor{Fingerprint: f[1], Member: f[4]}
	switch f[2] {
	case "0":
	case "1":
		c.Phase = 1
	default:
		return cursor{}, bad
	}
	if c.Score, err = strconv.ParseFloat(f[3], 64); err != nil || math.IsNaN(c.Score) || math.IsInf(c.Score, 0) {
		return cursor{}, bad
	}
	for _, r := range c.Member {
		// Members are ids and "host port id": printable ASCII.
		if r < 0x20 || r > 0x7e {
			return cursor{}, bad
		}
	}
	return c, nil
}

// fingerprintOf hashes a query's fingerprint for its cursors.
func fingerprintOf(s string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(s))
	return strconv.FormatUint(h.Sum64(), 36)
}

// member is c.Member with its id rewritten by f (Member to ask the
// script, IDOf to write a cursor): the hostname index's member in phase 0
// of the hostname sort, an id else.
func (c cursor) member(sort string, f func(string) (string, error)) (string, error) {
	if sort == "hostname" && c.Phase == 0 {
		return hostMember(c.Member, f)
	}
	return f(c.Member)
}
