package accounts

// Domains. A domain's id is a random UUID given when it is added and kept
// when a rename changes its host or port; what keeps one domain per tenant
// and host:port is the tenant's list index (its names, ix:host, and ids,
// ix:created: apiserver/domainindex), which every add and rename checks in
// the same Lua script that writes the record and appends the event.
//
// Redis layout (in addition to the package doc's):
//
//	domain:<domain_id>           hash {t (tenant), host, port, notes,
//	                             tags (JSON array), active ("1"|"0"), source,
//	                             c, u (created_at, updated_at: unix ms), rev,
//	                             held_by (key id, see held.go)}, and the
//	                             alert engine's fields ("@...",
//	                             AlertFieldPrefix), which every write here
//	                             keeps and a removal leaves behind
//
// Fields at their default are left out of records written since the short
// record (readers, Go and Lua, take a missing field for it): notes when
// empty, active when "1", updated_at until the first update (it is then
// created_at); since 2026-12-06 (sixth) also port when 443
// (domainindex.RecordPort, record_port), source when Source and rev until
// the first update (0). Records written before keep them, and read the
// same.
//
// Since 2026-12-07 (ninth) the tenant, created_at and updated_at have
// compact names (tenantField, createdField, updatedField): t holds the
// tenant's UUID as its 16 bytes (storedTenant, shortid.Bytes; a tenant id
// of 16 bytes that is no UUID, which certfleet never gives, stays in
// tenant_id), c and u the times in decimal, as created_at and updated_at
// did. That took the benchmark's record from 157 to 120 bytes of
// listpack, the 160 to the 128 B class (264 -> 232 B with the key).
// Records of the layout before (tenant_id, created_at, updated_at) read
// the same: Go readers take either name (recordTenant, recordTime), the
// scripts' owner check either field (record_owner) and the index backfill
// either created_at; the next update moves such a record to the compact
// names (record_upgrade).
//
// rev counts the record's writes: an update or removal is computed from the
// record as read and applied only if rev has not moved since, so two
// replicas updating one domain at once never lose a change.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/apiserver/domainname"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/printable"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/shortid"
)

// Limits of a domain's free-form attributes, in characters.
const (
	MaxNotesLen = 500
	MaxTags     = 10
	MaxTagLen   = 50
)

// ErrDomainExists is an add or rename to a host:port the tenant already
// monitors.
var ErrDomainExists = errors.New("domain is already monitored")

// FieldError is a domain attribute out of its limits; the message names the
// field.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + " " + e.Msg }

// staleRetries bounds how often an update re-reads a record another writer
// changed in between; each retry means a competing write succeeded.
const staleRetries = 8

// Domain is a tenant's monitored domain as the command side stores it.
type Domain struct {
	ID       string
	TenantID string
	// Host and Port are normalized (domainname.Parse).
	Host   string
	Port   int
	Active bool
	Notes  string
	// Tags is never nil.
	Tags   []string
	Source string
	// HeldBy is the held claimed key that added the domain, until the
	// account approves it (held.go); "" otherwise.
	HeldBy string
	// CreatedAt and UpdatedAt are zero for a domain added before they were
	// recorded.
	CreatedAt time.Time
	UpdatedAt time.Time
	// rev is the record's write count when it was read.
	rev int64
}

// Name is the host:port key of the domain inside its tenant.
func (d Domain) Name() string { return domainname.Key(d.Host, d.Port) }

// NewDomain is a domain to add. Host and Port must be normalized
// (domainname.Parse).
type NewDomain struct {
	Host   string
	Port   int
	Notes  string
	Tags   []string
	Source string
	// HeldBy is the id of the held key adding it (Principal.Held), else "".
	HeldBy string
}

// DomainPatch is a partial update: nil fields stay as they are. Host and
// Port must be normalized.
type DomainPatch struct {
	Host   *string
	Port   *int
	Active *bool
	Notes  *string
	Tags   *[]string
}

// CheckNotes reports notes longer than MaxNotesLen characters, or holding
// a control character other than line feed and tab
// (printable.HasControlInText). Notes are free text, and clients send (and
// have stored) several lines in them: refusing a line feed would refuse a
// PUT that sends back the notes a GET answered.
func CheckNotes(notes string) error {
	if n := utf8.RuneCountInString(notes); n > MaxNotesLen {
		return &FieldError{"notes", fmt.Sprintf("must be at most %d characters, got %d", MaxNotesLen, n)}
	}
	if printable.HasControlInText(notes) {
		return &FieldError{"notes", "must not contain control characters other than line feed and tab"}
	}
	return nil
}

// CheckTags reports more than MaxTags tags, or a tag that is empty,
// longer than MaxTagLen characters or holds a control character
// (printable.HasControl).
func CheckTags(tags []string) error {
	if len(tags) > MaxTags {
		return &FieldError{"tags", fmt.Sprintf("must be at most %d tags, got %d", MaxTags, len(tags))}
	}
	for i, t := range tags {
		if n := utf8.RuneCountInString(t); n == 0 || n > MaxTagLen {
			return &FieldError{"tags", fmt.Sprintf("[%d] must be 1 to %d characters, got %d", i, MaxTagLen, n)}
		}
		if printable.HasControl(t) {
			return &FieldError{"tags", fmt.Sprintf("[%d] must not contain control characters", i)}
		}
	}
	return nil
}

