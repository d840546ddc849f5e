package domainindex

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Sort keys of a list.
const (
	SortHostname  = "hostname"
	SortSSLDays   = "ssl_days_remaining"
	SortWhoisDays = "whois_days_remaining"
	SortCreated   = "created_at"
)

// Sorts lists every sort key.
var Sorts = []string{SortHostname, SortSSLDays, SortWhoisDays, SortCreated}

// Statuses a status filter may ask (grade's), and the verdicts over a
// registration expiry whois_status may ask beside Reasons.
var (
	Statuses      = []string{"valid", "warning", "critical", "expired", "error"}
	WhoisVerdicts = []string{"valid", "warning", "critical", "expired"}
)

// MaxLimit is the most domains one page holds.
const MaxLimit = 1000

// Query is one page of a tenant's domains.
type Query struct {
	// Sort is one of Sorts; Desc reverses it, except that domains without
	// a value for the key (never scanned, no expiry known) come last
	// either way, in id order.
	Sort string
	Desc bool
	// Status keeps the domains whose SSL status is this (Statuses); ""
	// keeps all.
	Status string
	// WhoisStatus keeps the domains whose whois_status is this
	// (WhoisVerdicts or Reasons); "" keeps all.
	WhoisStatus string
	// Tag keeps the domains tagged with it; "" keeps all.
	Tag string
	// Search keeps the domains whose hostname starts with it, or one of
	// whose labels but the last does; a leading "." asks for a label
	// only. Lower-case; "" keeps all.
	Search string
	// Limit is the page's size, 1 to MaxLimit.
	Limit int
	// Cursor continues after the page that returned it (Page.NextCursor)
	// for the same sort, order and filters; "" starts at the beginning.
	Cursor string
	// Offset skips that many matches first (page-number paging); only
	// without a Cursor. Its cost grows with it.
	Offset int
	// Now is the instant days and statuses are counted at; Warning and
	// Critical are the thresholds in days (grade.Thresholds).
	Now               time.Time
	Warning, Critical int

	// Fields names the record fields to return with each id of the page
	// (Page.Rows), read by the same script: none when empty.
	Fields []string

	// plan forces the script's plan ("read" or "walk"; "" chooses), for
	// tests that check both against one answer.
	plan string
}

// Page is one page of a list.
type Page struct {
	// IDs are the page's domain ids, in order.
	IDs []string
	// Total counts the domains that match the filters.
	Total int
	// NextCursor continues the list after this page; "" on the last one.
	NextCursor string
	// Rows, when the query asked Fields, holds for each of IDs (same
	// order) its record's fields and its registration facts, read in the
	// same atomic step as the ids.
	Rows []Row
}

// Row is what a page holds of a domain beside its id when the query asks
// Fields.
type Row struct {
	// Record holds the asked fields the domain's record has (a field it
	// lacks is absent; an empty Record means the record is gone).
	Record map[string]string
	// WhoisMS is the registration expiry the index keeps for the domain
	// (unix ms, as Facts.WhoisMS); 0 when unknown, and WhoisReason then
	// says why (one of Reasons). These are the facts the whois_status
	// filter and the whois_days_remaining sort read.
	WhoisMS     int64
	WhoisReason string
}

// ErrBadCursor is a cursor that is not one List gave for this query.
var ErrBadCursor = errors.New("cursor is invalid or belongs to another sort, order or filter")

