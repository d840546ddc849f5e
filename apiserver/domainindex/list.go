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
	// whose labels but the last does. As domainname.SearchTerm gives it
	// (lower-case, A-labels); "" keeps all.
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

	// plan forces the script's plan ("read", "walk", "semi", "label",
	// or "semiread" and "walkread", a semi walk and a walk of a tier in
	// the other expiry's order that give up at once; "" chooses), for
	// tests that check each against one answer;
	// noAttention keeps a walk off the attention index, for the
	// benchmark that compares the two.
	plan        string
	noAttention bool
}

// Page is one page of a list.
type Page struct {
	// IDs are the page's domain ids, in order.
	IDs []string
	// Total counts the domains that match the filters.
	Total int
	// NextCursor continues the list after this page; "" on the last one.
	NextCursor string
	// Rows holds for each of IDs (same order) its registration facts,
	// read in the same atomic step as the ids.
	Rows []Row
	// Gen is the tenant's record generation (keyGen) as the page read
	// it: while it has not moved, no field a list shows of any of the
	// tenant's domain records has changed (accounts.RecordCache).
	Gen string

	// SweepDue tells that the tenant's attention index, which this
	// list's status filter would walk, is not built, or that its bound
	// is due to move on: the caller has a Sweeper sweep it (Due). Until
	// it is built the list walks the tenant's whole index, as fast as
	// before it existed.
	SweepDue bool

	// plan is the plan the script followed ("read", "walk", "semi" or
	// "label"), and tier what it walked instead of the sort's index: the
	// attention index's tier, a tag's or a reason's zset, or a tag's
	// order ("" for none), for tests.
	plan, tier string
}

// Row is what a page holds of a domain beside its id.
type Row struct {
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
// size without a filter; with filters it reads the smallest filter's
// members and sorts them, or walks the sort's index until the page is
// full testing each member, or walks it keeping the members among the
// filter's, whichever it estimates cheapest (docs/scaling.md).
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
		if c.Member, err = c.member(q.Sort, Member); err != nil {
			return Page{}, ErrBadCursor
		}
	}
	desc, hasCur := "0", "0"
	if q.Desc {
		desc = "1"
	}
	if q.Cursor != "" {
		hasCur = "1"
	}
	nowMS, critB, warnB := q.bounds()
	att := q.attention()
	args := []any{Prefix(tenantID), recordPrefix, q.Sort, desc, q.Limit, q.Offset, hasCur,
		c.Phase, scoreString(c.Score), c.Member,
		q.Status, q.WhoisStatus, q.Search, nowMS, critB, warnB, q.plan, q.Tag, att, tagOrderMin, tagOrderShare}
	res, err := listScript.Run(ctx, rdb, []string{Prefix(tenantID) + keyCreated}, args...).Slice()
	if err != nil {
		return Page{}, fmt.Errorf("list domains of %s: %w", tenantID, err)
	}
	// {total, {ids}, {rows}, plan, sweep due, tier walked, record
	// generation, next phase, next score, next member} (the next three
	// absent on the last page).
	if len(res) != 7 && len(res) != 10 {
		return Page{}, fmt.Errorf("list domains of %s: got %d values", tenantID, len(res))
	}
	total, _ := res[0].(int64)
	raw, _ := res[1].([]any)
	p := Page{Total: int(total), IDs: make([]string, 0, len(raw))}
	p.plan, _ = res[3].(string)
	due, _ := res[4].(int64)
	p.SweepDue = due == 1
	p.tier, _ = res[5].(string)
	p.Gen, _ = res[6].(string)
	for _, v := range raw {
		s, _ := v.(string)
		p.IDs = append(p.IDs, IDOf(s))
	}
	if p.Rows, err = decodeRows(res[2], len(p.IDs)); err != nil {
		return Page{}, fmt.Errorf("list domains of %s: %w", tenantID, err)
	}
	if len(res) == 10 {
		phase, _ := res[7].(int64)
		score, _ := res[8].(string)
		member, _ := res[9].(string)
		f, err := strconv.ParseFloat(score, 64)
		if err != nil {
			return Page{}, fmt.Errorf("list domains of %s: cursor score %q: %w", tenantID, score, err)
		}
		next := cursor{Fingerprint: q.fingerprint(), Phase: int(phase), Score: f, Member: member}
		if next.Member, err = next.member(q.Sort, idOfErr); err != nil {
			return Page{}, fmt.Errorf("list domains of %s: cursor: %w", tenantID, err)
		}
		p.NextCursor = encodeCursor(next)
	}
	return p, nil
}

// tagOrderMin is how many domains a tag has past which a list that reads
// them to sort them keeps them in that sort's order (keyTagHost and the
// rest) for the next lists to walk: below it, reading them costs about
// what walking a page does.
var tagOrderMin = 100

// tagOrderShare bounds the tag orders a tenant's lists build: together
// they hold at most this share of the tenant's domains, counted when
// each is built (keyTagOrders), so that no tenant can make its index
// grow by listing every tag on every sort; past it a list reads the tag
// as before.
var tagOrderShare = 1.0

// dayMS is a day in ms.
const dayMS = int64(24 * time.Hour / time.Millisecond)

// bounds are q's instants in ms: an instant t is past when t < now
// (exactly: its whole ms is below now rounded up), within n days when t
// < now + (n+1) days (grade.DaysUntil rounds down), so critical when below
// critB and warning when below warnB.
func (q Query) bounds() (nowMS, critB, warnB int64) {
	nowMS = q.Now.UnixMilli()
	if q.Now.Sub(time.UnixMilli(nowMS)) > 0 {
		nowMS++
	}
	return nowMS, nowMS + int64(q.Critical+1)*dayMS, nowMS + int64(q.Warning+1)*dayMS
}

// attention tells whether q walks a tier of the attention index instead
// of the sort's index: a status that only domains needing attention have,
// sorted by hostname or created_at, or by the other expiry's days with
// no filter over the sort's own expiry (a status sorted by
// ssl_days_remaining, a whois_status verdict by whois_days_remaining,
// walk their own range of scores instead). Each status walks its own
// band (tiers: the tier whose status it is), kept in hostname,
// created_at and the other expiry's order (keyAttOther). It returns the
// tier's name, "" for none.
func (q Query) attention() string {
	if q.noAttention {
		return ""
	}
	byName := q.Sort == SortHostname || q.Sort == SortCreated
	if byName || (q.Sort == SortWhoisDays && q.WhoisStatus == "") {
		if t := tierOf(keySSL, q.Status); t != "" {
			return t
		}
	}
	if byName || (q.Sort == SortSSLDays && q.Status == "") {
		return tierOf(keyWhois, q.WhoisStatus)
	}
	return ""
}

// tierOf is the tier over expiry (keySSL, keyWhois) that serves status,
// "" for none.
func tierOf(expiry, status string) string {
	for _, t := range tiers {
		if t.expiry == expiry && t.status == status {
			return t.name
		}
	}
	return ""
}

// The edges a tier's bounds follow (tiers' lo and hi): the instants
// between which a status's verdict holds at a list's clock (Query.bounds:
// now, the critical bound, the warning bound).
const (
	edgeNow  = "now"
	edgeCrit = "crit"
	edgeWarn = "warn"
)

