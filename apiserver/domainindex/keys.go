// Package domainindex keeps, per tenant, the sorted sets and sets that
// answer GET /api/v1/domains a page at a time, and reads pages from them
// (List). A page costs about what the page holds, not what the tenant
// holds: docs/scaling.md ("Per-tenant list indexes") gives the keys, the
// cost of each query and the memory.
//
// Every key of a tenant's index lives in the tenant's namespace and slot,
// beside its domain records (tenant:{tNN}:<tenant>:ix:<name>), so a script
// that changes a domain record changes its index entries in the same
// atomic step, and a list is one script in one Redis Cluster slot. Members
// hold domain ids as Member writes them: a UUID as its 16 raw bytes, not
// its 36 characters of text (about 20 B less per member in a listpack,
// one jemalloc class, 48 to 32 B, in a skiplist); raw bytes and lowercase
// hex sort alike, so ties stay in id order. Scripts turn a member back
// into the id (ix_id) only to build a record's key; Go reads ids (IDs,
// LookupID, List) and cursors as text (IDOf).
//
// Two writers keep the index:
//
//   - apiserver/accounts, in the scripts that add, rename and remove a
//     domain (IndexLua's functions): what needs no scan, the hostname, its
//     labels and created_at; a new or renamed domain shows as never scanned
//     and its registration as pending;
//   - apiserver/projector, after a view changed (ApplyFacts): what the
//     scans and registration lookups say. The facts are derived from the
//     views as they are, so applying them again, or after a replay, or
//     twice from two replicas, gives the same entries; a domain whose
//     record is gone gets none.
//
// Days and statuses move with the clock, so the index keeps instants
// (certificate notAfter, registration expiry, unix ms) and List turns the
// asked status into score ranges at read time.
package domainindex

import (
	"fmt"

	"github.com/certfleet/certfleet/events"
)

