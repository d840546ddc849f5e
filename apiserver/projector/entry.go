package projector

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
)

// How a view hash keeps its entries (docs/scaling.md). Redis keeps a hash
// as a compact listpack while it has at most 128 fields of at most 64
// bytes (hash-max-listpack-entries, hash-max-listpack-value); past that it
// turns into a hashtable costing some 70 bytes more per field. The layout
// keeps a common view (a few regions, a few IPs, one certificate) within
// both limits, and a listpack's every field costs about two bytes beside
// its own, so it has few:
//
//   - "<region>" holds regionMark, the scan shown and the region's
//     entries: first the mark "<finished ms><event id>" (regionMarkCode:
//     the ms in numCode, 7 digits of base 64 for this century, then the
//     event id in 22 characters of compact, which sort as the ids do) and
//     right after it, for a scan with results, the name of the region's
//     first shape; then ";"-separated items: an IP (its bytes in
//     compact, IPCode) with its timings in numCode, "<ip>,<connect
//     ms>,<handshake ms>", or the name of another shape, which the IPs
//     after it saw: "5P8DbsEhDAta7qtCLF5a5LbJU74jJ-d57gQqXD;lYCp-F,B,T;
//     lYCp-V,B,U" for 198.51.117.1 and .2 seeing shape d57gQqXD (one
//     field, without the space). Past maxRegionChunk bytes it goes on in
//     "<region>|1", "<region>|2"...; the field of a scan without results
//     holds its mark alone, without ";". The mark is not a field of its
//     own: its name and header would cost some 12 B per region, and a
//     region of two IPs with timings under 4,096 ms fits one field of 64
//     B with it;
//   - "#<ref>", "#<ref>|1", "#<ref>|2"... hold a shape in chunks of at most
//     63 bytes: everything a scan saw at an IP but the IP and its timings,
//     the certificate's facts included (encodeShape). The IPs of all
//     regions usually see the same shape, so it is stored once per view;
//     <ref> is a hash of the shape (shapeRef), so every scan names the
//     same shape alike. The scripts that change entries end with
//     dropUnusedLeaves, so a shape no entry refers to any more goes.
//
// Views written before still decode, and a scan of a region replaces its
// fields whatever their layout: layout "4" (oldRegionMark: the region's
// field without the mark, "4<ref>;<ip>,<connect ms>,<handshake ms>;...",
// timings in decimal, the mark in "@<region>": "<finished ms, base
// 36>|<event id in compact>"), layout
// "3" (a field per IP, "<region>|<ip>" -> "3<ref>,<connect
// ms>,<handshake ms>"), layout "2" (entryMark, a storedEntry JSON
// referring to "#<sha256>" or "#ip:<region>/<ip>" facts), whole ExpEntry
// JSON objects ("{...") and marks "@<region>" -> "<ms>|<event id>" in
// decimal and in full. A region is in one layout at a time: when
// "<region>" is there, the fields "<region>|..." are its chunks, else
// older entries; a region's mark is in "<region>" in layout 5, else in
// "@<region>". Shapes of every layout read alike: what they gained in
// layout 5 (flagPortOfName, TLS versions by their last hex digit,
// tlsVersionCode) only shortens what a newer scan writes.
const (
	entryMark = "2"
	shapeMark = "3"
	// oldRegionMark starts a region's field of layout 4, whose mark is
	// in "@<region>" and whose timings are in decimal.
	oldRegionMark = "4"
	regionMark    = "5"
	// markIDLen is the length of an event id in compact, which ends a
	// region's mark (regionFieldMark in markLua counts it alike).
	markIDLen  = 22
	leafPrefix = "#"
	chunkSep   = "|"
	// maxChunk is the most bytes of a shape (or of any value cut into
	// chunks, splitChunks) in one field: at most 64
	// (Redis's default hash-max-listpack-value), and a listpack keeps a
	// string of up to 63 with a one-byte header.
	maxChunk = 63
	// maxRegionChunk is the most bytes of a region's field in one field:
	// 64, the most a listpack holds, one byte of header more than
	// maxChunk's but a chunk less for a region of two IPs whose timings
	// take two digits each (a chunk's field costs some 15 B).
	maxRegionChunk = 64
)

// storedEntry is an entry's own part in layout 2, with short names.
type storedEntry struct {
	Port                  int            `json:"p,omitempty"`
	Outcome               events.Outcome `json:"o"`
	Detail                string         `json:"d,omitempty"`
	CertificateFound      bool           `json:"f,omitempty"`
	LeafSHA256            string         `json:"l,omitempty"`
	ChainLength           int            `json:"n,omitempty"`
	TLSVersion            string         `json:"v,omitempty"`
	CipherSuite           string         `json:"cs,omitempty"`
	ChainValid            bool           `json:"cv,omitempty"`
	HostnameValid         bool           `json:"hv,omitempty"`
	ConnectMS             int64          `json:"c,omitempty"`
	HandshakeMS           int64          `json:"h,omitempty"`
	HTTPStatus            int            `json:"hs,omitempty"`
	HSTSMaxAge            int64          `json:"sa,omitempty"`
	HSTSIncludeSubdomains bool           `json:"si,omitempty"`
	LegacyTLSChecked      bool           `json:"lc,omitempty"`
	LegacyTLS             []string       `json:"lt,omitempty"`
}

