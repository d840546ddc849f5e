package managedcert

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/replicated"
	"github.com/certfleet/certfleet/internal/seal"
)

// Limits of requests.
const (
	// MaxSANs is the most names a certificate lists besides its domain
	// (Let's Encrypt allows 100 names in all).
	MaxSANs = 99
	// MaxDNSAccounts is the most DNS provider accounts a tenant keeps.
	MaxDNSAccounts = 50
	// MaxCredentials caps the credential names of one account, and
	// MaxCredentialLen the length of one value.
	MaxCredentials   = 20
	MaxCredentialLen = 4096
	// MaxPageSize caps List.
	MaxPageSize = 500
)

// Config configures a Store.
type Config struct {
	// Passphrase derives the key sealing private keys, DNS credentials and
	// ACME account keys (the secrets passphrase, the same on every
	// apiserver and coordinator). Empty refuses every write that needs a
	// seal (ErrNoPassphrase).
	Passphrase string
	// MaxLen caps the events stream (XADD MAXLEN ~). Default
	// events.DefaultMaxLen.
	MaxLen int64
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Quotas are the operator's default limits per tenant
	// (managed_certificates is the one this store counts); a tenant's
	// overrides win. Default quota.Defaults.
	Quotas quota.Limits
	// DNSTargets is the policy of tenant-supplied DNS provider endpoints
	// (--allow-dns-targets), checked when an account is saved and again
	// when the worker uses it.
	DNSTargets guard.Policy
	// KeyType is the key type of a request that names none. Default
	// KeyEC256.
	KeyType string
	// Wait is how many replicas must hold a write of a certificate's
	// record (a request, renewal request or deletion; the worker's
	// outcomes too, when its store waits), a DNS account's save or
	// deletion, and the secrets salt, before it is answered
	// (--redis-wait-replicas). One not confirmed in time fails with
	// replicated.ErrNotReplicated (the API answers 503). Default: no
	// wait.
	Wait replicated.Config
}

func (c *Config) setDefaults() {
	if c.MaxLen == 0 {
		c.MaxLen = events.DefaultMaxLen
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.KeyType == "" {
		c.KeyType = KeyEC256
	}
	c.Quotas = c.Quotas.With(quota.Defaults)
}

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if err := seal.CheckPassphrase("secrets", c.Passphrase); err != nil {
		errs = append(errs, err)
	}
	if c.MaxLen < 1 {
		errs = append(errs, errors.New("max len must be positive"))
	}
	if !ValidKeyType(c.KeyType) {
		errs = append(errs, fmt.Errorf("key type %q: want %s, %s or %s", c.KeyType, KeyEC256, KeyRSA2048, KeyRSA4096))
	}
	if err := c.Quotas.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Wait.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ValidKeyType tells whether s names a key type certfleet orders.
func ValidKeyType(s string) bool { return s == KeyEC256 || s == KeyRSA2048 || s == KeyRSA4096 }

// Store keeps managed certificates and DNS accounts in Redis. The apiserver
// and the ACME worker each have one; they share everything through Redis.
type Store struct {
	cfg    Config
	rdb    redis.UniversalClient
	logger *zap.Logger
	// commands runs the record scripts, waiting for replicas.
	commands *replicated.Writer

	keys *seal.Keyring // seals private keys, credentials, account keys
}

// New returns a store on rdb.
func New(cfg Config, rdb redis.UniversalClient, logger *zap.Logger) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("managed certificate store config: %w", err)
	}
	if rdb == nil {
		return nil, errors.New("managed certificate store: redis client is required")
	}
	commands, err := replicated.New(cfg.Wait, rdb)
	if err != nil {
		return nil, fmt.Errorf("managed certificate store: %w", err)
	}
	return &Store{cfg: cfg, rdb: rdb, logger: logger.Named("managedcert"), commands: commands,
		keys: seal.NewKeyring(cfg.Passphrase, rdb, saltKey, commands)}, nil
}

// DNSTargets is the policy of tenants' DNS provider endpoints.
func (s *Store) DNSTargets() guard.Policy { return s.cfg.DNSTargets }

// Enabled tells whether the store can seal, that is whether managed
// certificates can be used at all.
func (s *Store) Enabled() bool { return s.cfg.Passphrase != "" }

// sealBox returns the box sealing this package's secrets.
func (s *Store) sealBox(ctx context.Context) (*seal.Box, error) {
	if s.cfg.Passphrase == "" {
		return nil, ErrNoPassphrase
	}
	box, err := s.keys.Box(ctx)
	if err != nil {
		return nil, fmt.Errorf("secrets passphrase: %w", err)
	}
	return box, nil
}

// InvalidError is a request the caller got wrong; its message is meant for
// the caller.
type InvalidError struct{ msg string }

func (e *InvalidError) Error() string { return e.msg }

