// Package alerts turns a domain's expiration view into alerts: the engine
// the projector runs after each batch, the per-tenant alert settings, and
// the alert list the API reads.
//
// After the projector applies a batch, the engine reads each domain's view
// snapshot (projector.ReadSnapshot: entries and version in one MULTI),
// decides which conditions hold (evaluate), compares them with the
// domain's alert state (plan) and applies the difference in one Lua script
// that also XADDs alert.raised.v1 and alert.resolved.v1 to the events
// stream. The script is a compare-and-set: it applies only if the state
// still has the version the plan was made from and the snapshot is newer
// than the one last evaluated. So, whatever the number of projector
// replicas and redeliveries, a condition crossing is raised once: a
// replica holding an older snapshot changes nothing, two replicas holding
// the same snapshot compute the same change and only the first applies
// it, and a retried script finds its own version already there.
//
// Redis layout:
//
// ({tNN} is the tenant's hash tag, events.TenantTag; see tenantKey)
//
//	domain:{tNN}:<domain_id>   the domain's record (accounts.DomainKey),
//	                           which also holds its alert state in fields
//	                           beginning with "@" (accounts.AlertFieldPrefix):
//	                           "@v" (view version last evaluated), "@n"
//	                           (host:port the alerts are for, only when not
//	                           the record's: a rename or removal writes
//	                           the old one, accounts.AlertNameField, and
//	                           the engine drops it once the record's name
//	                           is the state's again), "@c|<condition>" -> JSON of the
//	                           active alert, "@l" -> the leaf last known on
//	                           each IP ("<sha>=<ip>,<ip> <sha>=<ip>"), "@a" ->
//	                           the leaves cert_changed told of ("<sha> <sha>"),
//	                           both continued in "@l1", "@l2"... past 64 bytes
//	                           so that the hash stays a listpack; <sha> is the
//	                           first 16 hex digits of a leaf's SHA-256.
//	                           Written only while the record exists
//	                           (its "host" field, accounts.PresenceField); a
//	                           removal leaves these fields, the engine
//	                           resolves the alerts from them and drops them,
//	                           and with them the hash.
//	alerts:state:{tNN}:<domain_id>   the state's key before it moved into the
//	                           record (oldStateKey): "@ver", "@name", "c|...",
//	                           "l", "a", and before the short layout "@tenant",
//	                           "leaf|<ip>" -> SHA-256, "ann|<sha256>" -> 1.
//	                           Read while the record holds no state, moved
//	                           into it and deleted at the next evaluation
//	                           (plan.go).
//	alerts:tenant:{tNN}:<tenant>     zset of alert ids by triggered ms
//	alerts:tenant:{tNN}:<tenant>:domain:<domain_id>   the same, one domain's
//	alert:{tNN}:<alert_id>           hash: "raised" (JSON AlertRaisedV1),
//	                           "resolved_at" (ms), "reason"
//	alerts:settings:{tNN}:<tenant>   JSON Settings (absent: DefaultSettings)
//	alerts:tenant:{tNN}:<tenant>:open  hash: alert type -> open alerts of
//	                           that type, "@v" once built (counts.go)
package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/apiserver/domainname"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/managedcert"
	"github.com/certfleet/certfleet/internal/presence"
)

// Every key carries the tenant's hash tag (events.TenantTag), so the
// reconcile script's keys, the domain's record and the tenant's event
// stream share one Redis Cluster slot. The engine knows a domain's tenant
// from its view snapshot, the API from the caller's key.
//
// oldStateKey held a domain's alert state before the domain's record did
// (plan.go, fromOldKey).
func oldStateKey(tenantID, domainID string) string {
	return "alerts:state:" + events.TenantTag(tenantID) + ":" + domainID
}
func tenantKey(tenantID string) string {
	return "alerts:tenant:" + events.TenantTag(tenantID) + ":" + tenantID
}
func alertKey(tenantID, alertID string) string {
	return "alert:" + events.TenantTag(tenantID) + ":" + alertID
}
func settingsKey(tenantID string) string {
	return "alerts:settings:" + events.TenantTag(tenantID) + ":" + tenantID
}
func tenantDomainKey(tenantID, domainID string) string {
	return tenantKey(tenantID) + ":domain:" + domainID
}
func openKey(tenantID string) string {
	return tenantKey(tenantID) + ":open"
}

