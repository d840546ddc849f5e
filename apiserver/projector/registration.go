package projector

// The registration view holds, per registrable domain (eTLD+1), the latest
// registration lookup and the latest the registry answered, and the index
// of the monitored domains under it, in one hash kept a listpack like the
// expiration views (entry.go: values of at most 63 bytes, times in base
// 36, compact event ids):
//
//	view:reg:{<registrable>}
//	  "@l"        -> mark of the newest lookup, any status: "<looked up
//	                 unix ms, base 36>|<event id, compact>" (encodeMark)
//	  "l", "l|1"  -> that lookup (encodeLookup) in chunks (splitChunks)
//	  "@a"        -> mark of the newest lookup the registry answered (ok,
//	                 no-expiry, not-found), or "=" when it is the newest
//	                 lookup, whose copy is not written again: a later
//	                 rate-limited or failed lookup never hides what is
//	                 known, and first moves "l" to "a"
//	  "a", "a|1"  -> that lookup, when "@a" is a mark
//	  "+<id>"     -> unix ms of the newest domain event that named domain
//	                 <id> (compact when a UUID, else "=<id>") under this
//	                 registrable domain: the index the fan-out reads
//
// A lookup is encoded by position, "|"-separated (escaped as a shape's
// fields), the domain left out (the key has it): status and source by a
// letter of their vocabulary ("%a"...), registrar, the registration's
// dates as timeCode ("=" for a zero date, "" for none), server, detail,
// retry-after, the nanoseconds of the lookup time past the mark's
// millisecond, how many statuses follow (RDAP's by a letter of
// rdapStatuses), then the statuses and the name servers.
//
// The registrable domain is the hash tag: a lookup is one domain's fact,
// shared by every tenant, and its event comes on that domain's partition
// of the event stream. Both parts only move forward: an older or
// redelivered lookup changes nothing.
//
// The index is a superset: a domain renamed to another registrable domain,
// or removed, stays in the old index until the next lookup's fan-out finds
// its view names another domain (or none) and prunes it, with a
// compare-and-delete, so a domain named under it again in between stays.
//
// Views written before read as they did: "last" and "answer" as whole
// JSON events.RegistrationV1, their marks "@last" and "@answer" as
// "<ms>|<event id>" in decimal and in full, and the index in a key of its
// own (RegistrationIndexKey). A newer lookup replaces the old fields it
// supersedes; a join, a leave, a fan-out and ForgetDomain move or drop the
// members of the old index, which goes when empty. Registration views are
// not in the view snapshots: a rebuild keeps them (Rebuild).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/registration"
	"github.com/certfleet/certfleet/internal/shortid"
)

// RegistrationPrefix starts the key of every registration view and index.
const RegistrationPrefix = "view:reg:"

// RegistrationKey is the key of the registration view of a registrable
// domain, its index included.
func RegistrationKey(domain string) string { return RegistrationPrefix + "{" + domain + "}" }

// RegistrationIndexKey is the key the index of the domains monitored
// under a registrable domain had before it moved into the view (domain id
// -> unix ms, decimal): still read, and emptied by joins, leaves and
// fan-outs. It shares RegistrationKey's slot.
func RegistrationIndexKey(domain string) string { return RegistrationKey(domain) + ":domains" }

const (
	regLastMark   = "@l"
	regLastBody   = "l"
	regAnswerMark = "@a"
	regAnswerBody = "a"
	// regSameAsLast is "@a" when the newest answer is the newest lookup.
	regSameAsLast = "="
	// regMemberPrefix starts an index member's field.
	regMemberPrefix = "+"
	// The fields of the layout before.
	regOldLast       = "last"
	regOldLastMark   = "@last"
	regOldAnswer     = "answer"
	regOldAnswerMark = "@answer"

	maxRegistrable  = 253
	maxRegListItems = 100
	maxRegText      = 1024
)