// tiers defines the attention index's tiers, each a band of one status
// (keyAttHost's and keyAttCreated's prefixes), in the order a sweep
// builds them: the status it serves, the expiry it holds the domains of
// (the index's key: keySSL or keyWhois), the edges its lower bound L and
// upper bound B follow (lo, hi: L lags at or below lo's instant, B runs
// at or past hi's; "" for none: no lower bound, or none at all), whether
// it holds the invalid certificates (keyBad) and the scanned domains
// without one (keyNoCert) instead of a band, and the other expiry
// (keyWhois or keySSL), in whose order it also keeps its domains
// (keyAttOther, keyAttOtherNull). A band tier holds the domains whose
// expiry s has L <= s < B (ix_tiers). tiersLua gives the scripts the
// same table.
var tiers = []struct {
	name, status string
	expiry       string
	lo, hi       string
	invalid      bool
	other        string
}{
	{"exp", "expired", keySSL, "", edgeNow, false, keyWhois},
	{"crit", "critical", keySSL, edgeNow, edgeCrit, false, keyWhois},
	{"warn", "warning", keySSL, edgeCrit, edgeWarn, false, keyWhois},
	{"err", "error", keySSL, "", "", true, keyWhois},
	{"wexp", "expired", keyWhois, "", edgeNow, false, keySSL},
	{"wcrit", "critical", keyWhois, edgeNow, edgeCrit, false, keySSL},
	{"wwarn", "warning", keyWhois, edgeCrit, edgeWarn, false, keySSL},
}

// tiersLua defines IX_TIERS, tiers in Lua ({name, key, lo, hi (nil for
// none), invalid, other} each), IX_TIER, the same by name, IX_TIERS_OF,
// the tiers' names by the expiry they follow ('ssl', 'whois'),
// IX_TIERS_X, by their other expiry, and ix_tier_state, which the list
// and the sweep read a tier's state with.
var tiersLua = func() string {
	var b strings.Builder
	b.WriteString("\nlocal IX_TIERS = {")
	edge := func(e string) string {
		if e == "" {
			return "nil"
		}
		return strconv.Quote(e)
	}
	for _, t := range tiers {
		fmt.Fprintf(&b, "{name = %q, key = %q, lo = %s, hi = %s, invalid = %t, other = %q}, ", t.name, t.expiry, edge(t.lo), edge(t.hi), t.invalid, t.other)
	}
	fmt.Fprintf(&b, "}\nlocal IX_AHEAD, IX_PAST, IX_LAG = %d, %d, %d", sweepAhead, sweepPast, sweepLag)
	b.WriteString(`
local IX_TIER, IX_TIERS_OF, IX_TIERS_X = {}, {}, {}
for _, t in ipairs(IX_TIERS) do
  IX_TIER[t.name] = t
  IX_TIERS_OF[t.key] = IX_TIERS_OF[t.key] or {}
  table.insert(IX_TIERS_OF[t.key], t.name)
  IX_TIERS_X[t.other] = IX_TIERS_X[t.other] or {}
  table.insert(IX_TIERS_X[t.other], t.name)
end
-- ix_tier_state reads tier's state for a list at the edges E ({now,
-- crit, warn}: ms): whether it serves the list (built, not mid-sweep,
-- L at or below its lower edge and B at or past its upper one), whether
-- a sweep is due (it does not serve, B is within IX_AHEAD of its edge,
-- or L lags its edge by more than IX_LAG), and its edges there (nil for
-- none).
local function ix_tier_state(p, tier, E)
  local t = IX_TIER[tier]
  local lo, hi = t.lo and E[t.lo], t.hi and E[t.hi]
  local r = redis.call('HMGET', p .. 'tiers', tier, tier .. 'lo', tier .. 'q')
  if not r[1] or r[3] then return false, true, lo, hi end
  local b, l = tonumber(r[1]), tonumber(r[2])
  local serves = (not hi or b >= hi) and (not lo or (l ~= nil and l <= lo))
  local due = not serves or (hi ~= nil and b < hi + IX_AHEAD) or (lo ~= nil and l < lo - IX_LAG)
  return serves, due, lo, hi
end
`)
	return b.String()
}()

// sweepScript builds a tier of a tenant's attention index, or moves its
// bounds on, a step of at most ARGV[4] domains at a time, so that no step
// holds Redis for long. A sweep starts when ix_tier_state says one is
// due at the edges ARGV[5..7]: it sets the tier's bounds (fields <tier>,
// B, and <tier>lo, L, of keyAttBounds) to their edges' instants then, B
// a sweepPast further (never lower than it was), so that the next sweep
// is a while off; from then on ix_tiers keeps the domains whose facts
// change by the new bounds, and the steps move the others: they take out
// the members whose expiry (the tier's key) lies in [old L, new L) (those
// whose expiry changed were moved already), then add the domains in
// [old B, new B) (from new L on a first build; from the new L when L
// moved down, as a threshold lowered does). The error tier (invalid)
// has no bounds (B is 0: built): its only sweep adds every invalid
// certificate and scanned domain without one.
//
// Field <tier>q holds where the next step goes on ("low|<end>|<add
// from>|<score>", "bad|<score>", "nocert|<SSCAN cursor>",
// "exp|<score>": the score from which to read on, and field <tier>m the
// member the last step stopped at, after which the next goes on); a list
// uses the tier only once <tier>q is gone.
// Concurrent sweeps take the steps in turn.
//
// KEYS: the tiers' bounds (keyAttBounds). ARGV: prefix, record prefix,
// tier, the most domains a step moves, now, the critical bound, the
// warning bound (Query.bounds, ms). Returns 1 when the tier serves the
// lists at those edges and no sweep is due, 0 when another step is due.
var sweepScript = redis.NewScript(IndexLua + `
local P, RP, tier, K = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local E = {now = tonumber(ARGV[5]), crit = tonumber(ARGV[6]), warn = tonumber(ARGV[7])}
local T = IX_TIER[tier]
local function ms(x) return string.format('%d', x) end
local q = redis.call('HGET', P .. 'tiers', tier .. 'q')
if not q then
  local _, due, lo, hi = ix_tier_state(P, tier, E)
  if not due then return 1 end
  -- A tenant without domains (one that left: its keys are gone) gets
  -- no index, nor a key of it.
  if redis.call('EXISTS', P .. 'created') == 0 then return 1 end
  local r = redis.call('HMGET', P .. 'tiers', tier, tier .. 'lo')
  local ob, ol = tonumber(r[1]), tonumber(r[2])
  local nb = 0
  if hi then nb = math.max(hi + IX_PAST, ob or hi) end
  if T.invalid then q = 'bad|-inf'
  elseif not ob then q = 'exp|' .. (lo and ms(lo) or '-inf')
  else
    local from = ob
    if lo then
      if ol and lo < ol then from = lo else from = math.max(ob, lo) end
    end
    q = 'exp|' .. ms(from)
    if lo and ol and lo > ol then q = 'low|' .. ms(math.min(lo, ob)) .. '|' .. ms(from) .. '|' .. ms(ol) end
  end
  redis.call('HSET', P .. 'tiers', tier, ms(nb))
  if lo then redis.call('HSET', P .. 'tiers', tier .. 'lo', ms(lo)) end
end
local phase, pos = string.match(q, '^(%a+)|(.*)$')
-- move puts domain id in the tier (on) or takes it out.
local function move(id, on)
  local r = redis.call('HMGET', RP .. ix_id(id), 'host', 'port')
  if r[1] then ix_att(P, tier, id, ix_name(r[1], record_port(r[2])), on) end
end
-- ranged moves (on: adds, else takes out) up to K members of key, by
-- score, from pos (a score) up to hi (exclusive; math.huge: none), and
-- returns the score the next step reads on from (nil when done). The
-- member it stopped at is kept (field <tier>m), so that the next step
-- goes on after it by rank, inside a run of equal scores too (a
-- registration shared by thousands of domains: a step still moves K);
-- when that member moved or left meanwhile, the next step reads from
-- the score again (moving some again changes nothing). A domain that
-- changed since the sweep began was placed by ix_tiers already.
local function ranged(key, hi, on)
  local got
  local m = redis.call('HGET', P .. 'tiers', tier .. 'm')
  local s = m and redis.call('ZSCORE', key, m)
  if s and tonumber(s) == tonumber(pos) then
    local r = redis.call('ZRANK', key, m)
    got = redis.call('ZRANGE', key, r + 1, r + K, 'WITHSCORES')
  else
    local top = '+inf'
    if hi ~= math.huge then top = '(' .. ms(hi) end
    got = redis.call('ZRANGEBYSCORE', key, pos, top, 'WITHSCORES', 'LIMIT', 0, K)
  end
  local n = 0
  for i = 1, #got, 2 do
    if tonumber(got[i + 1]) >= hi then break end
    move(got[i], on)
    n = n + 1
  end
  if n < K then
    redis.call('HDEL', P .. 'tiers', tier .. 'm')
    return nil
  end
  redis.call('HSET', P .. 'tiers', tier .. 'm', got[2 * n - 1])
  return got[2 * n]
end
if phase == 'low' then
  local stop, from
  stop, from, pos = string.match(pos, '^([^|]*)|([^|]*)|(.*)$')
  local nxt = ranged(P .. T.key, tonumber(stop), false)
  if nxt then q = 'low|' .. stop .. '|' .. from .. '|' .. nxt else q = 'exp|' .. from end
elseif phase == 'bad' then
  local nxt = ranged(P .. 'bad', math.huge, true)
  if nxt then q = 'bad|' .. nxt else q = 'nocert|0' end
elseif phase == 'nocert' then
  local r = redis.call('SSCAN', P .. 'nocert', pos, 'COUNT', K)
  for _, id in ipairs(r[2]) do move(id, true) end
  if r[1] == '0' then q = nil else q = 'nocert|' .. r[1] end
else
  local nxt = ranged(P .. T.key, tonumber(redis.call('HGET', P .. 'tiers', tier)), true)
  if nxt then q = 'exp|' .. nxt else q = nil end
end
if q then
  redis.call('HSET', P .. 'tiers', tier .. 'q', q)
  return 0
end
redis.call('HDEL', P .. 'tiers', tier .. 'q')
local _, due = ix_tier_state(P, tier, E)
if due then return 0 end
return 1
`)

