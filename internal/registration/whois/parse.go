package whois

import (
	"bytes"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
)

// Parse errors: what an answer without a registration says instead.
var (
	// ErrNotFound: the server has no such domain ("No match", "NOT FOUND",
	// DENIC's "Status: free", ...).
	ErrNotFound = errors.New("whois: no such domain")
	// ErrRateLimited: the server refused the query for its rate limit.
	ErrRateLimited = errors.New("whois: query rate limit exceeded")
	// ErrMalformed: no field of a registration could be read.
	ErrMalformed = errors.New("whois: no registration field in the answer")
)

// Record is what one WHOIS answer says about a registration.
type Record struct {
	// Registrar is the sponsoring registrar's name.
	Registrar string
	// CreatedAt, UpdatedAt and ExpiresAt are nil when the answer gives no
	// date the parser can read: a missing date is never guessed.
	CreatedAt *time.Time
	UpdatedAt *time.Time
	ExpiresAt *time.Time
	// Statuses use RDAP's names (RFC 8056: "client transfer prohibited",
	// "active"), so WHOIS and RDAP lookups of one domain agree; a
	// registry's own status words are kept lower-case.
	Statuses []string
	// NameServers are lower-case host names without the trailing dot.
	NameServers []string
	// Referral is the host:port of the registrar's WHOIS server the
	// answer names ("Registrar WHOIS Server:"), empty when it names none.
	Referral string
}

// empty reports whether r holds no registration data beyond statuses.
func (r Record) empty() bool {
	return r.Registrar == "" && r.CreatedAt == nil && r.UpdatedAt == nil &&
		r.ExpiresAt == nil && len(r.NameServers) == 0
}

// merge fills what r lacks from other: r's data (the registry's) wins.
func (r Record) merge(other Record) Record {
	if r.Registrar == "" {
		r.Registrar = other.Registrar
	}
	if r.CreatedAt == nil {
		r.CreatedAt = other.CreatedAt
	}
	if r.UpdatedAt == nil {
		r.UpdatedAt = other.UpdatedAt
	}
	if r.ExpiresAt == nil {
		r.ExpiresAt = other.ExpiresAt
	}
	if len(r.Statuses) == 0 {
		r.Statuses = other.Statuses
	}
	if len(r.NameServers) == 0 {
		r.NameServers = other.NameServers
	}
	return r
}

// Field kinds: every key the parser knows names one of these.
const (
	kindRegistrar = iota + 1
	kindCreated
	kindUpdated
	kindExpires
	kindStatus
	kindState // JPRS "[State] Connected (2027/03/31)": a status and the expiry
	kindNameServer
	kindReferral
)

// keys maps a lower-case key, its spaces collapsed, to its kind. The keys
// are those of the ICANN gTLD format and of the ccTLD registries whose
// formats differ (Nominet, DENIC, JPRS in English and Japanese, ...).
var keys = map[string]int{
	"registrar":                              kindRegistrar,
	"sponsoring registrar":                   kindRegistrar,
	"registrar name":                         kindRegistrar,
	"registrar organization":                 kindRegistrar,
	"creation date":                          kindCreated,
	"created":                                kindCreated,
	"created on":                             kindCreated,
	"created date":                           kindCreated,
	"registered on":                          kindCreated,
	"registered date":                        kindCreated,
	"registration date":                      kindCreated,
	"registration time":                      kindCreated,
	"domain registration date":               kindCreated,
	"登録年月日":                                  kindCreated,
	"updated date":                           kindUpdated,
	"updated":                                kindUpdated,
	"last updated":                           kindUpdated,
	"last update":                            kindUpdated,
	"last modified":                          kindUpdated,
	"last-update":                            kindUpdated,
	"modified":                               kindUpdated,
	"changed":                                kindUpdated,
	"最終更新":                                   kindUpdated,
	"registry expiry date":                   kindExpires,
	"registrar registration expiration date": kindExpires,
	"expiry date":                            kindExpires,
	"expiration date":                        kindExpires,
	"expiration time":                        kindExpires,
	"expire date":                            kindExpires,
	"expires on":                             kindExpires,
	"expires":                                kindExpires,
	"paid-till":                              kindExpires,
	"renewal date":                           kindExpires,
	"有効期限":                                   kindExpires,
	"domain status":                          kindStatus,
	"status":                                 kindStatus,
	"registration status":                    kindStatus,
	"state":                                  kindState,
	"状態":                                     kindState,
	"name server":                            kindNameServer,
	"name servers":                           kindNameServer,
	"nameserver":                             kindNameServer,
	"nameservers":                            kindNameServer,
	"nserver":                                kindNameServer,
	"ネームサーバ":                                 kindNameServer,
	"registrar whois server":                 kindReferral,
	"whois server":                           kindReferral,
}

