// Package accounts is the command side of certfleet's KeyChest-compatible
// accounts: an account is an email address, API keys belong to exactly one
// account, and an account registers domains. Each command checks its
// invariant and appends its events to its tenant's event stream in one Lua
// script, so two API servers can never hand one key to two accounts nor
// add one domain twice, and the request can read its own write at once.
//
// Redis layout (owned by this package). {tNN} is events.TenantTag(tenant):
// every key of a tenant shares the slot of its stream, events.EventStream,
// so each script touches one Redis Cluster slot.
//
//	apikey:<sha256 hex of key>            hash {tenant_id, key_id, scopes, created_at, pending?, revoked_at?}
//	account:{tNN}:<tenant_id>             hash {email, created_at}
//	tenant:{tNN}:<tenant_id>:apikeys      hash key_id -> key hash (apikeys.go)
//	domain:{tNN}:<domain_id>              hash, see domains.go; its fields
//	                                      beginning with "@" are the alert
//	                                      engine's (AlertFieldPrefix)
//	tenant:{tNN}:<tenant_id>:ix:*         the list index (apiserver/domainindex),
//	                                      whose names and created_at the domain
//	                                      scripts keep in the same step: its
//	                                      ix:host maps host:port to the domain
//	                                      id, its ix:created lists the ids
//
// Keys themselves are never stored, only their SHA-256.
//
// Invariants across tenants. An email names one account by construction:
// the tenant id is a hash of the email (events.TenantID), so the account
// key lives in its tenant's slot. A key's hash naming one tenant is
// deployment-wide, so apikey:<hash> has no tenant tag and a key is
// registered by reserve-then-commit:
//
//  1. reserve: one script on apikey:<hash> claims it for the tenant with a
//     pending mark, or answers that it is another tenant's (taken) or
//     already this tenant's;
//  2. commit: one script in the tenant's slot lists the key, creates the
//     account if needed and appends the events; it writes nothing when the
//     key is listed already, so it can run any number of times;
//  3. finish: the pending mark is removed.
//
// A pending key does not authenticate. A crash after 1 or 2 leaves a
// pending reservation that names its tenant and key id: the tenant's retry
// (KeyChest claims send the same key again) finds it and completes 2 and 3
// under that key id; a generated key that was never handed out stays
// pending and unusable, and a commit refused for a missing account
// releases its reservation. Revocation runs the other way round: the
// record is marked revoked first (the key stops working at once), then the
// tenant's script unlists it and appends the event; a retry finishes it.
package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/domainindex"
	"github.com/certfleet/certfleet/apiserver/domainname"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/forget"
	"github.com/certfleet/certfleet/internal/printable"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/replicated"
)

// Source is the Source of the events this package writes: they come from the
// KeyChest-compatible API.
const Source = "keychest"

// Key formats. A client-chosen key follows KeyChest's rule; a generated one
// is longer than the minimum and uses the same alphabet minus "-".
const (
	MinKeyLen       = 16
	MaxKeyLen       = 64
	GeneratedKeyLen = 32
	maxEmailLen     = 254
	keyAlphabet     = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
)

// Errors a caller maps to HTTP statuses.
var (
	ErrBadEmail      = errors.New("invalid email address")
	ErrBadKey        = fmt.Errorf("invalid api_key: it must be %d to %d characters of a-z, A-Z, 0-9 and -", MinKeyLen, MaxKeyLen)
	ErrKeyTaken      = errors.New("api_key is already registered to another account; choose another key")
	ErrUnknownKey    = errors.New("unknown api_key")
	ErrUnknownDomain = errors.New("domain not registered for this api_key")
)

// Scopes of a KeyChest key: KeyChest keys both add domains and read them.
var keychestScopes = []string{"read", "write"}