// checkName refuses what domainname.Parse never gives: white space in a
// host would make its index entry (domainindex's "<host> <port> <id>")
// ambiguous.
func checkName(host string, port int) error {
	if host == "" || strings.ContainsFunc(host, unicode.IsSpace) || port < 1 || port > 65535 {
		return fmt.Errorf("bad domain name %q:%d", host, port)
	}
	return nil
}

// addDomainScript registers a domain for a tenant once: the first add of a
// host:port writes the record and appends domain.added; a later add writes
// nothing and returns the id the name already has. A new domain counts
// against the tenant's domain quota (the domains no held key added) or,
// added by a held key, against the tenant's held_domains quota and the
// key's own quota instead; the key's set and the tenant's held domains
// list it (held.go).
//
// KEYS: the tenant's index names (domainindex.HostKey), domain:<domain_id>,
// events stream, the tenant's quota overrides, the held key's domain set
// (any key of the tenant's slot when not held), the tenant's held domains.
// ARGV: the domain id as the index keeps it (domainindex.Member), domain id, tenant id, host, port, notes, tags JSON,
// source, now ms, maxlen, the tenant as the record keeps it
// (storedTenant), default domain quota, held key id ("" = none), held key
// quota, default held_domains quota, then the event's fields
// (StreamFields).
// Returns {1, id} when added, {0, existing id} when it was already there,
// {2, resource, limit} over a quota.
var addDomainScript = redis.NewScript(addDomainLua + `return add(KEYS, ARGV)`)

// addDomainLua is the add as a Lua function of its keys and arguments,
// so that the single add and the bulk add run the same code.
var addDomainLua = domainindex.IndexLua + recordFieldLua + `
local function add(KEYS, ARGV)
local p = ` + domainindex.IndexPrefixLua("KEYS[1]") + `
local existing = ix_lookup(p, ARGV[4], ARGV[5])
if existing then return {0, existing} end
local held = redis.call('SCARD', KEYS[6])
if ARGV[13] ~= '' then
  local limit = ` + quota.LuaLimit(4, 15, quota.HeldDomains) + `
  if limit > 0 and held >= limit then return {2, '` + string(quota.HeldDomains) + `', limit} end
  if redis.call('SCARD', KEYS[5]) >= tonumber(ARGV[14]) then return {2, 'held', tonumber(ARGV[14])} end
  redis.call('SADD', KEYS[5], ARGV[2])
  redis.call('SADD', KEYS[6], ARGV[2])
else
  local limit = ` + quota.LuaLimit(4, 12, quota.Domains) + `
  if limit > 0 and ix_count(p) - held >= limit then return {2, '` + string(quota.Domains) + `', limit} end
end
redis.call('HSET', KEYS[2], 'host', ARGV[4], 'tags', ARGV[7], '` + createdField + `', ARGV[9])
record_tenant(KEYS[2], ARGV[3], ARGV[11])
record_field(KEYS[2], 'port', ARGV[5], RECORD_PORT)
record_field(KEYS[2], 'source', ARGV[8], '` + Source + `')
record_field(KEYS[2], 'notes', ARGV[6], '')
if ARGV[13] ~= '' then redis.call('HSET', KEYS[2], 'held_by', ARGV[13]) end
ix_add(p, ARGV[1], ARGV[4], ARGV[5], ARGV[9], ARGV[7])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[10], '*', unpack(ARGV, 16))
return {1, ARGV[2]}
end
`

// recordFieldLua is record_field(key, field, value, default): it writes a
// field of a domain record, or deletes it when value is its default (see
// the layout above); record_tenant(key, text, stored): it writes the
// record's tenant, tenantID as storedTenant keeps it (” when it cannot)
// and text the tenant's id; record_owner(key, text, stored): whether the
// record is that tenant's, in either layout; record_upgrade(key, stored):
// it moves the fields of a record of the layout before the compact names
// to theirs (the tenant only when stored is not ”).
const recordFieldLua = `
local function record_field(key, field, v, default)
  if v == default then redis.call('HDEL', key, field) else redis.call('HSET', key, field, v) end
end
local function record_tenant(key, text, stored)
  if stored ~= '' then redis.call('HSET', key, '` + tenantField + `', stored) else redis.call('HSET', key, '` + oldTenantField + `', text) end
end
local function record_owner(key, text, stored)
  local r = redis.call('HMGET', key, '` + tenantField + `', '` + oldTenantField + `')
  if r[1] then return stored ~= '' and r[1] == stored end
  return r[2] == text
end
local function record_upgrade(key, stored)
  local r = redis.call('HMGET', key, '` + oldTenantField + `', '` + oldCreatedField + `', '` + oldUpdatedField + `')
  if r[1] and stored ~= '' then
    redis.call('HSET', key, '` + tenantField + `', stored)
    redis.call('HDEL', key, '` + oldTenantField + `')
  end
  if r[2] then
    redis.call('HSET', key, '` + createdField + `', r[2])
    redis.call('HDEL', key, '` + oldCreatedField + `')
  end
  if r[3] then
    redis.call('HSET', key, '` + updatedField + `', r[3])
    redis.call('HDEL', key, '` + oldUpdatedField + `')
  end
end
`

