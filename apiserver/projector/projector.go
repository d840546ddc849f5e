// Package projector keeps the apiserver's read views in Redis up to date
// from the event streams, and reads them back for the API.
//
// The expiration view holds, per domain, the latest result of every IP seen
// from every region:
//
//	view:exp:{<domain_id>}   hash
//	  "<region>"       -> "5<finished unix ms><event id><shape>;<ip>,
//	                     <connect ms>,<handshake ms>;...": the scan shown
//	                     (the ms in 7 digits of base 64, the event id in
//	                     22 characters) and the region's entries, each
//	                     IP's 4 or 16 bytes in base 64 (ip "" for a name
//	                     that did not resolve), timings in base 64, a
//	                     shape's name before the IPs that saw it; past 64
//	                     bytes on in "<region>|1", "<region>|2"...
//	  "#<shape>", "#<shape>|1", ... -> the shape in chunks: what the scan
//	                     saw at the IP but the IP and its timings, the
//	                     certificate's facts included, once per view
//	                     however many regions and IPs saw it (entry.go)
//	  "@removed"       -> unix ms of the latest domain.removed; the view
//	                     then expires (TombstoneTTL)
//	  "@n"             -> "<host>|<unix ms, base 36>" ("<host:port>|..."
//	                     for a port other than 443 or an IPv6 host,
//	                     nameCode): the name the entries are for and the
//	                     domain event that gave it (0: a scan); "@name",
//	                     "<host:port>|<decimal ms>", in views written
//	                     before, which the next scan or domain event moves
//	  "@t"             -> the domain's tenant, from the events that carry
//	                     it: a UUID in 22 characters of base64url, another
//	                     id after "=" (tenantCode; "@tenant", the id as it
//	                     is, in views written before)
//	  "@fails|<region>" -> consecutive scans of the region, up to the one
//	                     shown, in which the name or an IP failed
//	  "@v"             -> the view's version, incremented by every script
//	                     that changes the view, in the same step
//
// Views written before layout 5 keep a region's mark in "@<region>"
// ("<finished ms, base 36>|<event id>") and its timings in decimal; they
// read as they did and a region's next scan rewrites it (entry.go).
//
// Every field and value of a common view is at most 64 bytes and there
// are far fewer than 128 fields, so Redis keeps the hash as a compact
// listpack (its defaults hash-max-listpack-value and -entries); the
// benchmark's view (three regions, two IPs each, one certificate) is a
// listpack of some 421 bytes, in jemalloc's class of 448, 552 with the
// key (memory_test.go). entry.go says how, and which older layouts still
// read.
//
// The version orders snapshots of a view: Snapshot reads it with the hash
// in one step, so a higher version always means a view at least as new.
// The alert engine (apiserver/alerts, plugged in as an Evaluator) compares
// it with the version it last evaluated to ignore older snapshots, and
// names alerts by it, so it must never go back: Rebuild deletes a view but
// its "@v", a restore sets it above both what is left and the snapshot's,
// and views of the older layout, whose version was a key of its own
// (view:ver:{<domain_id>}), go on from that key, which the next change
// deletes.
//
// A region's entries are replaced as a whole by its newest scan, so IPs that
// left DNS vanish; an older or redelivered scan changes nothing, so the view
// never goes back in time whatever the delivery order. Meta fields start
// with "@" and shapes with "#", which no region's field does (regions
// starting with either, holding "|" or named as a meta field, such as
// "v", are refused).
//
// A domain keeps its id when renamed (domain.updated with another host or
// port): the rename empties its view, and a scan of another name than the
// view's is dropped, so results for the old name never show under the new
// one. A scan of the new name that arrives before the rename event is
// dropped too; the next scan brings it.
package projector

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/domainname"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/health"
	"github.com/certfleet/certfleet/internal/shortid"
)

// Group is the consumer group of the projector on both streams.
const Group = "projector"

// ViewPrefix starts the key of every expiration view.
const ViewPrefix = "view:exp:"

// ViewKey is the key of the expiration view of a domain. The domain id is
// its Redis Cluster hash tag, shared with VersionKey: the scripts that
// change a view read an older layout's version in the same step, in one
// slot.
func ViewKey(domainID string) string { return ViewPrefix + "{" + domainID + "}" }

// VersionPrefix starts the key of every view's version in the older
// layout, which the scripts read and delete (bumpLua).
const VersionPrefix = "view:ver:"

// VersionKey is the key of the version of a domain's expiration view in
// the older layout.
func VersionKey(domainID string) string { return VersionPrefix + "{" + domainID + "}" }