// storedCert is a leaf's facts in layout 2, with short names.
type storedCert struct {
	Subject            string    `json:"s,omitempty"`
	Issuer             string    `json:"i,omitempty"`
	SANs               []string  `json:"n,omitempty"`
	Serial             string    `json:"r,omitempty"`
	NotBefore          time.Time `json:"b"`
	NotAfter           time.Time `json:"a"`
	KeyType            string    `json:"k,omitempty"`
	KeyBits            int       `json:"kb,omitempty"`
	SignatureAlgorithm string    `json:"g,omitempty"`
}

// markLua is the Lua the scripts read a scan's mark with: scanMark(v)
// returns the finished ms and event id of a mark "@<region>" (or a
// registration view's), and whether it is of the older layout (decimal
// ms, event id in full); regionFieldMark(v) those of a region's field of
// layout 5 (regionMark, regionMarkCode), nil for a field of another
// layout; numOf(s) reads numCode.
const markLua = `
local function scanMark(v)
  local sep = string.find(v, '|', 1, true)
  local ms, id = string.sub(v, 1, sep - 1), string.sub(v, sep + 1)
  if #id == 22 then return tonumber(ms, 36), id, false end
  return tonumber(ms), id, true
end
local function numOf(s)
  local sign, n = 1, 0
  if string.sub(s, 1, 1) == '=' then sign, s = -1, string.sub(s, 2) end
  if s == '' then return nil end
  for i = 1, #s do
    local d = string.find('` + compactDigits + `', string.sub(s, i, i), 1, true)
    if not d then return nil end
    n = n * 64 + d - 1
  end
  return sign * n
end
local function regionFieldMark(v)
  if string.sub(v, 1, 1) ~= '` + regionMark + `' then return nil end
  local m = string.match(v, '^.([^;]*)')
  if string.find(v, ';', 1, true) then m = string.sub(m, 1, -9) end
  local ms = numOf(string.sub(m, 1, -23))
  if not ms then return nil end
  return ms, string.sub(m, -22)
end
`

// dropUnusedLeaves is the Lua that applyScanScript and applyRemovedScript
// end with: it removes the shapes ("#<ref>" and their chunks) and layout 2
// leaf facts ("#<key>") no entry of the view KEYS[1] refers to any more.
// A region's field (layouts 4 and 5) names its shapes, joined from its
// chunks, the first right after its mark in layout 5;
// a layout 3 entry names its shape; a layout 2 entry refers to its leaf by
// fingerprint ("l") or, with none, by its region and IP (leafKey).
// Entries of the oldest layout carry their facts and refer to none.
const dropUnusedLeaves = `
local used, leaves, h = {}, {}, {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do h[all[i]] = all[i + 1] end
for i = 1, #all, 2 do
  local f, v = all[i], all[i + 1]
  local c, m = string.sub(f, 1, 1), string.sub(v, 1, 1)
  local region = string.match(f, '^[^|]*')
  if c == '#' then
    leaves[#leaves + 1] = f
  elseif c == '@' then
  elseif region == f then
    for n = 1, math.huge do
      local more = h[f .. '|' .. n]
      if not more then break end
      v = v .. more
    end
    if m == '` + regionMark + `' then
      local head, rest = string.match(v, '^([^;]*)(.*)')
      if rest ~= '' then used['#' .. string.sub(head, -8)] = true end
      v = rest
    end
    for item in string.gmatch(string.sub(v, 2), '[^;]+') do
      if not string.find(item, ',', 1, true) then used['#' .. item] = true end
    end
  elseif h[region] then
  elseif m == '` + shapeMark + `' then
    used['#' .. string.match(v, '^.([^,]*)')] = true
  elseif m == '` + entryMark + `' then
    local sha = string.match(v, '"l":"(%w+)"')
    if sha then
      used['#' .. sha] = true
    elseif string.find(v, '"f":true', 1, true) then
      used['#ip:' .. region .. '/' .. string.sub(f, #region + 2)] = true
    end
  end
end
for _, f in ipairs(leaves) do
  if not used[f] and not used[string.match(f, '^[^|]*')] then redis.call('HDEL', KEYS[1], f) end
end
`

// Compact writes ids, fingerprints and shape names in base 64 with an
// alphabet in ASCII order, so that encoded ids sort as the ids do (the
// scan script orders scans of the same millisecond by event id).
var Compact = base64.NewEncoding(compactDigits).WithPadding(base64.NoPadding)

// compactDigits is Compact's alphabet, in ASCII order: the digits of
// numCode too.
const compactDigits = "-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"