// Key names under a tenant's index prefix.
const (
	// keyHost: zset, score 0 (an order by member: a bucketed order past
	// bucketCap members, layout 7), member "<host> <port, 5 digits> <id>" (id as
	// Member, which may hold any byte: read it after the first space): the
	// hostname sort (lexicographic, then port) and prefix search, and the
	// tenant's only map of host:port to domain id (Lookup): a host never
	// holds white space (domainname.Parse), so "<host> <port> " starts
	// the entry of one name only.
	keyHost = "host"
	// keySuffix: zset, score 0, member "<suffix> <created><id>" for every
	// proper label suffix of the hostname that still has two labels
	// ("shop.example" of "www.shop.example"), created being created_at
	// in 6 bytes (ix_created): search from a label, a label's domains in
	// created_at order (layout 4).
	keySuffix = "sfx"
	// keyCreated: zset, score created_at unix ms (0 when unknown), member
	// id: every domain of the tenant is here, so it is the tenant's list
	// of domain ids (IDs) and its size the tenant's domain count
	// (ix_count). A bucketed order past bucketCap members (layout 8),
	// which answers no score by member: a domain's created_at is read
	// from its record (ix_created_of).
	keyCreated = "created"
	// keySSL: zset, score the earliest notAfter (unix ms) among the view's
	// certificates, member id: scanned domains that showed a certificate.
	keySSL = "ssl"
	// keyBad: zset, same scores as keySSL, of the domains whose
	// certificates include an invalid chain or hostname: their status is
	// error until they expire.
	keyBad = "bad"
	// keyNoCert: set of scanned domains that showed no certificate
	// (status error).
	keyNoCert = "nocert"
	// keySSLNull: zset, score 0: domains without ssl_days_remaining
	// (never scanned, no certificate, no expiry), in id order: the tail
	// of the ssl_days_remaining sort.
	keySSLNull = "sslnull"
	// keyWhois: zset, score the registration expiry (unix ms), member id.
	keyWhois = "whois"
	// keyWhoisNull: zset, score 0: domains without a known registration
	// expiry, in id order.
	keyWhoisNull = "wnull"
	// keyWhoisReason + reason: zset of the domains without a known expiry
	// for that reason (pending, not-found, ...), scored by their
	// created_at ms as the tag zsets are.
	keyWhoisReason = "wr:"
	// keyBuilt: string, the layout version the tenant's index was built
	// with (Built, MarkBuilt).
	keyBuilt = "built"
	// The attention index, in tiers (tiers), each the band of one status
	// but valid: the domains whose certificate's expiry lies in the
	// tier's band, from its lower bound up to its upper one
	// (keyAttBounds), in hostname order (<tier>:host, members as
	// keyHost's) and in created_at order (<tier>:created, as keyCreated):
	// "exp" below a bound past now (expired), "crit" from now to past the
	// critical bound (critical), "warn" from the critical bound to past
	// the warning one (warning), and "err" every invalid certificate
	// (keyBad) and scanned domain without one (keyNoCert) (error);
	// "wexp", "wcrit" and "wwarn" likewise over the registration's
	// expiry. So a status (whois_status verdict) filter sorted by
	// hostname or created_at walks its band, a few percent of a healthy
	// tenant, nearly all of it matching, instead of the whole tenant.
	// Built when a list finds it missing (sweepScript, in steps, run by a
	// Sweeper), which moves the bounds on as the clock moves, and kept by
	// ix_tiers (from ix_ssl and ix_whois) from then on (layout 6; layout
	// 5's tiers "urg", "att", "wurg" and "watt" held two statuses each
	// and had no lower bound).
	keyAttHost    = ":host"
	keyAttCreated = ":created"
	// keyAttOther: zset, a tier's domains in the order of the other expiry
	// (its tiers entry's other: the registration's for the certificate's
	// tiers, the certificate's for the registration's), scored as that expiry's
	// key (keyWhois, keySSL) when below NoExpiryMS; keyAttOtherNull:
	// zset, score 0, the tier's others, in id order, as keyWhoisNull and
	// keySSLNull hold them. So a status filter sorted by
	// whois_days_remaining (a whois_status verdict sorted by
	// ssl_days_remaining) walks a tier too, with the cursors of the walk
	// of the whole index (layout 5).
	keyAttOther     = ":x"
	keyAttOtherNull = ":xnull"
	// keyAttBounds: hash, per tier its upper bound ("<tier>": unix ms; 0
	// for "err", which has none), its lower bound when it has one
	// ("<tier>lo") and, while a sweep is under way, where it left off
	// ("<tier>q", and "<tier>m", the member its last step stopped at):
	// one small hash, as a healthy tenant's tiers hold nothing else.
	keyAttBounds = "tiers"
	// keyTag + tag: zset of the domains with that tag, scored by their
	// created_at ms (as keyCreated, so that a tag on the created_at sort
	// walks its own zset; layout 6), a bucketed order past bucketCap
	// members (layout 8); keyTags: set of the tags
	// in use (so Drop finds their zsets).
	keyTag  = "tag:"
	keyTags = "tags"
	// keyScratch: zset, a bucketed tag's or reason's members copied for
	// a ZINTER of the list script, deleted before the script ends.
	keyScratch = "tmp"
	// A tag's orders, so that a tag on another sort than created_at walks
	// its own domains: keyTagHost + tag, zset, score 0, in hostname order
	// (members as keyHost's); keyTagSSL + tag and keyTagSSLNull + tag, as
	// keySSL (below NoExpiryMS) and keySSLNull hold them; keyTagWhois +
	// tag and keyTagWhoisNull + tag, as keyWhois and keyWhoisNull. Each
	// is built by the first list that reads more than tagOrderMin of the
	// tag's domains to sort them so (listScript's readPage), while the
	// tenant's orders have room (keyTagOrders), not before:
	// only the tags listed so pay their memory; from then on the writers
	// keep them (ix_tags, ix_rename, ix_ssl, ix_whois), and they go with
	// the tag's last domain (layout generation 6).
	keyTagHost      = "th:"
	keyTagSSL       = "ts:"
	keyTagSSLNull   = "tsn:"
	keyTagWhois     = "tw:"
	keyTagWhoisNull = "twn:"
	// keyGen: string, the generation of the tenant's domain records: a
	// number that every script changing a field a list shows moves on in
	// the same step (GenLua's ix_gen_bump: apiserver/accounts' update and
	// approval scripts), and that List returns (Page.Gen), so that an API
	// server keeps the records it decoded while it has not moved
	// (accounts.RecordCache) and a page reads none of them. Started from
	// the clock in microseconds where missing (a new tenant, or one that
	// left and came back), so a value never comes back; Drop keeps it.
	keyGen = "gen"
	// keyTagOrders: hash, per tag order built (its key without the
	// prefix: "th:<tag>", "ts:<tag>", "tw:<tag>") how many domains it
	// held when built, and in "n" their sum, which tagOrderShare bounds.
	keyTagOrders = "tord"
)

