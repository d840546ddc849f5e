package projector

// The registration view holds, per registrable domain (eTLD+1), the latest
// registration lookup and the latest the registry answered, and the index
// of the monitored domains under it:
//
//	view:reg:{<registrable>}          hash
//	  "last"     -> JSON events.RegistrationV1 of the newest lookup, any status
//	  "@last"    -> "<looked up unix ms>|<event id>" of it
//	  "answer"   -> JSON of the newest lookup the registry answered (ok,
//	                no-expiry, not-found): a later rate-limited or failed
//	                lookup never hides what is known
//	  "@answer"  -> "<looked up unix ms>|<event id>" of it
//	view:reg:{<registrable>}:domains  hash domain id -> unix ms of the newest
//	                domain event that named it under this registrable domain
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

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/registration"
)

// RegistrationPrefix starts the key of every registration view and index.
const RegistrationPrefix = "view:reg:"

// RegistrationKey is the key of the registration view of a registrable
// domain.
func RegistrationKey(domain string) string { return RegistrationPrefix + "{" + domain + "}" }

// RegistrationIndexKey is the key of the index of the domains monitored
// under a registrable domain; it shares RegistrationKey's slot.
func RegistrationIndexKey(domain string) string { return RegistrationKey(domain) + ":domains" }

const (
	regLastField    = "last"
	regLastMeta     = "@last"
	regAnswerField  = "answer"
	regAnswerMeta   = "@answer"
	maxRegistrable  = 253
	maxRegListItems = 100
	maxRegText      = 1024
)

// applyRegistrationScript records a lookup as the newest lookup and, when
// the registry answered, as the newest answer, each only if it is newer
// (looked-up time, then event id) than what the view holds.
//
// KEYS: view:reg:<domain>. ARGV: looked up ms, event id, lookup JSON, "1"
// when answered else "0". Returns 1 when the view changed, else 0.
var applyRegistrationScript = redis.NewScript(`
local key, ms, id = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local function newer(meta)
  local cur = redis.call('HGET', key, meta)
  if not cur then return true end
  local sep = string.find(cur, '|', 1, true)
  local cms, cid = tonumber(string.sub(cur, 1, sep - 1)), string.sub(cur, sep + 1)
  return ms > cms or (ms == cms and id > cid)
end
local changed = 0
if newer('@last') then
  redis.call('HSET', key, 'last', ARGV[3], '@last', ARGV[1] .. '|' .. id)
  changed = 1
end
if ARGV[4] == '1' and newer('@answer') then
  redis.call('HSET', key, 'answer', ARGV[3], '@answer', ARGV[1] .. '|' .. id)
  changed = 1
end
return changed
`)

// indexScript joins a domain to a registrable domain's index or makes it
// leave. A join records the newest domain event's time; a leave deletes
// the entry only if no join newer than its time came since, so a leave
// that read the index before a join never undoes it.
//
// KEYS: view:reg:<domain>:domains. ARGV: "join" or "leave", domain id, ms.
var indexScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[2])
local ms = tonumber(ARGV[3])
if ARGV[1] == 'join' then
  if cur and tonumber(cur) >= ms then return 0 end
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  return 1
end
if cur and tonumber(cur) <= ms then
  redis.call('HDEL', KEYS[1], ARGV[2])
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
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("marshal registration: %w", err)
	}
	ans := "0"
	if answered(r.Status) {
		ans = "1"
	}
	return &call{script: applyRegistrationScript, keys: []string{RegistrationKey(r.Domain)}, regDomain: r.Domain,
		args: []any{r.LookedUpAt.UnixMilli(), e.EventID.String(), string(body), ans}}, nil
}

// indexCall is the call joining domainID to the index of host's
// registrable domain (leave: removing it); nil for a host without one (an
// IP address).
func indexCall(mode, domainID, host string, at time.Time) *call {
	reg, err := registration.Registrable(host)
	if err != nil {
		return nil
	}
	return &call{script: indexScript, keys: []string{RegistrationIndexKey(reg)}, args: []any{mode, domainID, at.UnixMilli()}}
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

func decodeRegistration(domain string, h map[string]string) (Registration, error) {
	r := Registration{Domain: domain}
	for _, p := range []struct {
		field, meta string
		into        **events.RegistrationV1
		id          *string
	}{{regLastField, regLastMeta, &r.Last, &r.LastID}, {regAnswerField, regAnswerMeta, &r.Answer, &r.AnswerID}} {
		body, ok := h[p.field]
		if !ok {
			continue
		}
		var v events.RegistrationV1
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			return Registration{}, fmt.Errorf("decode registration view of %s: %s: %w", domain, p.field, err)
		}
		*p.into = &v
		_, *p.id, _ = strings.Cut(h[p.meta], "|")
	}
	return r, nil
}

// fanOut returns the domains the index of each registrable domain holds
// whose view still names a host under it, after bumping their views'
// versions so that the alert engine evaluates them again (it compares
// versions); the others are pruned from the index. Bumping on a
// redelivered lookup too is safe, and needed when the replica that applied
// it crashed before its fan-out.
func fanOut(ctx context.Context, rdb redis.UniversalClient, regDomains []string) ([]string, error) {
	pipe := rdb.Pipeline()
	idx := make([]*redis.MapStringStringCmd, len(regDomains))
	for i, d := range regDomains {
		idx[i] = pipe.HGetAll(ctx, RegistrationIndexKey(d))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read registration indexes: %w", err)
	}
	type member struct{ reg, id, ms string }
	var members []member
	for i, d := range regDomains {
		for id, ms := range idx[i].Val() {
			members = append(members, member{d, id, ms})
		}
	}
	if len(members) == 0 {
		return nil, nil
	}
	pipe = rdb.Pipeline()
	names := make([]*redis.SliceCmd, len(members))
	for i, m := range members {
		names[i] = pipe.HMGet(ctx, ViewKey(m.id), nameField, removedField)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read names of %d domains: %w", len(members), err)
	}
	var live []string
	seen := map[string]bool{}
	pipe = rdb.Pipeline()
	for i, m := range members {
		v := names[i].Val()
		name, _ := v[0].(string)
		name, _, _ = strings.Cut(name, "|")
		_, removed := v[1].(string)
		if name != "" && (removed || RegistrableOf(name) != m.reg) {
			ms, _ := strconv.ParseInt(m.ms, 10, 64)
			indexScript.Eval(ctx, pipe, []string{RegistrationIndexKey(m.reg)}, "leave", m.id, ms)
			continue
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