// applyRegistrationScript records a lookup as the newest lookup and, when
// the registry answered, as the newest answer, each only if it is newer
// (looked-up time, then event id) than what the view holds, of either
// layout. A lookup that replaces the newest lookup while that one stays
// the answer ("@a" is "=") first copies it to "a".
//
// KEYS: view:reg:{<domain>}. ARGV: looked up ms in base 36 and event id in
// compact (encodeMark), the event id in full (to compare with a mark of
// the layout before), "1" when answered else "0", then the chunks of the
// lookup. Returns 1 when the view changed, else 0.
var applyRegistrationScript = redis.NewScript(markLua + `
local key, ms, id, full = KEYS[1], tonumber(ARGV[1], 36), ARGV[2], ARGV[3]
local function newer(mark)
  if not mark then return true end
  local cms, cid, old = scanMark(mark)
  local mine = id
  if old then mine = full end
  return ms > cms or (ms == cms and mine > cid)
end
local function chunk(name, i)
  if i == 0 then return name end
  return name .. '` + chunkSep + `' .. i
end
local function drop(name)
  local i = 0
  while redis.call('HDEL', key, chunk(name, i)) == 1 do i = i + 1 end
end
local function write(name)
  for i = 5, #ARGV do redis.call('HSET', key, chunk(name, i - 5), ARGV[i]) end
end
local lmark = redis.call('HGET', key, '` + regLastMark + `') or redis.call('HGET', key, '` + regOldLastMark + `')
local amark = redis.call('HGET', key, '` + regAnswerMark + `')
local same = amark == '` + regSameAsLast + `'
if same then
  amark = lmark
elseif not amark then
  amark = redis.call('HGET', key, '` + regOldAnswerMark + `')
end
local last = newer(lmark)
local answer = ARGV[4] == '1' and newer(amark)
if last and same and not answer then
  drop('` + regAnswerBody + `')
  local i = 0
  while true do
    local v = redis.call('HGET', key, chunk('` + regLastBody + `', i))
    if not v then break end
    redis.call('HSET', key, chunk('` + regAnswerBody + `', i), v)
    i = i + 1
  end
  redis.call('HSET', key, '` + regAnswerMark + `', lmark)
end
if last then
  drop('` + regLastBody + `')
  redis.call('HDEL', key, '` + regOldLast + `', '` + regOldLastMark + `')
  write('` + regLastBody + `')
  redis.call('HSET', key, '` + regLastMark + `', ARGV[1] .. '|' .. id)
end
if answer then
  drop('` + regAnswerBody + `')
  redis.call('HDEL', key, '` + regOldAnswer + `', '` + regOldAnswerMark + `')
  if last then
    redis.call('HSET', key, '` + regAnswerMark + `', '` + regSameAsLast + `')
  else
    write('` + regAnswerBody + `')
    redis.call('HSET', key, '` + regAnswerMark + `', ARGV[1] .. '|' .. id)
  end
end
if last or answer then return 1 end
return 0
`)

// indexScript joins a domain to a registrable domain's index or makes it
// leave. A join records the newest domain event's time; a leave deletes
// the entry only if no join newer than its time came since, so a leave
// that read the index before a join never undoes it. A member of the index
// of the layout before counts as well: a join moves it into the view, a
// leave drops it.
//
// KEYS: view:reg:{<domain>}, view:reg:{<domain>}:domains. ARGV: "join" or
// "leave", the member's field (memberField), domain id, ms.
var indexScript = redis.NewScript(`
local view, old, f, id, ms = KEYS[1], KEYS[2], ARGV[2], ARGV[3], ARGV[4]
local cur, prev = redis.call('HGET', view, f), redis.call('HGET', old, id)
if prev and (not cur or tonumber(prev) > tonumber(cur)) then cur = prev end
if ARGV[1] == 'join' then
  if cur and tonumber(cur) >= tonumber(ms) then
    if not prev then return 0 end
    ms = cur
  end
  redis.call('HSET', view, f, ms)
  if prev then redis.call('HDEL', old, id) end
  return 1
end
if cur and tonumber(cur) <= tonumber(ms) then
  redis.call('HDEL', view, f)
  if prev then redis.call('HDEL', old, id) end
  return 1
end
return 0
`)