// Parse reads a registration from one WHOIS answer. An answer with no
// registration field returns ErrNotFound or ErrRateLimited when it says
// so, ErrMalformed otherwise.
func Parse(text []byte) (Record, error) {
	var r Record
	var stateExpiry *time.Time
	lines := strings.Split(decode(text), "\n")
	for _, f := range fields(lines) {
		switch keys[f.key] {
		case kindRegistrar:
			if r.Registrar == "" {
				r.Registrar = registrarName(f.value)
			}
		case kindCreated:
			firstDate(&r.CreatedAt, f.value)
		case kindUpdated:
			firstDate(&r.UpdatedAt, f.value)
		case kindExpires:
			firstDate(&r.ExpiresAt, f.value)
		case kindStatus:
			r.Statuses = appendNew(r.Statuses, status(f.value))
		case kindState:
			r.Statuses = appendNew(r.Statuses, status(f.value))
			if i := strings.IndexByte(f.value, '('); i >= 0 {
				firstDate(&stateExpiry, strings.TrimSuffix(f.value[i+1:], ")"))
			}
		case kindNameServer:
			r.NameServers = appendNew(r.NameServers, nameServer(f.value))
		case kindReferral:
			if r.Referral == "" {
				r.Referral = serverAddr(f.value)
			}
		}
	}
	if r.ExpiresAt == nil {
		r.ExpiresAt = stateExpiry
	}
	if !r.empty() {
		return r, nil
	}
	// Only an answer without data is read for these phrases: a record's
	// terms of use speak of "query rate" and "not found" too.
	switch {
	case anyLine(lines, isNotFound):
		return Record{}, ErrNotFound
	case anyLine(lines, isRateLimited):
		return Record{}, ErrRateLimited
	case len(r.Statuses) > 0:
		return r, nil
	}
	return Record{}, ErrMalformed
}

// decode turns an answer into UTF-8: JPRS answers in ISO-2022-JP, some
// older registries in Latin-1.
func decode(text []byte) string {
	if bytes.Contains(text, []byte("\x1b$B")) || bytes.Contains(text, []byte("\x1b$@")) {
		if out, err := japanese.ISO2022JP.NewDecoder().Bytes(text); err == nil {
			text = out
		}
	}
	if !utf8.Valid(text) {
		if out, err := charmap.ISO8859_1.NewDecoder().Bytes(text); err == nil {
			text = out
		}
	}
	return strings.ReplaceAll(string(text), "\r", "")
}

type field struct {
	key, value string
}

// fields reads the "Key: value" and JPRS "[Key]  value" lines of an
// answer, and Nominet's blocks: a "Key:" line alone, its values on the
// more indented lines under it up to a blank line.
func fields(lines []string) []field {
	var out []field
	blockKey, blockIndent := "", 0
	for _, line := range lines {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" {
			blockKey = ""
			continue
		}
		indent := len(line) - len(strings.TrimLeft(line, " \t"))
		inBlock := blockKey != "" && indent > blockIndent
		key, value, ok := splitField(trimmed)
		if inBlock && (!ok || keys[key] == 0) {
			// An unknown "key" inside a block is a value that holds a
			// colon (an IPv6 glue address, "URL: ...").
			out = append(out, field{blockKey, trimmed})
			continue
		}
		if !ok {
			blockKey = ""
			continue
		}
		if value == "" {
			blockKey, blockIndent = key, indent
			continue
		}
		if !inBlock {
			blockKey = ""
		}
		out = append(out, field{key, value})
	}
	return out
}