// Compact names of a domain record's fields, since 2026-12-07 (ninth),
// and the names of the layout before, which readers take when the
// compact one is not there (recordTenant, recordTime) and the next
// update of the record moves to the compact ones (record_upgrade).
const (
	// tenantField is the tenant, as storedTenant keeps it: a UUID
	// as its 16 bytes. A record of a tenant id it cannot keep (16 bytes
	// and not a UUID: no tenant certfleet gives) keeps oldTenantField.
	tenantField     = "t"
	createdField    = "c" // created_at, unix ms
	updatedField    = "u" // updated_at, unix ms
	oldTenantField  = "tenant_id"
	oldCreatedField = "created_at"
	oldUpdatedField = "updated_at"
)

// storedTenant is tenantID as a record's tenantField keeps it
// (shortid.Bytes: a UUID's 16 bytes, another id as it is), or "" when it
// cannot and the record keeps oldTenantField.
func storedTenant(tenantID string) string {
	b, err := shortid.Bytes(tenantID)
	if err != nil {
		return ""
	}
	return b
}

// recordTenant is the tenant a domain record names, in either layout
// ("" for none): tenantField when the record has it (a value no
// storedTenant gives names none, as record_owner has it), else
// oldTenantField.
func recordTenant(rec map[string]string) string {
	if v, ok := rec[tenantField]; ok {
		id := shortid.FromBytes(v)
		if v == "" || storedTenant(id) != v {
			return ""
		}
		return id
	}
	return rec[oldTenantField]
}

// recordTime is the value of a time field of a domain record (unix ms),
// under its compact name or the name of the layout before.
func recordTime(rec map[string]string, field, old string) string {
	if v := rec[field]; v != "" {
		return v
	}
	return rec[old]
}

// addDomainsScript runs addDomainScript's add for many domains in order,
// in one call: one round trip and one script run per chunk of an import.
//
// KEYS: the five keys of each add in turn. ARGV: for each add in turn, the
// count of its arguments, then its arguments. Returns the answer of each.
var addDomainsScript = redis.NewScript(addDomainLua + `
local out, a = {}, 1
for i = 1, #KEYS / 6 do
  local n = tonumber(ARGV[a])
  out[i] = add({KEYS[6*i-5], KEYS[6*i-4], KEYS[6*i-3], KEYS[6*i-2], KEYS[6*i-1], KEYS[6*i]}, {unpack(ARGV, a + 1, a + n)})
  a = a + n + 1
end
return out
`)

// addCall is one checked add: the domain it writes and the script's keys
// and arguments. AddDomain runs one, AddDomains many in a pipeline.
type addCall struct {
	d    Domain
	keys []string
	args []any
}

// prepareAdd checks nd and builds the add of it for tenantID with a new
// random id, its domain.added event carrying firstScanDelay. Every add,
// single or bulk, goes through it: the checks are written once.
func (s *Store) prepareAdd(tenantID string, nd NewDomain, now time.Time, firstScanDelay time.Duration) (addCall, error) {
	if tenantID == "" {
		return addCall{}, errors.New("add domain: tenant id is empty")
	}
	if err := checkName(nd.Host, nd.Port); err != nil {
		return addCall{}, fmt.Errorf("add domain: %w", err)
	}
	if err := CheckNotes(nd.Notes); err != nil {
		return addCall{}, err
	}
	if err := CheckTags(nd.Tags); err != nil {
		return addCall{}, err
	}
	if nd.Source == "" {
		nd.Source = Source
	}
	d := Domain{
		ID: uuid.NewString(), TenantID: tenantID, Host: nd.Host, Port: nd.Port, Active: true,
		Notes: nd.Notes, Tags: nonNil(nd.Tags), Source: nd.Source, HeldBy: nd.HeldBy,
		CreatedAt: now, UpdatedAt: now, // rev 0: none written until the first update
	}
	member, err := domainindex.Member(d.ID)
	if err != nil {
		return addCall{}, fmt.Errorf("add domain: %w", err)
	}
	ev, err := events.New(events.DomainAdded, tenantID, d.ID, events.DomainAddedV1{
		DomainID: d.ID, Host: d.Host, Port: d.Port, Source: d.Source, Notes: d.Notes, Tags: d.Tags, HeldBy: d.HeldBy,
		FirstScanDelayMS: firstScanDelay.Milliseconds(),
	})
	if err != nil {
		return addCall{}, err
	}
	ev.OccurredAt = now
	fields, err := ev.StreamFields()
	if err != nil {
		return addCall{}, err
	}
	tags, err := json.Marshal(d.Tags)
	if err != nil {
		return addCall{}, fmt.Errorf("marshal tags: %w", err)
	}
	return addCall{
		d: d,
		keys: []string{domainindex.HostKey(tenantID), domainKey(tenantID, d.ID), events.EventStream(tenantID),
			quota.Key(tenantID), heldDomainsKey(tenantID, d.HeldBy), tenantHeldDomainsKey(tenantID)},
		args: append([]any{member, d.ID, tenantID, d.Host, strconv.Itoa(d.Port), d.Notes, string(tags),
			d.Source, now.UnixMilli(), s.cfg.MaxLen, storedTenant(tenantID), s.cfg.Quotas[quota.Domains], d.HeldBy, s.cfg.HeldQuota,
			s.cfg.Quotas[quota.HeldDomains]}, fields...),
	}, nil
}