const (
	metaPrefix   = "@"
	removedField = "@removed"
	nameField    = "@n"
	// oldNameField holds the name, "<host:port>|<decimal ms>", in the
	// layout before nameField (nameCode).
	oldNameField = "@name"
	tenantField  = "@t"
	// oldTenantField holds the tenant, as it is, in the layout before
	// tenantField (tenantCode).
	oldTenantField = "@tenant"
	versionField   = "@v"
	failsPrefix    = "@fails|"
)

// metaFields are the meta fields that are not a region's: "@<region>"
// is its mark, so a region of one of these names is refused.
var metaFields = []string{removedField, nameField, oldNameField, tenantField, oldTenantField, versionField}

// metaLua is the Lua table metaFields of the scripts.
var metaLua = func() string {
	var b strings.Builder
	b.WriteString("\nlocal metaFields = {")
	for _, f := range metaFields {
		fmt.Fprintf(&b, "[%q] = true, ", f)
	}
	b.WriteString("}\n")
	return b.String()
}()

// bumpLua is the Lua every script that changes a view runs: bump(floor)
// sets the view's version "@v" (KEYS[1]) one above the highest of itself,
// the version key of the older layout (KEYS[2], which it then deletes)
// and floor, so that it never goes back whichever layout or replica wrote
// it last.
const bumpLua = `
local function bump(floor)
  local v = math.max(tonumber(redis.call('HGET', KEYS[1], '@v')) or 0, tonumber(redis.call('GET', KEYS[2])) or 0, floor)
  redis.call('HSET', KEYS[1], '@v', v + 1)
  redis.call('DEL', KEYS[2])
end
`

// bumpScript bumps a view's version (bumpLua) when something it does
// not hold changed what the alert engine makes of it.
//
// KEYS: view:exp:<domain>, view:ver:<domain>.
var bumpScript = redis.NewScript(bumpLua + "bump(0)\nreturn 1")

// bumpVersion queues bumpScript on pipe for a domain's view.
func bumpVersion(ctx context.Context, pipe redis.Pipeliner, domainID string) {
	bumpScript.Eval(ctx, pipe, []string{ViewKey(domainID), VersionKey(domainID)})
}

// viewVersion is a view's version: the higher of its field "@v" and the
// version key of the older layout ("" for none).
func viewVersion(field, key string) (int64, error) {
	var v int64
	for _, s := range []string{field, key} {
		if s == "" {
			continue
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("version %q: %w", s, err)
		}
		v = max(v, n)
	}
	return v, nil
}

var eventsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "certfleet_projector_events_total",
	Help: "Events the projector consumed, by event name.",
}, []string{"name"})

// ExpEntry is the latest result of one IP of a domain seen from one region:
// everything the scan recorded for the IP, and where and when it was seen.
type ExpEntry struct {
	Region string `json:"region"`
	Port   int    `json:"port"`
	// ScannedAt is when the region's scan finished.
	ScannedAt time.Time `json:"scanned_at"`
	// EventID is the scan.completed event the entry came from.
	EventID string `json:"event_id"`
	// NoExpiry tells that the certificate has no well-defined expiration
	// (notAfter 99991231235959Z, RFC 5280): outputs show "no expiry", not
	// NotAfter as a date or a number of days.
	NoExpiry bool `json:"no_expiry,omitempty"`
	events.IPResult
}

// Config configures the projector. Count, Block and ClaimIdle tune the
// reads of its events/stream consumer, whose checks apply to them.
type Config struct {
	// Consumer names this replica in the "projector" group; unique per
	// process. Required.
	Consumer string
	// Count is the most entries read per stream at a time. Default 1000.
	Count int
	// Block is the pause after a round of reads found every stream empty
	// (stream.Config.PollInterval): how late an event may be seen when the
	// streams are idle. Default 100ms.
	Block time.Duration
	// ClaimIdle is how long an entry may stay pending with a crashed
	// replica before another claims it.
	ClaimIdle time.Duration
	// Evaluator is told, after each batch is applied and before it is
	// acknowledged, which domains the batch was about (the alert engine,
	// which cmd/certfleet passes). Nil: views only.
	Evaluator Evaluator
}

// Evaluator reacts to changed views. Evaluate gets every domain a batch of
// scan and domain events was about, whether or not the view changed (a
// redelivered event may have been applied by a replica that crashed
// before evaluating); it must be idempotent. An error fails the batch,
// which is then retried.
type Evaluator interface {
	Evaluate(ctx context.Context, domainIDs []string) error
}

// streamConfig is the read configuration of the projector's consumer.
func (c Config) streamConfig() stream.Config {
	count := c.Count
	if count == 0 {
		count = 1000
	}
	return stream.Config{
		Streams:      append(events.EventStreams(), events.StreamResults),
		Group:        Group,
		Consumer:     c.Consumer,
		Count:        count,
		PollInterval: c.Block,
		ClaimIdle:    c.ClaimIdle,
	}
}

// Projector applies events to the views.
type Projector struct {
	cfg      Config
	rdb      redis.UniversalClient
	consumer *stream.Consumer
	logger   *zap.Logger
}