// Config configures the engine.
type Config struct {
	// MismatchWindow: two regions whose scans finished within it of each
	// other and saw different leaves on one IP raise region_mismatch.
	// Default 10m.
	MismatchWindow time.Duration
	// CriticalDays: an ssl_expiry alert for a threshold of at most this
	// many days is critical, a looser one warning. Default 7.
	CriticalDays int
	// MaxLen caps the events stream (XADD MAXLEN ~). Default
	// events.DefaultMaxLen.
	MaxLen int64
	// Now dates the resolutions of a removed domain, whose view has no
	// scan to date them by. Default time.Now.
	Now func() time.Time
	// DeployGrace: a managed certificate that scans still do not see
	// served this long after its issuance raises certificate_not_deployed.
	// Default 24h.
	DeployGrace time.Duration
	// RenewalFailAfter: acme_renewal_failed is raised after this many
	// failed orders in a row (or at the first once the certificate is
	// within CriticalDays of expiry). Default 3.
	RenewalFailAfter int
	// RegionStaleAfter: a region none of whose agents said it was alive
	// for this long before a view's latest scan is stale there: its
	// results no longer count in region_mismatch and scan_failing (its
	// last scans are all it has, and they only age). Default 10m.
	RegionStaleAfter time.Duration
}

func (c *Config) setDefaults() {
	if c.MismatchWindow == 0 {
		c.MismatchWindow = 10 * time.Minute
	}
	if c.CriticalDays == 0 {
		c.CriticalDays = 7
	}
	if c.MaxLen == 0 {
		c.MaxLen = events.DefaultMaxLen
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.DeployGrace == 0 {
		c.DeployGrace = 24 * time.Hour
	}
	if c.RenewalFailAfter == 0 {
		c.RenewalFailAfter = 3
	}
	if c.RegionStaleAfter == 0 {
		c.RegionStaleAfter = 10 * time.Minute
	}
}

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.MismatchWindow < 0 {
		errs = append(errs, fmt.Errorf("mismatch window must not be negative, got %s", c.MismatchWindow))
	}
	if c.RegionStaleAfter < 0 {
		errs = append(errs, fmt.Errorf("region stale after must not be negative, got %s", c.RegionStaleAfter))
	}
	if c.CriticalDays < 0 {
		errs = append(errs, fmt.Errorf("critical days must not be negative, got %d", c.CriticalDays))
	}
	if c.MaxLen < 0 {
		errs = append(errs, fmt.Errorf("max len must not be negative, got %d", c.MaxLen))
	}
	return errors.Join(errs...)
}

// Settings are a tenant's alert settings.
type Settings struct {
	// ExpiryThresholdsDays: ssl_expiry is raised when a certificate comes
	// within each of these many days of its expiry. 1 to 10 distinct
	// values from 1 to 365.
	ExpiryThresholdsDays []int `json:"expiry_thresholds_days"`
	// ScanFailingAfter: scan_failing is raised after this many failed
	// scans in a row from a region, 1 to 20.
	ScanFailingAfter int `json:"scan_failing_after"`
	// DomainExpiryThresholdsDays: domain_expiry is raised when the
	// registration of the domain's registrable domain comes within each
	// of these many days of its expiry; limits as ExpiryThresholdsDays.
	// Absent in settings stored before it existed: the default.
	DomainExpiryThresholdsDays []int `json:"domain_expiry_thresholds_days"`
	// ExpiryMetrics opts the tenant in to the API server's per-certificate
	// expiry gauge on /metrics (certfleet_certificate_expiry_timestamp_seconds,
	// labelled with the tenant and the domain). Default off.
	ExpiryMetrics bool `json:"expiry_metrics"`
}

// ExpiryMetricsKey is the set of tenants whose settings have
// ExpiryMetrics on, kept with the settings.
const ExpiryMetricsKey = "alerts:expiry-metrics"

