// Package clientca is certfleet's private CA for client certificates: one
// issuing CA per deployment (the operator's) that signs certificates
// belonging to tenants, for mTLS and VPN clients.
//
// Everything lives in Redis, so every apiserver replica can sign:
//
//	ca:{ca}:authority                 hash {cert_pem, key_sealed, key_type, source,
//	                                  created_at}: the issuing CA; the key is sealed
//	ca:{ca}:seal:salt                 the scrypt salt of the CA passphrase (created once)
//	ca:{ca}:serials                   hash serial (decimal) -> certificate id, every
//	                                  certificate ever issued (OCSP's lookup)
//	ca:{ca}:revoked                   hash serial (decimal) -> "<revoked_at ms> <reason>"
//	                                  (the CRL's entries)
//	ca:{ca}:revocations:version       counter bumped by every revocation (the CRL
//	                                  writer regenerates when it moved)
//	clientcert:{ca}:<id>              hash: the certificate record (see certFields);
//	                                  a generated private key only sealed
//	tenant:{ca}:<tenant>:clientcerts  zset id -> created_at ms
//	tenant:{ca}:<tenant>:clientcerts:active
//	                                  zset id -> expires_at ms of its active
//	                                  certificates (the client_certificates quota)
//	tenant:{ca}:<tenant>:clientcerts:counted
//	                                  "1" once the active set holds every
//	                                  certificate (built from the records on first use)
//	clientcerts:{ca}:renewal          zset id -> ms when auto-renewal is due (only
//	                                  live certificates with renewal enabled)
//
// Every key carries the hash tag {ca} and the events go to events.CAStream
// (events:{ca}), so on Redis Cluster all of them share one slot (see the
// Redis keys below for why).
//
// Commands are Lua scripts that check their invariant and XADD their event
// to the CA's event stream in the same step (ca.created, clientcert.issued,
// .revoked, .renewed). Private keys are sealed with internal/seal under a
// key derived from the operator's CA passphrase; they never appear in clear
// in Redis, nor in events at all.
package clientca

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/replicated"
	"github.com/certfleet/certfleet/internal/seal"
)

// Redis keys. The client CA is one per deployment with a low write volume,
// and its invariants are deployment-wide (one authority, unique serials,
// one revocation list), so every key of it, the per-tenant certificate
// lists included, and its event stream (events.CAStream) share one Redis
// Cluster slot, the hash tag {ca}: each script touches that one slot, and
// no invariant needs more than one script. A tenant slot would split the
// serial registry from the certificates it numbers.
const (
	authorityKey = "ca:{ca}:authority"
	saltKey      = "ca:{ca}:seal:salt"
	serialsKey   = "ca:{ca}:serials"
	revokedKey   = "ca:{ca}:revoked"
	// RevocationVersionKey is bumped by every revocation, in the same
	// script that marks the record; the CRL writer compares it with the
	// version its cached CRL was built at.
	RevocationVersionKey = "ca:{ca}:revocations:version"
	renewalKey           = "clientcerts:{ca}:renewal"
)

func certKey(id string) string { return "clientcert:{ca}:" + id }
func tenantCertsKey(tenant string) string {
	return "tenant:{ca}:" + tenant + ":clientcerts"
}
func tenantActiveKey(tenant string) string  { return tenantCertsKey(tenant) + ":active" }
func tenantCountedKey(tenant string) string { return tenantCertsKey(tenant) + ":counted" }