// Config configures the store.
type Config struct {
	// MaxLen caps the events stream (XADD MAXLEN ~). Default events.DefaultMaxLen.
	MaxLen int64
	// HoldClaims makes keys of the KeyChest claim calls held until the
	// account approves them (held.go); false hands out full keys, for
	// single-tenant installs.
	HoldClaims bool
	// HeldQuota caps the domains one held key may add. Default 100.
	HeldQuota int64
	// Wait is how many replicas must hold a command before it is
	// answered (--redis-wait-replicas): a domain's add, bulk add, update
	// or removal, and every write of an account or API key (account
	// creation, a key's reserve, commit, release and finish, its
	// revocation, a held key's approval). An answered command then
	// survives the loss of its master: a created key does not vanish, a
	// revoked one does not work again. A command the replicas did not
	// confirm in time fails with replicated.ErrNotReplicated (the API
	// answers 503); it may have been applied, and a retry finds it (every
	// step is idempotent, see the package doc). Default: no wait.
	Wait replicated.Config
	// Quotas are the operator's default limits per tenant (internal/quota);
	// a tenant's overrides win. Default quota.Defaults.
	Quotas quota.Limits
	// Now is the clock of created_at fields and events. Default time.Now.
	Now func() time.Time
	// ImportSpacing is how far apart, on average, the first scans of the
	// domains of a bulk import (AddDomains) are due: an import of n
	// domains spreads them over n*ImportSpacing, after the window of the
	// tenant's previous import if that is still running. Default 20ms (50
	// first scans a second per tenant).
	ImportSpacing time.Duration
	// ImportMaxDelay caps how far a first scan is pushed: past it, the
	// first scans of a huge import pile up at ImportMaxDelay. Default 1h.
	ImportMaxDelay time.Duration
}

func (c *Config) setDefaults() {
	if c.MaxLen == 0 {
		c.MaxLen = events.DefaultMaxLen
	}
	if c.HeldQuota == 0 {
		c.HeldQuota = DefaultHeldQuota
	}
	c.Quotas = c.Quotas.With(quota.Defaults)
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ImportSpacing == 0 {
		c.ImportSpacing = DefaultImportSpacing
	}
	if c.ImportMaxDelay == 0 {
		c.ImportMaxDelay = DefaultImportMaxDelay
	}
}

// Defaults of the first-scan spread of bulk imports (Config).
const (
	DefaultImportSpacing  = 20 * time.Millisecond
	DefaultImportMaxDelay = time.Hour
)

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxLen < 0 {
		errs = append(errs, fmt.Errorf("max len must not be negative, got %d", c.MaxLen))
	}
	if c.HeldQuota < 0 {
		errs = append(errs, fmt.Errorf("held key quota must not be negative, got %d", c.HeldQuota))
	}
	if err := c.Quotas.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Wait.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.ImportSpacing < 0 {
		errs = append(errs, fmt.Errorf("import spacing must not be negative, got %s", c.ImportSpacing))
	}
	if c.ImportMaxDelay < 0 {
		errs = append(errs, fmt.Errorf("import max delay must not be negative, got %s", c.ImportMaxDelay))
	}
	return errors.Join(errs...)
}

// Store executes account commands against Redis.
type Store struct {
	cfg    Config
	rdb    redis.UniversalClient
	logger *zap.Logger
	// commands runs every command's writes, waiting for replicas.
	commands *replicated.Writer
}

// New returns a store writing through rdb.
func New(cfg Config, rdb redis.UniversalClient, logger *zap.Logger) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("accounts config: %w", err)
	}
	if rdb == nil {
		return nil, errors.New("accounts: redis client is nil")
	}
	commands, err := replicated.New(cfg.Wait, rdb)
	if err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	return &Store{cfg: cfg, rdb: rdb, logger: logger.Named("accounts"), commands: commands}, nil
}

// Key names. A tenant's keys carry its partition's hash tag
// (events.TenantTag), so they share a Redis Cluster slot with its event
// stream and one script can write them and the event. apikey:<hash> is the
// deployment-wide key index and has no tag: see the package doc.
func apiKeyKey(hash string) string { return "apikey:" + hash }
func accountKey(tenantID string) string {
	return "account:" + events.TenantTag(tenantID) + ":" + tenantID
}

// Email returns the email of the account tenantID, or "" when there is no
// such account.
func (s *Store) Email(ctx context.Context, tenantID string) (string, error) {
	email, err := s.rdb.HGet(ctx, accountKey(tenantID), "email").Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read account %s: %w", tenantID, err)
	}
	return email, nil
}