// DefaultSettings are a tenant's settings until it changes them.
func DefaultSettings() Settings {
	return Settings{ExpiryThresholdsDays: []int{30, 14, 7, 3, 1}, ScanFailingAfter: 3,
		DomainExpiryThresholdsDays: []int{60, 30, 14, 7, 1}}
}

// Limits of the settings.
const (
	MaxThresholds    = 10
	MaxThresholdDays = 365
	MaxFailingAfter  = 20
)

// SettingsError is a setting out of its limits; the message names it.
type SettingsError struct{ Msg string }

func (e *SettingsError) Error() string { return e.Msg }

// Validate reports the first setting out of its limits as a
// *SettingsError.
func (s Settings) Validate() error {
	if err := checkThresholds("expiry_thresholds_days", s.ExpiryThresholdsDays); err != nil {
		return err
	}
	// nil is the default (settings written before the field existed);
	// an empty list is refused like the SSL one.
	if s.DomainExpiryThresholdsDays != nil {
		if err := checkThresholds("domain_expiry_thresholds_days", s.DomainExpiryThresholdsDays); err != nil {
			return err
		}
	}
	if s.ScanFailingAfter < 1 || s.ScanFailingAfter > MaxFailingAfter {
		return &SettingsError{fmt.Sprintf("scan_failing_after must be from 1 to %d, got %d", MaxFailingAfter, s.ScanFailingAfter)}
	}
	return nil
}

// checkThresholds reports a list of thresholds out of its limits.
func checkThresholds(field string, days []int) error {
	n := len(days)
	if n < 1 || n > MaxThresholds {
		return &SettingsError{fmt.Sprintf("%s must hold 1 to %d values, got %d", field, MaxThresholds, n)}
	}
	seen := map[int]bool{}
	for _, d := range days {
		if d < 1 || d > MaxThresholdDays {
			return &SettingsError{fmt.Sprintf("%s values must be from 1 to %d, got %d", field, MaxThresholdDays, d)}
		}
		if seen[d] {
			return &SettingsError{fmt.Sprintf("%s values must be distinct, got %d twice", field, d)}
		}
		seen[d] = true
	}
	return nil
}

// normalized sorts the thresholds, largest first.
func (s Settings) normalized() Settings {
	for _, th := range []*[]int{&s.ExpiryThresholdsDays, &s.DomainExpiryThresholdsDays} {
		*th = slices.Clone(*th)
		slices.SortFunc(*th, func(a, b int) int { return b - a })
	}
	return s
}

// Engine evaluates and stores alerts. It is a projector.Evaluator.
type Engine struct {
	cfg    Config
	rdb    redis.UniversalClient
	logger *zap.Logger
}

// New returns an engine reading and writing through rdb.
func New(cfg Config, rdb redis.UniversalClient, logger *zap.Logger) (*Engine, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("alerts config: %w", err)
	}
	if rdb == nil {
		return nil, errors.New("alerts: redis client is nil")
	}
	return &Engine{cfg: cfg, rdb: rdb, logger: logger.Named("alerts")}, nil
}

// Settings returns tenantID's settings, the defaults when it set none.
func (e *Engine) Settings(ctx context.Context, tenantID string) (Settings, error) {
	raw, err := e.rdb.Get(ctx, settingsKey(tenantID)).Result()
	if errors.Is(err, redis.Nil) {
		return DefaultSettings(), nil
	}
	if err != nil {
		return Settings{}, fmt.Errorf("read alert settings of %s: %w", tenantID, err)
	}
	var s Settings
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return Settings{}, fmt.Errorf("decode alert settings of %s: %w", tenantID, err)
	}
	if s.DomainExpiryThresholdsDays == nil {
		s.DomainExpiryThresholdsDays = DefaultSettings().DomainExpiryThresholdsDays
	}
	return s, nil
}