// numCode is n in base 64 with compactDigits ("-" is 0), most significant
// digit first, after "=" when negative: 12 is "B", 120 "1u", a time in
// Unix ms of this century 7 digits.
func numCode(n int64) string {
	u := uint64(n)
	if n < 0 {
		u = -u
	}
	var b [12]byte
	i := len(b)
	for {
		i--
		b[i] = compactDigits[u&63]
		if u >>= 6; u == 0 {
			break
		}
	}
	if n < 0 {
		i--
		b[i] = '='
	}
	return string(b[i:])
}

// numOf reads numCode.
func numOf(s string) (int64, error) {
	digits, neg := strings.CutPrefix(s, "=")
	if digits == "" || len(digits) > 11 {
		return 0, fmt.Errorf("number %q: not 1 to 11 digits", s)
	}
	var u uint64
	for i := range len(digits) {
		d := strings.IndexByte(compactDigits, digits[i])
		if d < 0 || u > math.MaxUint64>>6 {
			return 0, fmt.Errorf("number %q: not base 64", s)
		}
		u = u<<6 | uint64(d)
	}
	if neg && u <= 1<<63 {
		return -int64(u), nil
	}
	if !neg && u <= math.MaxInt64 {
		return int64(u), nil
	}
	return 0, fmt.Errorf("number %q: out of range", s)
}

// encodeMark is the two parts of a region's mark "@<region>", which
// applyScanScript joins with "|": when its scan finished and the scan's
// event.
func encodeMark(finished time.Time, eventID uuid.UUID) (ms, id string) {
	return strconv.FormatInt(finished.UnixMilli(), 36), Compact.EncodeToString(eventID[:])
}

// regionMarkCode is the mark a region's field of layout 5 starts with,
// after regionMark: "<finished ms, numCode><event id in compact>".
func regionMarkCode(finished time.Time, eventID uuid.UUID) string {
	return numCode(finished.UnixMilli()) + Compact.EncodeToString(eventID[:])
}

// decodeRegionMark reads regionMarkCode.
func decodeRegionMark(m string) (time.Time, string, error) {
	if len(m) <= markIDLen {
		return time.Time{}, "", fmt.Errorf("region mark %q: too short", m)
	}
	ms, err := numOf(m[:len(m)-markIDLen])
	if err != nil {
		return time.Time{}, "", fmt.Errorf("region mark %q: %w", m, err)
	}
	b, err := Compact.DecodeString(m[len(m)-markIDLen:])
	if err != nil || len(b) != 16 {
		return time.Time{}, "", fmt.Errorf("region mark %q: bad event id", m)
	}
	return time.UnixMilli(ms).UTC(), uuid.UUID(b).String(), nil
}

// decodeMark reads a mark "@<region>" of either layout (markLua).
func decodeMark(v string) (time.Time, string, error) {
	ms, id, ok := strings.Cut(v, "|")
	if !ok {
		return time.Time{}, "", fmt.Errorf("scan mark %q: no separator", v)
	}
	base := 10
	if len(id) == 22 {
		b, err := Compact.DecodeString(id)
		if err != nil || len(b) != 16 {
			return time.Time{}, "", fmt.Errorf("scan mark %q: bad event id", v)
		}
		id, base = uuid.UUID(b).String(), 36
	}
	n, err := strconv.ParseInt(ms, base, 64)
	if err != nil {
		return time.Time{}, "", fmt.Errorf("scan mark %q: %w", v, err)
	}
	return time.UnixMilli(n).UTC(), id, nil
}

// Shape flags.
const (
	flagCertificateFound = 1 << iota
	flagChainValid
	flagHostnameValid
	flagHSTSIncludeSubdomains
	flagLegacyTLSChecked
	// flagSANIsCN: the first SAN is the subject's CN, the whole subject
	// (the common "CN=<host>"), and is not written again.
	flagSANIsCN
	// flagSubjectIsHost: the subject is "CN=<host>", the host of the
	// view's name, and is not written. The view's name only changes
	// with a rename, which empties the view, shapes included.
	flagSubjectIsHost
	// flagPortOfName: the port is that of the view's name, and is not
	// written (since layout 5).
	flagPortOfName
)

// Positions of a shape's fields; a shape ends with LegacyTLS's items and
// then the SANs, as many as there are.
const (
	shOutcome = iota
	shFlags
	shChainLength
	shTLSVersion
	shPort
	shLeafSHA256
	shNotAfter
	shNotBefore
	shSubject
	shIssuer
	shCipherSuite
	shDetail
	shHTTPStatus
	shHSTSMaxAge
	shSerial
	shKeyType
	shKeyBits
	shSignatureAlgorithm
	shLegacyTLS // how many items follow
	shFields
)

// shapeEscaper and shapeUnescaper keep the separator out of a shape's
// fields.
var (
	shapeEscaper   = strings.NewReplacer("%", "%25", "|", "%7C")
	shapeUnescaper = strings.NewReplacer("%25", "%", "%7C", "|")
)