// addOutcome reads addDomainScript's answer to call: added, the id an
// existing domain has, or a quota error.
func addOutcome(call addCall, res []any) (added bool, id string, err error) {
	if len(res) == 3 {
		// Over a quota: {2, resource, limit}.
		limit, _ := res[2].(int64)
		r, _ := res[1].(string)
		if r == "held" {
			return false, "", &HeldQuotaError{Limit: limit}
		}
		return false, "", &quota.Exceeded{Resource: quota.Resource(r), Limit: limit}
	}
	if len(res) != 2 {
		return false, "", fmt.Errorf("add domain %s for %s: unexpected script result %v", call.d.Name(), call.d.TenantID, res)
	}
	n, _ := res[0].(int64)
	id, _ = res[1].(string)
	return n == 1, id, nil
}

// AddDomain registers nd for tenantID with a new random id. Adding a
// host:port the tenant already has writes nothing and returns that domain
// with added=false: the KeyChest add is idempotent, the REST add answers
// ErrDomainExists itself. The new domain's first scan is due at once.
func (s *Store) AddDomain(ctx context.Context, tenantID string, nd NewDomain) (d Domain, added bool, err error) {
	call, err := s.prepareAdd(tenantID, nd, s.cfg.Now().UTC().Truncate(time.Millisecond), 0)
	if err != nil {
		return Domain{}, false, err
	}
	d = call.d
	res, err := s.commands.RunScript(ctx, addDomainScript, call.keys, call.args...).Slice()
	if err != nil {
		return Domain{}, false, fmt.Errorf("add domain %s for %s: %w", d.Name(), tenantID, err)
	}
	added, id, err := addOutcome(call, res)
	if err != nil {
		return Domain{}, false, err
	}
	if added {
		s.logger.Info("domain added", zap.String("tenant_id", tenantID), zap.String("domain_id", d.ID),
			zap.String("host", d.Host), zap.Int("port", d.Port), zap.String("source", d.Source))
		return d, true, nil
	}
	d, err = s.GetDomain(ctx, tenantID, id)
	if err != nil {
		return Domain{}, false, fmt.Errorf("add domain %s for %s: read existing: %w", nd.Host, tenantID, err)
	}
	return d, false, nil
}

// AddResult is the outcome of one domain of AddDomains: added, already
// there (ID is the existing domain's), or Err (a FieldError, a quota
// error, a bad name); Domain is only complete when Added.
type AddResult struct {
	Domain Domain
	Added  bool
	Err    error
}

// addChunk is how many adds one script call (one round trip) carries.
const addChunk = 500

// reserveImportScript reserves a window for the first scans of an
// import: it starts at the end of the tenant's previous import window if
// that is still ahead (capped at now + max delay), else now, and is span
// long. Returns its start (unix ms).
//
// KEYS: the tenant's import horizon. ARGV: now ms, span ms, max delay ms.
var reserveImportScript = redis.NewScript(`
local now, span, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local start = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
if start > now + max then start = now + max end
local horizon = start + span
redis.call('SET', KEYS[1], string.format('%d', horizon), 'PX', string.format('%d', math.max(1, horizon - now)))
return start
`)

func importHorizonKey(tenantID string) string {
	return events.TenantNamespace(tenantID) + "import_horizon"
}