func invalid(format string, args ...any) error {
	return &InvalidError{msg: fmt.Sprintf(format, args...)}
}

// ErrInUse is a DNS account a managed certificate still names.
var ErrInUse = errors.New("the DNS account is used by a managed certificate; delete or move the certificate first")

// ErrNotIssued is a download of a certificate that has none yet.
var ErrNotIssued = errors.New("the certificate is not issued yet")

// accountIDPattern is what an account id may be: it is part of keys.
var accountIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// CreateRequest asks for a certificate. Domain and SANs are normalized
// names (lower case, IDNA); the API checks their syntax.
type CreateRequest struct {
	Domain      string
	SANs        []string
	DNSProvider string
	AccountID   string
	KeyType     string // empty: the store's default
	Contact     string // the tenant's email (Certificate.Contact)
}

// createScript records a new managed certificate and its request in one
// step. KEYS: the certificate hash, the tenant's index, the due schedule,
// the events stream, the tenant's quota overrides, the DNS account. ARGV:
// record JSON, created ms, due member, default certificate quota, maxlen,
// domain, then the event's fields.
var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[6]) == 0 then return 'no_account' end
if redis.call('EXISTS', KEYS[1]) == 1 then return 'exists' end
local limit = ` + quota.LuaLimit(5, 4, quota.ManagedCerts) + `
if limit > 0 and redis.call('ZCARD', KEYS[2]) >= limit then return 'quota:' .. limit end
redis.call('HSET', KEYS[1], 'rec', ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, 7))
return 'ok'
`)

// Create records a certificate request of tenant: status pending, due now.
func (s *Store) Create(ctx context.Context, tenant string, in CreateRequest) (Certificate, error) {
	if !s.Enabled() {
		return Certificate{}, ErrNoPassphrase
	}
	if in.KeyType == "" {
		in.KeyType = s.cfg.KeyType
	}
	if !ValidKeyType(in.KeyType) {
		return Certificate{}, invalid(`field "key_type": %q is not one of %s, %s, %s`, in.KeyType, KeyEC256, KeyRSA2048, KeyRSA4096)
	}
	sans := make([]string, 0, len(in.SANs))
	for _, n := range in.SANs {
		if n != in.Domain && !slices.Contains(sans, n) {
			sans = append(sans, n)
		}
	}
	if len(sans) > MaxSANs {
		return Certificate{}, invalid(`field "san_domains": at most %d names`, MaxSANs)
	}
	if !accountIDPattern.MatchString(in.AccountID) {
		return Certificate{}, invalid(`field "account_id": 1 to 64 letters, digits, ".", "_" or "-"`)
	}
	now := s.cfg.Now().UTC().Truncate(time.Millisecond)
	c := Certificate{Tenant: tenant, Domain: in.Domain, SANs: sans, DNSProvider: in.DNSProvider,
		AccountID: in.AccountID, KeyType: in.KeyType, Contact: in.Contact, Status: StatusPending, CreatedAt: now, UpdatedAt: now}
	body, err := json.Marshal(c)
	if err != nil {
		return Certificate{}, fmt.Errorf("encode certificate: %w", err)
	}
	fields, err := certEvent(events.CertificateRequested, c, events.CertificateV1{Reason: events.CertReasonCreate})
	if err != nil {
		return Certificate{}, err
	}
	args := append([]any{string(body), now.UnixMilli(), DueMember(tenant, c.Domain),
		s.cfg.Quotas[quota.ManagedCerts], s.cfg.MaxLen, c.Domain}, fields...)
	res, err := s.commands.RunScript(ctx, createScript, []string{CertKey(tenant, c.Domain), CertsKey(tenant),
		DueKey(events.TenantTag(tenant)), events.EventStream(tenant), quota.Key(tenant),
		DNSAccountKey(tenant, c.DNSProvider, c.AccountID)}, args...).Text()
	if err != nil {
		return Certificate{}, fmt.Errorf("create certificate of %s: %w", c.Domain, err)
	}
	if ex := quota.ScriptExceeded(res, quota.ManagedCerts); ex != nil {
		return Certificate{}, ex
	}
	switch res {
	case "ok":
		s.logger.Info("certificate requested", zap.String("tenant_id", tenant), zap.String("domain", c.Domain))
		return c, nil
	case "exists":
		return Certificate{}, ErrExists
	case "no_account":
		return Certificate{}, invalid(`no DNS account %q of provider %q: create it with POST /api/v1/dns-accounts first`, c.AccountID, c.DNSProvider)
	default:
		return Certificate{}, fmt.Errorf("create certificate of %s: unexpected script result %q", c.Domain, res)
	}
}

// certEvent returns the stream fields of a certificate.* event about c,
// with the record's facts filled into p.
func certEvent(name string, c Certificate, p events.CertificateV1) ([]any, error) {
	p.Domain, p.SANs, p.DNSProvider, p.AccountID, p.KeyType = c.Domain, c.SANs, c.DNSProvider, c.AccountID, c.KeyType
	ev, err := events.New(name, c.Tenant, c.Domain, p)
	if err != nil {
		return nil, err
	}
	return ev.StreamFields()
}

// transitionScript replaces a certificate's record if it is still the one
// the caller read (compare and set), and records its event. KEYS: the
// certificate hash, the tenant's index, the due schedule, the events
// stream. ARGV: 1 the record read, 2 the new record ("" removes the
// certificate), 3 the due member, 4 the due time in ms ("" keeps it), 5
// maxlen, 6 the domain, 7 the number n of other hash fields to set, then n
// field/value pairs, then the event's fields (none: no event).
var transitionScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'rec')
if not cur then return 'not_found' end
if cur ~= ARGV[1] then return 'conflict' end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[6])
  redis.call('ZREM', KEYS[3], ARGV[3])
else
  redis.call('HSET', KEYS[1], 'rec', ARGV[2])
  local n = tonumber(ARGV[7])
  for i = 0, n - 1 do
    redis.call('HSET', KEYS[1], ARGV[8 + 2*i], ARGV[9 + 2*i])
  end
  if ARGV[4] ~= '' then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3]) end
end
local first = 8 + 2*tonumber(ARGV[7])
if #ARGV >= first then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, first))
end
return 'ok'
`)