// encodeShape writes everything a scan of host:port (the host of the
// view's name, "" when unknown; port 0 when the scan did not say, which
// the name reads as 443) saw at an IP but the IP and its timings:
// "|"-separated fields by position, empty ones at the end left out, TLS
// versions and cipher suites by their code (tlsVersionCode, tlsCode),
// times in seconds in base 36.
func encodeShape(host string, port int, r events.IPResult) string {
	f := make([]string, shFields, shFields+len(r.LegacyTLS)+len(r.SANs))
	var flags int64
	for _, b := range []struct {
		on  bool
		bit int64
	}{{r.CertificateFound, flagCertificateFound}, {r.ChainValid, flagChainValid}, {r.HostnameValid, flagHostnameValid},
		{r.HSTSIncludeSubdomains, flagHSTSIncludeSubdomains}, {r.LegacyTLSChecked, flagLegacyTLSChecked}} {
		if b.on {
			flags |= b.bit
		}
	}
	sans := r.SANs
	if len(sans) > 0 && r.Subject == "CN="+sans[0] {
		flags |= flagSANIsCN
		sans = sans[1:]
	}
	f[shOutcome], f[shDetail] = string(r.Outcome), r.Detail
	f[shChainLength], f[shHTTPStatus] = itoa(int64(r.ChainLength)), itoa(int64(r.HTTPStatus))
	if host != "" && port != 0 {
		flags |= flagPortOfName
	} else {
		f[shPort] = itoa(int64(port))
	}
	f[shHSTSMaxAge], f[shKeyBits] = itoa(r.HSTSMaxAge), itoa(int64(r.KeyBits))
	f[shTLSVersion], f[shCipherSuite] = tlsVersionCode(r.TLSVersion), tlsCode(r.CipherSuite, cipherSuites)
	f[shLeafSHA256], f[shNotAfter], f[shNotBefore] = shaCode(r.LeafSHA256), timeCode(r.NotAfter), timeCode(r.NotBefore)
	if host != "" && r.Subject == "CN="+host {
		flags |= flagSubjectIsHost
	} else {
		f[shSubject] = r.Subject
	}
	f[shIssuer], f[shSerial], f[shKeyType] = r.Issuer, r.Serial, r.KeyType
	f[shSignatureAlgorithm], f[shLegacyTLS] = r.SignatureAlgorithm, itoa(int64(len(r.LegacyTLS)))
	for _, v := range r.LegacyTLS {
		f = append(f, tlsVersionCode(v))
	}
	f = append(f, sans...)
	f[shFlags] = itoa36(flags)
	if len(f) == shFields {
		for len(f) > 0 && f[len(f)-1] == "" {
			f = f[:len(f)-1]
		}
	}
	for i := range f {
		f[i] = shapeEscaper.Replace(f[i])
	}
	return strings.Join(f, "|")
}

// decodeShape reads what encodeShape wrote into r, for a view named name
// ("host:port"; "" when unknown), and returns the port.
func decodeShape(s, name string, r *events.IPResult) (int, error) {
	host, namePort := nameParts(name)
	f := strings.Split(s, "|")
	for i := range f {
		if strings.IndexByte(f[i], '%') >= 0 { // most fields have no escape: no replacer scan
			f[i] = shapeUnescaper.Replace(f[i])
		}
	}
	legacy, _ := strconv.Atoi(field(f, shLegacyTLS))
	if legacy < 0 || legacy > max(0, len(f)-shFields) {
		return 0, fmt.Errorf("shape: %d legacy versions in %d fields", legacy, len(f))
	}
	var errs []error
	num := func(i int) int64 {
		v := field(f, i)
		if v == "" {
			return 0
		}
		base := 10
		if i == shFlags {
			base = 36
		}
		n, err := strconv.ParseInt(v, base, 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("shape field %d: %w", i, err))
		}
		return n
	}
	text := func(i int, decode func(string) (string, error)) string {
		v, err := decode(field(f, i))
		if err != nil {
			errs = append(errs, fmt.Errorf("shape field %d: %w", i, err))
		}
		return v
	}
	when := func(i int) time.Time {
		t, err := timeOf(field(f, i))
		if err != nil {
			errs = append(errs, fmt.Errorf("shape field %d: %w", i, err))
		}
		return t
	}
	flags := num(shFlags)
	r.Outcome, r.Detail = events.Outcome(field(f, shOutcome)), field(f, shDetail)
	r.CertificateFound, r.ChainValid = flags&flagCertificateFound != 0, flags&flagChainValid != 0
	r.HostnameValid, r.HSTSIncludeSubdomains = flags&flagHostnameValid != 0, flags&flagHSTSIncludeSubdomains != 0
	r.LegacyTLSChecked = flags&flagLegacyTLSChecked != 0
	r.ChainLength, r.HTTPStatus, r.HSTSMaxAge, r.KeyBits = int(num(shChainLength)), int(num(shHTTPStatus)), num(shHSTSMaxAge), int(num(shKeyBits))
	r.TLSVersion, r.CipherSuite = text(shTLSVersion, tlsVersionOf), text(shCipherSuite, cipherSuiteOf)
	r.LeafSHA256, r.NotAfter, r.NotBefore = text(shLeafSHA256, shaOf), when(shNotAfter), when(shNotBefore)
	r.Subject, r.Issuer, r.Serial = field(f, shSubject), field(f, shIssuer), field(f, shSerial)
	r.KeyType, r.SignatureAlgorithm = field(f, shKeyType), field(f, shSignatureAlgorithm)
	if flags&flagSubjectIsHost != 0 {
		if host == "" {
			errs = append(errs, errors.New("shape: subject from the view's name, which has none"))
		}
		r.Subject = "CN=" + host
	}
	port := int(num(shPort))
	if flags&flagPortOfName != 0 {
		if namePort == 0 {
			errs = append(errs, errors.New("shape: port from the view's name, which has none"))
		}
		port = namePort
	}
	r.LegacyTLS, r.SANs = nil, nil
	for i := range legacy {
		r.LegacyTLS = append(r.LegacyTLS, text(shFields+i, tlsVersionOf))
	}
	if flags&flagSANIsCN != 0 {
		cn, ok := strings.CutPrefix(r.Subject, "CN=")
		if !ok {
			errs = append(errs, errors.New("shape: first SAN from a subject without CN"))
		}
		r.SANs = append(r.SANs, cn)
	}
	if len(f) > shFields+legacy {
		r.SANs = append(r.SANs, f[shFields+legacy:]...)
	}
	return port, errors.Join(errs...)
}