// DecodeRegistration reads a registration.looked_up.v1 event and checks
// what the views rely on: a registrable domain as Registrable gives it, a
// known status, a lookup time, and bounded lists and strings.
func DecodeRegistration(e events.Envelope) (events.RegistrationV1, error) {
	r, err := events.DecodeRegistrationLookedUp(e)
	if err != nil {
		return r, err
	}
	// Beyond the event contract: what the view stores must be a
	// registrable domain as the API derives it from a host, and bounded.
	var errs []error
	if len(r.Domain) > maxRegistrable {
		errs = append(errs, fmt.Errorf("domain is %d bytes long, at most %d", len(r.Domain), maxRegistrable))
	} else if d, err := registration.Registrable(r.Domain); err != nil || d != r.Domain {
		errs = append(errs, fmt.Errorf("domain %q is not a registrable domain", r.Domain))
	}
	if len(r.Statuses) > maxRegListItems || len(r.NameServers) > maxRegListItems {
		errs = append(errs, fmt.Errorf("%d statuses and %d name servers, at most %d each", len(r.Statuses), len(r.NameServers), maxRegListItems))
	}
	for _, s := range []string{r.Detail, r.Source, r.Server, r.Registrar} {
		if len(s) > maxRegText {
			errs = append(errs, fmt.Errorf("a text field is %d bytes long, at most %d", len(s), maxRegText))
			break
		}
	}
	if err := errors.Join(errs...); err != nil {
		return events.RegistrationV1{}, fmt.Errorf("registration event %s: %w", e.EventID, err)
	}
	return r, nil
}

// answered reports whether a lookup status is the registry's answer
// rather than a failure to get one.
func answered(status string) bool {
	return status == events.RegistrationOK || status == events.RegistrationNoExpiry || status == events.RegistrationNotFound
}

// registrationCall is the call recording a lookup in its domain's view.
func registrationCall(e events.Envelope, r events.RegistrationV1) (*call, error) {
	ans := "0"
	if answered(r.Status) {
		ans = "1"
	}
	ms, id := encodeMark(r.LookedUpAt, e.EventID)
	args := []any{ms, id, e.EventID.String(), ans}
	for _, c := range splitChunks(encodeLookup(r), maxChunk) {
		args = append(args, c)
	}
	return &call{script: applyRegistrationScript, keys: []string{RegistrationKey(r.Domain)}, regDomain: r.Domain, args: args}, nil
}

// indexCall is the call joining domainID to the index of host's
// registrable domain (leave: removing it); nil for a host without one (an
// IP address).
func indexCall(mode, domainID, host string, at time.Time) *call {
	reg, err := registration.Registrable(host)
	if err != nil {
		return nil
	}
	return &call{script: indexScript, keys: indexKeys(reg), args: []any{mode, memberField(domainID), domainID, at.UnixMilli()}}
}

// indexKeys are the keys indexScript works on for a registrable domain.
func indexKeys(reg string) []string { return []string{RegistrationKey(reg), RegistrationIndexKey(reg)} }

// memberIDs writes the domain ids of a registration view's index, in
// compact.
var memberIDs = shortid.With(Compact)

// memberField is the field of a domain in a registration view's index:
// "+" and its id in compact when it is a UUID as uuid.UUID.String writes
// it, else "+=" and the id (shortid).
func memberField(domainID string) string { return regMemberPrefix + memberIDs.Encode(domainID) }

// memberOf is the domain id of a registration view's field, and whether
// it is an index member's.
func memberOf(field string) (string, bool) {
	f, ok := strings.CutPrefix(field, regMemberPrefix)
	if !ok {
		return "", false
	}
	id, err := memberIDs.Decode(f)
	return id, err == nil && id != ""
}

// indexMember is a domain in a registrable domain's index.
type indexMember struct {
	// ms is the time of the newest domain event that named it there.
	ms int64
	// old: the index of the layout before holds it.
	old bool
}