// Check reports a query List would refuse, naming the field.
func (q Query) Check() error {
	if !contains(Sorts, q.Sort) {
		return fmt.Errorf("sort must be one of %s, got %q", strings.Join(Sorts, ", "), q.Sort)
	}
	if q.Status != "" && !contains(Statuses, q.Status) {
		return fmt.Errorf("status %q is unknown", q.Status)
	}
	if q.WhoisStatus != "" && !contains(WhoisVerdicts, q.WhoisStatus) && !contains(Reasons, q.WhoisStatus) {
		return fmt.Errorf("whois_status %q is unknown", q.WhoisStatus)
	}
	if q.Limit < 1 || q.Limit > MaxLimit {
		return fmt.Errorf("limit must be from 1 to %d, got %d", MaxLimit, q.Limit)
	}
	if q.Offset < 0 {
		return fmt.Errorf("offset must not be negative, got %d", q.Offset)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// List reads one page of tenantID's domains from its index: the ids, in
// order, the count of matches and the cursor of the next page.
// recordPrefix is the start of the tenant's domain record keys (the record
// of id is recordPrefix+id), which a search reads hostnames from.
//
// One script in the tenant's slot answers. Its cost is about the page's
// size without a filter; with filters it either reads the smallest
// filter's members and sorts them, or walks the sort's index until the
// page is full, whichever is cheaper (docs/scaling.md).
func List(ctx context.Context, rdb redis.UniversalClient, tenantID, recordPrefix string, q Query) (Page, error) {
	if err := q.Check(); err != nil {
		return Page{}, err
	}
	var c cursor
	if q.Cursor != "" {
		var err error
		if c, err = decodeCursor(q.Cursor); err != nil || c.Fingerprint != q.fingerprint() {
			return Page{}, ErrBadCursor
		}
		q.Offset = 0
	}
	desc, hasCur := "0", "0"
	if q.Desc {
		desc = "1"
	}
	if q.Cursor != "" {
		hasCur = "1"
	}
	// Bounds in ms: an instant t is past when t < now (exactly: its whole
	// ms is below now rounded up), within n days when t < now + (n+1) days
	// (grade.DaysUntil rounds down).
	nowMS := q.Now.UnixMilli()
	if q.Now.Sub(time.UnixMilli(nowMS)) > 0 {
		nowMS++
	}
	day := int64(24 * time.Hour / time.Millisecond)
	critB, warnB := nowMS+int64(q.Critical+1)*day, nowMS+int64(q.Warning+1)*day
	args := []any{Prefix(tenantID), recordPrefix, q.Sort, desc, q.Limit, q.Offset, hasCur,
		c.Phase, scoreString(c.Score), c.Member,
		q.Status, q.WhoisStatus, q.Search, nowMS, critB, warnB, q.plan, q.Tag, len(q.Fields)}
	for _, f := range q.Fields {
		args = append(args, f)
	}
	res, err := listScript.Run(ctx, rdb, []string{Prefix(tenantID) + keyCreated}, args...).Slice()
	if err != nil {
		return Page{}, fmt.Errorf("list domains of %s: %w", tenantID, err)
	}
	// {total, {ids}, {rows}, next phase, next score, next member} (the
	// next three absent on the last page).
	if len(res) != 3 && len(res) != 6 {
		return Page{}, fmt.Errorf("list domains of %s: got %d values", tenantID, len(res))
	}
	total, _ := res[0].(int64)
	raw, _ := res[1].([]any)
	p := Page{Total: int(total), IDs: make([]string, 0, len(raw))}
	for _, v := range raw {
		s, _ := v.(string)
		p.IDs = append(p.IDs, s)
	}
	if len(q.Fields) > 0 {
		if p.Rows, err = decodeRows(res[2], len(p.IDs), q.Fields); err != nil {
			return Page{}, fmt.Errorf("list domains of %s: %w", tenantID, err)
		}
	}
	if len(res) == 6 {
		phase, _ := res[3].(int64)
		score, _ := res[4].(string)
		member, _ := res[5].(string)
		f, err := strconv.ParseFloat(score, 64)
		if err != nil {
			return Page{}, fmt.Errorf("list domains of %s: cursor score %q: %w", tenantID, score, err)
		}
		p.NextCursor = encodeCursor(cursor{Fingerprint: q.fingerprint(), Phase: int(phase), Score: f, Member: member})
	}
	return p, nil
}

// decodeRows reads the script's rows: per id {whois ms or "", whois
// reason, the fields' values (nil when absent)}.
func decodeRows(v any, n int, fields []string) ([]Row, error) {
	raw, _ := v.([]any)
	if len(raw) != n {
		return nil, fmt.Errorf("got %d rows for %d ids", len(raw), n)
	}
	rows := make([]Row, n)
	for i, r := range raw {
		vals, _ := r.([]any)
		if len(vals) != 2+len(fields) {
			return nil, fmt.Errorf("row %d: got %d values, want %d", i, len(vals), 2+len(fields))
		}
		row := Row{Record: make(map[string]string, len(fields))}
		if ms, _ := vals[0].(string); ms != "" {
			f, err := strconv.ParseFloat(ms, 64)
			if err != nil {
				return nil, fmt.Errorf("row %d: whois score %q: %w", i, ms, err)
			}
			row.WhoisMS = int64(f)
		}
		row.WhoisReason, _ = vals[1].(string)
		for j, f := range fields {
			if s, ok := vals[2+j].(string); ok {
				row.Record[f] = s
			}
		}
		rows[i] = row
	}
	return rows, nil
}

// fingerprint ties a cursor to the sort, order and filters it was made
// for.
func (q Query) fingerprint() string {
	return fingerprintOf(strings.Join([]string{q.Sort, strconv.FormatBool(q.Desc), q.Status, q.WhoisStatus, q.Search, q.Tag}, "\x1f"))
}

// listScript answers List. See docs/scaling.md for the plan it follows.
//
// KEYS: the tenant's created index (names the slot). ARGV: prefix, record
// prefix, sort, desc, limit, offset, has cursor, cursor phase, score,
// member, status, whois status, search, now ms, critical bound ms, warning
// bound ms, plan ("read", "walk" or "" to choose), tag, the number of
// record fields to return per id, those fields.
var listScript = redis.NewScript(`
local P, RP, sort, desc = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local limit, offset, hasCur = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == '1'
local cphase, cscore, cmember = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local status, wstatus, search = ARGV[11], ARGV[12], ARGV[13]
local now, critB, warnB, plan = tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16]), ARGV[17]
local tag = ARGV[18]
local fields = {}
for i = 1, tonumber(ARGV[19]) do fields[i] = ARGV[19 + i] end
local NOEXP = ` + strconv.FormatInt(NoExpiryMS, 10) + `
local CHUNK = 256

-- The predicates: does domain id pass a filter?
local function verdict(s)
  if s < now then return 'expired' end
  if s < critB then return 'critical' end
  if s < warnB then return 'warning' end
  return 'valid'
end
-- mscore and mismember are ZMSCORE and SMISMEMBER over many ids (in
-- chunks: unpack's stack is bounded): one call instead of one per id.
local MCHUNK = 500
local function mscore(key, ids)
  local out = {}
  for i = 1, #ids, MCHUNK do
    local r = redis.call('ZMSCORE', key, unpack(ids, i, math.min(#ids, i + MCHUNK - 1)))
    for j = 1, #r do out[#out + 1] = r[j] end
  end
  return out
end
local function mismember(key, ids)
  local out = {}
  for i = 1, #ids, MCHUNK do
    local r = redis.call('SMISMEMBER', key, unpack(ids, i, math.min(#ids, i + MCHUNK - 1)))
    for j = 1, #r do out[#out + 1] = r[j] == 1 end
  end
  return out
end
local dotOnly = string.sub(search, 1, 1) == '.'
local term = search
if dotOnly then term = string.sub(search, 2) end
local function hostMatches(h)
  if not dotOnly and string.sub(h, 1, #term) == term then return true end
  local i = 1
  while true do
    local d = string.find(h, '.', i, true)
    if not d then return false end
    local rest = string.sub(h, d + 1)
    if not string.find(rest, '.', 1, true) then return false end
    if string.sub(rest, 1, #term) == term then return true end
    i = d + 1
  end
end
-- idOf splits an index member "<head> <id>" into id and head.
local function idOf(member)
  local head, id = string.match(member, '^(.*) (%S*)$')
  return id, head
end
-- verdictRange: the scores [lo, hi) of an expiry verdict (a status but
-- error), as ZCOUNT bounds' numbers; nil for another value.
local function verdictRange(v)
  if v == 'expired' then return '-inf', now
  elseif v == 'critical' then return now, critB
  elseif v == 'warning' then return critB, warnB
  elseif v == 'valid' then return warnB, '+inf' end
end
-- matchAll: which of ids pass every filter (ok[i])? hosts[i] is id i's
-- hostname when known (hosts may be nil). A source's members pass the
-- search by construction (skipSearch). Each filter costs one call for
-- all the ids.
local function matchAll(ids, hosts, skipSearch)
  local ok = {}
  for i = 1, #ids do ok[i] = true end
  if #ids == 0 then return ok end
  if status ~= '' then
    -- The SSL status: none without a score (error when no certificate),
    -- expired below now, else error when invalid, else the verdict.
    local ssl, bad, nocert = mscore(P .. 'ssl', ids), nil, nil
    if status ~= 'expired' then bad = mscore(P .. 'bad', ids) end
    if status == 'error' then nocert = mismember(P .. 'nocert', ids) end
    for i = 1, #ids do
      local sc, st = ssl[i], ''
      if not sc then
        if nocert and nocert[i] then st = 'error' end
      else
        sc = tonumber(sc)
        if sc < now then st = 'expired'
        elseif bad and bad[i] then st = 'error'
        else st = verdict(sc) end
      end
      if st ~= status then ok[i] = false end
    end
  end
  if wstatus ~= '' then
    -- A verdict over the expiry, or the reason there is none.
    local w, why = mscore(P .. 'whois', ids), nil
    if not verdictRange(wstatus) then why = mismember(P .. 'wr:' .. wstatus, ids) end
    for i = 1, #ids do
      if w[i] then
        if verdict(tonumber(w[i])) ~= wstatus then ok[i] = false end
      elseif not (why and why[i]) then ok[i] = false end
    end
  end
  if tag ~= '' then
    local has = mismember(P .. 'tag:' .. tag, ids)
    for i = 1, #ids do if not has[i] then ok[i] = false end end
  end
  if search ~= '' and not skipSearch then
    for i = 1, #ids do
      if ok[i] then
        local host = (hosts and hosts[i]) or redis.call('HGET', RP .. ids[i], 'host')
        if not host or not hostMatches(host) then ok[i] = false end
      end
    end
  end
  return ok
end

-- The sources: each filter can list its candidates; est is how many.
local sources = {}
local function zsrc(key, min, max) return {kind = 'z', key = key, min = min, max = max,
  est = redis.call('ZCOUNT', key, min, max)} end
if status ~= '' then
  if status == 'error' then
    sources[#sources + 1] = {kind = 'err', est = redis.call('SCARD', P .. 'nocert') + redis.call('ZCOUNT', P .. 'bad', now, '+inf'),
      count = redis.call('SCARD', P .. 'nocert') + redis.call('ZCOUNT', P .. 'bad', now, '+inf')}
  else
    local lo, hi = '-inf', '(' .. now
    if status == 'critical' then lo, hi = now, '(' .. critB
    elseif status == 'warning' then lo, hi = critB, '(' .. warnB
    elseif status == 'valid' then lo, hi = warnB, '+inf' end
    local s = zsrc(P .. 'ssl', lo, hi)
    s.count = s.est
    if status ~= 'expired' then s.count = s.est - redis.call('ZCOUNT', P .. 'bad', lo, hi) end
    sources[#sources + 1] = s
  end
end
if wstatus ~= '' then
  local lo, hi
  if wstatus == 'expired' then lo, hi = '-inf', '(' .. now
  elseif wstatus == 'critical' then lo, hi = now, '(' .. critB
  elseif wstatus == 'warning' then lo, hi = critB, '(' .. warnB
  elseif wstatus == 'valid' then lo, hi = warnB, '+inf' end
  if lo then
    local s = zsrc(P .. 'whois', lo, hi)
    s.count = s.est
    sources[#sources + 1] = s
  else
    local n = redis.call('SCARD', P .. 'wr:' .. wstatus)
    sources[#sources + 1] = {kind = 's', key = P .. 'wr:' .. wstatus, est = n, count = n}
  end
end
if tag ~= '' then
  local n = redis.call('SCARD', P .. 'tag:' .. tag)
  sources[#sources + 1] = {kind = 's', key = P .. 'tag:' .. tag, est = n, count = n}
end
if search ~= '' then
  local lo, hi = '[' .. term, '[' .. term .. '\255'
  local ns, nh = redis.call('ZLEXCOUNT', P .. 'sfx', lo, hi), 0
  if not dotOnly then nh = redis.call('ZLEXCOUNT', P .. 'host', lo, hi) end
  local s = {kind = 'lex', lo = lo, hi = hi, est = ns + nh}
  -- Without a label match the hostname matches are the matches, each
  -- domain once (a domain has one hostname member; label matches may
  -- repeat a domain, and are counted by reading them).
  if ns == 0 then s.count = nh end
  sources[#sources + 1] = s
end

-- members lists a source's candidates, each once.
local function members(src)
  local out, seen = {}, {}
  local function add(id) if not seen[id] then seen[id] = true; out[#out + 1] = id end end
  if src.kind == 'z' then
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', src.key, src.min, src.max)) do add(id) end
  elseif src.kind == 's' then
    for _, id in ipairs(redis.call('SMEMBERS', src.key)) do add(id) end
  elseif src.kind == 'err' then
    for _, id in ipairs(redis.call('SMEMBERS', P .. 'nocert')) do add(id) end
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'bad', now, '+inf')) do add(id) end
  else
    local keys = {P .. 'sfx'}
    if not dotOnly then keys[2] = P .. 'host' end
    for _, k in ipairs(keys) do
      for _, m in ipairs(redis.call('ZRANGEBYLEX', k, src.lo, src.hi)) do add((idOf(m))) end
    end
  end
  return out
end

local N = redis.call('ZCARD', P .. 'created')
local best
for _, s in ipairs(sources) do if not best or s.est < best.est then best = s end end

-- The sort's keys of domains ids: {phase, score, member} each; phase 1
-- holds the domains without a value, in id order whatever the direction.
local function keysOf(ids)
  local out = {}
  if sort == 'hostname' then
    for i, id in ipairs(ids) do
      local r = redis.call('HMGET', RP .. id, 'host', 'port')
      out[i] = {0, 0, (r[1] or '') .. ' ' .. string.format('%05d', tonumber(r[2] or '0')) .. ' ' .. id}
    end
    return out
  end
  local key = P .. 'created'
  if sort == 'ssl_days_remaining' then key = P .. 'ssl' elseif sort == 'whois_days_remaining' then key = P .. 'whois' end
  local sc = mscore(key, ids)
  for i, id in ipairs(ids) do
    local s = tonumber(sc[i] or (sort == 'created_at' and '0'))
    if s and (sort == 'created_at' or s < NOEXP) then out[i] = {0, s, id} else out[i] = {1, 0, id} end
  end
  return out
end
-- before: does key a come before key b in the list's order?
local function before(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  local asc = a[1] == 1 or not desc
  if a[2] ~= b[2] then if asc then return a[2] < b[2] else return a[2] > b[2] end end
  if a[3] == b[3] then return false end
  if asc then return a[3] < b[3] else return a[3] > b[3] end
end
local cur = {cphase, cscore, cmember}

local out, keys, total = {}, {}, 0
-- Reading the filter's E members costs about E; walking the sort's index
-- costs about want * N / E: read when E * E (times readCost) <= want * N.
local want = offset + limit + 1
-- A single filter that is a verdict over the sort's own key: the walk
-- stays in its range, where nearly every member matches (cost about the
-- page).
local ranged = #sources == 1 and ((sort == 'ssl_days_remaining' and verdictRange(status) ~= nil) or
  (sort == 'whois_days_remaining' and verdictRange(wstatus) ~= nil))
-- Reading costs about 8 walked members per candidate (its sort key and
-- its share of sorting them, against a walked member's share of one call
-- per chunk); but a walk of the hostname sort splits each member's string,
-- and a search's walk off it reads each member's hostname: as dear as
-- reading a candidate.
local readCost = 8
if sort == 'hostname' or (best and best.kind == 'lex') then readCost = 1 end
if best and plan ~= 'walk' and (plan == 'read' or (not ranged and (#sources > 1 or best.est <= 64 or readCost * best.est * best.est <= want * N))) then
  -- Read the smallest source and sort its matches.
  local ids = members(best)
  local ok, sel = matchAll(ids, nil, best.kind == 'lex'), {}
  for i, id in ipairs(ids) do if ok[i] then sel[#sel + 1] = id end end
  local all = {}
  for i, k in ipairs(keysOf(sel)) do all[i] = {k, sel[i]} end
  total = #all
  table.sort(all, function(x, y) return before(x[1], y[1]) end)
  local skip = offset
  for _, e in ipairs(all) do
    if not hasCur or before(cur, e[1]) then
      if skip > 0 then skip = skip - 1
      elseif #out <= limit then out[#out + 1] = e[2]; keys[#keys + 1] = e[1] end
    end
  end
else
  -- Walk the sort's index from the cursor until the page is full.
  if #sources == 0 then total = N
  elseif #sources == 1 and sources[1].count then total = sources[1].count
  else
    for _, m in ipairs(matchAll(members(best), nil, best.kind == 'lex')) do if m then total = total + 1 end end
  end
  -- The index's sequences, in list order: {key, lex, first rank, last
  -- rank (exclusive), direction}.
  local seqs = {}
  if sort == 'hostname' then seqs[1] = {P .. 'host', true, 0, redis.call('ZCARD', P .. 'host'), desc}
  elseif sort == 'created_at' then seqs[1] = {P .. 'created', false, 0, N, desc}
  else
    -- f is the filter over the sort's own key: a verdict over it holds
    -- only the scores of its range, so the walk stays in it.
    local key, null, f = P .. 'ssl', P .. 'sslnull', status
    if sort == 'whois_days_remaining' then key, null, f = P .. 'whois', P .. 'wnull', wstatus end
    local a, b = 0, redis.call('ZCOUNT', key, '-inf', '(' .. NOEXP)
    local nulls = redis.call('ZCARD', null)
    local lo, hi = verdictRange(f)
    if lo then
      if lo ~= '-inf' then a = redis.call('ZCOUNT', key, '-inf', '(' .. lo) end
      if hi ~= '+inf' then b = math.min(b, redis.call('ZCOUNT', key, '-inf', '(' .. hi)) end
      -- The tail holds no value to be in a range, but the certificates
      -- that never expire (valid, if not invalid).
      if not (sort == 'ssl_days_remaining' and f == 'valid') then nulls = 0 end
    elseif f ~= '' and sort == 'whois_days_remaining' then
      -- A reason: only a domain without an expiry has one.
      b = 0
    end
    seqs[1] = {key, false, a, b, desc}
    seqs[2] = {null, true, 0, nulls, false}
  end
  -- lowerBound: how many of seq's members come before {score, member}
  -- in ascending order, and whether it holds it.
  local function lowerBound(seq, score, member)
    local key = seq[1]
    if seq[2] then
      local n = redis.call('ZLEXCOUNT', key, '-', '(' .. member)
      return n, redis.call('ZSCORE', key, member) ~= false
    end
    local r = redis.call('ZRANK', key, member)
    if r and tonumber(redis.call('ZSCORE', key, member)) == score then return r, true end
    local n = redis.call('ZCOUNT', key, '-inf', '(' .. score)
    while true do
      local got = redis.call('ZRANGE', key, n, n + CHUNK - 1, 'WITHSCORES')
      if #got == 0 then return n, false end
      for i = 1, #got, 2 do
        if tonumber(got[i + 1]) ~= score or got[i] >= member then return n, false end
        n = n + 1
      end
    end
  end
  local skip = offset
  for phase, seq in ipairs(seqs) do
    local p = phase - 1
    if #out > limit then break end
    if not hasCur or p >= cphase then
      local pos
      if hasCur and p == cphase then
        local lb, found
        if seq[2] then lb, found = lowerBound(seq, 0, cmember) else lb, found = lowerBound(seq, cscore, cmember) end
        if seq[5] then pos = lb - 1 elseif found then pos = lb + 1 else pos = lb end
      elseif seq[5] then pos = seq[4] - 1 else pos = seq[3] end
      -- A cursor outside the sequence's ranks (a range moved with the
      -- clock) starts at its edge: what lies outside cannot match.
      if seq[5] then pos = math.min(pos, seq[4] - 1) else pos = math.max(pos, seq[3]) end
      while #out <= limit do
        -- Without a filter every member matches: an offset skips ranks.
        if #sources == 0 and skip > 0 then
          local n
          if seq[5] then n = math.max(0, math.min(skip, pos - seq[3] + 1)); pos = pos - n
          else n = math.max(0, math.min(skip, seq[4] - pos)); pos = pos + n end
          skip = skip - n
        end
        local a, b
        if seq[5] then
          if pos < seq[3] then break end
          a, b = math.max(seq[3], pos - CHUNK + 1), pos
        else
          if pos >= seq[4] then break end
          a, b = pos, math.min(seq[4] - 1, pos + CHUNK - 1)
        end
        local got = redis.call('ZRANGE', seq[1], a, b, 'WITHSCORES')
        local n = #got / 2
        -- The chunk's members in list order, matched at once.
        local ids, hosts, ms, scs = {}, {}, {}, {}
        for j = 1, n do
          local i = j
          if seq[5] then i = n + 1 - j end
          local m = got[2 * i - 1]
          ms[j], scs[j], ids[j] = m, tonumber(got[2 * i]), m
          if seq[1] == P .. 'host' then
            local id, head = idOf(m)
            ids[j], hosts[j] = id, string.sub(head, 1, #head - 6)
          end
        end
        local ok
        if #sources > 0 then ok = matchAll(ids, hosts, false) end
        for j = 1, n do
          local id, m, sc = ids[j], ms[j], scs[j]
          if not ok or ok[j] then
            if skip > 0 then skip = skip - 1
            else
              out[#out + 1] = id
              if seq[2] then keys[#keys + 1] = {p, 0, m} else keys[#keys + 1] = {p, sc, m} end
              if #out > limit then break end
            end
          end
        end
        if seq[5] then pos = a - 1 else pos = b + 1 end
      end
    end
  end
end
local nextKey
if #out > limit then
  nextKey = keys[limit]
  out[limit + 1] = nil
end
-- The rows: each id's registration facts and record fields.
local rows = {}
if #fields > 0 and #out > 0 then
  -- The expiries in one call; the reasons of the domains without one in
  -- one call per reason (ix_whois keeps a domain in one reason's set).
  local ws, wr, without = mscore(P .. 'whois', out), {}, {}
  for i = 1, #out do
    wr[i] = ''
    if not ws[i] then without[#without + 1] = i end
  end
  if #without > 0 then
    local ids = {}
    for k, i in ipairs(without) do ids[k] = out[i] end
    for _, r in ipairs({` + luaStrings(Reasons) + `}) do
      local has = mismember(P .. 'wr:' .. r, ids)
      for k, i in ipairs(without) do if has[k] then wr[i] = r end end
    end
  end
  for i, id in ipairs(out) do
    local row = {ws[i] or '', wr[i]}
    local vals = redis.call('HMGET', RP .. id, unpack(fields))
    for j = 1, #fields do row[2 + j] = vals[j] end
    rows[i] = row
  end
end
if nextKey then
  return {total, out, rows, nextKey[1], string.format('%.17g', nextKey[2]), nextKey[3]}
end
return {total, out, rows}
`)

// scoreString is how a cursor's score reaches the script: exact for the
// whole numbers the index holds.
func scoreString(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return strconv.FormatInt(int64(f), 10)
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}