// PutSettings replaces tenantID's settings (thresholds stored largest
// first) and returns them. They apply from each domain's next evaluation.
func (e *Engine) PutSettings(ctx context.Context, tenantID string, s Settings) (Settings, error) {
	if err := s.Validate(); err != nil {
		return Settings{}, err
	}
	if s.DomainExpiryThresholdsDays == nil {
		s.DomainExpiryThresholdsDays = DefaultSettings().DomainExpiryThresholdsDays
	}
	s = s.normalized()
	body, err := json.Marshal(s)
	if err != nil {
		return Settings{}, fmt.Errorf("marshal alert settings: %w", err)
	}
	// Two slots in a Cluster, so no MULTI: a failure between the two
	// leaves the set as it was, and the next PutSettings mends it.
	_, err = e.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.Set(ctx, settingsKey(tenantID), body, 0)
		if s.ExpiryMetrics {
			pipe.SAdd(ctx, ExpiryMetricsKey, tenantID)
		} else {
			pipe.SRem(ctx, ExpiryMetricsKey, tenantID)
		}
		return nil
	})
	if err != nil {
		return Settings{}, fmt.Errorf("write alert settings of %s: %w", tenantID, err)
	}
	e.logger.Info("alert settings changed", zap.String("tenant_id", tenantID),
		zap.Ints("expiry_thresholds_days", s.ExpiryThresholdsDays), zap.Int("scan_failing_after", s.ScanFailingAfter),
		zap.Ints("domain_expiry_thresholds_days", s.DomainExpiryThresholdsDays))
	return s, nil
}

// staleRetries bounds how often one domain's evaluation starts over
// because another replica changed its alert state in between; each retry
// means a competing evaluation succeeded.
const staleRetries = 8

// reconcileScript applies a plan to a domain's alert state if the state is
// still at the version the plan was made from and the plan's snapshot is
// newer, XADDing the plan's events in the same step.
//
// The state is the record's alert fields; the version is the record's
// "@v", or while the record holds none the old key's "@ver" (decodeState
// reads the same). Every applied plan deletes the old key: a state read
// from it is written whole into the record (plan), in this same step.
//
// KEYS (all in the tenant's slot): the domain's record (accounts), the
// tenant's event stream, alerts:tenant:<tenant>,
// alerts:tenant:<tenant>:domain:<domain>, alerts:tenant:<tenant>:open,
// the domain's old state key (oldStateKey), then alert:<id> of every
// raised alert and then of every resolved one, in the plan's order.
// ARGV: version read, snapshot version, maxlen, plan JSON {"del": [field],
// "set": [field, value, ...], "raised": [[triggered ms, JSON, alert id,
// type counted open or "" for a notice]], "resolved": [[resolved ms,
// reason, type]], "events": [[stream field, value, ...]], "drop": true
// for a removed domain}. The open counts change only once built
// (OpenCounts builds them), and only with a record that changes: a
// retried plan counts nothing twice. A plan that does not drop applies
// only while the domain's record exists (its presence field), so that an
// evaluation racing the domain's removal never writes its state again nor
// makes a hash of alert fields alone. A drop deletes the alert fields and
// nothing else of the hash. Returns "ok", "stale" (the state moved or the
// record went: plan again) or "old" (a snapshot as new was evaluated
// already).
var reconcileScript = redis.NewScript(dropAlertFieldsLua + domainindex.RecordPortLua + `
local v = redis.call('HGET', KEYS[1], '` + verField + `')
if not v then v = redis.call('HGET', KEYS[6], '` + oldVerField + `') end
local cur = tonumber(v or '0')
if cur ~= tonumber(ARGV[1]) then return 'stale' end
if tonumber(ARGV[2]) <= cur then return 'old' end
local p = cjson.decode(ARGV[4])
if not p.drop and redis.call('HEXISTS', KEYS[1], '` + accounts.PresenceField + `') == 0 then return 'stale' end
if not p.drop and p.record then
  local r = redis.call('HMGET', KEYS[1], '` + accounts.PresenceField + `', 'port')
  if (r[1] or '') .. ':' .. record_port(r[2]) ~= p.record then return 'stale' end
end
for _, f in ipairs(p.del) do redis.call('HDEL', KEYS[1], f) end
for i = 1, #p.set, 2 do redis.call('HSET', KEYS[1], p.set[i], p.set[i + 1]) end
local counted = redis.call('HEXISTS', KEYS[5], '@v') == 1
local k = 7
for _, r in ipairs(p.raised) do
  if redis.call('EXISTS', KEYS[k]) == 0 then
    redis.call('HSET', KEYS[k], 'raised', r[2])
    redis.call('ZADD', KEYS[3], r[1], r[3])
    redis.call('ZADD', KEYS[4], r[1], r[3])
    if counted and r[4] ~= '' then redis.call('HINCRBY', KEYS[5], r[4], 1) end
  end
  k = k + 1
end
for _, r in ipairs(p.resolved) do
  if redis.call('HEXISTS', KEYS[k], 'resolved_at') == 0 then
    if counted and redis.call('HEXISTS', KEYS[k], 'raised') == 1 then
      redis.call('HINCRBY', KEYS[5], r[3], -1)
    end
    redis.call('HSET', KEYS[k], 'resolved_at', r[1], 'reason', r[2])
  end
  k = k + 1
end
for _, ev in ipairs(p.events) do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ev))
end
if p.drop then
  drop_alert_fields(KEYS[1])
else
  redis.call('HSET', KEYS[1], '` + verField + `', ARGV[2])
end
redis.call('DEL', KEYS[6])
return 'ok'
`)