// legacyDomainsKey is the hash "host:port" -> domain id that named a
// tenant's domains before the list index's layout 2 did; the index build
// at start reads it once (LegacyDomainIDs) and deletes it
// (DropLegacyDomains).
func legacyDomainsKey(tenantID string) string {
	return events.TenantNamespace(tenantID) + "domains"
}
func domainKey(tenantID, domainID string) string {
	return DomainKeyPrefix(tenantID) + domainID
}

// DomainKey is the key of the record of a domain of tenantID, for the
// list index, which checks a record before indexing it.
func DomainKey(tenantID, domainID string) string { return domainKey(tenantID, domainID) }

// DomainKeyPrefix starts the key of every domain record of tenantID
// (domainindex.RecordPrefix, which the index's scripts follow too).
func DomainKeyPrefix(tenantID string) string { return domainindex.RecordPrefix(tenantID) }

// AlertFieldPrefix begins the fields of a domain record that are not the
// record's: the alert engine (apiserver/alerts) keeps the domain's alert
// state there, in the same hash and slot, so that its script writes the
// state only while the record exists and one key per domain is saved. No
// field of the record begins with it. This package never writes those
// fields, keeps them on every write of the record and reads only its own
// (recordFields). A removal keeps them as well: the engine resolves the
// removed domain's alerts from them and then drops them, and the hash goes
// with its last field.
const AlertFieldPrefix = "@"

// AlertNameField is the host:port a domain's alert state is for, when
// the record does not say it: the engine leaves it out while it is the
// record's own host:port, and a rename or removal of a domain with alert
// state (AlertVersionField) writes the name it had, unless the field is
// there (pinAlertNameLua), so the engine still resolves the alerts of
// the name they were raised for.
const AlertNameField = AlertFieldPrefix + "n"

// AlertVersionField is there while a domain has alert state (the view
// version the engine last evaluated).
const AlertVersionField = AlertFieldPrefix + "v"

// pinAlertNameLua is pin_alert_name(key, name): before a rename or a
// removal, it writes AlertNameField as the record's name if the domain
// has alert state and the field is not there.
const pinAlertNameLua = `
local function pin_alert_name(key, name)
  if redis.call('HEXISTS', key, '` + AlertVersionField + `') == 1 and redis.call('HEXISTS', key, '` + AlertNameField + `') == 0 then
    redis.call('HSET', key, '` + AlertNameField + `', name)
  end
end
`

// RecordName is the host:port of a domain record's hash as read (""
// when it is no record: RecordExists).
func RecordName(rec map[string]string) string {
	if !RecordExists(rec) {
		return ""
	}
	port, err := domainindex.RecordPort(rec["port"])
	if err != nil {
		return ""
	}
	return domainname.Key(rec[PresenceField], port)
}

// RemovedTenantField names, in the alert state a removal leaves
// (AlertFieldPrefix, so the engine drops it with the rest), the tenant
// the removed domain was of: a tenant that leaves before the engine
// evaluated the removal finds such leftovers by it (alerts.Forget), as the
// record's tenant (t, or tenant_id in the layout before) goes with the
// removal.
const RemovedTenantField = AlertFieldPrefix + "t"

// PresenceField is a field every domain record has, and the alert state a
// removal leaves has not: the record exists while it does.
const PresenceField = "host"

// RecordExists tells whether rec, a domain record's hash as read (whole
// or with PresenceField), is a domain's record and not only the alert
// state a removal left.
func RecordExists(rec map[string]string) bool { return rec[PresenceField] != "" }