// New returns a projector reading and writing through rdb.
func New(cfg Config, rdb redis.UniversalClient, logger *zap.Logger) (*Projector, error) {
	if cfg.Consumer == "" {
		return nil, errors.New("projector config: consumer is required")
	}
	if rdb == nil {
		return nil, errors.New("projector: redis client is nil")
	}
	logger = logger.Named("projector")
	consumer, err := stream.New(cfg.streamConfig(), rdb, logger)
	if err != nil {
		return nil, fmt.Errorf("projector: %w", err)
	}
	return &Projector{cfg: cfg, rdb: rdb, consumer: consumer, logger: logger}, nil
}

// Register adds the projector's consumer to r's health checks.
func (p *Projector) Register(r *health.Registry) {
	p.consumer.Register(r, "projector")
}

// Run consumes the events and results streams in group "projector" until
// ctx is done, acknowledging entries only after the view was written.
func (p *Projector) Run(ctx context.Context) error {
	p.logger.Info("projector started", zap.String("consumer", p.cfg.Consumer))
	err := p.consumer.RunBatches(ctx, func(ctx context.Context, batch []stream.Entry) error {
		evs := make([]events.Envelope, len(batch))
		for i, e := range batch {
			evs[i] = e.Event
		}
		return p.apply(ctx, evs)
	})
	p.logger.Info("projector stopped")
	return err
}

// Apply applies one event to the views. It is idempotent, and applying
// events out of order yields the view of the newest ones.
func (p *Projector) Apply(ctx context.Context, e events.Envelope) error {
	return p.apply(ctx, []events.Envelope{e})
}

// ApplyBatch applies events in order as Run applies one read of the
// streams: one pipelined round trip, then the evaluator.
func (p *Projector) ApplyBatch(ctx context.Context, evs []events.Envelope) error {
	return p.apply(ctx, evs)
}

// apply applies a batch and then has the evaluator look at the domains it
// was about.
func (p *Projector) apply(ctx context.Context, evs []events.Envelope) error {
	domains, regDomains, err := applyBatch(ctx, p.rdb, evs, p.logger)
	if err != nil {
		return err
	}
	managed, err := managedDomains(ctx, p.rdb, evs)
	if err != nil {
		return err
	}
	evaluated := make(map[string]bool, len(domains))
	for _, id := range domains {
		evaluated[id] = true
	}
	for _, id := range managed {
		if !evaluated[id] {
			evaluated[id] = true
			domains = append(domains, id)
		}
	}
	if len(regDomains) > 0 {
		under, err := fanOut(ctx, p.rdb, regDomains)
		if err != nil {
			return err
		}
		had := make(map[string]bool, len(domains))
		for _, id := range domains {
			had[id] = true
		}
		for _, id := range under {
			if !had[id] {
				domains = append(domains, id)
			}
		}
	}
	// A lookup's fan-out can reach every domain under a registrable
	// domain, 100,000 and more: they are synced and evaluated a chunk at
	// a time, each chunk's reads one pipeline of a bounded size.
	for chunk := range slices.Chunk(domains, ChunkSize) {
		if err := SyncIndex(ctx, p.rdb, chunk); err != nil {
			return err
		}
		if p.cfg.Evaluator == nil {
			continue
		}
		if err := p.cfg.Evaluator.Evaluate(ctx, chunk); err != nil {
			return fmt.Errorf("evaluate %d domains: %w", len(chunk), err)
		}
	}
	return nil
}

// ChunkSize is the most domains whose views a pipeline reads at once
// (the fan-out of a lookup, the list index sync): a pipeline of 111,000
// domains outlasted the client's timeouts.
var ChunkSize = 1000