// maxKeyLen bounds a key: a longer "key" is prose with a colon in it.
const maxKeyLen = 48

// splitField splits one trimmed line into a normalised key and its value.
func splitField(line string) (key, value string, ok bool) {
	// JPRS numbers its English fields: "a. [Domain Name]  GOOGLE.CO.JP".
	if len(line) > 3 && line[1] == '.' && line[2] == ' ' && line[0] >= 'a' && line[0] <= 'z' {
		line = strings.TrimSpace(line[3:])
	}
	var rawKey string
	if strings.HasPrefix(line, "[") {
		end := strings.IndexByte(line, ']')
		if end < 0 {
			return "", "", false
		}
		rawKey, value = line[1:end], line[end+1:]
	} else {
		i := strings.IndexByte(line, ':')
		if i < 0 {
			return "", "", false
		}
		rawKey, value = line[:i], line[i+1:]
	}
	key = strings.ToLower(strings.Join(strings.Fields(rawKey), " "))
	if key == "" || len(key) > maxKeyLen {
		return "", "", false
	}
	return key, strings.TrimSpace(value), true
}

// registrarName drops Nominet's "[Tag = ...]" from a registrar's name.
func registrarName(v string) string {
	if i := strings.Index(v, "[Tag ="); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}

func firstDate(dst **time.Time, v string) {
	if *dst != nil {
		return
	}
	if t, ok := parseDate(v); ok {
		*dst = &t
	}
}

// jst is JPRS's zone, named "(JST)" after its times.
var jst = time.FixedZone("JST", 9*60*60)

// dateLayouts are the layouts registries write dates in, tried in turn.
var dateLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999Z0700", // -0700 without the colon
	"2006-01-02T15:04:05.999999999",      // no zone: UTC
	"2006-01-02-T15:04:05Z07:00",         // Uniregistry
	"2006-01-02 15:04:05Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
	"02-Jan-2006",
	"02-Jan-2006 15:04:05",
	"2006/01/02",
	"2006/01/02 15:04:05",
	"2006/01/02 15:04",
	"2006.01.02",
	"2006.01.02 15:04:05",
	"02.01.2006",
	"02.01.2006 15:04:05",
	"2006. 01. 02.",
	"January 2 2006",
	"2 January 2006",
}

// parseDate reads a registry's date; a date outside 1980..2200 is junk.
func parseDate(v string) (time.Time, bool) {
	v = strings.TrimSpace(v)
	loc := time.UTC
	if strings.HasSuffix(v, "(JST)") {
		v, loc = strings.TrimSpace(strings.TrimSuffix(v, "(JST)")), jst
	}
	v = strings.TrimSuffix(strings.TrimSuffix(v, " UTC"), " GMT")
	for _, layout := range dateLayouts {
		t, err := time.ParseInLocation(layout, v, loc)
		if err != nil {
			continue
		}
		if t.Year() < 1980 || t.Year() > 2200 {
			return time.Time{}, false
		}
		return t.UTC(), true
	}
	return time.Time{}, false
}

// eppToRDAP maps EPP status names (RFC 5731) to RDAP's (RFC 8056) where
// the two differ by more than spacing.
var eppToRDAP = map[string]string{
	"ok":     "active",
	"linked": "associated",
}

// eppStatuses are the EPP domain statuses written as one camelCase word.
var eppStatuses = map[string]bool{
	"addperiod": true, "autorenewperiod": true, "inactive": true, "ok": true,
	"linked": true, "pendingcreate": true, "pendingdelete": true,
	"pendingrenew": true, "pendingrestore": true, "pendingtransfer": true,
	"pendingupdate": true, "redemptionperiod": true, "renewperiod": true,
	"transferperiod": true, "clientdeleteprohibited": true,
	"clienthold": true, "clientrenewprohibited": true,
	"clienttransferprohibited": true, "clientupdateprohibited": true,
	"serverdeleteprohibited": true, "serverhold": true,
	"serverrenewprohibited": true, "servertransferprohibited": true,
	"serverupdateprohibited": true,
}