// field is f[i], or "" past its end.
func field(f []string, i int) string {
	if i < len(f) {
		return f[i]
	}
	return ""
}

// refLen is the length of a shape's name (shapeRef); the Lua of
// markLua and dropUnusedLeaves counts it alike (8), and markIDLen (22).
const refLen = 8

// shapeRef names a shape in its view: 48 bits of its SHA-256, in compact
// (refLen, 8 characters). Two shapes of one view sharing a name (about one chance
// in 10^12 for a view of a dozen shapes) would show one's facts for the
// other.
func shapeRef(shape string) string {
	sum := sha256.Sum256([]byte(shape))
	return Compact.EncodeToString(sum[:6])
}

// itoa is n in decimal, "" for 0.
func itoa(n int64) string {
	if n == 0 {
		return ""
	}
	return strconv.FormatInt(n, 10)
}

// itoa36 is n in base 36, "" for 0.
func itoa36(n int64) string {
	if n == 0 {
		return ""
	}
	return strconv.FormatInt(n, 36)
}

// timeCode is t in Unix seconds, base 36, then "." and its nanoseconds
// when it has any; "" for the zero time. Times come back in UTC.
func timeCode(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	s := strconv.FormatInt(t.Unix(), 36)
	if ns := t.Nanosecond(); ns != 0 {
		s += "." + strconv.FormatInt(int64(ns), 36)
	}
	return s
}

// timeOf reads timeCode.
func timeOf(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	sec, frac, _ := strings.Cut(s, ".")
	n, err := strconv.ParseInt(sec, 36, 64)
	if err != nil {
		return time.Time{}, err
	}
	var ns int64
	if frac != "" {
		if ns, err = strconv.ParseInt(frac, 36, 64); err != nil || ns < 0 || ns >= 1e9 {
			return time.Time{}, fmt.Errorf("time %q: bad nanoseconds", s)
		}
	}
	return time.Unix(n, ns).UTC(), nil
}

// shaCode is a fingerprint as written by the agent (64 lower-case hex
// digits) in compact, anything else as it is after "=".
func shaCode(sha string) string {
	if b, err := hex.DecodeString(sha); err == nil && len(b) == sha256.Size && hex.EncodeToString(b) == sha {
		return Compact.EncodeToString(b)
	}
	if sha == "" {
		return ""
	}
	return "=" + sha
}

// shaOf reads shaCode.
func shaOf(s string) (string, error) {
	if v, ok := strings.CutPrefix(s, "="); ok || s == "" {
		return v, nil
	}
	b, err := Compact.DecodeString(s)
	if err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("fingerprint %q: not %d bytes in compact", s, sha256.Size)
	}
	return hex.EncodeToString(b), nil
}

// tlsVersions and cipherSuites are the codes of the names crypto/tls
// gives TLS versions and cipher suites, as the agent records them.
var tlsVersions, cipherSuites = func() (map[string]uint16, map[string]uint16) {
	versions := map[string]uint16{}
	for _, v := range []uint16{tls.VersionSSL30, tls.VersionTLS10, tls.VersionTLS11, tls.VersionTLS12, tls.VersionTLS13} { //nolint:staticcheck // SSL 3.0 is still named by old servers
		versions[tls.VersionName(v)] = v
	}
	suites := map[string]uint16{}
	for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
		suites[s.Name] = s.ID
	}
	return versions, suites
}()