// DomainTenants lists the tenants that have domains (an index of their
// ids, or the hash of their names from before, LegacyDomainIDs), read by
// SCAN over every node.
func DomainTenants(ctx context.Context, rdb redis.UniversalClient) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, f := range []struct {
		pattern, suffix string
		key             func(string) string
	}{
		{"tenant:*:ix:created", ":ix:created", domainindex.CreatedKey},
		{"tenant:*:domains", ":domains", legacyDomainsKey},
	} {
		keys, err := forget.Keys(ctx, rdb, f.pattern)
		if err != nil {
			return nil, fmt.Errorf("list tenants with domains: %w", err)
		}
		for _, k := range keys {
			// tenant:{tNN}:<tenant><suffix>
			rest, ok := strings.CutPrefix(k, "tenant:")
			if !ok {
				continue
			}
			_, rest, ok = strings.Cut(rest, ":")
			if t, ok2 := strings.CutSuffix(rest, f.suffix); ok && ok2 && t != "" && f.key(t) == k && !seen[t] {
				seen[t] = true
				out = append(out, t)
			}
		}
	}
	return out, nil
}

// DomainIDs lists the ids of tenantID's domains, in no order
// (domainindex.IDs).
func DomainIDs(ctx context.Context, rdb redis.UniversalClient, tenantID string) ([]string, error) {
	return domainindex.IDs(ctx, rdb, tenantID)
}

// LegacyDomainIDs lists the ids in tenantID's hash of names from before
// the index's layout 2 (none once DropLegacyDomains ran), for the index
// build to index them.
func LegacyDomainIDs(ctx context.Context, rdb redis.UniversalClient, tenantID string) ([]string, error) {
	ids, err := rdb.HVals(ctx, legacyDomainsKey(tenantID)).Result()
	if err != nil {
		return nil, fmt.Errorf("list legacy domain ids of %s: %w", tenantID, err)
	}
	return ids, nil
}

// DropLegacyDomains deletes tenantID's hash of names from before the
// index's layout 2, once the index holds its domains.
func DropLegacyDomains(ctx context.Context, rdb redis.UniversalClient, tenantID string) error {
	if err := rdb.Unlink(ctx, legacyDomainsKey(tenantID)).Err(); err != nil {
		return fmt.Errorf("drop legacy domains of %s: %w", tenantID, err)
	}
	return nil
}

// HashKey is how a key is stored and appears in events: SHA-256, hex.
func HashKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// ParseEmail checks an account's email: a bare address (no display name,
// no angle brackets) of at most 254 characters, without a control
// character (printable.HasControl: net/mail takes any non-ASCII rune, C1
// controls and bidi overrides included, and operators' terminals print
// emails). It returns it as given; the account id ignores case.
func ParseEmail(s string) (string, error) {
	if s == "" || len(s) > maxEmailLen {
		return "", fmt.Errorf("%w: it must be 1 to %d characters", ErrBadEmail, maxEmailLen)
	}
	if printable.HasControl(s) {
		return "", fmt.Errorf("%w: it must not hold control characters", ErrBadEmail)
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", fmt.Errorf("%w: send a bare address such as ops@example.com", ErrBadEmail)
	}
	return s, nil
}

// CheckKey tells whether s has the form of a KeyChest API key.
func CheckKey(s string) error {
	if len(s) < MinKeyLen || len(s) > MaxKeyLen {
		return ErrBadKey
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return ErrBadKey
		}
	}
	return nil
}

// GenerateKey returns a fresh random key of GeneratedKeyLen characters.
func GenerateKey() (string, error) {
	// Rejection sampling keeps every character equally likely: 248 is the
	// largest multiple of 62 below 256.
	out := make([]byte, 0, GeneratedKeyLen)
	buf := make([]byte, 2*GeneratedKeyLen)
	for len(out) < GeneratedKeyLen {
		if _, err := rand.Read(buf); err != nil {
			return "", fmt.Errorf("generate key: %w", err)
		}
		for _, b := range buf {
			if b < 248 && len(out) < GeneratedKeyLen {
				out = append(out, keyAlphabet[int(b)%len(keyAlphabet)])
			}
		}
	}
	return string(out), nil
}