// indexMembers reads the index of a registration view from the view's
// fields and from the index of the layout before (the newest time when
// both hold a domain).
func indexMembers(view, old map[string]string) map[string]indexMember {
	out := map[string]indexMember{}
	add := func(id, v string, fromOld bool) {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return
		}
		m, ok := out[id]
		if !ok || ms > m.ms {
			m.ms = ms
		}
		m.old = m.old || fromOld
		out[id] = m
	}
	for f, v := range view {
		if id, ok := memberOf(f); ok {
			add(id, v, false)
		}
	}
	for id, v := range old {
		add(id, v, true)
	}
	return out
}

// ReadRegistrationIndex is the index of a registrable domain: the ids of
// the domains monitored under it, with the time (unix ms) of the newest
// domain event that named each there.
func ReadRegistrationIndex(ctx context.Context, rdb redis.UniversalClient, domain string) (map[string]int64, error) {
	pipe := rdb.Pipeline()
	view, old := pipe.HGetAll(ctx, RegistrationKey(domain)), pipe.HGetAll(ctx, RegistrationIndexKey(domain))
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read registration index of %s: %w", domain, err)
	}
	out := map[string]int64{}
	for id, m := range indexMembers(view.Val(), old.Val()) {
		out[id] = m.ms
	}
	return out, nil
}

// Positions of a lookup's fields (encodeLookup); a lookup ends with its
// statuses, as many as regStatusCount says, then its name servers.
const (
	rgStatus = iota
	rgSource
	rgRegistrar
	rgExpiresAt
	rgCreatedAt
	rgUpdatedAt
	rgServer
	rgDetail
	rgRetryAfter
	// rgLookedUpNanos: the nanoseconds of the lookup time past its mark's
	// millisecond, base 36.
	rgLookedUpNanos
	rgStatusCount
	rgFields
)

// vocab is the words a field is mostly one of, written as "%" and a
// letter: its index in vocabLetters. Words are only ever appended, since
// stored lookups name them by position. A field of exactly "%" and a
// letter is never escaped text, whose escapes are three bytes long.
type vocab []string

const vocabLetters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

var (
	// regStatuses are the lookup statuses.
	regStatuses = vocab{events.RegistrationOK, events.RegistrationNoExpiry, events.RegistrationNotFound,
		events.RegistrationRateLimited, events.RegistrationError}
	// regSources are the lookup sources.
	regSources = vocab{"rdap", "whois"}
	// rdapStatuses are RDAP's domain statuses (RFC 9083 10.2.2, RFC
	// 8056), which the workers write WHOIS's EPP statuses as too.
	rdapStatuses = vocab{"active", "inactive", "client transfer prohibited", "client update prohibited",
		"client delete prohibited", "client renew prohibited", "client hold", "server transfer prohibited",
		"server update prohibited", "server delete prohibited", "server renew prohibited", "server hold",
		"pending create", "pending delete", "pending renew", "pending restore", "pending transfer", "pending update",
		"add period", "auto renew period", "renew period", "transfer period", "redemption period", "associated",
		"locked", "validated", "renew prohibited", "update prohibited", "transfer prohibited", "delete prohibited",
		"proxy", "private", "removed", "obscured"}
)

// code is s as "%" and its letter when it is one of the words, else
// escaped (shapeEscaper).
func (v vocab) code(s string) string {
	if i := slices.Index(v, s); i >= 0 && i < len(vocabLetters) {
		return "%" + vocabLetters[i:i+1]
	}
	return shapeEscaper.Replace(s)
}

// word reads code.
func (v vocab) word(s string) (string, error) {
	if len(s) == 2 && s[0] == '%' {
		i := strings.IndexByte(vocabLetters, s[1])
		if i < 0 || i >= len(v) {
			return "", fmt.Errorf("no word %q", s)
		}
		return v[i], nil
	}
	return shapeUnescaper.Replace(s), nil
}