// tlsCode is a TLS version's or cipher suite's name as its code in hex
// when crypto/tls names it so, else the name as it is after "=".
func tlsCode(name string, codes map[string]uint16) string {
	if id, ok := codes[name]; ok {
		return strconv.FormatUint(uint64(id), 16)
	}
	if name == "" {
		return ""
	}
	return "=" + name
}

// tlsNameOf reads tlsCode with name, crypto/tls's namer.
func tlsNameOf(s string, name func(uint16) string) (string, error) {
	if v, ok := strings.CutPrefix(s, "="); ok || s == "" {
		return v, nil
	}
	id, err := strconv.ParseUint(s, 16, 16)
	if err != nil {
		return "", fmt.Errorf("tls code %q: %w", s, err)
	}
	return name(uint16(id)), nil
}

// tlsVersionCode is a TLS version's name as tlsCode writes it, shorter
// for the versions crypto/tls names (SSL 3.0 to TLS 1.3, 0x0300 to
// 0x0304): their last hex digit.
func tlsVersionCode(name string) string {
	if id, ok := tlsVersions[name]; ok && id>>8 == 3 && id&0xff < 16 {
		return strconv.FormatUint(uint64(id&0xff), 16)
	}
	return tlsCode(name, tlsVersions)
}

// tlsVersionOf reads tlsVersionCode, and tlsCode's longer codes of the
// shapes written before.
func tlsVersionOf(s string) (string, error) {
	if len(s) == 1 && s != "=" {
		d, err := strconv.ParseUint(s, 16, 8)
		if err != nil {
			return "", fmt.Errorf("tls version %q: %w", s, err)
		}
		return tls.VersionName(0x0300 + uint16(d)), nil
	}
	return tlsNameOf(s, tls.VersionName)
}

func cipherSuiteOf(s string) (string, error) { return tlsNameOf(s, tls.CipherSuiteName) }

// encodeResults turns one region's scan of host:port, finished at
// finished as event eventID, into the view fields that applyScanScript
// writes as they are: the region's field "<region>" (regionMark, the mark
// (regionMarkCode), then ";"-separated items: a shape's name, which the
// IPs after it refer to, or "<ip>,<connect ms>,<handshake ms>" with the
// timings in numCode), in chunks "<region>|1"... when longer than
// maxRegionChunk, and the chunks of its shapes ("#..."), each shape once.
// A region without results has its field all the same, for the mark.
func encodeResults(region, host string, port int, finished time.Time, eventID uuid.UUID, results []events.IPResult) []any {
	out := make([]any, 0, 4*len(results)+2)
	items := make([]string, 0, 2*len(results)+1)
	items = append(items, regionMarkCode(finished, eventID))
	written := map[string]bool{}
	last := ""
	for _, r := range results {
		shape := encodeShape(host, port, r)
		ref := shapeRef(shape)
		if ref != last {
			items, last = append(items, ref), ref
		}
		items = append(items, IPCode(r.IP)+","+numCode(r.ConnectMS)+","+numCode(r.HandshakeMS))
		if written[ref] {
			continue
		}
		written[ref] = true
		for i, c := range splitChunks(shape, maxChunk) {
			out = append(out, chunkName(leafPrefix+ref, i), c)
		}
	}
	if len(items) > 1 {
		// The first shape's name follows the mark without a separator.
		items[1] = items[0] + items[1]
		items = items[1:]
	}
	for i, c := range splitChunks(regionMark+strings.Join(items, ";"), maxRegionChunk) {
		out = append(out, chunkName(region, i), c)
	}
	return out
}

// IPCode is an IP address as a region's field holds it: its 4 or 16
// bytes in compact (6 or 22 characters) when it is one as net/netip
// writes it, "" for none, else "=" and the string with ",", ";" and "%"
// escaped (results fed by hand).
func IPCode(ip string) string {
	if a, err := netip.ParseAddr(ip); err == nil && a.String() == ip && a.Zone() == "" {
		return Compact.EncodeToString(a.AsSlice())
	}
	if ip == "" {
		return ""
	}
	return "=" + ipEscaper.Replace(ip)
}

// IPOf reads IPCode.
func IPOf(s string) (string, error) {
	if v, ok := strings.CutPrefix(s, "="); ok {
		return ipUnescaper.Replace(v), nil
	}
	if s == "" {
		return "", nil
	}
	b, err := Compact.DecodeString(s)
	a, ok := netip.AddrFromSlice(b)
	if err != nil || !ok {
		return "", fmt.Errorf("ip %q: not 4 or 16 bytes in compact", s)
	}
	return a.String(), nil
}

// ipEscaper and ipUnescaper keep the separators of a region's field out
// of the IPs IPCode writes as they are.
var (
	ipEscaper   = strings.NewReplacer("%", "%25", ",", "%2C", ";", "%3B")
	ipUnescaper = strings.NewReplacer("%25", "%", "%2C", ",", "%3B", ";")
)