// Claim registers key for the account of email. It returns created=true
// for a new key, false when the key already belongs to this account, and
// ErrKeyTaken when it belongs to another one: a key is never reassigned,
// and the answer does not tell whose it is.
//
// The key is reserved in the deployment-wide index first and committed in
// the tenant's slot second (see the package doc), so a retry after a
// crash between the two completes the claim.
func (s *Store) Claim(ctx context.Context, email, key string) (created bool, err error) {
	if email, err = ParseEmail(email); err != nil {
		return false, err
	}
	if err := CheckKey(key); err != nil {
		return false, err
	}
	tenantID := events.TenantID(email)
	hash := HashKey(key)
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	k := APIKey{ID: uuid.NewString(), Label: Source, Prefix: key[:4], Scopes: keychestScopes, Source: Source,
		Kind: KindClaimed, Held: s.cfg.HoldClaims, CreatedAt: now}
	res, err := s.reserveAndCommit(ctx, tenantID, email, hash, k, "")
	if err != nil {
		return false, fmt.Errorf("claim key for %s: %w", tenantID, err)
	}
	switch res {
	case "created":
		s.logger.Info("api key created", zap.String("tenant_id", tenantID))
		return true, nil
	case "committed":
		return false, nil
	case "taken":
		s.logger.Warn("api key claim refused: key belongs to another account", zap.String("tenant_id", tenantID))
		return false, ErrKeyTaken
	default:
		return false, fmt.Errorf("claim key for %s: unexpected result %q", tenantID, res)
	}
}

// ClaimNew generates a key and registers it for the account of email.
func (s *Store) ClaimNew(ctx context.Context, email string) (string, error) {
	if _, err := ParseEmail(email); err != nil {
		return "", err
	}
	// A collision of 190 random bits does not happen; the loop only turns
	// the impossible into an error instead of a reassigned key.
	for range 3 {
		key, err := GenerateKey()
		if err != nil {
			return "", err
		}
		created, err := s.Claim(ctx, email, key)
		if errors.Is(err, ErrKeyTaken) || (err == nil && !created) {
			continue
		}
		if err != nil {
			return "", err
		}
		return key, nil
	}
	return "", errors.New("generate key: three collisions in a row")
}

// Authenticate returns the principal of a KeyChest key, or ErrUnknownKey
// (also for a key of the wrong form, which cannot exist). KeyChest keys
// carry both scopes; a held key (held.go) says so in Held.
func (s *Store) Authenticate(ctx context.Context, key string) (Principal, error) {
	if CheckKey(key) != nil {
		return Principal{}, ErrUnknownKey
	}
	hash := HashKey(key)
	fields := []string{"tenant_id", "key_id", "scopes", "pending", "revoked_at", "held"}
	vals, err := s.rdb.HMGet(ctx, apiKeyKey(hash), fields...).Result()
	if err != nil {
		return Principal{}, fmt.Errorf("look up api key: %w", err)
	}
	rec := make(map[string]string, len(vals))
	for i, f := range fields {
		rec[f], _ = vals[i].(string)
	}
	if rec["tenant_id"] == "" || rec["pending"] != "" || rec["revoked_at"] != "" {
		return Principal{}, ErrUnknownKey
	}
	return principalOf(hash, rec), nil
}

// Usage is what an account's counted quotas count (internal/quota).
type Usage struct {
	// Domains and APIKeys are the domains and live keys no held key
	// holds: what the domains and api_keys quotas count.
	Domains, APIKeys int64
	// HeldDomains and HeldAPIKeys are the domains added by held keys and
	// the held keys (held.go): held_domains and held_api_keys.
	HeldDomains, HeldAPIKeys int64
}

// Usage returns what tenantID uses of its counted quotas, counted as the
// scripts that enforce them count.
func (s *Store) Usage(ctx context.Context, tenantID string) (Usage, error) {
	d, err := domainindex.Count(ctx, s.rdb, tenantID)
	if err != nil {
		return Usage{}, err
	}
	pipe := s.rdb.Pipeline()
	k := pipe.HLen(ctx, apiKeysKey(tenantID))
	hk := pipe.SCard(ctx, heldKeysKey(tenantID))
	hd := pipe.SCard(ctx, tenantHeldDomainsKey(tenantID))
	if _, err := pipe.Exec(ctx); err != nil {
		return Usage{}, fmt.Errorf("count domains and keys of %s: %w", tenantID, err)
	}
	return Usage{Domains: d - hd.Val(), APIKeys: k.Val() - hk.Val(), HeldDomains: hd.Val(), HeldAPIKeys: hk.Val()}, nil
}
