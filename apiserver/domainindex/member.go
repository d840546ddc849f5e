package domainindex

import (
	"fmt"
	"strings"

	"github.com/certfleet/certfleet/internal/shortid"
)

// Member is how the index keeps the domain id id in its members (layout
// 3): shortid.Bytes, a UUID in its canonical form (as uuid.UUID.String
// writes it, which every domain id of production is) as its 16 raw
// bytes, any other id as it is. Lowercase hex and the bytes it spells
// sort alike, so members of UUIDs keep their ids' order. An id of 16
// bytes that is not a UUID would read as one, so it is refused.
func Member(id string) (string, error) {
	m, err := shortid.Bytes(id)
	if err != nil {
		return "", fmt.Errorf("domain id %q: 16 bytes and not a UUID, the index cannot keep it", id)
	}
	return m, nil
}

// IDOf is the domain id the member m keeps (Member's inverse,
// shortid.FromBytes): 16 bytes are a UUID's, anything else the id
// itself. idLua's ix_id is its Lua.
func IDOf(m string) string { return shortid.FromBytes(m) }

// idLua defines ix_id(m), IDOf in Lua, for the scripts that build a
// record key (RP .. ix_id(m)) or return an id from a member: the 16
// bytes in one C call, each written by a table of hex pairs (a 256-entry
// constructor, some 2 µs per script run), 0.4 µs an id against 1.7 with
// one string.format of 16 %02x.
var idLua = `
local IX_HEX = {[0] = '00', ` + hexPairs() + `}
local function ix_id(m)
  if #m ~= 16 then return m end
  local a, b, c, d, e, f, g, h, i, j, k, l, n, o, q, r = string.byte(m, 1, 16)
  local H = IX_HEX
  return H[a] .. H[b] .. H[c] .. H[d] .. '-' .. H[e] .. H[f] .. '-' .. H[g] .. H[h] .. '-' ..
    H[i] .. H[j] .. '-' .. H[k] .. H[l] .. H[n] .. H[o] .. H[q] .. H[r]
end
`

// hexPairs lists '01' to 'ff' as Lua strings.
func hexPairs() string {
	q := make([]string, 0, 255)
	for i := 1; i < 256; i++ {
		q = append(q, fmt.Sprintf("'%02x'", i))
	}
	return strings.Join(q, ", ")
}

// hostMemberID is the id of a keyHost member "<host> <port, 5 digits>
// <id member>": cut at the first space, as a host holds none; the id
// member may hold any byte.
func hostMemberID(m string) (string, bool) {
	host, rest, ok := strings.Cut(m, " ")
	if !ok || host == "" || len(rest) < 6 || rest[5] != ' ' {
		return "", false
	}
	return rest[6:], true
}

// hostMember rewrites the id member of the keyHost member m with f
// (IDOf or Member): cursors hold the text form.
func hostMember(m string, f func(string) (string, error)) (string, error) {
	id, ok := hostMemberID(m)
	if !ok {
		return "", fmt.Errorf("index member %q: not <host> <port> <id>", m)
	}
	conv, err := f(id)
	if err != nil {
		return "", err
	}
	return m[:len(m)-len(id)] + conv, nil
}

// idOfErr is IDOf for hostMember.
func idOfErr(m string) (string, error) { return IDOf(m), nil }

// stale tells whether the id member m is not in its form of this layout
// (a UUID as text, as layout 2 kept it).
func stale(m string) bool {
	enc, err := Member(m)
	return err == nil && enc != m
}

// createdLua defines ix_created(ms), the 6 bytes, big-endian, of a
// created_at in ms (0 to 2^48 - 1, some 8,900 years), which a label
// member (keySuffix) carries before the id so that it sorts as the time,
// and ix_created_ms(b), their number back.
const createdLua = `
local function ix_created(ms)
  local n, out = math.max(0, math.min(tonumber(ms) or 0, 281474976710655)), {}
  for i = 6, 1, -1 do
    out[i] = n % 256
    n = math.floor(n / 256)
  end
  return string.char(unpack(out))
end
local function ix_created_ms(b)
  local n = 0
  for i = 1, 6 do n = n * 256 + string.byte(b, i) end
  return n
end
`