// dropAlertFieldsLua is drop_alert_fields(key): it deletes the alert
// fields of a domain's record hash (accounts.AlertFieldPrefix), and
// nothing else, and returns how many there were. A record removed before
// goes with them.
var dropAlertFieldsLua = `
local function drop_alert_fields(key)
  local fs = {}
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if string.sub(f, 1, ` + strconv.Itoa(len(accounts.AlertFieldPrefix)) + `) == '` + accounts.AlertFieldPrefix + `' then fs[#fs + 1] = f end
  end
  if #fs > 0 then redis.call('HDEL', key, unpack(fs)) end
  return #fs
end
`

// scriptPlan is reconcileScript's plan argument.
type scriptPlan struct {
	Del      []string   `json:"del"`
	Set      []string   `json:"set"`
	Raised   [][]string `json:"raised"`
	Resolved [][]string `json:"resolved"`
	Events   [][]any    `json:"events"`
	Drop     bool       `json:"drop,omitempty"`
	// Record is the host:port the record must still have (change.record).
	Record string `json:"record,omitempty"`
}

// Evaluate brings the alerts of each domain in line with its view. The
// batch is read in three round trips (snapshots, states, settings) and
// reconciled in a fourth; a domain whose state another replica changed in
// between is then evaluated again on its own.
func (e *Engine) Evaluate(ctx context.Context, domainIDs []string) error {
	if len(domainIDs) == 0 {
		return nil
	}
	snaps, err := projector.ReadSnapshots(ctx, e.rdb, domainIDs)
	if err != nil {
		return err
	}
	pipe := e.rdb.Pipeline()
	reads := make([]domainReads, len(domainIDs))
	for i := range domainIDs {
		reads[i] = queueDomainReads(ctx, pipe, snaps[i])
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("read alert state of %d domains: %w", len(domainIDs), err)
	}
	regs, err := e.registrations(ctx, snaps)
	if err != nil {
		return err
	}
	managed, err := e.managedCerts(ctx, snaps)
	if err != nil {
		return err
	}
	regions, err := presence.All(ctx, e.rdb)
	if err != nil {
		return err
	}
	settings := e.settingsCache()
	jobs := make([]*job, 0, len(domainIDs))
	for i := range domainIDs {
		j, err := e.prepare(ctx, snaps[i], reads[i], regs, managed[snaps[i].DomainID], regions, settings)
		if err != nil {
			if err := e.skip(domainIDs[i], err); err != nil {
				return err
			}
			continue
		}
		if j != nil {
			jobs = append(jobs, j)
		}
	}
	if len(jobs) == 0 {
		return nil
	}
	pipe = e.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(jobs))
	for i, j := range jobs {
		cmds[i] = reconcileScript.EvalSha(ctx, pipe, j.keys, j.args...)
	}
	_, err = pipe.Exec(ctx)
	if err != nil && !redis.HasErrorPrefix(err, "NOSCRIPT") {
		return fmt.Errorf("reconcile alerts of %d domains: %w", len(jobs), err)
	}
	for i, j := range jobs {
		res, cerr := cmds[i].Text()
		switch {
		case cerr != nil || res == "stale":
			// Redis lost the script, or another replica was first:
			// this domain alone, with Run and fresh reads.
			if err := e.evaluateDomain(ctx, j.snap.DomainID); err != nil {
				return err
			}
		case res == "ok":
			e.logApplied(j)
		case res != "old":
			return fmt.Errorf("reconcile alerts of %s: unexpected script result %q", j.snap.DomainID, res)
		}
	}
	return nil
}