// sweepChunk is the most domains a step of sweepScript moves.
var sweepChunk = 250

// sweepAhead is how long before its edge reaches a tier's upper bound a
// list says a sweep is due (12 h), and sweepPast how far past the edge
// a sweep moves it (a day): a tenant listed every day sweeps about twice
// a day, each time the domains whose expiry came within reach since, and
// its lists never find the index behind. sweepLag is how far a tier's
// lower bound may lag its edge before a sweep is due (a day): the
// domains that left the band since, which the walk skips, are taken out.
const (
	sweepAhead = 12 * 3600 * 1000
	sweepPast  = dayMS
	sweepLag   = dayMS
)

// SweepAttention gets tenantID's attention index ready for the lists
// counting statuses with q's clock and thresholds: every tier built,
// holding its status's band (tiers) with its bounds moved to q's edges.
// It runs the steps one after another, each holding Redis for some 4-7
// ms at most (sweepChunk domains, each put in three orders; measured in
// the benchmark under load); a tenant's first is the only long one
// (about 130 steps for the benchmark's tenant of 100,000). Sweeper runs
// it in the background.
func SweepAttention(ctx context.Context, rdb redis.UniversalClient, tenantID, recordPrefix string, q Query) error {
	for _, t := range tiers {
		for {
			done, err := sweepStep(ctx, rdb, tenantID, recordPrefix, t.name, q)
			if err != nil {
				return err
			}
			if done {
				break
			}
		}
	}
	return nil
}

// sweepStep runs one step of sweepScript for tier at q's edges, and
// tells whether the tier is ready for them.
func sweepStep(ctx context.Context, rdb redis.UniversalClient, tenantID, recordPrefix, tier string, q Query) (bool, error) {
	p := Prefix(tenantID)
	nowMS, critB, warnB := q.bounds()
	n, err := sweepScript.Run(ctx, rdb, []string{p + keyAttBounds}, p, recordPrefix, tier, sweepChunk, nowMS, critB, warnB).Int()
	if err != nil {
		return false, fmt.Errorf("sweep attention index of %s: %w", tenantID, err)
	}
	return n == 1, nil
}