// staleTiers are the attention index's tiers of layouts 4 and 5, whose
// keys Drop deletes too (a rebuild of such an index leaves none behind).
var staleTiers = []string{"att", "urg", "watt", "wurg"}

// TagKey is the key of the zset of tenantID's domains tagged tag.
func TagKey(tenantID, tag string) string { return Prefix(tenantID) + keyTag + tag }

// tagOrdersLua defines, for the scripts that build a tag's orders
// (listScript) and those that keep them (IndexLua), IX_TAG_HOST, the
// hostname order's key name (keyTagHost), IX_TAG_X, each expiry's
// order: the index key it follows (key, with its null set of), the sort
// it serves and its two key names (keyTagSSL and keyTagSSLNull...), and
// IX_TAG_ROOM, keyTagOrders.
var tagOrdersLua = fmt.Sprintf(`
local IX_TAG_HOST, IX_TAG_ROOM = %q, %q
local IX_TAG_X = {{key = %q, of = %q, sort = %q, ord = %q, null = %q}, {key = %q, of = %q, sort = %q, ord = %q, null = %q}}
`, keyTagHost, keyTagOrders, keySSL, keySSLNull, SortSSLDays, keyTagSSL, keyTagSSLNull,
	keyWhois, keyWhoisNull, SortWhoisDays, keyTagWhois, keyTagWhoisNull)

// GenLua defines, for the scripts that list a tenant's domains
// (listScript) and those that change what a list shows of a domain
// record (IndexLua's callers, and apiserver/accounts' approval), ix_gen(p),
// the tenant's record generation (keyGen) as a string, started from
// Redis's clock in microseconds (16 digits) when missing, and
// ix_gen_bump(p), which moves it on. The clock start keeps a value from
// coming back after the key was deleted: a generation reached by n
// changes since its start is below the clock when the last of them ran.
const GenLua = `
local function ix_gen(p)
  local g = redis.call('GET', p .. '` + keyGen + `')
  if g then return g end
  local t = redis.call('TIME')
  g = t[1] .. string.format('%06d', tonumber(t[2]))
  redis.call('SET', p .. '` + keyGen + `', g)
  return g
end
local function ix_gen_bump(p)
  ix_gen(p)
  redis.call('INCR', p .. '` + keyGen + `')
end
`

// TagOrderKeys are the keys of the orders of tenantID's domains tagged
// tag, when a list built them: by hostname (keyTagHost), then by the
// certificate's expiry and its null set, then by the registration's.
func TagOrderKeys(tenantID, tag string) []string {
	p := Prefix(tenantID)
	return []string{p + keyTagHost + tag, p + keyTagSSL + tag, p + keyTagSSLNull + tag, p + keyTagWhois + tag, p + keyTagWhoisNull + tag}
}