// managedCerts reads the managed certificates of the snapshots' names (on
// port 443: certificates are ordered for names), by domain id.
func (e *Engine) managedCerts(ctx context.Context, snaps []projector.Snapshot) (map[string]*managedcert.Certificate, error) {
	pipe := e.rdb.Pipeline()
	cmds := map[string]*redis.StringCmd{}
	for _, s := range snaps {
		host, port := splitName(s.Name)
		if s.TenantID == "" || host == "" || port != domainname.DefaultPort {
			continue
		}
		cmds[s.DomainID] = pipe.HGet(ctx, managedcert.CertKey(s.TenantID, host), "rec")
	}
	if len(cmds) == 0 {
		return nil, nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read managed certificates: %w", err)
	}
	out := make(map[string]*managedcert.Certificate, len(cmds))
	for id, cmd := range cmds {
		raw, err := cmd.Result()
		if err != nil {
			continue // not managed
		}
		var c managedcert.Certificate
		if err := json.Unmarshal([]byte(raw), &c); err != nil {
			e.logger.Warn("undecodable managed certificate", zap.String("domain_id", id), zap.Error(err))
			continue
		}
		out[id] = &c
	}
	return out, nil
}

// registrations reads the registration views of the snapshots' names. A
// snapshot read before a lookup's fan-out may meet the lookup here: the
// fan-out bumps the version after writing the lookup, so the evaluation
// of that later version sees it too, and the views only move forward.
func (e *Engine) registrations(ctx context.Context, snaps []projector.Snapshot) (map[string]projector.Registration, error) {
	domains := make([]string, len(snaps))
	for i, s := range snaps {
		domains[i] = projector.RegistrableOf(s.Name)
	}
	return projector.ReadRegistrations(ctx, e.rdb, domains)
}

// settingsCache reads each tenant's settings once per evaluation.
func (e *Engine) settingsCache() func(ctx context.Context, tenant string) (Settings, error) {
	cache := map[string]Settings{}
	return func(ctx context.Context, tenant string) (Settings, error) {
		if s, ok := cache[tenant]; ok {
			return s, nil
		}
		s, err := e.Settings(ctx, tenant)
		if err != nil {
			return Settings{}, err
		}
		s = s.normalized()
		cache[tenant] = s
		return s, nil
	}
}

// domainReads are the reads of a domain's slot an evaluation plans from.
type domainReads struct {
	record *redis.MapStringStringCmd // the domain's record, with its alert state
	old    *redis.MapStringStringCmd // the state's old key (oldStateKey)
	held   *redis.IntCmd             // positive when a held key added it
}

// queueDomainReads queues on pipe the reads of snap's domain. The state
// lives in the tenant's slot: a view that names no tenant has no state to
// read and is not evaluated (prepare).
func queueDomainReads(ctx context.Context, pipe redis.Pipeliner, snap projector.Snapshot) domainReads {
	return domainReads{
		record: pipe.HGetAll(ctx, accounts.DomainKey(snap.TenantID, snap.DomainID)),
		old:    pipe.HGetAll(ctx, oldStateKey(snap.TenantID, snap.DomainID)),
		held:   accounts.HeldCmd(ctx, pipe, snap.TenantID, snap.DomainID),
	}
}