// splitChunks cuts a value too long for one listpack field into the
// values of its chunks, of at most size bytes each (maxChunk, or
// maxRegionChunk for a region's field); there is always one, if empty.
func splitChunks(s string, size int) []string {
	out := make([]string, 0, len(s)/size+1)
	for len(out) == 0 || len(s) > 0 {
		n := min(len(s), size)
		out = append(out, s[:n])
		s = s[n:]
	}
	return out
}

// chunkName is the field of the i-th chunk of a value named name: name,
// then "<name>|1", "<name>|2"...
func chunkName(name string, i int) string {
	if i == 0 {
		return name
	}
	return name + chunkSep + strconv.Itoa(i)
}

// readChunks joins the chunks of the value named name of a hash.
func readChunks(all map[string]string, name string) (string, bool) {
	s, ok := all[name]
	for i := 1; ok; i++ {
		c, more := all[chunkName(name, i)]
		if !more {
			break
		}
		s += c
	}
	return s, ok
}

// leafKey names a layout 2 leaf's facts in a view: its fingerprint, or
// for a result that carries none, or one of other characters than letters
// and digits (results fed by hand), its region and IP. dropUnusedLeaves
// finds the same names (Lua's %w is [0-9A-Za-z]).
func leafKey(sha, region, ip string) string {
	if sha == "" || strings.ContainsFunc(sha, func(r rune) bool {
		return (r < '0' || r > '9') && (r < 'a' || r > 'z') && (r < 'A' || r > 'Z')
	}) {
		return "ip:" + region + "/" + ip
	}
	return sha
}

// decodeEntries reads the entries of a view hash (every field; meta
// fields and shapes are skipped), in no particular order.
func decodeEntries(domainID string, all map[string]string) ([]ExpEntry, error) {
	out := make([]ExpEntry, 0, entryCount(all))
	shapes := map[string]decodedShape{}
	for f, v := range all {
		if strings.HasPrefix(f, metaPrefix) || strings.HasPrefix(f, leafPrefix) {
			continue
		}
		region, _, entry := strings.Cut(f, chunkSep)
		var err error
		switch _, own := all[region]; {
		case !entry:
			out, err = decodeRegion(all, shapes, region, out)
		case own:
			// A chunk of the region's field.
		default:
			var e ExpEntry
			e, err = decodeEntry(all, shapes, f, v)
			out = append(out, e)
		}
		if err != nil {
			return nil, fmt.Errorf("decode expiration entry %s of %s: %w", f, domainID, err)
		}
	}
	return out, nil
}

// entryCount is about how many entries the view's fields hold, to size
// the slice once (an entry is 416 B, a page decodes 100 views): two
// commas per entry ("<ip>,<connect>,<handshake>" in a region field or a
// chunk, "<shape>,<connect>,<handshake>" in a field of its own); an entry
// of the JSON layout holds more, bounded.
func entryCount(all map[string]string) int {
	n := 0
	for f, v := range all {
		if !strings.HasPrefix(f, metaPrefix) && !strings.HasPrefix(f, leafPrefix) {
			n += strings.Count(v, ",") / 2
		}
	}
	return min(n, 2*len(all))
}

// decodeRegion appends to out the entries of a region's field (layout 5,
// encodeResults, or layout 4).
func decodeRegion(all map[string]string, shapes map[string]decodedShape, region string, out []ExpEntry) ([]ExpEntry, error) {
	v, _ := readChunks(all, region)
	items, num, ref := "", numOf, ""
	var (
		scanned time.Time
		eventID string
		marked  bool // the mark is in the field (layout 5)
	)
	switch {
	case strings.HasPrefix(v, regionMark):
		mark, rest, more := strings.Cut(v[len(regionMark):], ";")
		if more {
			if len(mark) < refLen {
				return out, fmt.Errorf("region field %q: no shape after the mark", v)
			}
			mark, ref = mark[:len(mark)-refLen], mark[len(mark)-refLen:]
		}
		var err error
		if scanned, eventID, err = decodeRegionMark(mark); err != nil {
			return out, err
		}
		marked = true
		if !more {
			return out, nil
		}
		items = rest
	case strings.HasPrefix(v, oldRegionMark):
		items, num = v[len(oldRegionMark):], decimal
	default:
		return out, fmt.Errorf("region field %q: not layout %s or %s", v, regionMark, oldRegionMark)
	}
	for _, item := range strings.Split(items, ";") {
		ip, timings, ok := strings.Cut(item, ",")
		if !ok {
			ref = item
			continue
		}
		e, err := shapeEntry(all, shapes, ref, timings, num)
		if err != nil {
			return out, err
		}
		if ip, err = IPOf(ip); err != nil {
			return out, err
		}
		if err := finishEntry(all, &e, region, ip); err != nil {
			return out, err
		}
		if marked {
			e.ScannedAt, e.EventID = scanned, eventID
		}
		out = append(out, e)
	}
	return out, nil
}

// decodedShape is a shape as decodeShape read it, kept while one view's
// entries are decoded: the entries of every region and IP usually share
// one, and decoding it once per view rather than per entry is most of a
// list page's decoding (GET /domains renders 100 views).
type decodedShape struct {
	result events.IPResult
	port   int
}