// applyScanScript replaces one region's entries of a domain's view by a
// newer scan.
//
// KEYS: view:exp:<domain>, view:ver:<domain>. ARGV: region, finished ms
// in base 36, event id in compact (entry.go), scanned "host:port" (""
// when the event does not say), tenant ("" when unknown), "1" when the
// scan failed for the name or an IP else "0", the event id in full (to
// order it against a mark of the oldest layout), then the fields and
// values of the region's mark, entries and shapes (encodeResults). The
// scan shown is the mark in the region's field, or in "@<region>" for a
// region of an older layout, which the scan replaces. Returns 1 when
// applied, 0 when the view already shows this scan, a newer one or a
// later removal, or is for another name.
var applyScanScript = redis.NewScript(markLua + bumpLua + nameLua + `
local key, region, ms, id, name = KEYS[1], ARGV[1], tonumber(ARGV[2], 36), ARGV[3], ARGV[4]
local removed = redis.call('HGET', key, '@removed')
if removed and tonumber(removed) >= ms then return 0 end
local own, lms, lid, old = redis.call('HGET', key, region), nil, nil, false
if own then lms, lid = regionFieldMark(own) end
if not lms then
  local mark = redis.call('HGET', key, '@' .. region)
  if mark then lms, lid, old = scanMark(mark) end
end
if lms then
  if old then id = ARGV[7] end
  if lms > ms or (lms == ms and lid >= id) then return 0 end
end
if name ~= '' then
  local cur, cms, old = readName(key)
  if cur and cur ~= name then return 0 end
  if not cur then
    writeName(key, name, 0)
  elseif old then
    writeName(key, cur, cms)
  end
end
local prefix = region .. '|'
for _, f in ipairs(redis.call('HKEYS', key)) do
  if f == region or string.sub(f, 1, #prefix) == prefix then redis.call('HDEL', key, f) end
end
redis.call('HDEL', key, '@' .. region)
for i = 8, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
end
if ARGV[5] ~= '' then
  redis.call('HSET', key, '@t', ARGV[5])
  redis.call('HDEL', key, '@tenant')
end
if ARGV[6] == '1' then
  redis.call('HINCRBY', key, '@fails|' .. region, 1)
else
  redis.call('HDEL', key, '@fails|' .. region)
end
` + dropUnusedLeaves + `
bump(0)
return 1
`)

// applyRemovedScript drops every region's entries scanned before a
// domain's removal, with their mark (in the region's field, or in
// "@<region>" in the older layouts), and remembers the removal, so that a
// scan finished before it and delivered after it stays out, while scans
// of a domain added again later come in.
//
// KEYS: view:exp:<domain>, view:ver:<domain>. ARGV: removal ms.
var applyRemovedScript = redis.NewScript(markLua + bumpLua + metaLua + `
local key, ms = KEYS[1], tonumber(ARGV[1])
local removed = redis.call('HGET', key, '@removed')
if removed and tonumber(removed) >= ms then return 0 end
local all = redis.call('HGETALL', key)
local stale = {}
for i = 1, #all, 2 do
  local f, v = all[i], all[i + 1]
  local c = string.sub(f, 1, 1)
  if string.find(f, '|', 1, true) or c == '#' then
  elseif c == '@' then
    if not metaFields[f] and scanMark(v) <= ms then
      stale[string.sub(f, 2)] = true
      redis.call('HDEL', key, f)
    end
  else
    local fms = regionFieldMark(v)
    if fms and fms <= ms then stale[f] = true end
  end
end
for i = 1, #all, 2 do
  local f = all[i]
  local region = string.match(f, '^[^|]*')
  if string.sub(f, 1, 7) == '@fails|' then region = string.sub(f, 8) end
  if stale[region] then redis.call('HDEL', key, f) end
end
` + dropUnusedLeaves + `
redis.call('HSET', key, '@removed', ARGV[1])
bump(0)
` + expireTombstoneLua + `
return 1
`)

// TombstoneTTL is how long the view of a removed domain (its tombstone:
// "@removed", "@name", "@t", "@v", and the entries of any scan that
// finished after the removal) is kept once the removal was applied. Its
// removal time keeps out a scan finished before the removal and
// delivered after it; a domain's id is never given again, so past any
// delivery delay the tombstone is only memory that names a domain the
// tenant removed, and it expires.
const TombstoneTTL = 30 * 24 * time.Hour

// expireTombstoneLua gives the view KEYS[1], when it is a tombstone, its
// end: TombstoneTTL from now.
var expireTombstoneLua = `
if redis.call('HEXISTS', KEYS[1], '@removed') == 1 then redis.call('PEXPIRE', KEYS[1], ` + strconv.FormatInt(TombstoneTTL.Milliseconds(), 10) + `) end
`

// applyNameScript records the name a domain event gives a domain; a name
// other than the view's empties the view (every region's entries and
// marks), because its results were for the old name. An event older than
// the one that set the current name changes nothing.
//
// KEYS: view:exp:<domain>, view:ver:<domain>. ARGV: "host:port", event
// ms, tenant ("" when unknown).
var applyNameScript = redis.NewScript(bumpLua + metaLua + nameLua + `
local key, name, ms = KEYS[1], ARGV[1], tonumber(ARGV[2])
local cur, cms = readName(key)
if cur then
  if cms > ms then return 0 end
  if cur ~= name then
    for _, f in ipairs(redis.call('HKEYS', key)) do
      if not metaFields[f] then redis.call('HDEL', key, f) end
    end
  end
end
writeName(key, name, ms)
if ARGV[3] ~= '' then
  redis.call('HSET', key, '@t', ARGV[3])
  redis.call('HDEL', key, '@tenant')
end
bump(0)
return 1
`)