// job is one domain's planned change with its script call.
type job struct {
	snap    projector.Snapshot
	tenant  string
	readVer int64
	ch      change
	keys    []string
	args    []any
}

// prepare plans one domain's change from its snapshot and the reads of
// its slot; nil when there is nothing to do (the snapshot is not newer
// than the one evaluated, no tenant is known, the domain was removed and
// has no state left, or the domain is held: a claimed key the account has
// not approved added it, accounts/held.go). A held domain's state does
// not move, so its first scan after the approval is evaluated.
//
// A domain whose record is gone was removed, whatever its view says (a
// scan applied after the removal puts entries back in it): its alerts are
// resolved and its state dropped, and a state already dropped is not
// written again.
func (e *Engine) prepare(ctx context.Context, snap projector.Snapshot, r domainReads,
	regs map[string]projector.Registration, managed *managedcert.Certificate, regions []presence.Region,
	settings func(context.Context, string) (Settings, error)) (*job, error) {
	tenant := snap.TenantID
	if tenant == "" {
		// Only events without a tenant reached this view (a tool or a
		// test feeding scans by hand): no one to alert.
		e.logger.Warn("not evaluating alerts of a domain without tenant", zap.String("domain_id", snap.DomainID))
		return nil, nil
	}
	rec := r.record.Val()
	if !accounts.RecordExists(rec) {
		snap.Removed = true
	}
	st, err := decodeState(snap.DomainID, rec, r.old.Val())
	if err != nil {
		return nil, unusable{err}
	}
	if snap.Removed && st.empty {
		return nil, nil
	}
	if snap.Version <= st.ver || r.held.Val() > 0 {
		return nil, nil
	}
	set, err := settings(ctx, tenant)
	if err != nil {
		return nil, err
	}
	name := snap.Name
	if name == "" {
		name = st.name
	}
	f := facts{reg: regs[projector.RegistrableOf(name)], managed: managed, regions: regions}
	ch, err := plan(st, snap, f, tenant, set, e.cfg, e.cfg.Now())
	if err != nil {
		return nil, unusable{err}
	}
	j := &job{snap: snap, tenant: tenant, readVer: st.ver, ch: ch}
	if j.keys, j.args, err = e.scriptCall(snap.DomainID, tenant, st.ver, snap.Version, ch); err != nil {
		return nil, unusable{err}
	}
	return j, nil
}

// unusable is a domain whose alerts cannot be evaluated whatever the
// retries (a state that does not decode): it is logged and skipped, so
// that one domain never holds the projector's batches back.
type unusable struct{ err error }

func (u unusable) Error() string { return u.err.Error() }
func (u unusable) Unwrap() error { return u.err }

// skip logs and drops an unusable domain's error; other errors pass.
func (e *Engine) skip(domainID string, err error) error {
	var u unusable
	if errors.As(err, &u) {
		e.logger.Error("skipping alerts of a domain that cannot be evaluated", zap.String("domain_id", domainID), zap.Error(err))
		return nil
	}
	return err
}

func (e *Engine) logApplied(j *job) {
	for _, r := range j.ch.raised {
		e.logger.Info("alert raised", zap.String("tenant_id", j.tenant), zap.String("domain_id", j.snap.DomainID),
			zap.String("alert_id", r.payload.AlertID), zap.String("alert_type", r.payload.AlertType),
			zap.String("severity", r.payload.Severity), zap.Int64("view_version", j.snap.Version))
	}
	for _, r := range j.ch.resolved {
		e.logger.Info("alert resolved", zap.String("tenant_id", j.tenant), zap.String("domain_id", j.snap.DomainID),
			zap.String("alert_id", r.payload.AlertID), zap.String("alert_type", r.payload.AlertType),
			zap.String("reason", r.payload.Reason), zap.Int64("view_version", j.snap.Version))
	}
}