// Layout is the version of the index layout; an index built with another
// is built again at start. Layout 2: keyHost and keyCreated are the
// tenant's registry of domains (the hash tenant:{tNN}:<tenant>:domains of
// layout 1 is read once to build the index, then deleted), so Drop keeps
// them. Layout 3: ids as Member writes them (UUIDs in 16 bytes); the
// registry of layout 2 (ids as text) is read by IDs, indexed again, and
// its old members dropped (DropStale) before the index is marked built.
// Layout 4: keySuffix's members carry created_at before the id, so that
// a label's domains read in that order. Layout 5: the attention tiers
// keep their domains in the other expiry's order too (keyAttOther,
// keyAttOtherNull), which the tiers of layout 4 lack. Layout 6: the
// tiers are one status's band each, with a lower bound too (tiers),
// instead of layout 5's two statuses below a bound; a tag's and a
// registration reason's domains are zsets scored by created_at (sets
// before). Layout 7: the orders by member (keyHost, keySuffix, the null
// sets keySSLNull and keyWhoisNull, the tiers' keyAttHost and
// keyAttOtherNull, the tags' keyTagHost, keyTagSSLNull and
// keyTagWhoisNull) are bucketed orders (bucketLua) past bucketCap
// members, so that they stay listpacks under Redis's defaults; the
// rebuild makes the registry's keyHost one (DropStale). Layout 8:
// keyCreated is a bucketed order too (the first order by score), walked
// by position (ob_after), each domain's created_at read from its record;
// the rebuild makes the registry's one bucketed (DropStale).
const Layout = "8"

// NoExpiryMS is the score of a certificate without a well-defined
// expiration (99991231235959Z): after every real date.
const NoExpiryMS = 253402300799000

// Reasons lists why a registration expiry is unknown: the whois_status
// values that are not a verdict over a date. Each has its set.
var Reasons = []string{
	events.RegistrationNoExpiry, events.RegistrationNotFound, events.RegistrationRateLimited,
	events.RegistrationError, ReasonPending, ReasonNotRegistrable,
}

// Reasons of the projector's (projector.RegistrationPending and
// projector.RegistrationNotRegistrable, which a test holds equal).
const (
	// ReasonPending: no lookup reached the domain's registration yet.
	ReasonPending = "pending"
	// ReasonNotRegistrable: the host has no registrable domain.
	ReasonNotRegistrable = "not-registrable"
)

// Prefix is the start of every index key of tenantID: in the tenant's
// namespace (tenant:{tNN}:<tenant>:), which accounts.Forget deletes when
// the tenant leaves.
func Prefix(tenantID string) string {
	return events.TenantNamespace(tenantID) + "ix:"
}

// HostKey is the key of tenantID's names (keyHost), which the scripts of
// apiserver/accounts declare: IndexPrefixLua derives Prefix from it.
func HostKey(tenantID string) string { return Prefix(tenantID) + keyHost }

// GenKey is the key of tenantID's record generation (keyGen), which a
// reader of records checks beside them (accounts.RecordCache).
func GenKey(tenantID string) string { return Prefix(tenantID) + keyGen }

// CreatedKey is the key of every domain id of tenantID (keyCreated).
func CreatedKey(tenantID string) string { return Prefix(tenantID) + keyCreated }

// Keys lists every key of tenantID's index (for tests and memory counts)
// but its tags' (TagKey, TagOrderKeys) and, beside a bucketed order's
// key, its sizes and buckets (bucketSep; dropOrder deletes them with
// it).
func Keys(tenantID string) []string {
	p := Prefix(tenantID)
	out := []string{p + keyHost, p + keySuffix, p + keyCreated, p + keySSL, p + keyBad, p + keyNoCert,
		p + keySSLNull, p + keyWhois, p + keyWhoisNull, p + keyBuilt, p + keyTags, p + keyAttBounds, p + keyTagOrders, p + keyGen}
	for _, t := range tiers {
		out = append(out, p+t.name+keyAttHost, p+t.name+keyAttCreated, p+t.name+keyAttOther, p+t.name+keyAttOtherNull)
	}
	for _, r := range Reasons {
		out = append(out, p+keyWhoisReason+r)
	}
	return out
}