// nameLua is the Lua the scripts read and write a view's name with.
// readName(key) returns the name as nameField holds it (nameCode), the
// ms of the domain event that gave it (0: a scan) and whether it is in
// oldNameField, read as nameCode would write it; nil when the view has
// none. writeName(key, name, ms) sets nameField, ms in base 36, and drops
// oldNameField.
var nameLua = `
local function base36(n)
  if n < 0 then return '-' .. base36(-n) end
  local digits, s = '0123456789abcdefghijklmnopqrstuvwxyz', ''
  repeat
    local d = n % 36
    s = string.sub(digits, d + 1, d + 1) .. s
    n = (n - d) / 36
  until n == 0
  return s
end
local function readName(key)
  local v, old = redis.call('HGET', key, '` + nameField + `'), false
  if not v then
    v, old = redis.call('HGET', key, '` + oldNameField + `'), true
    if not v then return nil end
  end
  local sep = string.find(v, '|', 1, true)
  local name, ms = string.sub(v, 1, sep - 1), string.sub(v, sep + 1)
  if not old then return name, tonumber(ms, 36), false end
  return string.match(name, '^([^:]+):` + strconv.Itoa(domainname.DefaultPort) + `$') or name, tonumber(ms), true
end
local function writeName(key, name, ms)
  redis.call('HSET', key, '` + nameField + `', name .. '|' .. base36(ms))
  redis.call('HDEL', key, '` + oldNameField + `')
end
`

// nameCode is a view's name "host:port" as nameField holds it: the host
// alone for the default port, unless the host holds a ":" (an IPv6
// address), whose port is always written (readName in nameLua reads
// oldNameField alike).
func nameCode(name string) string {
	host, ok := strings.CutSuffix(name, ":"+strconv.Itoa(domainname.DefaultPort))
	if ok && host != "" && !strings.Contains(host, ":") {
		return host
	}
	return name
}

// nameOfCode reads nameCode.
func nameOfCode(code string) string {
	if code != "" && !strings.Contains(code, ":") {
		return domainname.Key(code, domainname.DefaultPort)
	}
	return code
}

// viewName is the "host:port" a view's name field names ("<nameCode>|<ms,
// base 36>", or oldNameField's "<host:port>|<ms>"); "" for none.
func viewName(all map[string]string) string {
	if v, ok := all[nameField]; ok {
		code, _, _ := strings.Cut(v, "|")
		return nameOfCode(code)
	}
	name, _, _ := strings.Cut(all[oldNameField], "|")
	return name
}

// call is one script invocation derived from an event.
type call struct {
	script *redis.Script
	keys   []string
	args   []any
	// domainID is the domain whose view the call changes, for the
	// evaluator; "" for a call on no domain's view.
	domainID string
	// regDomain is the registrable domain whose registration the call
	// records, for the fan-out to the domains under it.
	regDomain string
}

// viewCall is a call of script on a domain's expiration view and version.
func viewCall(script *redis.Script, domainID string, args ...any) *call {
	return &call{script: script, domainID: domainID, keys: []string{ViewKey(domainID), VersionKey(domainID)}, args: args}
}

