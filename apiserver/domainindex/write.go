package domainindex

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// IndexLua defines the Lua functions that change a domain's entries, for
// the scripts of apiserver/accounts to include, so the record and its
// entries change in one step. p is Prefix of the tenant (IndexPrefixLua
// computes it inside a script from the tenant's HostKey):
//
//	ix_lookup(p, host, port)                          the id of host:port (text), or false
//	ix_add(p, id, host, port, created_ms, tags_json)   a new domain (or a backfill)
//	ix_rename(p, id, old_host, old_port, host, port, tags_json)
//	ix_tags(p, id, old_tags_json, tags_json, name[, created_ms])
//	                                                  tags changed; name is ix_name(host, port); created_ms when known, else read from the record
//	ix_remove(p, id, host, port, tags_json)
//	ix_gen_bump(p)                                    a field a list shows changed (GenLua)
//
// id is the domain's Member (the caller encodes it); ix_lookup returns
// the id as text (ix_id). A new or renamed domain shows as never scanned,
// its registration as pending, until the projector applies its facts.
var IndexLua = bucketLua + countLua + idLua + RecordPortLua + createdLua + tiersLua + tagOrdersLua + GenLua + `
local IX_REASONS = {` + luaStrings(Reasons) + `}
local IX_NOEXP = ` + strconv.FormatInt(NoExpiryMS, 10) + `
local function ix_suffixes(host)
  local out, i = {}, 1
  while true do
    local d = string.find(host, '.', i, true)
    if not d then return out end
    local rest = string.sub(host, d + 1)
    if not string.find(rest, '.', 1, true) then return out end
    out[#out + 1] = rest
    i = d + 1
  end
end
local function ix_name(host, port) return host .. ' ' .. string.format('%05d', tonumber(port)) .. ' ' end
local function ix_lookup(p, host, port)
  local pre = ix_name(host, port)
  -- Up to pre with its last space (0x20) as '!' (0x21): the id after pre
  -- may start with any byte.
  local m = ob_bylex(p .. 'host', '[' .. pre, '(' .. string.sub(pre, 1, -2) .. '!', false, 0, 1)[1]
  if m then return ix_id(string.sub(m, #pre + 1)) end
  return false
end
-- ix_record is the key of domain id's record (RecordPrefix), in the
-- slot of the index whose Prefix is p.
local function ix_record(p, id) return '` + recordKeyStart + `' .. string.match(p, '^[^{]*(%b{})') .. ':' .. ix_id(id) end
-- ix_created_of is domain id's created_at ms (0 when unknown), its
-- record's: its score in created and in the tag, reason and tiers'
-- created zsets (so a walk of one is in created_at order). created and
-- the tags' are bucketed orders, which answer no score by member: the
-- writers read it here.
local function ix_created_of(p, id)
  local r = redis.call('HMGET', ix_record(p, id), 'c', 'created_at')
  return tonumber(r[1] or r[2]) or 0
end
-- ix_names adds (add) or removes the hostname's and its labels' members;
-- created is the domain's created_at ms, which the label members carry.
local function ix_names(p, id, host, port, add, created)
  local op = ob_rem
  if add then op = ob_add end
  op(p .. 'host', nil, ix_name(host, port) .. id)
  local at = ix_created(created)
  for _, s in ipairs(ix_suffixes(host)) do op(p .. 'sfx', nil, s .. ' ' .. at .. id) end
end
-- ix_scored puts id in key with score s, or (s nil) in null, key's tail
-- in id order (score 0, an order by member), and out of the other.
local function ix_scored(key, null, s, id)
  if s then
    redis.call('ZADD', key, s, id)
    ob_rem(null, nil, id)
  else
    redis.call('ZREM', key, id)
    ob_add(null, nil, id)
  end
end
-- ix_att_x places domain id, in tier, in the tier's order of the other
-- expiry (IX_TIER[tier].other: 'whois' for a tier over the certificate's,
-- 'ssl' for one over the registration's), as that expiry's sort walks its
-- key and then its null set: in <tier>:x with the other key's score when
-- below IX_NOEXP, else in <tier>:xnull (score 0, in id order), so a page
-- walked in the tier and the next walked in the whole index agree.
local function ix_att_x(p, tier, id)
  local s = redis.call('ZSCORE', p .. IX_TIER[tier].other, id)
  if s and tonumber(s) >= IX_NOEXP then s = nil end
  ix_scored(p .. tier .. ':x', p .. tier .. ':xnull', s, id)
end
-- ix_att puts domain id, named name (ix_name's), in a tier of the
-- attention index (IX_TIERS: <tier>:host, <tier>:created and the other
-- expiry's order, ix_att_x) or takes it out.
local function ix_att(p, tier, id, name, on)
  if on then
    ob_add(p .. tier .. ':host', nil, name .. id)
    redis.call('ZADD', p .. tier .. ':created', ix_created_of(p, id), id)
    ix_att_x(p, tier, id)
  else
    ob_rem(p .. tier .. ':host', nil, name .. id)
    redis.call('ZREM', p .. tier .. ':created', id)
    redis.call('ZREM', p .. tier .. ':x', id)
    ob_rem(p .. tier .. ':xnull', nil, id)
  end
end
-- ix_att_follow places domain id again in the other expiry's order of
-- the tiers that hold it and whose other expiry is key ('ssl' or
-- 'whois'), once key's entries of id are written.
local function ix_att_follow(p, id, key)
  for _, tier in ipairs(IX_TIERS_X[key]) do
    if redis.call('ZSCORE', p .. tier .. ':created', id) then ix_att_x(p, tier, id) end
  end
end
-- ix_att_out takes domain id, named name, out of every tier.
local function ix_att_out(p, id, name)
  for _, t in ipairs(IX_TIERS) do ix_att(p, t.name, id, name, false) end
end
-- ix_tiers puts domain id, named name, in the tiers over the expiry key
-- ('ssl' or 'whois') whose band its expiry s (nil: none) is in (L <= s <
-- B, the bounds in the hash 'tiers': a tier without L has none below),
-- or, in the error tier (invalid), when its certificate is invalid (bad)
-- or missing (nocert), and out of the others. Only a tier that exists
-- (its B set by sweepScript of list.go) takes a domain in.
local function ix_tiers(p, id, name, key, s, bad, nocert)
  local names, fields = IX_TIERS_OF[key], {}
  for _, tier in ipairs(names) do
    fields[#fields + 1] = tier
    fields[#fields + 1] = tier .. 'lo'
  end
  local bounds = redis.call('HMGET', p .. 'tiers', unpack(fields))
  for i, tier in ipairs(names) do
    local b, l = tonumber(bounds[2 * i - 1]), tonumber(bounds[2 * i])
    if b then
      local on
      if IX_TIER[tier].invalid then on = (s ~= nil and bad) or (s == nil and nocert)
      else on = s ~= nil and s < b and (l == nil or s >= l) end
      ix_att(p, tier, id, name, on)
    end
  end
end
local function ix_taglist(j)
  if not j or j == '' then return {} end
  local ok, t = pcall(cjson.decode, j)
  if not ok or type(t) ~= 'table' then return {} end
  return t
end
-- ix_tag_place places domain id in tag t's order of expiry x (one of
-- IX_TAG_X) when built, from the entries of x's key and null set.
local function ix_tag_place(p, id, t, x)
  local ord, null = p .. x.ord .. t, p .. x.null .. t
  if redis.call('EXISTS', ord, null) == 0 then return end
  local s = redis.call('ZSCORE', p .. x.key, id)
  if s and tonumber(s) < IX_NOEXP then redis.call('ZADD', ord, s, id) else redis.call('ZREM', ord, id) end
  if ob_has(p .. x.of, nil, id) then ob_add(null, nil, id) else ob_rem(null, nil, id) end
end
-- ix_tag_follow places domain id again in the orders of expiry key
-- ('ssl' or 'whois') of its tags (JSON list tags; none when nil), once
-- key's entries of id are written.
local function ix_tag_follow(p, id, key, tags)
  for _, x in ipairs(IX_TAG_X) do
    if x.key == key then
      for _, t in ipairs(ix_taglist(tags)) do ix_tag_place(p, id, t, x) end
    end
  end
end
-- ix_whois writes a domain's registration facts; name, when given, is
-- ix_name of the record's host they are for, whose attention tiers over
-- the registration follow them, and the orders of its tags (JSON list
-- tags, when given) follow them too.
local function ix_whois(p, id, exp, reason, name, tags)
  local s = exp
  if s == '' then s = nil end
  ix_scored(p .. 'whois', p .. 'wnull', s, id)
  local c = ix_created_of(p, id)
  for _, r in ipairs(IX_REASONS) do
    if r == reason and exp == '' then redis.call('ZADD', p .. 'wr:' .. r, c, id) else redis.call('ZREM', p .. 'wr:' .. r, id) end
  end
  if name then ix_tiers(p, id, name, 'whois', tonumber(exp), false, false) end
  ix_att_follow(p, id, 'whois')
  ix_tag_follow(p, id, 'whois', tags)
end
-- ix_ssl writes a domain's certificate facts; name is ix_name of the
-- host they are for (the record's), tags the record's (JSON list), whose
-- orders follow them.
local function ix_ssl(p, id, name, ssl, bad, nocert, tags)
  ix_tiers(p, id, name, 'ssl', tonumber(ssl), bad == '1', nocert == '1')
  if ssl ~= '' then
    redis.call('ZADD', p .. 'ssl', ssl, id)
    if bad == '1' then redis.call('ZADD', p .. 'bad', ssl, id) else redis.call('ZREM', p .. 'bad', id) end
    redis.call('SREM', p .. 'nocert', id)
    if tonumber(ssl) >= IX_NOEXP then ob_add(p .. 'sslnull', nil, id) else ob_rem(p .. 'sslnull', nil, id) end
  else
    redis.call('ZREM', p .. 'ssl', id)
    redis.call('ZREM', p .. 'bad', id)
    if nocert == '1' then redis.call('SADD', p .. 'nocert', id) else redis.call('SREM', p .. 'nocert', id) end
    ob_add(p .. 'sslnull', nil, id)
  end
  ix_att_follow(p, id, 'ssl')
  ix_tag_follow(p, id, 'ssl', tags)
end
-- ix_tags moves domain id, named name (ix_name's), from the tags of
-- JSON list old to those of new: in each tag's created_at order
-- (tag:<t>) and, where a list built them, its hostname order
-- (IX_TAG_HOST, as host's members) and its expiries' orders (IX_TAG_X),
-- which go with the tag's last domain, freeing their room (IX_TAG_ROOM).
local function ix_tags(p, id, old, new, name, created)
  if old == new then return end
  local c = created or ix_created_of(p, id)
  for _, t in ipairs(ix_taglist(old)) do
    ob_rem(p .. 'tag:' .. t, c, id)
    ob_rem(p .. IX_TAG_HOST .. t, nil, name .. id)
    local keys = {p .. IX_TAG_HOST .. t}
    for _, x in ipairs(IX_TAG_X) do
      redis.call('ZREM', p .. x.ord .. t, id)
      ob_rem(p .. x.null .. t, nil, id)
      keys[#keys + 1] = p .. x.ord .. t
      keys[#keys + 1] = p .. x.null .. t
    end
    if ob_card(p .. 'tag:' .. t) == 0 then
      redis.call('SREM', p .. 'tags', t)
      for _, k in ipairs(keys) do ob_del(k) end
      -- The room its orders took (keyTagOrders) is free again.
      local names = {IX_TAG_HOST .. t}
      for _, x in ipairs(IX_TAG_X) do names[#names + 1] = x.ord .. t end
      local took, freed = redis.call('HMGET', p .. IX_TAG_ROOM, unpack(names)), 0
      for _, v in ipairs(took) do if v then freed = freed + tonumber(v) end end
      if freed > 0 then
        redis.call('HINCRBY', p .. IX_TAG_ROOM, 'n', -freed)
        redis.call('HDEL', p .. IX_TAG_ROOM, unpack(names))
      end
    end
  end
  for _, t in ipairs(ix_taglist(new)) do
    ob_add(p .. 'tag:' .. t, c, id)
    redis.call('SADD', p .. 'tags', t)
    if redis.call('EXISTS', p .. IX_TAG_HOST .. t) == 1 then ob_add(p .. IX_TAG_HOST .. t, nil, name .. id) end
    for _, x in ipairs(IX_TAG_X) do ix_tag_place(p, id, t, x) end
  end
end
local function ix_add(p, id, host, port, created, tags)
  created = tonumber(created) or 0
  ob_add(p .. 'created', created, id)
  ix_names(p, id, host, port, true, created)
  if not redis.call('ZSCORE', p .. 'ssl', id) then ob_add(p .. 'sslnull', nil, id) end
  if not redis.call('ZSCORE', p .. 'whois', id) and not ob_has(p .. 'wnull', nil, id) then
    ix_whois(p, id, '', 'pending')
  end
  -- Last: the tags' expiry orders place it from the entries above.
  ix_tags(p, id, '', tags, ix_name(host, port), created)
end
local function ix_rename(p, id, old_host, old_port, host, port, tags)
  local created = ix_created_of(p, id)
  ix_names(p, id, old_host, old_port, false, created)
  ix_names(p, id, host, port, true, created)
  for _, t in ipairs(ix_taglist(tags)) do
    -- Only a tag whose hostname order is built has the old name.
    if ob_rem(p .. IX_TAG_HOST .. t, nil, ix_name(old_host, old_port) .. id) == 1 then
      ob_add(p .. IX_TAG_HOST .. t, nil, ix_name(host, port) .. id)
    end
  end
  ix_att_out(p, id, ix_name(old_host, old_port))
  ix_ssl(p, id, ix_name(host, port), '', '0', '0', tags)
  -- The registration stays with the host: a new port keeps its tiers.
  if old_host ~= host then ix_whois(p, id, '', 'pending', nil, tags)
  else ix_tiers(p, id, ix_name(host, port), 'whois', tonumber(redis.call('ZSCORE', p .. 'whois', id)), false, false) end
end
local function ix_remove(p, id, host, port, tags)
  local created = ix_created_of(p, id)
  ix_names(p, id, host, port, false, created)
  ix_att_out(p, id, ix_name(host, port))
  ix_tags(p, id, tags, '', ix_name(host, port))
  ob_rem(p .. 'created', created, id)
  for _, k in ipairs({'ssl', 'bad', 'whois'}) do redis.call('ZREM', p .. k, id) end
  for _, k in ipairs({'sslnull', 'wnull'}) do ob_rem(p .. k, nil, id) end
  redis.call('SREM', p .. 'nocert', id)
  for _, r in ipairs(IX_REASONS) do redis.call('ZREM', p .. 'wr:' .. r, id) end
end
`