// transition is one change of a certificate's record, applied by
// Store.apply.
type transition struct {
	next   *Certificate // nil removes the certificate
	due    time.Time    // zero keeps the schedule
	fields []any        // other hash fields to set, as pairs
	event  string       // "" records no event
	detail events.CertificateV1
}

// errConflict is a record changed between the read and the write.
var errConflict = errors.New("managed certificate changed concurrently")

// update reads tenant's certificate of domain, lets change decide what to
// do with it, and applies that if the record did not change meanwhile,
// retrying a few times when it did. change returns ok=false to leave the
// record alone (with its error, if any).
func (s *Store) update(ctx context.Context, tenant, domain string, change func(Certificate) (transition, error)) (Certificate, error) {
	for range 5 {
		raw, cur, err := s.read(ctx, tenant, domain)
		if err != nil {
			return Certificate{}, err
		}
		t, err := change(cur)
		if err != nil {
			return cur, err
		}
		err = s.apply(ctx, raw, cur, t)
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return Certificate{}, err
		}
		if t.next == nil {
			return cur, nil
		}
		return *t.next, nil
	}
	return Certificate{}, fmt.Errorf("update certificate of %s: %w", domain, errConflict)
}

// apply writes t over the record raw (the JSON of cur) read before.
func (s *Store) apply(ctx context.Context, raw string, cur Certificate, t transition) error {
	next, due := "", ""
	subject := cur
	if t.next != nil {
		t.next.UpdatedAt = s.cfg.Now().UTC().Truncate(time.Millisecond)
		body, err := json.Marshal(*t.next)
		if err != nil {
			return fmt.Errorf("encode certificate: %w", err)
		}
		next, subject = string(body), *t.next
		if !t.due.IsZero() {
			due = strconv.FormatInt(t.due.UnixMilli(), 10)
		}
	}
	args := []any{raw, next, DueMember(cur.Tenant, cur.Domain), due, s.cfg.MaxLen, cur.Domain, len(t.fields) / 2}
	args = append(args, t.fields...)
	if t.event != "" {
		fields, err := certEvent(t.event, subject, t.detail)
		if err != nil {
			return err
		}
		args = append(args, fields...)
	}
	res, err := s.commands.RunScript(ctx, transitionScript, []string{CertKey(cur.Tenant, cur.Domain), CertsKey(cur.Tenant),
		DueKey(events.TenantTag(cur.Tenant)), events.EventStream(cur.Tenant)}, args...).Text()
	if err != nil {
		return fmt.Errorf("write certificate of %s: %w", cur.Domain, err)
	}
	switch res {
	case "ok":
		return nil
	case "conflict":
		return errConflict
	case "not_found":
		return ErrNotFound
	default:
		return fmt.Errorf("write certificate of %s: unexpected script result %q", cur.Domain, res)
	}
}

// read returns the raw record of tenant's certificate of domain and its
// decoded form.
func (s *Store) read(ctx context.Context, tenant, domain string) (string, Certificate, error) {
	raw, err := s.rdb.HGet(ctx, CertKey(tenant, domain), "rec").Result()
	if errors.Is(err, redis.Nil) {
		return "", Certificate{}, ErrNotFound
	}
	if err != nil {
		return "", Certificate{}, fmt.Errorf("read certificate of %s: %w", domain, err)
	}
	c, err := decodeCert(raw, tenant)
	return raw, c, err
}