// plan turns an event into the script calls that apply it, in order; none
// for events the views do not use or that can never be applied (logged).
func plan(e events.Envelope, logger *zap.Logger) []*call {
	switch e.Name {
	case events.ScanCompleted:
		// A value that does not fit its field (a port of 70000, a chain
		// of 300) refuses the event as a whole, as in the sink.
		p, err := events.DecodeScanCompleted(e)
		if err != nil {
			logger.Error("dropping undecodable scan event", zap.String("event_id", e.EventID.String()), zap.Error(err))
			return nil
		}
		if p.DomainID == "" {
			p.DomainID = e.AggregateID
		}
		if p.DomainID == "" || p.Region == "" || strings.Contains(p.Region, "|") || strings.HasPrefix(p.Region, metaPrefix) ||
			strings.HasPrefix(p.Region, leafPrefix) || slices.Contains(metaFields, metaPrefix+p.Region) {
			logger.Error("dropping scan event with bad domain id or region",
				zap.String("event_id", e.EventID.String()), zap.String("domain_id", p.DomainID), zap.String("region", p.Region))
			return nil
		}
		finished := p.FinishedAt
		if finished.IsZero() {
			finished = e.OccurredAt
		}
		name := ""
		if p.Host != "" {
			name = nameCode(domainname.Key(p.Host, portOr443(p.Port)))
		}
		failed := "0"
		for _, r := range p.Results {
			if r.Outcome != events.OutcomeOK {
				failed = "1"
			}
		}
		ms, id := encodeMark(finished, e.EventID)
		args := append([]any{p.Region, ms, id, name, tenantCode(e.TenantID), failed, e.EventID.String()}, encodeResults(p.Region, p.Host, p.Port, finished, e.EventID, p.Results)...)
		return []*call{viewCall(applyScanScript, p.DomainID, args...)}
	case events.DomainAdded:
		var p events.DomainAddedV1
		if err := e.Decode(&p); err != nil {
			logger.Error("dropping undecodable domain event", zap.String("event_id", e.EventID.String()), zap.Error(err))
			return nil
		}
		return nameCalls(e, p.DomainID, p.Host, p.Port, logger)
	case events.DomainUpdated:
		var p events.DomainUpdatedV1
		if err := e.Decode(&p); err != nil {
			logger.Error("dropping undecodable domain event", zap.String("event_id", e.EventID.String()), zap.Error(err))
			return nil
		}
		return nameCalls(e, p.DomainID, p.Host, p.Port, logger)
	case events.DomainRemoved:
		var p events.DomainRemovedV1
		if err := e.Decode(&p); err != nil {
			logger.Error("dropping undecodable domain event", zap.String("event_id", e.EventID.String()), zap.Error(err))
			return nil
		}
		if p.DomainID == "" {
			p.DomainID = e.AggregateID
		}
		if p.DomainID == "" {
			logger.Error("dropping domain.removed without domain id", zap.String("event_id", e.EventID.String()))
			return nil
		}
		calls := []*call{viewCall(applyRemovedScript, p.DomainID, e.OccurredAt.UnixMilli())}
		if c := indexCall("leave", p.DomainID, p.Host, e.OccurredAt); c != nil {
			calls = append(calls, c)
		}
		return calls
	case events.RegistrationLookedUp:
		r, err := DecodeRegistration(e)
		if err != nil {
			logger.Error("dropping bad registration event", zap.String("event_id", e.EventID.String()), zap.Error(err))
			return nil
		}
		c, err := registrationCall(e, r)
		if err != nil {
			logger.Error("dropping registration event", zap.String("event_id", e.EventID.String()), zap.Error(err))
			return nil
		}
		return []*call{c}
	}
	return nil
}

// nameCalls are the calls recording the name a domain.added or
// domain.updated gives a domain: in its view, then in the index of its
// registrable domain (after the view, so that a fan-out reading the index
// finds the view naming the domain).
func nameCalls(e events.Envelope, domainID, host string, port int, logger *zap.Logger) []*call {
	if domainID == "" {
		domainID = e.AggregateID
	}
	if domainID == "" || host == "" {
		logger.Error("dropping domain event without domain id or host",
			zap.String("event_id", e.EventID.String()), zap.String("event", e.Name))
		return nil
	}
	calls := []*call{viewCall(applyNameScript, domainID, nameCode(domainname.Key(host, portOr443(port))), e.OccurredAt.UnixMilli(), tenantCode(e.TenantID))}
	if c := indexCall("join", domainID, host, e.OccurredAt); c != nil {
		calls = append(calls, c)
	}
	return calls
}

// portOr443 reads a missing port as the default, as the coordinator does.
func portOr443(port int) int {
	if port == 0 {
		return domainname.DefaultPort
	}
	return port
}

// applyBatch applies events in order in one round trip and returns the
// domains they were about, each once, in first-seen order, and the
// registrable domains whose lookups they recorded. Scripts are sent by
// hash; when Redis lost them (restart, SCRIPT FLUSH) the batch is applied
// one by one with Run, which reloads them. Both paths are safe to repeat.
func applyBatch(ctx context.Context, rdb redis.UniversalClient, evs []events.Envelope, logger *zap.Logger) (domains, regDomains []string, err error) {
	calls := make([]*call, 0, len(evs))
	seen := make(map[string]bool)
	for _, e := range evs {
		eventsTotal.WithLabelValues(e.Name).Inc()
		for _, c := range plan(e, logger) {
			calls = append(calls, c)
			if c.domainID != "" && !seen[c.domainID] {
				seen[c.domainID] = true
				domains = append(domains, c.domainID)
			}
			if c.regDomain != "" && !seen["reg|"+c.regDomain] {
				seen["reg|"+c.regDomain] = true
				regDomains = append(regDomains, c.regDomain)
			}
		}
	}
	if len(calls) == 0 {
		return nil, nil, nil
	}
	if len(calls) > 1 {
		pipe := rdb.Pipeline()
		for _, c := range calls {
			c.script.EvalSha(ctx, pipe, c.keys, c.args...)
		}
		_, err := pipe.Exec(ctx)
		if err == nil {
			return domains, regDomains, nil
		}
		if !redis.HasErrorPrefix(err, "NOSCRIPT") {
			return nil, nil, fmt.Errorf("apply %d events: %w", len(calls), err)
		}
	}
	for _, c := range calls {
		if err := c.script.Run(ctx, rdb, c.keys, c.args...).Err(); err != nil {
			return nil, nil, fmt.Errorf("apply to %s: %w", c.keys[0], err)
		}
	}
	return domains, regDomains, nil
}