// decodeEntry reads entry field f of value v, of any layout, with what
// the rest of the view all says of it; shapes keeps the view's shapes
// decoded so far.
func decodeEntry(all map[string]string, shapes map[string]decodedShape, f, v string) (ExpEntry, error) {
	var e ExpEntry
	switch {
	case strings.HasPrefix(v, shapeMark):
		ref, timings, _ := strings.Cut(v[len(shapeMark):], ",")
		var err error
		if e, err = shapeEntry(all, shapes, ref, timings, decimal); err != nil {
			return e, err
		}
	case strings.HasPrefix(v, entryMark):
		var s storedEntry
		if err := json.Unmarshal([]byte(v[len(entryMark):]), &s); err != nil {
			return e, err
		}
		e.Port, e.IPResult = s.Port, events.IPResult{
			Outcome: s.Outcome, Detail: s.Detail, CertificateFound: s.CertificateFound, LeafSHA256: s.LeafSHA256,
			ChainLength: s.ChainLength, TLSVersion: s.TLSVersion, CipherSuite: s.CipherSuite, ChainValid: s.ChainValid,
			HostnameValid: s.HostnameValid, ConnectMS: s.ConnectMS, HandshakeMS: s.HandshakeMS, HTTPStatus: s.HTTPStatus,
			HSTSMaxAge: s.HSTSMaxAge, HSTSIncludeSubdomains: s.HSTSIncludeSubdomains, LegacyTLSChecked: s.LegacyTLSChecked,
			LegacyTLS: s.LegacyTLS,
		}
		if s.CertificateFound {
			region, ip, _ := strings.Cut(f, "|")
			c, ok := all[leafPrefix+leafKey(s.LeafSHA256, region, ip)]
			if !ok {
				return e, fmt.Errorf("no facts of leaf %s", s.LeafSHA256)
			}
			var sc storedCert
			if err := json.Unmarshal([]byte(c), &sc); err != nil {
				return e, fmt.Errorf("leaf %s: %w", s.LeafSHA256, err)
			}
			e.Subject, e.Issuer, e.SANs, e.Serial = sc.Subject, sc.Issuer, sc.SANs, sc.Serial
			e.NotBefore, e.NotAfter = sc.NotBefore, sc.NotAfter
			e.KeyType, e.KeyBits, e.SignatureAlgorithm = sc.KeyType, sc.KeyBits, sc.SignatureAlgorithm
		}
	default:
		// The oldest layout: a whole ExpEntry.
		err := json.Unmarshal([]byte(v), &e)
		return e, err
	}
	region, ip, _ := strings.Cut(f, "|")
	err := finishEntry(all, &e, region, ip)
	return e, err
}

// shapeEntry is an entry of shape ref (layouts 3 to 5) with timings
// "<connect ms>,<handshake ms>" that num reads (numOf in layout 5, else
// decimal); shapes keeps the view's shapes decoded so far.
func shapeEntry(all map[string]string, shapes map[string]decodedShape, ref, timings string, num func(string) (int64, error)) (ExpEntry, error) {
	var e ExpEntry
	connect, handshake, _ := strings.Cut(timings, ",")
	d, ok := shapes[ref]
	if !ok {
		shape, found := readChunks(all, leafPrefix+ref)
		if !found {
			return e, fmt.Errorf("no shape %s", ref)
		}
		var err error
		if d.port, err = decodeShape(shape, viewName(all), &d.result); err != nil {
			return e, err
		}
		shapes[ref] = d
	}
	// Entries get their own copies of the shape's lists.
	e.Port, e.IPResult = d.port, d.result
	e.SANs, e.LegacyTLS = slices.Clone(d.result.SANs), slices.Clone(d.result.LegacyTLS)
	var err1, err2 error
	e.ConnectMS, err1 = num(connect)
	e.HandshakeMS, err2 = num(handshake)
	return e, errors.Join(err1, err2)
}

// decimal reads a number in decimal (timings before layout 5).
func decimal(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) }

// finishEntry sets what an entry of region and ip takes from the view
// around it: its region, IP and the region's mark "@<region>" (layouts
// before 5, whose region fields hold none).
func finishEntry(all map[string]string, e *ExpEntry, region, ip string) error {
	e.Region, e.IP = region, ip
	if mark, ok := all[metaPrefix+region]; ok {
		var err error
		if e.ScannedAt, e.EventID, err = decodeMark(mark); err != nil {
			return err
		}
	}
	if e.CertificateFound {
		e.NoExpiry = e.HasNoExpiry()
	}
	return nil
}

// nameParts are the host and port of a view's name "host:port", as
// domainname.Key joined them (an IPv6 address unbracketed); "" and 0 for
// none.
func nameParts(name string) (string, int) {
	i := strings.LastIndexByte(name, ':')
	if i < 0 {
		return "", 0
	}
	port, _ := strconv.Atoi(name[i+1:])
	return name[:i], port
}