func decodeCert(raw, tenant string) (Certificate, error) {
	var c Certificate
	if err := json.Unmarshal([]byte(raw), &c); err != nil {
		return Certificate{}, fmt.Errorf("decode certificate: %w", err)
	}
	if c.Tenant != tenant {
		return Certificate{}, ErrNotFound
	}
	return c, nil
}

// Get returns tenant's certificate of domain, or ErrNotFound (also for
// another tenant's).
func (s *Store) Get(ctx context.Context, tenant, domain string) (Certificate, error) {
	_, c, err := s.read(ctx, tenant, domain)
	return c, err
}

// List returns a page of tenant's certificates, oldest first, and how many
// there are.
func (s *Store) List(ctx context.Context, tenant string, offset, limit int) ([]Certificate, int64, error) {
	limit = min(max(limit, 1), MaxPageSize)
	offset = max(offset, 0)
	total, err := s.rdb.ZCard(ctx, CertsKey(tenant)).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("count certificates of %s: %w", tenant, err)
	}
	domains, err := s.rdb.ZRange(ctx, CertsKey(tenant), int64(offset), int64(offset+limit-1)).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("list certificates of %s: %w", tenant, err)
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(domains))
	for i, d := range domains {
		cmds[i] = pipe.HGet(ctx, CertKey(tenant, d), "rec")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, fmt.Errorf("read certificates of %s: %w", tenant, err)
	}
	out := make([]Certificate, 0, len(domains))
	for _, cmd := range cmds {
		raw, err := cmd.Result()
		if errors.Is(err, redis.Nil) {
			continue // removed between the two reads
		}
		c, err := decodeCert(raw, tenant)
		if err != nil {
			return nil, 0, err
		}
		out = append(out, c)
	}
	return out, total, nil
}

// RequestRenew makes tenant's certificate of domain due now.
func (s *Store) RequestRenew(ctx context.Context, tenant, domain string) (Certificate, error) {
	return s.update(ctx, tenant, domain, func(c Certificate) (transition, error) {
		if c.Deleting {
			return transition{}, ErrNotFound
		}
		c.Renewing = c.Status == StatusIssued
		c.RetryAt = time.Time{}
		return transition{next: &c, due: s.cfg.Now(), event: events.CertificateRequested,
			detail: events.CertificateV1{Reason: events.CertReasonRenew}}, nil
	})
}

// Delete stops managing tenant's certificate of domain. With revoke, an
// issued certificate is marked Deleting and left to the worker, which
// revokes it at the CA and then removes it (certificate.deleted.v1 with
// Revoked); otherwise it is removed at once. It returns the record as it
// was (or as marked).
func (s *Store) Delete(ctx context.Context, tenant, domain string, revoke bool) (Certificate, error) {
	return s.update(ctx, tenant, domain, func(c Certificate) (transition, error) {
		if c.Deleting {
			return transition{next: &c}, nil // already on its way out
		}
		if revoke && c.Status == StatusIssued {
			c.Deleting = true
			return transition{next: &c, due: s.cfg.Now()}, nil
		}
		return transition{event: events.CertificateDeleted}, nil
	})
}

// OpenMaterial returns tenant's certificate of domain with its PEM files
// and opened private key: ErrNotIssued while it has none.
func (s *Store) OpenMaterial(ctx context.Context, tenant, domain string) (Certificate, Material, error) {
	vals, err := s.rdb.HMGet(ctx, CertKey(tenant, domain), "rec", "cert_pem", "chain_pem", "sealed_key").Result()
	if err != nil {
		return Certificate{}, Material{}, fmt.Errorf("read certificate of %s: %w", domain, err)
	}
	raw, ok := vals[0].(string)
	if !ok {
		return Certificate{}, Material{}, ErrNotFound
	}
	c, err := decodeCert(raw, tenant)
	if err != nil {
		return Certificate{}, Material{}, err
	}
	certPEM, _ := vals[1].(string)
	chainPEM, _ := vals[2].(string)
	sealed, _ := vals[3].(string)
	if c.Status != StatusIssued || certPEM == "" || sealed == "" {
		return c, Material{}, ErrNotIssued
	}
	box, err := s.sealBox(ctx)
	if err != nil {
		return c, Material{}, err
	}
	key, err := box.Open(sealed, keyAAD(tenant, domain))
	if err != nil {
		return c, Material{}, fmt.Errorf("open private key of %s: %w", domain, err)
	}
	return c, Material{CertPEM: certPEM, ChainPEM: chainPEM, PrivateKeyPEM: key}, nil
}

// Count is how many certificates tenant manages.
func (s *Store) Count(ctx context.Context, tenant string) (int64, error) {
	n, err := s.rdb.ZCard(ctx, CertsKey(tenant)).Result()
	if err != nil {
		return 0, fmt.Errorf("count certificates of %s: %w", tenant, err)
	}
	return n, nil
}