// Expiration returns the expiration view of a domain, sorted by region and
// IP: empty when no scan arrived yet.
func Expiration(ctx context.Context, rdb redis.UniversalClient, domainID string) ([]ExpEntry, error) {
	all, err := rdb.HGetAll(ctx, ViewKey(domainID)).Result()
	if err != nil {
		return nil, fmt.Errorf("read expiration view of %s: %w", domainID, err)
	}
	return decodeView(domainID, all)
}

// View is a domain's expiration view with the name its entries are for.
type View struct {
	// Name is the "host:port" the entries are for; "" when no domain event
	// or scan named the view yet.
	Name string
	// Entries as Expiration returns them.
	Entries []ExpEntry
}

// For returns the entries if they are for name (host:port), else none: a
// renamed domain's view still holds the old name's results until the
// projector applies the rename.
func (v View) For(name string) []ExpEntry {
	if v.Name != "" && v.Name != name {
		return []ExpEntry{}
	}
	return v.Entries
}

// Views returns the expiration views of many domains, read in one
// pipeline, by domain id.
func Views(ctx context.Context, rdb redis.UniversalClient, domainIDs []string) (map[string]View, error) {
	out, _, err := readViews(ctx, rdb, domainIDs)
	return out, err
}

// readViews is Views, with each view's "@v" as read with it ("" for
// none).
func readViews(ctx context.Context, rdb redis.UniversalClient, domainIDs []string) (map[string]View, map[string]string, error) {
	out, versions := make(map[string]View, len(domainIDs)), make(map[string]string, len(domainIDs))
	if len(domainIDs) == 0 {
		return out, versions, nil
	}
	pipe := rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(domainIDs))
	for i, id := range domainIDs {
		cmds[i] = pipe.HGetAll(ctx, ViewKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, nil, fmt.Errorf("read %d expiration views: %w", len(domainIDs), err)
	}
	for i, id := range domainIDs {
		all := cmds[i].Val()
		entries, err := decodeView(id, all)
		if err != nil {
			return nil, nil, err
		}
		out[id], versions[id] = View{Name: viewName(all), Entries: entries}, all[versionField]
	}
	return out, versions, nil
}

// Snapshot is a domain's expiration view with its meta fields, read at one
// instant.
type Snapshot struct {
	DomainID string
	// Version is the view's version when read (0 before any change).
	Version int64
	// Name is the "host:port" the entries are for; "" when nothing named
	// the view yet.
	Name string
	// TenantID is the domain's tenant; "" when no event applied to the
	// view carried it.
	TenantID string
	// Removed is true when the domain was removed and no scan since
	// brought entries back.
	Removed bool
	// Entries as Expiration returns them.
	Entries []ExpEntry
	// Failures counts, per region, the consecutive scans up to the one
	// shown in which the name or an IP failed; regions without a failure
	// are absent.
	Failures map[string]int
}

// ReadSnapshot reads a domain's view and its version in one atomic step,
// so the version is exactly that of the entries.
func ReadSnapshot(ctx context.Context, rdb redis.UniversalClient, domainID string) (Snapshot, error) {
	snaps, err := ReadSnapshots(ctx, rdb, []string{domainID})
	if err != nil {
		return Snapshot{}, err
	}
	return snaps[0], nil
}

// snapshotScript reads a view and its version atomically. It is a script
// rather than a MULTI over all domains because each domain's keys live in
// their own Redis Cluster slot; the calls for many domains are pipelined.
//
// KEYS: view, version. Returns {HGETALL view, GET version}.
const snapshotScript = `return {redis.call('HGETALL', KEYS[1]), redis.call('GET', KEYS[2])}`