// status normalises one status value: the URL or note after it dropped,
// an EPP name turned into RDAP's, anything else lower-case.
func status(v string) string {
	for _, cut := range []string{"http", "(", "#"} {
		if i := strings.Index(v, cut); i >= 0 {
			v = v[:i]
		}
	}
	v = strings.TrimSuffix(strings.TrimSpace(v), ".")
	if v == "" {
		return ""
	}
	if eppStatuses[strings.ToLower(v)] {
		if rdap, ok := eppToRDAP[strings.ToLower(v)]; ok {
			return rdap
		}
		var b strings.Builder
		for i, c := range v {
			if c >= 'A' && c <= 'Z' && i > 0 {
				b.WriteByte(' ')
			}
			b.WriteRune(c)
		}
		v = b.String()
	}
	return strings.ToLower(strings.Join(strings.Fields(v), " "))
}

// nameServer reads a name server's host from a value that may carry its
// glue addresses after it; "" when it is not a host name.
func nameServer(v string) string {
	f := strings.Fields(v)
	if len(f) == 0 {
		return ""
	}
	h := strings.TrimSuffix(strings.ToLower(f[0]), ".")
	if !isHostName(h) {
		return ""
	}
	return h
}

// isHostName reports whether h is a dotted DNS name in A-labels.
func isHostName(h string) bool {
	if len(h) > 253 || !strings.Contains(h, ".") {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// serverAddr turns a WHOIS server as answers name it ("whois.x.com",
// "WHOIS.X.COM", "whois://whois.x.com/", "rwhois.x.net:4321") into
// host:port; "" when it names no host.
func serverAddr(v string) string {
	v = strings.ToLower(strings.TrimSpace(v))
	if i := strings.Index(v, "://"); i >= 0 {
		v = v[i+3:]
	}
	if i := strings.IndexByte(v, '/'); i >= 0 {
		v = v[:i]
	}
	host, port := v, "43"
	if i := strings.LastIndexByte(v, ':'); i >= 0 {
		host, port = v[:i], v[i+1:]
	}
	if !isHostName(host) || !isPort(port) {
		return ""
	}
	return host + ":" + port
}

// maxListLen caps the statuses and name servers kept from one answer:
// real ones list a dozen at most, and the cap keeps appendNew's search
// from going quadratic on a hostile answer.
const maxListLen = 32

func appendNew(list []string, v string) []string {
	if v == "" || len(list) >= maxListLen {
		return list
	}
	for _, have := range list {
		if have == v {
			return list
		}
	}
	return append(list, v)
}

func anyLine(lines []string, match func(string) bool) bool {
	for _, l := range lines {
		if match(strings.ToLower(strings.Trim(l, " \t%#>*"))) {
			return true
		}
	}
	return false
}

// notFoundPrefixes start the line by which a registry says it has no such
// domain; a prefix, not a substring, so terms of use never match.
var notFoundPrefixes = []string{
	"no match", "not found", "no entries found", "no data found",
	"domain not found", "no matching record", "nothing found",
	"object does not exist", "the queried object does not exist",
	"domain status: no object found", "status: free", "status: available",
	"this domain name has not been registered",
	"no information available about domain name",
}

func isNotFound(l string) bool {
	for _, p := range notFoundPrefixes {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return false
}

// rateLimitPhrases are how WHOIS servers refuse a query for its rate.
var rateLimitPhrases = []string{
	"limit exceeded", "quota exceeded", "limit reached",
	"exceeded the maximum", "exceeded your query limit",
	"too many requests", "server too busy", "excessive queries",
}

func isRateLimited(l string) bool {
	for _, p := range rateLimitPhrases {
		if strings.Contains(l, p) {
			return true
		}
	}
	return false
}