// Errors a caller maps to HTTP statuses.
var (
	// ErrNoCA: no issuing CA has been created or imported yet.
	ErrNoCA = errors.New("the client CA is not initialised")
	// ErrCAExists: Init or Import when the deployment already has a CA.
	ErrCAExists = errors.New("the client CA already exists")
	// ErrNoPassphrase: signing (or reading a sealed key) needs the CA
	// passphrase, and this process was not given one.
	ErrNoPassphrase = errors.New("no CA passphrase configured: set CERTFLEET_CA_PASSPHRASE or --ca-passphrase-file")
	// ErrNotFound: no such certificate for this tenant (another tenant's
	// certificate is not found either).
	ErrNotFound = errors.New("certificate not found")
	// ErrInvalid wraps every refusal of a request's content (a 400).
	ErrInvalid = errors.New("invalid request")
	// ErrAlreadyRevoked: Revoke of a revoked certificate.
	ErrAlreadyRevoked = errors.New("certificate already revoked")
	// ErrRevoked: Renew of a revoked certificate.
	ErrRevoked = errors.New("certificate is revoked")
	// ErrAlreadyRenewed: Renew of a certificate that was renewed before
	// (renew the newest one instead).
	ErrAlreadyRenewed = errors.New("certificate already renewed")
	// ErrNoKey: Download of a key certfleet did not generate.
	ErrNoKey = errors.New("no private key: the certificate was issued for a CSR")
	// ErrNotDue: AutoRenew of a certificate whose renewal is not due (or
	// not enabled).
	ErrNotDue = errors.New("certificate renewal is not due")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Config configures a Store.
type Config struct {
	// Passphrase derives the key that seals the CA key and generated
	// client keys (at least seal.MinPassphrase characters). Empty: the
	// store reads records but cannot sign (ErrNoPassphrase).
	Passphrase string
	// PublicURL is the base URL relying parties reach certfleet at; issued
	// certificates name <PublicURL>/api/crl/download/der as CRL
	// distribution point and <PublicURL>/ocsp as OCSP responder. Required.
	PublicURL string
	// CommonName is the subject CN of a CA Init generates. Default
	// "certfleet client CA".
	CommonName string
	// CAValidity is how long a generated CA is valid. Default 10 years.
	CAValidity time.Duration
	// MaxLen caps the events stream (XADD MAXLEN ~). Default
	// events.DefaultMaxLen.
	MaxLen int64
	// Now is the clock of certificates, records and events. Default time.Now.
	Now func() time.Time
	// Quotas are the operator's default limits per tenant (internal/quota),
	// of which the CA counts client_certificates; a tenant's overrides
	// win. Default quota.Defaults.
	Quotas quota.Limits
	// Wait is how many replicas must hold the CA's creation, a
	// certificate's issue or renewal, a revocation (and the passphrase's
	// salt) before it is answered (--redis-wait-replicas): an issued
	// certificate is then never unknown to OCSP after a failover, and a
	// revoked one never valid again. One not confirmed in time fails with
	// replicated.ErrNotReplicated (the API answers 503). The CRL is not
	// waited on: it is rebuilt from the revocations (see crl.go). Default:
	// no wait.
	Wait replicated.Config
}

func (c *Config) setDefaults() {
	if c.CommonName == "" {
		c.CommonName = "certfleet client CA"
	}
	if c.CAValidity == 0 {
		c.CAValidity = 10 * 365 * 24 * time.Hour
	}
	if c.MaxLen == 0 {
		c.MaxLen = events.DefaultMaxLen
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	c.Quotas = c.Quotas.With(quota.Defaults)
}

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if err := seal.CheckPassphrase("CA", c.Passphrase); err != nil {
		errs = append(errs, err)
	}
	if !strings.HasPrefix(c.PublicURL, "http://") && !strings.HasPrefix(c.PublicURL, "https://") {
		errs = append(errs, fmt.Errorf("public URL must be an http or https URL, got %q", c.PublicURL))
	}
	if c.CAValidity < 24*time.Hour {
		errs = append(errs, fmt.Errorf("CA validity must be at least 24h, got %s", c.CAValidity))
	}
	if c.MaxLen < 0 {
		errs = append(errs, fmt.Errorf("max len must not be negative, got %d", c.MaxLen))
	}
	if err := c.Quotas.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Wait.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Store runs the CA's commands and reads against Redis. It is safe for
// concurrent use; any number of Stores (replicas) may share one Redis.
type Store struct {
	cfg    Config
	rdb    redis.UniversalClient
	logger *zap.Logger
	// commands runs the commands' scripts, waiting for replicas.
	commands *replicated.Writer

	keys *seal.Keyring // seals the CA key and generated client keys

	mu   sync.Mutex
	auth *Authority // the CA never changes once created: cached
}

// New returns a store using rdb.
func New(cfg Config, rdb redis.UniversalClient, logger *zap.Logger) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("client CA config: %w", err)
	}
	if rdb == nil {
		return nil, errors.New("client CA: redis client is nil")
	}
	commands, err := replicated.New(cfg.Wait, rdb)
	if err != nil {
		return nil, fmt.Errorf("client CA: %w", err)
	}
	return &Store{cfg: cfg, rdb: rdb, logger: logger.Named("clientca"), commands: commands,
		keys: seal.NewKeyring(cfg.Passphrase, rdb, saltKey, commands)}, nil
}

// CanSign tells whether the store was given a passphrase.
func (s *Store) CanSign() bool { return s.cfg.Passphrase != "" }

// sealBox returns the box sealing secrets (the keyring derives it once).
func (s *Store) sealBox(ctx context.Context) (*seal.Box, error) {
	if s.cfg.Passphrase == "" {
		return nil, ErrNoPassphrase
	}
	box, err := s.keys.Box(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", "CA passphrase", err)
	}
	return box, nil
}

// xaddArgs returns the StreamFields of an event occurring at now.
func eventFields(name, tenantID, aggregateID string, now time.Time, payload any) ([]any, error) {
	ev, err := events.New(name, tenantID, aggregateID, payload)
	if err != nil {
		return nil, err
	}
	ev.OccurredAt = now.UTC().Truncate(time.Millisecond)
	return ev.StreamFields()
}