// IndexPrefixLua is a Lua expression giving Prefix of the tenant from
// the tenant's HostKey, named by the Lua expression hostKey: a script
// declares that key, in the tenant's slot, and reaches the others of the
// index from it.
func IndexPrefixLua(hostKey string) string {
	return `string.sub(` + hostKey + `, 1, #` + hostKey + ` - #'` + keyHost + `')`
}

// namePrefix starts the keyHost member of host:port: ix_name's in Go.
func namePrefix(host string, port int) string {
	return host + " " + fmt.Sprintf("%05d", port) + " "
}

// lookupScript finds the keyHost member of a name: KEYS: the tenant's
// HostKey; ARGV: namePrefix. Returns the member, "" for none (no nil
// reply, which a pipeline would take for its failure).
var lookupScript = redis.NewScript(bucketLua + `
local pre = ARGV[1]
-- Up to pre with its last space as '!': the id may start with any byte.
return ob_bylex(KEYS[1], '[' .. pre, '(' .. string.sub(pre, 1, -2) .. '!', false, 0, 1)[1] or ''
`)

// LookupCmd runs on c, or queues on a pipeline, the lookup of the id of
// tenantID's host:port (ix_lookup's in Go); LookupID reads its answer. A
// pipeline that fails with NOSCRIPT loads the script (LoadLookup) and
// runs again.
func LookupCmd(ctx context.Context, c redis.Scripter, tenantID, host string, port int) *redis.Cmd {
	return lookupScript.Run(ctx, c, []string{HostKey(tenantID)}, namePrefix(host, port))
}