// AddDomains registers nds for tenantID as AddDomain does each, in order,
// with one script call (one round trip) per addChunk domains: each runs
// the same checks and the same Lua add, so a domain the tenant has already (an
// earlier item, or a retried import) is not added again and past the
// tenant's quota the rest fail one by one. The returned error is Redis
// failing; each item's own problem is in its result.
//
// Their first scans are spread: the import reserves a window of
// len(nds)*ImportSpacing after the tenant's previous import window (so
// the chunks of one big import follow each other instead of piling up),
// and the i-th domain is due at a random time in its own ImportSpacing
// slot of it, never more than ImportMaxDelay ahead.
func (s *Store) AddDomains(ctx context.Context, tenantID string, nds []NewDomain) ([]AddResult, error) {
	out := make([]AddResult, len(nds))
	if len(nds) == 0 {
		return out, nil
	}
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	spacing, maxDelay := s.cfg.ImportSpacing, s.cfg.ImportMaxDelay
	span := time.Duration(len(nds)) * spacing
	startMS, err := reserveImportScript.Run(ctx, s.rdb, []string{importHorizonKey(tenantID)},
		now.UnixMilli(), span.Milliseconds(), maxDelay.Milliseconds()).Int64()
	if err != nil {
		return nil, fmt.Errorf("add domains for %s: reserve first-scan window: %w", tenantID, err)
	}
	offset := time.Duration(startMS-now.UnixMilli()) * time.Millisecond
	calls := make([]addCall, len(nds))
	answers := make([]any, len(nds))
	var added, existing, failed int
	// collect reads the answers of items [from, to).
	collect := func(from, to int) {
		for i := from; i < to; i++ {
			res, _ := answers[i].([]any)
			if out[i].Err != nil {
				failed++
				continue
			}
			ok, id, err := addOutcome(calls[i], res)
			switch {
			case err != nil:
				out[i].Err = err
				failed++
			case ok:
				out[i] = AddResult{Domain: calls[i].d, Added: true}
				added++
				s.logger.Debug("domain added", zap.String("tenant_id", tenantID), zap.String("domain_id", calls[i].d.ID),
					zap.String("host", calls[i].d.Host), zap.Int("port", calls[i].d.Port), zap.String("source", calls[i].d.Source))
			default:
				d := calls[i].d
				d.ID = id
				out[i] = AddResult{Domain: d}
				existing++
			}
		}
	}
	// Each script call carries addChunk adds; the next ones are prepared
	// while it runs (Redis and this process work at once), and it is sent
	// only once the previous one is answered, so Redis runs the adds in
	// order: past the quota, the later items are the ones to fail.
	type flight struct {
		from, to int
		done     chan error
	}
	var prev *flight
	wait := func() error {
		if prev == nil {
			return nil
		}
		err := <-prev.done
		if err == nil {
			collect(prev.from, prev.to)
		}
		prev = nil
		if err != nil {
			return fmt.Errorf("add domains for %s: %w", tenantID, err)
		}
		return nil
	}
	for from := 0; from < len(nds); from += addChunk {
		to := min(from+addChunk, len(nds))
		keys := make([]string, 0, 6*(to-from))
		args := make([]any, 0, 20*(to-from))
		sent := make([]int, 0, to-from)
		// Building the adds (ids, events as JSON) is most of this
		// process's work for an import: spread over the CPUs.
		forEach(from, to, func(i int) {
			delay := min(offset+time.Duration(i)*spacing+rand.N(spacing+1), maxDelay)
			calls[i], out[i].Err = s.prepareAdd(tenantID, nds[i], now, delay)
		})
		for i := from; i < to; i++ {
			if out[i].Err != nil {
				continue
			}
			keys = append(keys, calls[i].keys...)
			args = append(append(args, len(calls[i].args)), calls[i].args...)
			sent = append(sent, i)
		}
		if err := wait(); err != nil {
			return nil, err
		}
		f := &flight{from: from, to: to, done: make(chan error, 1)}
		go func() {
			if len(sent) == 0 {
				f.done <- nil
				return
			}
			res, err := s.commands.RunScript(ctx, addDomainsScript, keys, args...).Slice()
			if err == nil && len(res) != len(sent) {
				err = fmt.Errorf("unexpected script result: %d answers for %d adds", len(res), len(sent))
			}
			if err == nil {
				for j, i := range sent {
					answers[i] = res[j]
				}
			}
			f.done <- err
		}()
		prev = f
	}
	if err := wait(); err != nil {
		return nil, err
	}
	s.logger.Info("domains imported", zap.String("tenant_id", tenantID), zap.Int("added", added),
		zap.Int("existing", existing), zap.Int("failed", failed),
		zap.Duration("first_scans_from", offset), zap.Duration("first_scans_over", span))
	return out, nil
}