// evaluateDomain plans and applies one domain's change, planning again
// when another replica changed the state in between.
func (e *Engine) evaluateDomain(ctx context.Context, domainID string) error {
	settings := e.settingsCache()
	for range staleRetries {
		snap, err := projector.ReadSnapshot(ctx, e.rdb, domainID)
		if err != nil {
			return err
		}
		pipe := e.rdb.Pipeline()
		reads := queueDomainReads(ctx, pipe, snap)
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("read alert state of %s: %w", domainID, err)
		}
		regs, err := e.registrations(ctx, []projector.Snapshot{snap})
		if err != nil {
			return err
		}
		managed, err := e.managedCerts(ctx, []projector.Snapshot{snap})
		if err != nil {
			return err
		}
		regions, err := presence.All(ctx, e.rdb)
		if err != nil {
			return err
		}
		j, err := e.prepare(ctx, snap, reads, regs, managed[domainID], regions, settings)
		if err != nil || j == nil {
			return e.skip(domainID, err)
		}
		res, err := reconcileScript.Run(ctx, e.rdb, j.keys, j.args...).Text()
		if err != nil {
			return fmt.Errorf("reconcile alerts of %s: %w", domainID, err)
		}
		switch res {
		case "ok":
			e.logApplied(j)
			return nil
		case "old":
			return nil
		case "stale":
			continue
		default:
			return fmt.Errorf("reconcile alerts of %s: unexpected script result %q", domainID, res)
		}
	}
	return fmt.Errorf("reconcile alerts of %s: state changed %d times while evaluating", domainID, staleRetries)
}

// apply runs reconcileScript with ch, for tests that replay stale plans.
func (e *Engine) apply(ctx context.Context, domainID, tenant string, readVer, snapVer int64, ch change) (string, error) {
	keys, args, err := e.scriptCall(domainID, tenant, readVer, snapVer, ch)
	if err != nil {
		return "", err
	}
	res, err := reconcileScript.Run(ctx, e.rdb, keys, args...).Text()
	if err != nil {
		return "", fmt.Errorf("reconcile alerts of %s: %w", domainID, err)
	}
	return res, nil
}

// scriptCall is reconcileScript's keys and arguments for ch.
func (e *Engine) scriptCall(domainID, tenant string, readVer, snapVer int64, ch change) ([]string, []any, error) {
	sp := scriptPlan{Del: ch.del, Set: []string{}, Raised: [][]string{}, Resolved: [][]string{}, Events: [][]any{}, Drop: ch.drop, Record: ch.record}
	if sp.Del == nil {
		sp.Del = []string{}
	}
	for _, f := range slices.Sorted(maps.Keys(ch.set)) {
		sp.Set = append(sp.Set, f, ch.set[f])
	}
	keys := []string{accounts.DomainKey(tenant, domainID), events.EventStream(tenant), tenantKey(tenant),
		tenantDomainKey(tenant, domainID), openKey(tenant), oldStateKey(tenant, domainID)}
	for _, r := range ch.raised {
		body, err := json.Marshal(r.payload)
		if err != nil {
			return nil, nil, fmt.Errorf("marshal alert: %w", err)
		}
		keys = append(keys, alertKey(tenant, r.payload.AlertID))
		kind := r.payload.AlertType // counted open until resolved
		if r.payload.OneShot {
			kind = "" // a notice is never open
		}
		sp.Raised = append(sp.Raised, []string{strconv.FormatInt(r.payload.TriggeredAt.UnixMilli(), 10), string(body), r.payload.AlertID, kind})
		fields, err := r.event.StreamFields()
		if err != nil {
			return nil, nil, err
		}
		sp.Events = append(sp.Events, fields)
	}
	for _, r := range ch.resolved {
		keys = append(keys, alertKey(tenant, r.payload.AlertID))
		sp.Resolved = append(sp.Resolved, []string{strconv.FormatInt(r.payload.ResolvedAt.UnixMilli(), 10), r.payload.Reason, r.payload.AlertType})
		fields, err := r.event.StreamFields()
		if err != nil {
			return nil, nil, err
		}
		sp.Events = append(sp.Events, fields)
	}
	body, err := json.Marshal(sp)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal alert plan: %w", err)
	}
	return keys, []any{readVer, snapVer, e.cfg.MaxLen, string(body)}, nil
}