// LoadLookup loads LookupCmd's script, for a pipeline that found it
// missing.
func LoadLookup(ctx context.Context, rdb redis.Scripter) error {
	return lookupScript.Load(ctx, rdb).Err()
}

// LookupID is the domain id a LookupCmd found, "" when the tenant has no
// such name.
func LookupID(cmd *redis.Cmd) string {
	m, _ := cmd.Text()
	if m == "" {
		return ""
	}
	id, _ := hostMemberID(m)
	return IDOf(id)
}

// idsChunk is how many ids IDs reads per round trip.
const idsChunk = 10000

// IDs lists every domain id of tenantID (keyCreated; as text, also those
// an index of layout 2 kept as text), in no order. A big tenant's are
// read a chunk at a time (orderMembers), so no one call holds Redis for
// long: an id there from the first call to the last is listed once, one
// added or removed in between may or may not be.
func IDs(ctx context.Context, rdb redis.UniversalClient, tenantID string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	err := orderMembers(ctx, rdb, CreatedKey(tenantID), func(ms []string, _ []float64) error {
		for _, m := range ms {
			if id := IDOf(m); !seen[id] {
				seen[id] = true
				out = append(out, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list domain ids of %s: %w", tenantID, err)
	}
	return out, nil
}

// countLua defines ix_count(p): how many domains the tenant whose index
// Prefix is p has (keyCreated's size), which the quotas count.
const countLua = `
local function ix_count(p) return ob_card(p .. '` + keyCreated + `') end
`

// CountLua defines ix_count (countLua) for a script that does not
// include IndexLua.
var CountLua = bucketLua + countLua

var countScript = redis.NewScript(CountLua + `return ix_count(ARGV[1])`)

// Count is how many domains tenantID has (ix_count).
func Count(ctx context.Context, rdb redis.Scripter, tenantID string) (int64, error) {
	n, err := countScript.Run(ctx, rdb, nil, Prefix(tenantID)).Int64()
	if err != nil {
		return 0, fmt.Errorf("count domains of %s: %w", tenantID, err)
	}
	return n, nil
}

func luaStrings(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = "'" + s + "'"
	}
	return strings.Join(q, ", ")
}

// addFromRecordScript indexes a domain from its record as it is now (the
// backfill); a domain whose record is gone gets nothing. The record's
// created_at is its field "c", or "created_at" in a record of the layout
// before the compact field names (accounts).
//
// KEYS: the domain's record (accounts). ARGV: prefix, domain Member. Returns 1
// when indexed.
var addFromRecordScript = redis.NewScript(IndexLua + `
local r = redis.call('HMGET', KEYS[1], 'host', 'port', 'c', 'tags', 'created_at')
if not r[1] then return 0 end
ix_add(ARGV[1], ARGV[2], r[1], record_port(r[2]), r[3] or r[5] or '0', r[4] or '')
return 1
`)

// AddFromRecord indexes the domains ids of tenantID from their records
// (recordKey gives a record's key), in one pipeline: the names and
// created_at; the facts come from ApplyFacts.
func AddFromRecord(ctx context.Context, rdb redis.UniversalClient, tenantID string, ids []string, recordKey func(tenantID, id string) string) error {
	if len(ids) == 0 {
		return nil
	}
	p := Prefix(tenantID)
	members := make([]string, len(ids))
	for i, id := range ids {
		m, err := Member(id)
		if err != nil {
			return fmt.Errorf("index domains of %s: %w", tenantID, err)
		}
		members[i] = m
	}
	run := func() error {
		pipe := rdb.Pipeline()
		for i, id := range ids {
			addFromRecordScript.EvalSha(ctx, pipe, []string{recordKey(tenantID, id)}, p, members[i])
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	err := run()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err = addFromRecordScript.Load(ctx, rdb).Err(); err == nil {
			err = run()
		}
	}
	if err != nil {
		return fmt.Errorf("index %d domains of %s: %w", len(ids), tenantID, err)
	}
	return nil
}

// Facts is what the views say of one domain, as the index keeps it.
type Facts struct {
	DomainID string
	TenantID string
	// Host and Port are the name the SSL facts are for (the view's); the
	// facts apply only while the record has this name, else the domain
	// shows as never scanned.
	Host string
	Port int
	// SSLMS is the earliest notAfter among the certificates seen (unix
	// ms; NoExpiryMS when none expires); 0 when none was seen.
	SSLMS int64
	// Bad: a certificate seen has an invalid chain or hostname.
	Bad bool
	// NoCert: scanned, and no IP showed a certificate.
	NoCert bool
	// WhoisHost is the host the registration facts are for: they apply
	// only while the record has this host.
	WhoisHost string
	// WhoisMS is the registration expiry (unix ms), 0 when unknown, and
	// WhoisReason then says why (one of Reasons).
	WhoisMS     int64
	WhoisReason string
}

// applyFactsScript writes a domain's facts if its record still exists.
//
// KEYS: the domain's record. ARGV: prefix, id Member, host, port, ssl ms ("" when
// none), bad, nocert ("1"|"0"), whois host, whois ms ("" when unknown),
// whois reason. Returns 1 when written, 0 when the record is gone.
var applyFactsScript = redis.NewScript(IndexLua + `
local r = redis.call('HMGET', KEYS[1], 'host', 'port', 'tags')
if not r[1] then return 0 end
local p, id = ARGV[1], ARGV[2]
local name = ix_name(r[1], record_port(r[2]))
if r[1] == ARGV[3] and record_port(r[2]) == ARGV[4] then
  ix_ssl(p, id, name, ARGV[5], ARGV[6], ARGV[7], r[3])
else
  ix_ssl(p, id, name, '', '0', '0', r[3])
end
if r[1] == ARGV[8] then ix_whois(p, id, ARGV[9], ARGV[10], name, r[3]) end
return 1
`)

// ApplyFacts writes the facts of many domains in one pipeline (recordKey
// gives a domain record's key). Writing the same facts again changes
// nothing.
func ApplyFacts(ctx context.Context, rdb redis.UniversalClient, facts []Facts, recordKey func(tenantID, id string) string) error {
	if len(facts) == 0 {
		return nil
	}
	members := make([]string, len(facts))
	for i, f := range facts {
		m, err := Member(f.DomainID)
		if err != nil {
			return fmt.Errorf("index facts of %d domains: %w", len(facts), err)
		}
		members[i] = m
	}
	run := func() error {
		pipe := rdb.Pipeline()
		for i, f := range facts {
			ssl, whois := "", ""
			if f.SSLMS != 0 {
				ssl = strconv.FormatInt(f.SSLMS, 10)
			}
			if f.WhoisMS != 0 {
				whois = strconv.FormatInt(f.WhoisMS, 10)
			}
			applyFactsScript.EvalSha(ctx, pipe, []string{recordKey(f.TenantID, f.DomainID)},
				Prefix(f.TenantID), members[i], f.Host, strconv.Itoa(f.Port), ssl, flag(f.Bad), flag(f.NoCert),
				f.WhoisHost, whois, f.WhoisReason)
		}
		_, err := pipe.Exec(ctx)
		return err
	}
	err := run()
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err = applyFactsScript.Load(ctx, rdb).Err(); err == nil {
			err = run()
		}
	}
	if err != nil {
		return fmt.Errorf("index facts of %d domains: %w", len(facts), err)
	}
	return nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Built tells whether tenantID's index was built with this Layout.
func Built(ctx context.Context, rdb redis.UniversalClient, tenantID string) (bool, error) {
	v, err := rdb.Get(ctx, Prefix(tenantID)+keyBuilt).Result()
	if err == redis.Nil {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read index layout of %s: %w", tenantID, err)
	}
	return v == Layout, nil
}

// MarkBuilt records that tenantID's index is built with this Layout.
func MarkBuilt(ctx context.Context, rdb redis.UniversalClient, tenantID string) error {
	if err := rdb.Set(ctx, Prefix(tenantID)+keyBuilt, Layout, 0).Err(); err != nil {
		return fmt.Errorf("mark index of %s built: %w", tenantID, err)
	}
	return nil
}

// Drop deletes tenantID's index (before a rebuild), and the attention
// tiers of the layouts before (staleTiers), one key at a time so
// a big zset is freed in the background (UNLINK), but for the tenant's
// registry (HostKey, CreatedKey: its names and ids, which only the
// scripts writing the records change): the rebuild reads its ids there,
// and adds and renames keep checking names against it meanwhile.
func Drop(ctx context.Context, rdb redis.UniversalClient, tenantID string) error {
	tags, err := rdb.SMembers(ctx, Prefix(tenantID)+keyTags).Result()
	if err != nil {
		return fmt.Errorf("drop index of %s: %w", tenantID, err)
	}
	keys := Keys(tenantID)
	for _, t := range tags {
		keys = append(keys, TagKey(tenantID, t))
		keys = append(keys, TagOrderKeys(tenantID, t)...)
	}
	for _, t := range staleTiers {
		p := Prefix(tenantID) + t
		keys = append(keys, p+keyAttHost, p+keyAttCreated, p+keyAttOther, p+keyAttOtherNull)
	}
	for _, k := range keys {
		if k == HostKey(tenantID) || k == CreatedKey(tenantID) || k == Prefix(tenantID)+keyGen {
			continue
		}
		if err := dropOrder(ctx, rdb, k); err != nil {
			return fmt.Errorf("drop index of %s: %w", tenantID, err)
		}
	}
	return nil
}

// dropOrderScript deletes the order KEYS[1] (any key; a bucketed
// order's sizes and buckets with it): ob_del.
var dropOrderScript = redis.NewScript(bucketLua + `
ob_del(KEYS[1])
return 1
`)

// dropOrder unlinks the key k and, when it is a bucketed order's
// directory, its sizes and buckets, in one script (ob_del, which the
// scripts' writers use too).
func dropOrder(ctx context.Context, rdb redis.UniversalClient, k string) error {
	return dropOrderScript.Run(ctx, rdb, []string{k}).Err()
}

// orderRemScript takes members out of the order KEYS[1] (bucketed or
// not): ARGV[1] "1" for a scored order, whose members follow as (score,
// member) pairs, else the members of an order by member.
var orderRemScript = redis.NewScript(bucketLua + `
if ARGV[1] == '1' then
  for i = 2, #ARGV, 2 do ob_rem(KEYS[1], tonumber(ARGV[i]), ARGV[i + 1]) end
else
  for i = 2, #ARGV do ob_rem(KEYS[1], nil, ARGV[i]) end
end
return 1
`)

// orderMembers lists the members of the order key, with their scores, a
// chunk at a time: ZSCAN of a plain one; a bucketed one's buckets in the
// directory's order, each read whole, the directory read on after the
// last entry read, so that a bucket split meanwhile is read too (its
// upper half's entry comes after the one read). A member may be listed
// twice. An order made bucketed during a ZSCAN (an add past bucketCap,
// BucketOrder) is read again as one.
func orderMembers(ctx context.Context, rdb redis.UniversalClient, key string, each func(ms []string, scores []float64) error) error {
	bucketed := func() (bool, error) {
		n, err := rdb.Exists(ctx, key+bucketSep+"n").Result()
		return n == 1, err
	}
	b, err := bucketed()
	if err != nil {
		return err
	}
	if !b {
		var cursor uint64
		for {
			kv, next, err := rdb.ZScan(ctx, key, cursor, "", idsChunk).Result()
			if err != nil {
				return err
			}
			// Read while still plain: else kv may be directory entries.
			if b, err = bucketed(); err != nil {
				return err
			}
			if b {
				break
			}
			ms, scores := make([]string, 0, len(kv)/2), make([]float64, 0, len(kv)/2)
			for i := 0; i+1 < len(kv); i += 2 {
				f, err := strconv.ParseFloat(kv[i+1], 64)
				if err != nil {
					return fmt.Errorf("score of %q in %s: %w", kv[i], key, err)
				}
				ms, scores = append(ms, kv[i]), append(scores, f)
			}
			if err := each(ms, scores); err != nil {
				return err
			}
			if next == 0 {
				return nil
			}
			cursor = next
		}
	}
	after := "-"
	for {
		es, err := rdb.ZRangeByLex(ctx, key, &redis.ZRangeBy{Min: after, Max: "+", Count: 100}).Result()
		if err != nil {
			return err
		}
		for _, e := range es {
			if len(e) < 8 {
				continue
			}
			zs, err := rdb.ZRangeWithScores(ctx, key+bucketSep+e[len(e)-8:], 0, -1).Result()
			if err != nil {
				return err
			}
			ms, scores := make([]string, len(zs)), make([]float64, len(zs))
			for i, z := range zs {
				ms[i], _ = z.Member.(string)
				scores[i] = z.Score
			}
			if err := each(ms, scores); err != nil {
				return err
			}
		}
		if len(es) < 100 {
			return nil
		}
		after = "(" + es[len(es)-1]
	}
}

// DropStale deletes from tenantID's registry (HostKey, CreatedKey) the
// members of an index of layout 2, which kept UUIDs as text: after a
// rebuild indexed every id IDs read (as members of this layout), the
// last step before MarkBuilt; then both orders past bucketCap are made
// bucketed (BucketOrder: an index of layout 6 and before kept the
// hostname order plain, one of layout 7 and before the created order).
// Read a chunk at a time (orderMembers).
func DropStale(ctx context.Context, rdb redis.UniversalClient, tenantID string) error {
	for _, key := range []string{HostKey(tenantID), CreatedKey(tenantID)} {
		scored := key == CreatedKey(tenantID)
		err := orderMembers(ctx, rdb, key, func(ms []string, scores []float64) error {
			old := []any{flag(scored)}
			for i, m := range ms {
				id := m
				if !scored {
					id, _ = hostMemberID(m)
				}
				if !stale(id) {
					continue
				}
				if scored {
					old = append(old, scoreString(scores[i]))
				}
				old = append(old, m)
			}
			if len(old) == 1 {
				return nil
			}
			return orderRemScript.Run(ctx, rdb, []string{key}, old...).Err()
		})
		if err != nil {
			return fmt.Errorf("drop stale index members of %s: %w", tenantID, err)
		}
		if _, err := BucketOrder(ctx, rdb, key, scored); err != nil {
			return fmt.Errorf("drop stale index members of %s: %w", tenantID, err)
		}
	}
	return nil
}