// ReadSnapshots reads many domains' snapshots, each atomically, in one
// round trip, in the order of domainIDs.
func ReadSnapshots(ctx context.Context, rdb redis.UniversalClient, domainIDs []string) ([]Snapshot, error) {
	cmds := make([]*redis.Cmd, len(domainIDs))
	_, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, id := range domainIDs {
			cmds[i] = pipe.EvalRO(ctx, snapshotScript, []string{ViewKey(id), VersionKey(id)})
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read %d snapshots: %w", len(domainIDs), err)
	}
	out := make([]Snapshot, len(domainIDs))
	for i, id := range domainIDs {
		res, err := cmds[i].Slice()
		if err != nil {
			return nil, fmt.Errorf("read snapshot of %s: %w", id, err)
		}
		if len(res) != 2 {
			return nil, fmt.Errorf("read snapshot of %s: got %d values, want 2", id, len(res))
		}
		flat, _ := res[0].([]any)
		fields := make(map[string]string, len(flat)/2)
		for j := 0; j+1 < len(flat); j += 2 {
			k, _ := flat[j].(string)
			v, _ := flat[j+1].(string)
			fields[k] = v
		}
		ver, _ := res[1].(string)
		if out[i], err = decodeSnapshot(id, fields, ver); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func decodeSnapshot(domainID string, fields map[string]string, ver string) (Snapshot, error) {
	snap := Snapshot{DomainID: domainID, Failures: map[string]int{}}
	var err error
	if snap.Version, err = viewVersion(fields[versionField], ver); err != nil {
		return Snapshot{}, fmt.Errorf("read snapshot of %s: %w", domainID, err)
	}
	if snap.Entries, err = decodeView(domainID, fields); err != nil {
		return Snapshot{}, err
	}
	snap.Name = viewName(fields)
	if snap.TenantID, err = viewTenant(fields); err != nil {
		return Snapshot{}, fmt.Errorf("read snapshot of %s: %w", domainID, err)
	}
	_, removed := fields[removedField]
	snap.Removed = removed && len(snap.Entries) == 0
	for f, v := range fields {
		if region, ok := strings.CutPrefix(f, failsPrefix); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return Snapshot{}, fmt.Errorf("read snapshot of %s: %s %q: %w", domainID, f, v, err)
			}
			if n > 0 {
				snap.Failures[region] = n
			}
		}
	}
	return snap, nil
}

// tenantCode is a tenant id as tenantField holds it (shortid.URL, as the
// coordinator's domain records keep it), "" for none.
func tenantCode(id string) string {
	if id == "" {
		return ""
	}
	return shortid.URL.Encode(id)
}

// viewTenant is the tenant a view's fields name: tenantField's, or
// oldTenantField's as it is; "" for none.
func viewTenant(fields map[string]string) (string, error) {
	s, ok := fields[tenantField]
	if !ok {
		return fields[oldTenantField], nil
	}
	id, err := shortid.URL.Decode(s)
	if err != nil {
		return "", fmt.Errorf("tenant: %w", err)
	}
	return id, nil
}

// decodeView turns a view hash into its entries sorted by region and IP.
func decodeView(domainID string, all map[string]string) ([]ExpEntry, error) {
	out, err := decodeEntries(domainID, all)
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Region != out[j].Region {
			return out[i].Region < out[j].Region
		}
		return out[i].IP < out[j].IP
	})
	return out, nil
}

// Rebuild throws the expiration views away and builds them again from
// every event replay yields, then the tenants' list indexes from them (the event store, in occurred order). Events
// still in the streams and not yet in the store come back when the running
// projectors apply them, because the views only ever move forward. The
// registration views and their indexes (registration.go) are kept: they
// only move forward too, so replaying lookups and domain events over them
// is harmless, and a lookup the event store lacks is not lost.
// RebuildFromSnapshot replays from a snapshot of the views instead.
func Rebuild(ctx context.Context, rdb redis.UniversalClient, replay func(ctx context.Context, fn func(events.Envelope) error) error, logger *zap.Logger) error {
	_, err := rebuild(ctx, rdb, replay, logger)
	return err
}

// rebuild is Rebuild, returning how many events it replayed.
func rebuild(ctx context.Context, rdb redis.UniversalClient, replay func(ctx context.Context, fn func(events.Envelope) error) error, logger *zap.Logger) (int, error) {
	logger = logger.Named("projector")
	start := time.Now()
	deleted, err := deleteViews(ctx, rdb)
	if err != nil {
		return 0, err
	}
	// Rebuilding replays history: alerts are not evaluated, since each
	// past snapshot would raise and resolve alerts long over. The next
	// scan of each domain has the engine look at the rebuilt view.
	applied, err := replayViews(ctx, rdb, replay, logger)
	if err != nil {
		return applied, fmt.Errorf("rebuild views: %w", err)
	}
	logger.Info("views rebuilt", zap.Int("views_deleted", deleted), zap.Int("events", applied),
		zap.Duration("took", time.Since(start)))
	if _, err := BuildIndexes(ctx, rdb, true, logger); err != nil {
		return applied, fmt.Errorf("rebuild list indexes: %w", err)
	}
	return applied, nil
}

// deleteViews deletes every view:exp:* key but its version
// (deleteViewScript) and returns how many.
func deleteViews(ctx context.Context, rdb redis.UniversalClient) (int, error) {
	var deleted atomic.Int64
	// One call per key, pipelined: views live in as many Redis Cluster
	// slots as there are domains.
	err := scanViewKeys(ctx, rdb, func(ctx context.Context, c redis.UniversalClient, keys []string) error {
		pipe := c.Pipeline()
		for _, k := range keys {
			deleteViewScript.Eval(ctx, pipe, []string{k})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		deleted.Add(int64(len(keys)))
		return nil
	})
	if err != nil {
		return int(deleted.Load()), fmt.Errorf("delete views: %w", err)
	}
	return int(deleted.Load()), nil
}