// dateCode is a registration date: "" for none, "=" for the zero time,
// else timeCode.
func dateCode(t *time.Time) string {
	switch {
	case t == nil:
		return ""
	case t.IsZero():
		return "="
	}
	return timeCode(*t)
}

// dateOf reads dateCode.
func dateOf(s string) (*time.Time, error) {
	switch s {
	case "":
		return nil, nil
	case "=":
		return &time.Time{}, nil
	}
	t, err := timeOf(s)
	return &t, err
}

// encodeLookup writes what a view keeps of a lookup but its registrable
// domain and the millisecond of its time (the view's key and the lookup's
// mark have them): "|"-separated fields by position (rgStatus...), empty
// ones at the end left out.
func encodeLookup(r events.RegistrationV1) string {
	f := make([]string, rgFields, rgFields+len(r.Statuses)+len(r.NameServers))
	f[rgStatus], f[rgSource] = regStatuses.code(r.Status), regSources.code(r.Source)
	f[rgRegistrar], f[rgServer], f[rgDetail] = shapeEscaper.Replace(r.Registrar), shapeEscaper.Replace(r.Server), shapeEscaper.Replace(r.Detail)
	f[rgExpiresAt], f[rgCreatedAt], f[rgUpdatedAt] = dateCode(r.ExpiresAt), dateCode(r.CreatedAt), dateCode(r.UpdatedAt)
	f[rgRetryAfter] = dateCode(r.RetryAfter)
	f[rgLookedUpNanos] = itoa36(int64(r.LookedUpAt.Sub(time.UnixMilli(r.LookedUpAt.UnixMilli()))))
	f[rgStatusCount] = itoa(int64(len(r.Statuses)))
	for _, s := range r.Statuses {
		f = append(f, rdapStatuses.code(s))
	}
	for _, s := range r.NameServers {
		f = append(f, shapeEscaper.Replace(s))
	}
	if len(f) == rgFields {
		for len(f) > 0 && f[len(f)-1] == "" {
			f = f[:len(f)-1]
		}
	}
	return strings.Join(f, "|")
}

// decodeLookup reads what encodeLookup wrote of a lookup at at, the time
// of its mark, of registrable domain.
func decodeLookup(s, domain string, at time.Time) (events.RegistrationV1, error) {
	f := strings.Split(s, "|")
	r := events.RegistrationV1{Domain: domain}
	statuses := 0
	if v := field(f, rgStatusCount); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > len(f)-rgFields {
			return r, fmt.Errorf("lookup: %q statuses in %d fields", v, len(f))
		}
		statuses = n
	}
	var errs []error
	word := func(i int, v vocab) string {
		w, err := v.word(field(f, i))
		if err != nil {
			errs = append(errs, fmt.Errorf("lookup field %d: %w", i, err))
		}
		return w
	}
	date := func(i int) *time.Time {
		t, err := dateOf(field(f, i))
		if err != nil {
			errs = append(errs, fmt.Errorf("lookup field %d: %w", i, err))
		}
		return t
	}
	r.Status, r.Source = word(rgStatus, regStatuses), word(rgSource, regSources)
	r.Registrar, r.Server = shapeUnescaper.Replace(field(f, rgRegistrar)), shapeUnescaper.Replace(field(f, rgServer))
	r.Detail = shapeUnescaper.Replace(field(f, rgDetail))
	r.ExpiresAt, r.CreatedAt, r.UpdatedAt, r.RetryAfter = date(rgExpiresAt), date(rgCreatedAt), date(rgUpdatedAt), date(rgRetryAfter)
	var ns int64
	if v := field(f, rgLookedUpNanos); v != "" {
		var err error
		if ns, err = strconv.ParseInt(v, 36, 64); err != nil || ns < 0 || ns >= int64(time.Millisecond) {
			errs = append(errs, fmt.Errorf("lookup: bad nanoseconds %q", v))
			ns = 0
		}
	}
	r.LookedUpAt = at.Add(time.Duration(ns))
	for i := range statuses {
		r.Statuses = append(r.Statuses, word(rgFields+i, rdapStatuses))
	}
	for _, v := range f[min(len(f), rgFields+statuses):] {
		r.NameServers = append(r.NameServers, shapeUnescaper.Replace(v))
	}
	return r, errors.Join(errs...)
}