// forEach calls fn for each i in [from, to), split over GOMAXPROCS
// goroutines, and returns when every call has.
func forEach(from, to int, fn func(i int)) {
	workers := min(runtime.GOMAXPROCS(0), to-from)
	if workers <= 1 {
		for i := from; i < to; i++ {
			fn(i)
		}
		return
	}
	var wg sync.WaitGroup
	per := (to - from + workers - 1) / workers
	for lo := from; lo < to; lo += per {
		hi := min(lo+per, to)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// LookupDomain returns the id of host:port if tenantID registered it, or
// ErrUnknownDomain. Another tenant's domain is unknown too.
func (s *Store) LookupDomain(ctx context.Context, tenantID, host string, port int) (string, error) {
	cmd := domainindex.LookupCmd(ctx, s.rdb, tenantID, host, port)
	if err := cmd.Err(); err != nil {
		return "", fmt.Errorf("look up domain: %w", err)
	}
	if id := domainindex.LookupID(cmd); id != "" {
		return id, nil
	}
	return "", ErrUnknownDomain
}

// GetDomain returns the domain id of tenantID, or ErrUnknownDomain when it
// does not exist or belongs to another tenant.
func (s *Store) GetDomain(ctx context.Context, tenantID, id string) (Domain, error) {
	if tenantID == "" || uuid.Validate(id) != nil {
		return Domain{}, ErrUnknownDomain
	}
	vals, err := s.rdb.HMGet(ctx, domainKey(tenantID, id), recordFields...).Result()
	if err != nil {
		return Domain{}, fmt.Errorf("read domain %s: %w", id, err)
	}
	rec := recordMap(vals)
	if recordTenant(rec) != tenantID {
		return Domain{}, ErrUnknownDomain
	}
	return decodeDomain(id, rec)
}

// ListDomains returns every domain of tenantID, in no particular order.
// It reads the tenant's ids (DomainIDs) and then every record in one
// pipeline.
func (s *Store) ListDomains(ctx context.Context, tenantID string) ([]Domain, error) {
	ids, err := DomainIDs(ctx, s.rdb, tenantID)
	if err != nil {
		return nil, err
	}
	return s.GetDomains(ctx, tenantID, ids)
}

// GetDomains returns the domains ids of tenantID in the order of ids, read
// in one pipeline; an id that is gone, or another tenant's, is left out.
func (s *Store) GetDomains(ctx context.Context, tenantID string, ids []string) ([]Domain, error) {
	if len(ids) == 0 {
		return []Domain{}, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, domainKey(tenantID, id), recordFields...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read %d domains of %s: %w", len(ids), tenantID, err)
	}
	out := make([]Domain, 0, len(ids))
	for i, cmd := range cmds {
		rec := recordMap(cmd.Val())
		// A removal between the two reads leaves an index entry without
		// its record: the domain is gone.
		if recordTenant(rec) != tenantID {
			continue
		}
		d, err := decodeDomain(ids[i], rec)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// recordFields are the fields of a domain record (decodeDomain reads
// them): the record's readers fetch these and not the alert engine's
// fields the hash also holds (AlertFieldPrefix).
var recordFields = []string{tenantField, oldTenantField, "host", "port", "active", "notes", "tags", "source", "held_by",
	createdField, oldCreatedField, updatedField, oldUpdatedField, "rev"}

// recordMap is the answer of an HMGET of recordFields as a record hash:
// the fields that are there.
func recordMap(vals []any) map[string]string { return fieldMap(recordFields, vals) }

// fieldMap is the answer of an HMGET of fields as a hash: the fields
// that are there.
func fieldMap(fields []string, vals []any) map[string]string {
	rec := make(map[string]string, len(fields))
	for i, v := range vals {
		if s, ok := v.(string); ok && i < len(fields) {
			rec[fields[i]] = s
		}
	}
	return rec
}

// DecodeListed turns domain id's record, as rec holds its fields (a read
// of recordFields, RecordCache's), into the domain; ok is false when the
// record is gone or is not tenantID's.
func DecodeListed(tenantID, id string, rec map[string]string) (d Domain, ok bool, err error) {
	if recordTenant(rec) != tenantID {
		return Domain{}, false, nil
	}
	d, err = decodeDomain(id, rec)
	return d, err == nil, err
}

func decodeDomain(id string, rec map[string]string) (Domain, error) {
	d := Domain{
		ID: id, TenantID: recordTenant(rec), Host: rec["host"], Notes: rec["notes"],
		Active: rec["active"] != "0", Source: rec["source"], HeldBy: rec["held_by"], Tags: []string{},
	}
	if d.Source == "" {
		d.Source = Source
	}
	var err error
	if d.Port, err = domainindex.RecordPort(rec["port"]); err != nil {
		return Domain{}, fmt.Errorf("decode domain %s: port %q: %w", id, rec["port"], err)
	}
	if t := rec["tags"]; t != "" {
		if err := json.Unmarshal([]byte(t), &d.Tags); err != nil {
			return Domain{}, fmt.Errorf("decode domain %s: tags: %w", id, err)
		}
		d.Tags = nonNil(d.Tags)
	}
	for _, f := range []struct {
		name, old string
		dst       *time.Time
	}{{createdField, oldCreatedField, &d.CreatedAt}, {updatedField, oldUpdatedField, &d.UpdatedAt}} {
		if v := recordTime(rec, f.name, f.old); v != "" {
			ms, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return Domain{}, fmt.Errorf("decode domain %s: %s %q: %w", id, f.name, v, err)
			}
			*f.dst = time.UnixMilli(ms).UTC()
		}
	}
	if d.UpdatedAt.IsZero() {
		d.UpdatedAt = d.CreatedAt // never updated since the short record
	}
	if v := rec["rev"]; v != "" {
		if d.rev, err = strconv.ParseInt(v, 10, 64); err != nil {
			return Domain{}, fmt.Errorf("decode domain %s: rev %q: %w", id, v, err)
		}
	}
	return d, nil
}

func nonNil(tags []string) []string {
	if tags == nil {
		return []string{}
	}
	return tags
}

// updateDomainScript writes a domain's new state if the record is still
// the one the update was computed from, moving its index entry on a rename
// unless the new host:port is taken, moves the tenant's record generation
// on (domainindex.GenKey), and appends domain.updated.
//
// KEYS: domain:<domain_id>, the tenant's index names
// (domainindex.HostKey), events stream.
// ARGV: tenant id, rev read, old "host:port", new "host:port", domain id,
// host, port, notes, tags JSON, active, now ms, maxlen, the domain id as
// the index keeps it (domainindex.Member), the tenant as the record keeps
// it (storedTenant), then the event's fields. A record of the layout
// before the compact field names moves to them (record_upgrade).
// Returns "ok", "missing", "stale" or "taken".
var updateDomainScript = redis.NewScript(domainindex.IndexLua + recordFieldLua + pinAlertNameLua + `
if not record_owner(KEYS[1], ARGV[1], ARGV[14]) then return 'missing' end
if (redis.call('HGET', KEYS[1], 'rev') or '0') ~= ARGV[2] then return 'stale' end
if ARGV[3] ~= ARGV[4] then
  pin_alert_name(KEYS[1], ARGV[3])
  if ix_lookup(` + domainindex.IndexPrefixLua("KEYS[2]") + `, ARGV[6], ARGV[7]) then return 'taken' end
  local old = redis.call('HMGET', KEYS[1], 'host', 'port', 'tags')
  ix_rename(` + domainindex.IndexPrefixLua("KEYS[2]") + `, ARGV[13], old[1], record_port(old[2]), ARGV[6], ARGV[7], old[3])
end
ix_tags(` + domainindex.IndexPrefixLua("KEYS[2]") + `, ARGV[13], redis.call('HGET', KEYS[1], 'tags'), ARGV[9], ix_name(ARGV[6], ARGV[7]))
record_upgrade(KEYS[1], ARGV[14])
redis.call('HSET', KEYS[1], 'host', ARGV[6], 'tags', ARGV[9],
  '` + updatedField + `', ARGV[11], 'rev', tostring(tonumber(ARGV[2]) + 1))
record_field(KEYS[1], 'port', ARGV[7], RECORD_PORT)
record_field(KEYS[1], 'notes', ARGV[8], '')
record_field(KEYS[1], 'active', ARGV[10], '1')
ix_gen_bump(` + domainindex.IndexPrefixLua("KEYS[2]") + `)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[12], '*', unpack(ARGV, 15))
return 'ok'
`)

// UpdateDomain applies p to the domain id of tenantID and returns the new
// state. A rename to a host:port the tenant already has is ErrDomainExists;
// an unknown or other tenant's id is ErrUnknownDomain. A patch that changes
// nothing writes nothing.
func (s *Store) UpdateDomain(ctx context.Context, tenantID, id string, p DomainPatch) (Domain, error) {
	member, err := domainindex.Member(id)
	if err != nil {
		// The index keeps no such id, so no domain has it.
		return Domain{}, ErrUnknownDomain
	}
	if p.Notes != nil {
		if err := CheckNotes(*p.Notes); err != nil {
			return Domain{}, err
		}
	}
	if p.Tags != nil {
		if err := CheckTags(*p.Tags); err != nil {
			return Domain{}, err
		}
	}
	for range staleRetries {
		cur, err := s.GetDomain(ctx, tenantID, id)
		if err != nil {
			return Domain{}, err
		}
		next := cur
		if p.Host != nil {
			next.Host = *p.Host
		}
		if p.Port != nil {
			next.Port = *p.Port
		}
		if p.Active != nil {
			next.Active = *p.Active
		}
		if p.Notes != nil {
			next.Notes = *p.Notes
		}
		if p.Tags != nil {
			next.Tags = nonNil(*p.Tags)
		}
		if err := checkName(next.Host, next.Port); err != nil {
			return Domain{}, fmt.Errorf("update domain %s: %w", id, err)
		}
		if sameState(cur, next) {
			return cur, nil
		}
		now := s.cfg.Now().UTC().Truncate(time.Millisecond)
		next.UpdatedAt, next.rev = now, cur.rev+1
		ev, err := events.New(events.DomainUpdated, tenantID, id, events.DomainUpdatedV1{
			DomainID: id, Host: next.Host, Port: next.Port, Active: next.Active, Notes: next.Notes, Tags: next.Tags,
		})
		if err != nil {
			return Domain{}, err
		}
		ev.OccurredAt = now
		fields, err := ev.StreamFields()
		if err != nil {
			return Domain{}, err
		}
		tags, err := json.Marshal(next.Tags)
		if err != nil {
			return Domain{}, fmt.Errorf("marshal tags: %w", err)
		}
		active := "0"
		if next.Active {
			active = "1"
		}
		args := append([]any{tenantID, strconv.FormatInt(cur.rev, 10), cur.Name(), next.Name(), id,
			next.Host, strconv.Itoa(next.Port), next.Notes, string(tags), active, now.UnixMilli(), s.cfg.MaxLen, member,
			storedTenant(tenantID)}, fields...)
		res, err := s.commands.RunScript(ctx, updateDomainScript,
			[]string{domainKey(tenantID, id), domainindex.HostKey(tenantID), events.EventStream(tenantID)}, args...).Text()
		if err != nil {
			return Domain{}, fmt.Errorf("update domain %s: %w", id, err)
		}
		switch res {
		case "ok":
			s.logger.Info("domain updated", zap.String("tenant_id", tenantID), zap.String("domain_id", id),
				zap.String("host", next.Host), zap.Int("port", next.Port), zap.Bool("active", next.Active),
				zap.Bool("renamed", cur.Name() != next.Name()))
			return next, nil
		case "missing":
			return Domain{}, ErrUnknownDomain
		case "taken":
			return Domain{}, ErrDomainExists
		case "stale":
			continue
		default:
			return Domain{}, fmt.Errorf("update domain %s: unexpected script result %q", id, res)
		}
	}
	return Domain{}, fmt.Errorf("update domain %s: record changed %d times while updating", id, staleRetries)
}

func sameState(a, b Domain) bool {
	if a.Host != b.Host || a.Port != b.Port || a.Active != b.Active || a.Notes != b.Notes || len(a.Tags) != len(b.Tags) {
		return false
	}
	for i := range a.Tags {
		if a.Tags[i] != b.Tags[i] {
			return false
		}
	}
	return true
}

// removeDomainScript deletes a domain's record and index entry if the
// record is still the one read, and appends domain.removed. The alert
// engine's fields stay (AlertFieldPrefix), with the tenant's id
// (RemovedTenantField): the engine resolves the domain's alerts from them
// when it evaluates the removal, then drops them; without them the hash
// goes at once.
//
// The domain leaves the set of the held key that added it and the
// tenant's held domains, which frees its room in their quotas.
//
// KEYS: domain:<domain_id>, the tenant's index names
// (domainindex.HostKey), events stream, the held key's domain set (as
// read; any key of the slot when none), the tenant's held domains.
// ARGV: tenant id, rev read, "host:port" (as read, for pin_alert_name),
// domain id, maxlen, the domain id as the index keeps it
// (domainindex.Member), the tenant as the record keeps it
// (storedTenant), then the event's fields. Returns "ok", "missing" or
// "stale".
var removeDomainScript = redis.NewScript(domainindex.IndexLua + recordFieldLua + pinAlertNameLua + `
if not record_owner(KEYS[1], ARGV[1], ARGV[7]) then return 'missing' end
if (redis.call('HGET', KEYS[1], 'rev') or '0') ~= ARGV[2] then return 'stale' end
pin_alert_name(KEYS[1], ARGV[3])
redis.call('SREM', KEYS[4], ARGV[4])
redis.call('SREM', KEYS[5], ARGV[4])
local old = redis.call('HMGET', KEYS[1], 'host', 'port', 'tags')
ix_remove(` + domainindex.IndexPrefixLua("KEYS[2]") + `, ARGV[6], old[1], record_port(old[2]), old[3])
local own, all = {}, redis.call('HKEYS', KEYS[1])
for _, f in ipairs(all) do
  if string.sub(f, 1, ` + strconv.Itoa(len(AlertFieldPrefix)) + `) ~= '` + AlertFieldPrefix + `' then own[#own + 1] = f end
end
redis.call('HDEL', KEYS[1], unpack(own))
if #own < #all then redis.call('HSET', KEYS[1], '` + RemovedTenantField + `', ARGV[1]) end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, 8))
return 'ok'
`)

// RemoveDomain stops monitoring the domain id of tenantID and returns what
// it was. Its host:port is free again at once; adding it again gives a new
// id. An unknown or other tenant's id is ErrUnknownDomain.
func (s *Store) RemoveDomain(ctx context.Context, tenantID, id string) (Domain, error) {
	member, err := domainindex.Member(id)
	if err != nil {
		// The index keeps no such id, so no domain has it.
		return Domain{}, ErrUnknownDomain
	}
	for range staleRetries {
		cur, err := s.GetDomain(ctx, tenantID, id)
		if err != nil {
			return Domain{}, err
		}
		ev, err := events.New(events.DomainRemoved, tenantID, id, events.DomainRemovedV1{
			DomainID: id, Host: cur.Host, Port: cur.Port,
		})
		if err != nil {
			return Domain{}, err
		}
		ev.OccurredAt = s.cfg.Now().UTC().Truncate(time.Millisecond)
		fields, err := ev.StreamFields()
		if err != nil {
			return Domain{}, err
		}
		args := append([]any{tenantID, strconv.FormatInt(cur.rev, 10), cur.Name(), id, s.cfg.MaxLen, member,
			storedTenant(tenantID)}, fields...)
		res, err := s.commands.RunScript(ctx, removeDomainScript,
			[]string{domainKey(tenantID, id), domainindex.HostKey(tenantID), events.EventStream(tenantID),
				heldDomainsKey(tenantID, cur.HeldBy), tenantHeldDomainsKey(tenantID)}, args...).Text()
		if err != nil {
			return Domain{}, fmt.Errorf("remove domain %s: %w", id, err)
		}
		switch res {
		case "ok":
			s.logger.Info("domain removed", zap.String("tenant_id", tenantID), zap.String("domain_id", id),
				zap.String("host", cur.Host), zap.Int("port", cur.Port))
			return cur, nil
		case "missing":
			return Domain{}, ErrUnknownDomain
		case "stale":
			continue
		default:
			return Domain{}, fmt.Errorf("remove domain %s: unexpected script result %q", id, res)
		}
	}
	return Domain{}, fmt.Errorf("remove domain %s: record changed %d times while removing", id, staleRetries)
}

// ErrDomainInactive is a check requested for a domain that is not active.
var ErrDomainInactive = errors.New("domain is not active")

// requestCheckScript appends domain.check_requested if the domain belongs
// to the tenant and is active, so the event never names another tenant's
// domain or one the coordinator does not schedule.
//
// KEYS: domain:<domain_id>, events stream.
// ARGV: tenant id, maxlen, the tenant as the record keeps it
// (storedTenant), then the event's fields. Returns "ok", "missing" or
// "inactive".
var requestCheckScript = redis.NewScript(recordFieldLua + `
if not record_owner(KEYS[1], ARGV[1], ARGV[3]) then return 'missing' end
if redis.call('HGET', KEYS[1], 'active') == '0' then return 'inactive' end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 4))
return 'ok'
`)

// RequestCheck asks the coordinators, through a domain.check_requested
// event, to scan the domain id of tenantID now. An unknown or other
// tenant's id is ErrUnknownDomain; an inactive domain ErrDomainInactive.
func (s *Store) RequestCheck(ctx context.Context, tenantID, id string) error {
	ev, err := events.New(events.DomainCheckRequested, tenantID, id, events.DomainCheckRequestedV1{DomainID: id})
	if err != nil {
		return err
	}
	ev.OccurredAt = s.cfg.Now().UTC().Truncate(time.Millisecond)
	fields, err := ev.StreamFields()
	if err != nil {
		return err
	}
	args := append([]any{tenantID, s.cfg.MaxLen, storedTenant(tenantID)}, fields...)
	res, err := requestCheckScript.Run(ctx, s.rdb,
		[]string{domainKey(tenantID, id), events.EventStream(tenantID)}, args...).Text()
	if err != nil {
		return fmt.Errorf("request check of domain %s: %w", id, err)
	}
	switch res {
	case "ok":
		s.logger.Info("domain check requested", zap.String("tenant_id", tenantID), zap.String("domain_id", id))
		return nil
	case "missing":
		return ErrUnknownDomain
	case "inactive":
		return ErrDomainInactive
	default:
		return fmt.Errorf("request check of domain %s: unexpected script result %q", id, res)
	}
}