// decodeRows reads the script's rows: per id {whois ms or "", whois
// reason}.
func decodeRows(v any, n int) ([]Row, error) {
	raw, _ := v.([]any)
	if len(raw) != n {
		return nil, fmt.Errorf("got %d rows for %d ids", len(raw), n)
	}
	rows := make([]Row, n)
	for i, r := range raw {
		vals, _ := r.([]any)
		if len(vals) != 2 {
			return nil, fmt.Errorf("row %d: got %d values, want 2", i, len(vals))
		}
		var row Row
		if ms, _ := vals[0].(string); ms != "" {
			f, err := strconv.ParseFloat(ms, 64)
			if err != nil {
				return nil, fmt.Errorf("row %d: whois score %q: %w", i, ms, err)
			}
			row.WhoisMS = int64(f)
		}
		row.WhoisReason, _ = vals[1].(string)
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
// bound ms, plan (Query.plan), tag, the attention index's tier to walk
// instead of the sort's index when built (Query.attention; "" for none),
// tagOrderMin, tagOrderShare.
var listScript = redis.NewScript(bucketLua + idLua + RecordPortLua + createdLua + tiersLua + tagOrdersLua + GenLua + `
local P, RP, sort, desc = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local limit, offset, hasCur = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7] == '1'
local cphase, cscore, cmember = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local status, wstatus, search = ARGV[11], ARGV[12], ARGV[13]
local now, critB, warnB, plan = tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16]), ARGV[17]
local tag, tier, TAGORDER, TAGSHARE = ARGV[18], ARGV[19], tonumber(ARGV[20]), tonumber(ARGV[21])
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
-- createdOf: each id's created_at ms (nil when unknown), its score in
-- created and in the orders scored so (a tag's, a reason's): bucketed
-- past 128 members, created answers no score by member, so it is the
-- record's, unless a read of such an order gave it (knownCreated).
local knownCreated = {}
local function createdOf(ids)
  local out = {}
  for i, id in ipairs(ids) do
    out[i] = knownCreated[id]
    if not out[i] then
      local r = redis.call('HMGET', RP .. ix_id(id), 'c', 'created_at')
      out[i] = r[1] or r[2]
    end
  end
  return out
end
-- keepTagged: the ids still ok (ok[i]) without the tag are not. The
-- tag's order answers all at once while plain; a bucketed one answers
-- no score by member, so each id's record tells, its tags read in one
-- call (one bucket lookup more would need its created_at first).
local function keepTagged(ids, ok)
  local key = P .. 'tag:' .. tag
  local plain = ob_plain(key)
  local sub, at = {}, {}
  for i = 1, #ids do if ok[i] then sub[#sub + 1] = ids[i]; at[#at + 1] = i end end
  if #sub == 0 then return end
  if plain then
    local sc = mscore(key, sub)
    for k, i in ipairs(at) do if not sc[k] then ok[i] = false end end
    return
  end
  -- A tag JSON writes as it is (printable ASCII but the characters it
  -- escapes) is found in the record's list as an element's text: after
  -- '[' or ',' (inside a string a quote is escaped), its closing quote
  -- its own; any other is compared decoded.
  local plainTag = not string.find(tag, '[%c"\\<>&\128-\255]')
  local first, next = '["' .. tag .. '"', ',"' .. tag .. '"'
  for k, i in ipairs(at) do
    local has, j = false, redis.call('HGET', RP .. ix_id(sub[k]), 'tags')
    if j and plainTag then
      has = string.find(j, first, 1, true) == 1 or string.find(j, next, 1, true) ~= nil
    elseif j then
      local okj, t = pcall(cjson.decode, j)
      if okj and type(t) == 'table' then
        for _, x in ipairs(t) do if x == tag then has = true; break end end
      end
    end
    if not has then ok[i] = false end
  end
end
local term = search
local function hostMatches(h)
  if string.sub(h, 1, #term) == term then return true end
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
-- idOf is the id member at the end of an index member: "<host> <port, 5
-- digits> <id>" (host) or "<suffix> <created, 6 bytes><id>" (sfx);
-- neither a hostname nor a suffix holds a space, so the first one ends
-- it, and 6 bytes follow it before the id member (which may hold any
-- byte). hostOf is a host member's hostname.
local function idOf(member)
  return string.sub(member, string.find(member, ' ', 1, true) + 7)
end
local function hostOf(member) return string.sub(member, 1, string.find(member, ' ', 1, true) - 1) end
-- verdictRange: the scores [lo, hi) of an expiry verdict (a status but
-- error), as ZCOUNT bounds' numbers; nil for another value.
local function verdictRange(v)
  if v == 'expired' then return '-inf', now
  elseif v == 'critical' then return now, critB
  elseif v == 'warning' then return critB, warnB
  elseif v == 'valid' then return warnB, '+inf' end
end
-- matchAll: which of ids pass every filter (ok[i])? hosts[i] is id i's
-- hostname when known (hosts may be nil). skip names the filter (status,
-- whois, tag, search) the ids pass by construction (their source's).
-- Each filter costs one call for all the ids, and a second key is asked
-- only about the ids the first leaves undecided.
local function matchAll(ids, hosts, skip)
  local ok = {}
  for i = 1, #ids do ok[i] = true end
  if #ids == 0 then return ok end
  if status ~= '' and skip ~= 'status' then
    -- The SSL status: none without a score (error when no certificate),
    -- expired below now, else error when invalid, else the verdict.
    local ssl, badIds, badAt, ncIds, ncAt = mscore(P .. 'ssl', ids), {}, {}, {}, {}
    for i = 1, #ids do
      local sc = ssl[i] and tonumber(ssl[i])
      ok[i] = false
      if not sc then
        if status == 'error' then ncIds[#ncIds + 1] = ids[i]; ncAt[#ncAt + 1] = i end
      elseif sc < now then ok[i] = status == 'expired'
      elseif status == 'error' or verdict(sc) == status then badIds[#badIds + 1] = ids[i]; badAt[#badAt + 1] = i end
    end
    if #badIds > 0 then
      local bad = mscore(P .. 'bad', badIds)
      for k, i in ipairs(badAt) do ok[i] = (bad[k] ~= false) == (status == 'error') end
    end
    if #ncIds > 0 then
      local nc = mismember(P .. 'nocert', ncIds)
      for k, i in ipairs(ncAt) do ok[i] = nc[k] end
    end
  end
  if wstatus ~= '' and skip ~= 'whois' then
    -- A verdict over the expiry, or the reason there is none (a domain
    -- in a reason's set has no expiry).
    if verdictRange(wstatus) then
      local w = mscore(P .. 'whois', ids)
      for i = 1, #ids do
        if not w[i] or verdict(tonumber(w[i])) ~= wstatus then ok[i] = false end
      end
    else
      local why = mscore(P .. 'wr:' .. wstatus, ids)
      for i = 1, #ids do if not why[i] then ok[i] = false end end
    end
  end
  if tag ~= '' and skip ~= 'tag' then
    keepTagged(ids, ok)
  end
  if search ~= '' and skip ~= 'search' then
    for i = 1, #ids do
      if ok[i] then
        local host = (hosts and hosts[i]) or redis.call('HGET', RP .. ix_id(ids[i]), 'host')
        if not host or not hostMatches(host) then ok[i] = false end
      end
    end
  end
  return ok
end

-- The sources: each filter (f) can list its candidates; est is how many,
-- count how many match it when known.
local sources = {}
local function zsrc(f, key, min, max)
  local est
  if min == '-inf' and max == '+inf' then est = ob_card(key) else est = ob_count(key, min, max) end
  return {f = f, kind = 'z', key = key, min = min, max = max, est = est}
end
if status ~= '' then
  if status == 'error' then
    local n = redis.call('SCARD', P .. 'nocert') + redis.call('ZCOUNT', P .. 'bad', now, '+inf')
    sources[#sources + 1] = {f = 'status', kind = 'err', est = n, count = n}
  else
    local lo, hi = verdictRange(status)
    if hi ~= '+inf' then hi = '(' .. hi end
    local s = zsrc('status', P .. 'ssl', lo, hi)
    s.count = s.est
    if status ~= 'expired' then
      -- The invalid certificates of the range are errors: bad holds
      -- them with the same scores.
      s.exclude = P .. 'bad'
      s.count = s.est - redis.call('ZCOUNT', P .. 'bad', lo, hi)
    end
    sources[#sources + 1] = s
  end
end
if wstatus ~= '' then
  local lo, hi = verdictRange(wstatus)
  if lo then
    if hi ~= '+inf' then hi = '(' .. hi end
    local s = zsrc('whois', P .. 'whois', lo, hi)
    s.count = s.est
    sources[#sources + 1] = s
  else
    local s = zsrc('whois', P .. 'wr:' .. wstatus, '-inf', '+inf')
    s.count, s.created = s.est, true
    sources[#sources + 1] = s
  end
end
if tag ~= '' then
  local s = zsrc('tag', P .. 'tag:' .. tag, '-inf', '+inf')
  s.count, s.created, s.hostKey = s.est, true, P .. IX_TAG_HOST .. tag
  -- The tag's order of each expiry's sort: its key, its null set, the
  -- index's null set it follows, its name in IX_TAG_ROOM.
  s.orders = {}
  for _, x in ipairs(IX_TAG_X) do s.orders[x.sort] = {P .. x.ord .. tag, P .. x.null .. tag, P .. x.of, x.ord .. tag} end
  sources[#sources + 1] = s
end
if search ~= '' then
  local lo, hi = '[' .. term, '[' .. term .. '\255'
  local ns, nh = ob_lexcount(P .. 'sfx', lo, hi), ob_lexcount(P .. 'host', lo, hi)
  local s = {f = 'search', kind = 'lex', lo = lo, hi = hi, est = ns + nh, ns = ns, nh = nh}
  -- Without a label match the hostname matches are the matches, each
  -- domain once (a domain has one hostname member; label matches may
  -- repeat a domain, and are counted by reading them).
  if ns == 0 then s.count = nh end
  sources[#sources + 1] = s
end

-- members lists a source's candidates that pass its filter, each once.
local function members(src)
  local out, seen = {}, {}
  local function add(id) if not seen[id] then seen[id] = true; out[#out + 1] = id end end
  if src.kind == 'z' then
    if src.exclude then
      for _, id in ipairs(redis.call('ZRANGEBYSCORE', src.exclude, src.min, src.max)) do seen[id] = true end
    end
    local got = ob_byscore(src.key, src.min, src.max, false, src.created, 0, -1)
    if src.created then
      for i = 1, #got, 2 do add(got[i]); knownCreated[got[i]] = got[i + 1] end
    else
      for _, id in ipairs(got) do add(id) end
    end
  elseif src.kind == 'err' then
    for _, id in ipairs(redis.call('SMEMBERS', P .. 'nocert')) do add(id) end
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'bad', now, '+inf')) do add(id) end
  else
    for _, k in ipairs({P .. 'sfx', P .. 'host'}) do
      for _, m in ipairs(ob_bylex(k, src.lo, src.hi, false, 0, -1)) do add(idOf(m)) end
    end
  end
  return out
end

-- A tier of the attention index (tier, Query.attention) serves a status
-- list once built for the list's edges (ix_tier_state); a sweep is due
-- (due, returned) when it does not serve, is under way (its sweeper may
-- have stopped), or its bounds are near their edges' (a list's clock
-- nears its upper bound, or its lower one lags), so that it moves on
-- before a list needs it.
local due, att = 0, false
if tier ~= '' then
  local serves, d = ix_tier_state(P, tier, {now = now, crit = critB, warn = warnB})
  att = serves
  if d then due = 1 end
end
local N = ob_card(P .. 'created')
-- walkKey, W: the index a walk in the hostname or created_at order
-- reads, and its size: the attention index's tier when the status filter
-- says so, which holds every match. On an expiry's sort (the other
-- expiry of the tier's, xwalk) the walk reads the tier's <tier>:x and
-- <tier>:xnull instead of the sort's key and its null set, and W is the
-- tier's size.
local walkKey, W = P .. 'host', N
if sort == 'created_at' then walkKey = P .. 'created' end
local xwalk = att and (sort == 'ssl_days_remaining' or sort == 'whois_days_remaining')
if xwalk then
  W = redis.call('ZCARD', P .. tier .. ':x') + ob_card(P .. tier .. ':xnull')
elseif att then
  walkKey = P .. tier .. ':host'
  if sort == 'created_at' then walkKey = P .. tier .. ':created' end
  W = ob_card(walkKey)
elseif sort == 'hostname' then W = ob_card(walkKey) end
-- A tag's or a registration reason's zset is scored by created_at (s.created):
-- on that sort the walk reads the smallest of them instead when it is
-- smaller still (ordered), and when it is the only filter every member
-- matches. On another sort a tag's order of that sort (s.hostKey,
-- s.orders) does the same once a list built it (readPage), but on the
-- ssl_days_remaining sort with status error (a walk of bad) and where a
-- tier serves.
local ordered, tagOrd
for _, s in ipairs(sources) do
  if s.est < W then
    if sort == 'created_at' and s.created then ordered, walkKey, W = s, s.key, s.est
    elseif sort == 'hostname' and s.hostKey and redis.call('EXISTS', s.hostKey) == 1 then ordered, walkKey, W = s, s.hostKey, s.est
    elseif s.orders and s.orders[sort] and not xwalk and not (sort == 'ssl_days_remaining' and status == 'error') and
        redis.call('EXISTS', s.orders[sort][1], s.orders[sort][2]) > 0 then
      ordered, walkKey, W, tagOrd = s, s.orders[sort][1], s.est, s.orders[sort]
    end
  end
end
local best
for _, s in ipairs(sources) do if not best or s.est < best.est then best = s end end

-- before: does sort key a ({phase, score, member}; phase 1 holds the
-- domains without a value, in id order whatever the direction) come
-- before key b in the list's order?
local function before(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  local asc = a[1] == 1 or not desc
  if a[2] ~= b[2] then if asc then return a[2] < b[2] else return a[2] > b[2] end end
  if a[3] == b[3] then return false end
  if asc then return a[3] < b[3] else return a[3] > b[3] end
end
local cur = {cphase, cscore, cmember}

local out, keys, total = {}, {}, 0
-- want: the matches the page needs from the start of the list.
local want = offset + limit + 1

-- The label plan: a search, the only filter, on the created_at sort,
-- whose matches are all label matches (a search from a label, or one no
-- hostname matches) under at most LABELS suffixes, none of which ends
-- another (so that no domain matches twice): each suffix's members are
-- in created_at order, so the page merges the first want of each, and
-- the total adds up their counts. Its cost is about the page, whatever
-- the number of matches.
local LABELS = 8
local labels
if search ~= '' and #sources == 1 and sort == 'created_at' and sources[1].nh == 0 and sources[1].ns > 0 and
    (plan == '' or plan == 'label') then
  local found, lo = {}, sources[1].lo
  while #found <= LABELS do
    local m = ob_bylex(P .. 'sfx', lo, sources[1].hi, false, 0, 1)[1]
    if not m then break end
    local s = string.sub(m, 1, string.find(m, ' ', 1, true) - 1)
    found[#found + 1] = s
    -- Past every member of s: "<s> " and any bytes sort before "<s>!".
    lo = '[' .. s .. '!'
  end
  if #found <= LABELS then
    labels = found
    for _, a in ipairs(found) do
      for _, b in ipairs(found) do
        if #a > #b and string.sub(a, -#b - 1) == '.' .. b then labels = nil end
      end
    end
  end
end
if labels then plan = 'label' elseif plan == 'label' then plan = '' end
-- The plan: read the smallest filter's candidates and sort them (read),
-- walk the sort's index testing each member against the filters (walk),
-- or walk it keeping the members among the candidates read first
-- (semi). Their costs, in ids walked (one id of a chunk of the sort's
-- zset, about 0.65 us; measured at 100,000 domains): E candidates, 2
-- each (a search's, which carry a suffix, 2.6), about want * N / E
-- members walked (the hostname index's 2.3 each); a walked member's test
-- costs its share of one call per chunk and filter (a score 2.4: every
-- filter but a search is a zset; a search on the hostname sort none, on another a
-- record read each, 5); a read candidate's sort key its score and its
-- share of the sort (4), or on the hostname sort a record read each for
-- the hostname (8.5). A walk that needs the total reads the candidates
-- anyway.
-- MEMBER and KEY: a walked member's cost and a read candidate's sort
-- key's, on this sort.
local MEMBER, KEY = 1, 4
if sort == 'hostname' then MEMBER, KEY = 2.3, 8.5 end
-- On the created_at sort a candidate's key is its record's created_at
-- (created is a bucketed order), a record read as the hostname's, but
-- for the candidates of an order scored so (a tag's, a reason's), read
-- with their scores.
if sort == 'created_at' and best and not best.created then KEY = 8.5 end
-- counted: the total needs no candidates read (no filter, or one whose
-- count is known).
local counted = #sources == 0 or (#sources == 1 and sources[1].count ~= nil)
-- cost: the plans' costs, when a filter lists candidates: M members
-- walked for the page, a member's test, the candidates' reading (cand)
-- and each plan's whole.
local cost
if best then
  local test, others = 0, 0
  for _, s in ipairs(sources) do
    local c = 2.4
    if s.f == 'search' then if sort == 'hostname' then c = 0 else c = 5 end end
    -- A bucketed tag's test reads the record (keepTagged); the walk of a
    -- filter's own order tests no member against it.
    if s.f == 'tag' and not ob_plain(s.key) then c = 8.5 end
    if s ~= ordered then test = test + c end
    if s ~= best then others = others + c end
  end
  local E, each = math.max(best.est, 1), 2
  if best.kind == 'lex' then each = 2.6 end
  local M = math.min(W, want * W / E)
  local cand = E * (each + others)
  cost = {E = E, M = M, test = test, cand = cand,
    walk = M * (MEMBER + test), semi = cand + M * MEMBER, read = cand + E * KEY}
  if not counted then cost.walk = cost.walk + cand end
end
local giveUpAtOnce = plan == 'semiread' or plan == 'walkread'
if giveUpAtOnce then plan = string.sub(plan, 1, 4) end
if plan == '' then
  plan = 'walk'
  -- A single filter that is a status over the sort's own key: the walk
  -- stays in its range (for error, the invalid certificates'), where
  -- nearly every member matches (cost about the page).
  local ranged = #sources == 1 and ((sort == 'ssl_days_remaining' and (verdictRange(status) ~= nil or status == 'error')) or
    (sort == 'whois_days_remaining' and verdictRange(wstatus) ~= nil))
  if best and not ranged then
    if cost.read <= cost.walk and cost.read <= cost.semi then plan = 'read' elseif cost.semi < cost.walk then plan = 'semi' end
  end
end
if not best then plan = 'walk' end
-- capWalk: how many members a semi walk, or a walk of a tier in the
-- other expiry's order, reads before it gives up and sorts its
-- candidates instead (as read); nil: no cap. The plan expects the
-- filter's matches spread evenly over the sort; when they bunch at its
-- far end (a status on the registration sort, the two correlated) the
-- walk reads on until it has cost what reading (a walk that has not
-- read them) and sorting the candidates costs, or half again what it
-- expected, whichever is more, so that it costs at most about twice the
-- cheaper of the two. Plans 'semiread' and 'walkread' (tests) give up
-- at once.
local capWalk
if best and (plan == 'semi' or (plan == 'walk' and xwalk)) then
  local per, rest = MEMBER, cost.E * KEY
  if plan == 'walk' then
    per = MEMBER + cost.test
    if counted then rest = cost.read end
  end
  capWalk = 1000 + math.max(1.5 * cost.M, rest / per)
  if giveUpAtOnce then capWalk = 0 end
end
-- candidates: the smallest source's candidates that pass every filter.
local function candidates()
  local ids = members(best)
  local ok, sel = matchAll(ids, nil, best.f), {}
  for i, id in ipairs(ids) do if ok[i] then sel[#sel + 1] = id end end
  return sel
end
-- readPage pages sel, the candidates (plan read, or a walk that gave
-- up), in the list's order: k0 holds those with a value, ascending, k1
-- the others (phase 1), by id. On an expiry's sort, when the candidates
-- are a tag's or a reason's domains (best.created), ZINTER of the sort's
-- key and the candidates' zset gives k0 already ordered (in C: the
-- intersection sorted by score, then member, as the index is); else
-- each candidate gets one string key, which Lua sorts in C: the
-- hostname index's member (read from its record), or the score
-- (scoreKey) and the id. A tag of more than TAGORDER domains read so
-- keeps them in the sort's order for the next list to walk (keyTagHost
-- and the rest, which the writers keep from then on): on an expiry's
-- sort from the sort's key and null set in C, on the hostname sort (the
-- tag alone, so that every domain of it is read) with the names read.
-- roomFor records a tag order of n domains, named by its key without P,
-- about to be built, and tells whether the tenant's built orders have
-- room for it (TAGSHARE of its N domains; keyTagOrders).
local function roomFor(name, n)
  local used = tonumber(redis.call('HGET', P .. IX_TAG_ROOM, 'n') or '0')
  if used + n > TAGSHARE * N then return false end
  redis.call('HINCRBY', P .. IX_TAG_ROOM, 'n', n)
  redis.call('HSET', P .. IX_TAG_ROOM, name, n)
  return true
end
local function readPage(sel)
  -- scoreKey: 16 characters that sort as the score s (whole ms, within
  -- 10^15 of 0: some 31,000 years), from its reply v: most are whole and
  -- positive, kept as they are behind '1' and zeros; scoreOf reads it
  -- back.
  local ZEROS, MAXS = '000000000000000', 999999999999999
  local function scoreKey(v, s)
    if #v <= 15 and not string.find(v, '%D') then return '1' .. string.sub(ZEROS, #v + 1) .. v end
    if s >= 0 then return '1' .. string.format('%015d', math.min(s, MAXS)) end
    return '0' .. string.format('%015d', math.max(s, -MAXS) + MAXS + 1)
  end
  local function scoreOf(k)
    local s = tonumber(string.sub(k, 2, 16))
    if string.sub(k, 1, 1) == '0' then s = s - MAXS - 1 end
    return s
  end
  total = #sel
  -- key0(k): the sort key ({phase 0, score, member}) and the id of k0's
  -- entry k.
  local k0, k1, key0 = {}, {}, nil
  local key
  if sort == 'ssl_days_remaining' then key = P .. 'ssl' elseif sort == 'whois_days_remaining' then key = P .. 'whois' end
  if sort == 'hostname' then
    local whole = true
    for _, id in ipairs(sel) do
      local r = redis.call('HMGET', RP .. ix_id(id), 'host', 'port')
      if not r[1] then whole = false end
      k0[#k0 + 1] = (r[1] or '') .. ' ' .. string.format('%05d', tonumber(record_port(r[2]))) .. ' ' .. id
    end
    table.sort(k0)
    if whole and #sources == 1 and best.hostKey and #sel > TAGORDER and redis.call('EXISTS', best.hostKey) == 0 and
        roomFor(IX_TAG_HOST .. tag, #sel) then
      for i = 1, #k0, MCHUNK do
        local args = {}
        for j = i, math.min(#k0, i + MCHUNK - 1) do args[#args + 1] = 0; args[#args + 1] = k0[j] end
        redis.call('ZADD', best.hostKey, unpack(args))
      end
      ob_fill(best.hostKey, false)
    end
    key0 = function(k) return {0, 0, k}, idOf(k) end
  elseif sort ~= 'created_at' and best.created then
    -- A tag's order of this sort, built here (from its key and null set,
    -- in C) when the tag has more than TAGORDER domains, holds them so.
    local o, z = best.orders and best.orders[sort], nil
    -- inter: best.key as ZINTER reads it: a bucketed order's members are
    -- copied into a plain zset of the slot for the call (tmp), deleted
    -- before the script ends.
    local inter, tmp = best.key, nil
    if not ob_plain(inter) then
      tmp = P .. '` + keyScratch + `'
      redis.call('DEL', tmp)
      local ms = ob_byscore(best.key, '-inf', '+inf', false, false, 0, -1)
      for i = 1, #ms, MCHUNK do
        local args = {}
        for j = i, math.min(#ms, i + MCHUNK - 1) do args[#args + 1] = 0; args[#args + 1] = ms[j] end
        redis.call('ZADD', tmp, unpack(args))
      end
      inter = tmp
    end
    if o and redis.call('EXISTS', o[1], o[2]) == 0 and best.est > TAGORDER and roomFor(o[4], best.est) then
      redis.call('ZINTERSTORE', o[1], 2, key, inter, 'WEIGHTS', 1, 0)
      redis.call('ZREMRANGEBYSCORE', o[1], NOEXP, '+inf')
      -- The null set is an order by member (bucketed when big): its
      -- members among the tag's, asked one by one.
      local tagged, null = redis.call('ZRANGE', inter, 0, -1), {}
      for _, id in ipairs(tagged) do
        if ob_has(o[3], nil, id) then null[#null + 1] = 0; null[#null + 1] = id end
      end
      for i = 1, #null, 2 * MCHUNK do redis.call('ZADD', o[2], unpack(null, i, math.min(#null, i + 2 * MCHUNK - 1))) end
      ob_fill(o[2], false)
    end
    if o and redis.call('EXISTS', o[1], o[2]) > 0 then z = redis.call('ZRANGE', o[1], 0, -1, 'WITHSCORES')
    else z = redis.call('ZINTER', 2, key, inter, 'WEIGHTS', 1, 0, 'WITHSCORES') end
    if tmp then redis.call('DEL', tmp) end
    local keep, seen = nil, {}
    if #sources > 1 then
      keep = {}
      for _, id in ipairs(sel) do keep[id] = true end
    end
    for i = 1, #z, 2 do
      local id, sc = z[i], tonumber(z[i + 1])
      if sc < NOEXP and (not keep or keep[id]) then k0[#k0 + 1] = {0, sc, id}; seen[id] = true end
    end
    for _, id in ipairs(sel) do if not seen[id] then k1[#k1 + 1] = id end end
    key0 = function(k) return k, k[3] end
  else
    -- created, a bucketed order, answers no score by member: a domain's
    -- created_at is its record's.
    local sc
    if sort == 'created_at' then sc = createdOf(sel) else sc = mscore(key, sel) end
    for i, id in ipairs(sel) do
      local v = sc[i] or (sort == 'created_at' and '0')
      local s = tonumber(v)
      if s and (sort == 'created_at' or s < NOEXP) then k0[#k0 + 1] = scoreKey(v, s) .. ' ' .. id
      else k1[#k1 + 1] = id end
    end
    table.sort(k0)
    key0 = function(k) return {0, scoreOf(k), string.sub(k, 18)}, string.sub(k, 18) end
  end
  table.sort(k1)
  -- The list's j-th key: k0 in order (reversed when desc), then k1.
  local n0, n = #k0, #k0 + #k1
  local function at(j)
    if j > n0 then return {1, 0, k1[j - n0]}, k1[j - n0] end
    if desc then return key0(k0[n0 + 1 - j]) end
    return key0(k0[j])
  end
  -- The first key after the cursor, found by halving.
  local first = 1
  if hasCur then
    local hi = n + 1
    while first < hi do
      local mid = math.floor((first + hi) / 2)
      if before(cur, (at(mid))) then hi = mid else first = mid + 1 end
    end
  end
  for j = first + offset, math.min(n, first + offset + limit) do
    local k, id = at(j)
    out[#out + 1] = id
    keys[#keys + 1] = k
  end
end
if plan == 'label' then
  local runs = {}
  for _, s in ipairs(labels) do
    local a, z = '[' .. s .. ' ', '(' .. s .. '!'
    total = total + ob_lexcount(P .. 'sfx', a, z)
    if hasCur then
      local k = s .. ' ' .. ix_created(cscore) .. cmember
      if desc then z = '(' .. k else a = '(' .. k end
    end
    local got
    got = ob_bylex(P .. 'sfx', a, z, desc, 0, want)
    for _, m in ipairs(got) do runs[#runs + 1] = string.sub(m, #s + 2) end
  end
  -- "<created><id>" of each: in list order once sorted (and reversed
  -- when desc).
  table.sort(runs)
  local n = #runs
  for j = offset + 1, math.min(n, want) do
    local k = runs[j]
    if desc then k = runs[n + 1 - j] end
    local id = string.sub(k, 7)
    out[#out + 1] = id
    keys[#keys + 1] = {0, ix_created_ms(k), id}
  end
elseif plan == 'read' then
  readPage(candidates())
else
  -- Walk the sort's index from the cursor until the page is full,
  -- testing each member against the filters, or (semi) its membership
  -- in the candidates that pass them.
  local set, sel
  if plan == 'semi' or not counted then
    sel = candidates()
    total = #sel
    if plan == 'semi' then
      set = {}
      for _, id in ipairs(sel) do set[id] = true end
    end
  elseif #sources == 0 then total = N
  else total = sources[1].count end
  -- The index's sequences, in list order: {key, lex, then in a lex
  -- sequence its size, in a scored one the lowest score it holds and
  -- the score it ends below, direction, every member matches}.
  local INF = math.huge
  local seqs = {}
  if sort == 'hostname' then seqs[1] = {walkKey, true, W, nil, desc, ordered ~= nil and #sources == 1}
  elseif sort == 'created_at' then seqs[1] = {walkKey, false, -INF, INF, desc, ordered ~= nil and #sources == 1}
  else
    -- f is the filter over the sort's own key: a status holds only the
    -- scores of its range (an error those of bad from now on), so the
    -- walk stays in it.
    local key, null, f = P .. 'ssl', P .. 'sslnull', status
    if sort == 'whois_days_remaining' then key, null, f = P .. 'whois', P .. 'wnull', wstatus end
    -- A tier in this order holds every match (Query.attention: f is
    -- then '').
    if xwalk then key, null = P .. tier .. ':x', P .. tier .. ':xnull' end
    -- A tag's order holds its domains as the sort's key and null set do.
    if tagOrd then key, null = tagOrd[1], tagOrd[2] end
    local lo, hi = verdictRange(f)
    -- Every member of the range matches, but an invalid certificate's
    -- in a range of the ssl sort past now (an error).
    local exact = lo ~= nil and not (sort == 'ssl_days_remaining' and f ~= 'expired')
    if sort == 'ssl_days_remaining' and f == 'error' then key, lo, hi, exact = P .. 'bad', now, '+inf', true end
    -- The scores [a, b): below NOEXP (the never expiring are the null
    -- set's), within the filter's range.
    local a, b = -INF, NOEXP
    local nulls = ob_card(null)
    if lo then
      if lo ~= '-inf' then a = lo end
      if hi ~= '+inf' then b = math.min(b, hi) end
      -- The tail holds no value to be in a range, but the certificates
      -- that never expire (valid, if not invalid) and those missing
      -- (error, when scanned without one).
      if not (sort == 'ssl_days_remaining' and (f == 'valid' or f == 'error')) then nulls = 0 end
    elseif f ~= '' and sort == 'whois_days_remaining' then
      -- A reason: only a domain without an expiry has one.
      b = -INF
    end
    local alone = #sources == 1 and (exact or tagOrd ~= nil)
    seqs[1] = {key, false, a, b, desc, alone}
    seqs[2] = {null, true, nulls, nil, false, tagOrd ~= nil and #sources == 1}
  end
  local skip, walked, gaveUp = offset, 0, false
  -- take matches the first n of a chunk of seq's members, got, in list
  -- order (step 2: each followed by its score, in a scored seq), and
  -- adds those that pass to the page (after skipping what the offset
  -- skips).
  local function take(p, seq, got, all, step, n)
    walked = walked + n
    local ids, hosts, isHost = got, {}, seq[2] and sort == 'hostname'
    if step == 2 or isHost then
      ids = {}
      for j = 1, n do
        local m = got[step * j - step + 1]
        ids[j] = m
        if isHost then
          ids[j] = idOf(m)
          if not set then hosts[j] = hostOf(m) end
        end
      end
    end
    local ok
    if set then
      ok = {}
      for j = 1, n do ok[j] = set[ids[j]] == true end
    elseif not all then ok = matchAll(ids, hosts, ordered and ordered.f) end
    for j = 1, n do
      if not ok or ok[j] then
        if skip > 0 then skip = skip - 1
        else
          out[#out + 1] = ids[j]
          keys[#keys + 1] = {p, seq, got[step * j - step + 1], step == 2 and got[2 * j]}
          if #out > limit then return end
        end
      end
    end
  end
  for phase, seq in ipairs(seqs) do
    local p = phase - 1
    if #out > limit or gaveUp then break end
    local all = #sources == 0 or seq[6]
    if (not hasCur or p >= cphase) and seq[2] then
      -- A seq ordered by member (a bucketed order past 128 members) is
      -- walked by position: from the cursor's member (exclusive), a
      -- chunk after the last member read, so that a page reads the
      -- buckets it crosses, not the directory's sizes for ranks. Only
      -- an offset (page-number paging: no cursor) counts ranks, once.
      local lo, hi, n = '-', '+', seq[3]
      if hasCur and p == cphase then
        if seq[5] then hi = '(' .. cmember else lo = '(' .. cmember end
      elseif all and skip > 0 and n > 0 then
        if skip >= n then skip, n = skip - n, 0
        else
          local r = skip
          if seq[5] then r = n - 1 - skip end
          local m = ob_range(seq[1], r, r)[1]
          if seq[5] then hi = '[' .. m else lo = '[' .. m end
          skip = 0
        end
      end
      while n > 0 and #out <= limit do
        -- A walk past its cap sorts its candidates instead.
        if capWalk and walked >= capWalk then gaveUp = true; break end
        local got = ob_bylex(seq[1], lo, hi, seq[5], 0, CHUNK)
        if #got == 0 then break end
        take(p, seq, got, all, 1, #got)
        if seq[5] then hi = '(' .. got[#got] else lo = '(' .. got[#got] end
      end
    elseif not hasCur or p >= cphase then
      -- A scored seq is walked by position too: from the cursor's score
      -- and member (exclusive), or the range's edge, each chunk after
      -- the last member read (ob_after), until a score leaves the
      -- range [a, b). An offset counts ranks, once.
      local K, a, b, down = seq[1], seq[3], seq[4], seq[5]
      local ps, pm, incl = a, nil, true
      if down then ps = b - 1 end
      local live = a < b
      if hasCur and p == cphase then
        -- A cursor outside the range (a range moved with the clock)
        -- starts at its edge: what lies outside cannot match.
        if down and cscore < b then ps, pm, incl = cscore, cmember, false
        elseif not down and cscore >= a then ps, pm, incl = cscore, cmember, false end
      elseif all and skip > 0 and live then
        local r0, r1 = 0, ob_card(K)
        if a ~= -INF then r0 = ob_count(K, '-inf', '(' .. ob_str(a)) end
        if b ~= INF then r1 = ob_count(K, '-inf', '(' .. ob_str(b)) end
        if skip >= r1 - r0 then skip, live = skip - math.max(0, r1 - r0), false
        else
          local r = r0 + skip
          if down then r = r1 - 1 - skip end
          local g = ob_range(K, r, r, true)
          ps, pm = tonumber(g[2]), g[1]
          skip = 0
        end
      end
      while live and #out <= limit do
        -- A walk past its cap sorts its candidates instead.
        if capWalk and walked >= capWalk then gaveUp = true; break end
        -- When every member matches, the page needs only so many.
        local n = CHUNK
        if all then n = math.min(CHUNK, limit + 1 - #out + skip) end
        local got = ob_after(K, ps, pm, incl, down, n)
        local m = #got / 2
        if m < n then live = false end
        -- past: is the i-th member's score out of the range? Only the
        -- chunk's last can be, unless it is: then the cut is looked for.
        local function past(i)
          local sc = tonumber(got[2 * i])
          return (down and sc < a) or (not down and sc >= b)
        end
        if m > 0 and past(m) then
          live = false
          local k = 0
          while k < m and not past(k + 1) do k = k + 1 end
          m = k
        end
        if m > 0 then
          take(p, seq, got, all, 2, m)
          ps, pm, incl = tonumber(got[2 * m]), got[2 * m - 1], false
        end
      end
    end
  end
  if gaveUp then
    out, keys, total = {}, {}, 0
    readPage(sel or candidates())
  -- The next cursor's score (the walk read none): 0 in a lex
  -- sequence, else its member's.
  elseif #out > limit then
    local k = keys[limit]
    local seq = k[2]
    k[2] = tonumber(k[4]) or 0
  end
end
local nextKey
if #out > limit then
  nextKey = keys[limit]
  out[limit + 1] = nil
end
-- The rows: each id's registration facts.
local rows = {}
if #out > 0 then
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
      local has = mscore(P .. 'wr:' .. r, ids)
      for k, i in ipairs(without) do if has[k] then wr[i] = r end end
    end
  end
  for i = 1, #out do rows[i] = {ws[i] or '', wr[i]} end
end
-- tierWalked: the index the plan walked instead of the sort's: a tier, a
-- tag's or a reason's zset, or a tag's order of the sort (its key, or
-- its order's, without the prefix); '' for none.
local tierWalked = ''
if plan == 'walk' or plan == 'semi' then
  if ordered then tierWalked = string.sub(walkKey, #P + 1) elseif att then tierWalked = tier end
end
local gen = ix_gen(P)
if nextKey then
  return {total, out, rows, plan, due, tierWalked, gen, nextKey[1], string.format('%.17g', nextKey[2]), nextKey[3]}
end
return {total, out, rows, plan, due, tierWalked, gen}
`)

// scoreString is how a cursor's score reaches the script: exact for the
// whole numbers the index holds.
func scoreString(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1<<53 {
		return strconv.FormatInt(int64(f), 10)
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}