// Registration is what the view holds of a registrable domain.
type Registration struct {
	// Domain is the registrable domain.
	Domain string
	// Last is the newest lookup of any status, LastID its event; nil
	// before the first.
	Last   *events.RegistrationV1
	LastID string
	// Answer is the newest lookup the registry answered (ok, no-expiry,
	// not-found), AnswerID its event; nil before one.
	Answer   *events.RegistrationV1
	AnswerID string
}

// Reasons the expiry of a registration is unknown, beside the statuses
// no-expiry, not-found, rate-limited and error.
const (
	// RegistrationPending: no lookup arrived yet.
	RegistrationPending = "pending"
	// RegistrationNotRegistrable: the host has no registrable domain (an
	// IP address, a public suffix).
	RegistrationNotRegistrable = "not-registrable"
)

// Expiry is the registration's expiry, or nil and why it is unknown: the
// answer's status (no-expiry, not-found), the last lookup's when the
// registry never answered (rate-limited, error), or RegistrationPending.
// A failed lookup after an answer keeps the answer's expiry.
func (r Registration) Expiry() (*time.Time, string) {
	switch {
	case r.Answer != nil && r.Answer.Status == events.RegistrationOK && r.Answer.ExpiresAt != nil:
		return r.Answer.ExpiresAt, ""
	case r.Answer != nil && r.Answer.Status == events.RegistrationOK:
		// ok without a date: the registry published none.
		return nil, events.RegistrationNoExpiry
	case r.Answer != nil:
		return nil, r.Answer.Status
	case r.Last != nil:
		return nil, r.Last.Status
	}
	return nil, RegistrationPending
}

// RegistrableOf is the registrable domain of the host of a "host:port"
// name or of a bare host; "" when it has none.
func RegistrableOf(name string) string {
	host, _, err := net.SplitHostPort(name)
	if err != nil {
		host = name
	}
	d, err := registration.Registrable(host)
	if err != nil {
		return ""
	}
	return d
}

// ReadRegistrations reads the registration views of domains (registrable
// domains; "" and repeats are skipped) in one round trip.
func ReadRegistrations(ctx context.Context, rdb redis.UniversalClient, domains []string) (map[string]Registration, error) {
	out := make(map[string]Registration, len(domains))
	cmds := map[string]*redis.MapStringStringCmd{}
	pipe := rdb.Pipeline()
	for _, d := range domains {
		if d == "" || cmds[d] != nil {
			continue
		}
		cmds[d] = pipe.HGetAll(ctx, RegistrationKey(d))
	}
	if len(cmds) == 0 {
		return out, nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read %d registration views: %w", len(cmds), err)
	}
	for d, cmd := range cmds {
		r, err := decodeRegistration(d, cmd.Val())
		if err != nil {
			return nil, err
		}
		out[d] = r
	}
	return out, nil
}

// ReadRegistration reads one registration view.
func ReadRegistration(ctx context.Context, rdb redis.UniversalClient, domain string) (Registration, error) {
	regs, err := ReadRegistrations(ctx, rdb, []string{domain})
	if err != nil {
		return Registration{}, err
	}
	if r, ok := regs[domain]; ok {
		return r, nil
	}
	return Registration{Domain: domain}, nil
}

// decodeRegistration reads the registration view h of domain, of either
// layout.
func decodeRegistration(domain string, h map[string]string) (Registration, error) {
	r := Registration{Domain: domain}
	var err error
	if r.Last, r.LastID, err = decodeLookupOf(domain, h, regLastMark, regLastBody, regOldLastMark, regOldLast); err != nil {
		return Registration{}, err
	}
	if h[regAnswerMark] == regSameAsLast {
		if r.Last == nil {
			return Registration{}, fmt.Errorf("decode registration view of %s: the answer is the newest lookup, which it lacks", domain)
		}
		a := *r.Last
		r.Answer, r.AnswerID = &a, r.LastID
		return r, nil
	}
	if r.Answer, r.AnswerID, err = decodeLookupOf(domain, h, regAnswerMark, regAnswerBody, regOldAnswerMark, regOldAnswer); err != nil {
		return Registration{}, err
	}
	return r, nil
}

// decodeLookupOf reads one lookup of a registration view h and its event
// id: from its mark and chunks, or as the layout before wrote it (whole
// JSON, a mark in decimal and in full); nil when there is none.
func decodeLookupOf(domain string, h map[string]string, mark, body, oldMark, old string) (*events.RegistrationV1, string, error) {
	if m, ok := h[mark]; ok {
		at, id, err := decodeMark(m)
		if err != nil {
			return nil, "", fmt.Errorf("decode registration view of %s: %s: %w", domain, mark, err)
		}
		s, ok := readChunks(h, body)
		if !ok {
			return nil, "", fmt.Errorf("decode registration view of %s: no %s", domain, body)
		}
		r, err := decodeLookup(s, domain, at)
		if err != nil {
			return nil, "", fmt.Errorf("decode registration view of %s: %s: %w", domain, body, err)
		}
		return &r, id, nil
	}
	v, ok := h[old]
	if !ok {
		return nil, "", nil
	}
	var r events.RegistrationV1
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		return nil, "", fmt.Errorf("decode registration view of %s: %s: %w", domain, old, err)
	}
	_, id, _ := strings.Cut(h[oldMark], "|")
	return &r, id, nil
}

// fanOut returns the domains the index of each registrable domain holds
// whose view still names a host under it, after bumping their views'
// versions so that the alert engine evaluates them again (it compares
// versions); the others are pruned from the index. Bumping on a
// redelivered lookup too is safe, and needed when the replica that applied
// it crashed before its fan-out.
func fanOut(ctx context.Context, rdb redis.UniversalClient, regDomains []string) ([]string, error) {
	pipe := rdb.Pipeline()
	views := make([]*redis.MapStringStringCmd, len(regDomains))
	olds := make([]*redis.MapStringStringCmd, len(regDomains))
	for i, d := range regDomains {
		views[i], olds[i] = pipe.HGetAll(ctx, RegistrationKey(d)), pipe.HGetAll(ctx, RegistrationIndexKey(d))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read registration indexes: %w", err)
	}
	type member struct {
		reg, id string
		indexMember
	}
	var members []member
	for i, d := range regDomains {
		for id, m := range indexMembers(views[i].Val(), olds[i].Val()) {
			members = append(members, member{d, id, m})
		}
	}
	if len(members) == 0 {
		return nil, nil
	}
	pipe = rdb.Pipeline()
	names := make([]*redis.SliceCmd, len(members))
	for i, m := range members {
		names[i] = pipe.HMGet(ctx, ViewKey(m.id), nameField, oldNameField, removedField)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read names of %d domains: %w", len(members), err)
	}
	var live []string
	seen := map[string]bool{}
	pipe = rdb.Pipeline()
	for i, m := range members {
		v := names[i].Val()
		fields := map[string]string{}
		for j, f := range []string{nameField, oldNameField} {
			if s, ok := v[j].(string); ok {
				fields[f] = s
			}
		}
		name := viewName(fields)
		_, removed := v[2].(string)
		if name != "" && (removed || RegistrableOf(name) != m.reg) {
			indexScript.Eval(ctx, pipe, indexKeys(m.reg), "leave", memberField(m.id), m.id, m.ms)
			continue
		}
		if m.old {
			// Into the view, with the time it had.
			indexScript.Eval(ctx, pipe, indexKeys(m.reg), "join", memberField(m.id), m.id, m.ms)
		}
		if !seen[m.id] {
			seen[m.id] = true
			live = append(live, m.id)
			bumpVersion(ctx, pipe, m.id)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("fan out %d registrations: %w", len(regDomains), err)
	}
	return live, nil
}
