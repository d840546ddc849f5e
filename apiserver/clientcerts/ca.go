package clientcerts

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/audit"
	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/replicated"
	"github.com/certfleet/certfleet/internal/seal"
)

// Config configures the private CA for client certificates and its API.
type Config struct {
	// Passphrase seals the CA key and generated client keys (at least 12
	// characters; every replica needs the same one). Empty with no
	// PassphraseFile: certificates can be read and listed, but nothing is
	// signed (the client certificate routes answer 503).
	Passphrase string
	// PassphraseFile holds the passphrase instead (one line); not both.
	PassphraseFile string
	// Init creates the CA at start when the deployment has none (one CA
	// even when replicas start together). Needs the passphrase.
	Init bool
	// KeyType of a CA Init creates: "ecdsa-p256" (default) or "rsa-3072".
	KeyType string
	// CommonName of a CA Init creates. Default "certfleet client CA".
	CommonName string
	// PublicURL is where relying parties reach this API: issued
	// certificates name <PublicURL>/api/crl/download/der and
	// <PublicURL>/ocsp. Required (the server defaults it to
	// "http://" + its listen address).
	PublicURL string
	// CRLValidity is a CRL's nextUpdate - thisUpdate. Default 24h.
	CRLValidity time.Duration
	// InitTimeout bounds the CA's creation or loading at start. Default 30s.
	InitTimeout time.Duration
	// RenewalEvery is how often RunRenewal looks for due renewals;
	// thresholds count in days, so minutes late is no matter. The first
	// pass is one period after the start. Default 10m.
	RenewalEvery time.Duration
	// Now is the clock of statuses and renewals. Default time.Now.
	Now func() time.Time
	// Wait is how many replicas must hold a CA command before it is
	// answered (clientca.Config.Wait); the server sets it from its
	// RedisWait. Default: no wait.
	Wait replicated.Config
	// Quotas are the operator's default limits per tenant, of which the
	// CA counts client_certificates (clientca.Config.Quotas); the server
	// sets them from its own. Default quota.Defaults.
	Quotas quota.Limits
	// WarningDays: GET /client-certs/stats counts an active certificate
	// expiring within this many days as expiring_soon (as --warning-days
	// does for server certificates). Default 30.
	WarningDays int
}

// SetDefaults fills the fields left zero.
func (c *Config) SetDefaults() {
	if c.KeyType == "" {
		c.KeyType = clientca.KeyECDSAP256
	}
	if c.CRLValidity == 0 {
		c.CRLValidity = 24 * time.Hour
	}
	if c.InitTimeout == 0 {
		c.InitTimeout = 30 * time.Second
	}
	if c.RenewalEvery == 0 {
		c.RenewalEvery = 10 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.WarningDays == 0 {
		c.WarningDays = 30
	}
}

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if c.Passphrase != "" && c.PassphraseFile != "" {
		errs = append(errs, errors.New("CA passphrase: give the passphrase or its file, not both"))
	}
	if err := seal.CheckPassphrase("CA", c.Passphrase); err != nil {
		errs = append(errs, err)
	}
	if c.KeyType != clientca.KeyECDSAP256 && c.KeyType != clientca.KeyRSA3072 {
		errs = append(errs, fmt.Errorf("CA key type must be %s or %s, got %q", clientca.KeyECDSAP256, clientca.KeyRSA3072, c.KeyType))
	}
	if c.PublicURL != "" && !strings.HasPrefix(c.PublicURL, "http://") && !strings.HasPrefix(c.PublicURL, "https://") {
		errs = append(errs, fmt.Errorf("public URL must start with http:// or https://, got %q", c.PublicURL))
	}
	if c.CRLValidity < time.Minute {
		errs = append(errs, fmt.Errorf("CRL validity must be at least 1m, got %s", c.CRLValidity))
	}
	if c.InitTimeout < 0 {
		errs = append(errs, fmt.Errorf("CA init timeout must not be negative, got %s", c.InitTimeout))
	}
	if c.RenewalEvery <= 0 {
		errs = append(errs, fmt.Errorf("renewal period must be positive, got %s", c.RenewalEvery))
	}
	return errors.Join(errs...)
}

// Handler serves the client-certificate API.
type Handler struct {
	cfg    Config
	store  *clientca.Store
	rdb    redis.UniversalClient // the renewal lease
	auth   *httpapi.Auth
	limits *httpapi.Limiter
	audit  *audit.Log
	logger *zap.Logger
	render gin.HandlerFunc
}

// New returns the API of cfg (defaults filled in) over the CA store (see
// OpenCA).
func New(cfg Config, store *clientca.Store, rdb redis.UniversalClient, auth *httpapi.Auth, limits *httpapi.Limiter,
	log *audit.Log, logger *zap.Logger) (*Handler, error) {
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Handler{cfg: cfg, store: store, rdb: rdb, auth: auth, limits: limits, audit: log, logger: logger,
		render: httpapi.Render(logger, style)}, nil
}

// OpenCA returns the CA store of cfg (never nil on success): it reads the
// passphrase, and creates the CA (cfg.Init) or checks the passphrase opens
// the existing one. Without a passphrase, the store's signing methods
// return clientca.ErrNoPassphrase.
func OpenCA(cfg Config, rdb redis.UniversalClient, logger *zap.Logger) (*clientca.Store, error) {
	cfg.SetDefaults()
	pass := cfg.Passphrase
	if cfg.PassphraseFile != "" {
		p, err := seal.ReadPassphraseFile(cfg.PassphraseFile)
		if err != nil {
			return nil, fmt.Errorf("client CA: %w", err)
		}
		pass = p
	}
	store, err := clientca.New(clientca.Config{
		Passphrase: pass, PublicURL: cfg.PublicURL, CommonName: cfg.CommonName, Now: cfg.Now, Wait: cfg.Wait,
		Quotas: cfg.Quotas,
	}, rdb, logger)
	if err != nil {
		return nil, err
	}
	if pass == "" {
		if cfg.Init {
			logger.Warn("client CA cannot sign: no CA passphrase (set CERTFLEET_CA_PASSPHRASE or --ca-passphrase-file)")
		}
		return store, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.InitTimeout)
	defer cancel()
	if cfg.Init {
		if _, err := store.Ensure(ctx, cfg.KeyType); err != nil {
			return nil, fmt.Errorf("client CA: %w", err)
		}
		return store, nil
	}
	// Without Init, check the passphrase opens an existing CA at once, so
	// a wrong one fails the start instead of every signing request.
	if _, err := store.Authority(ctx); err != nil && !errors.Is(err, clientca.ErrNoCA) {
		return nil, fmt.Errorf("client CA: %w", err)
	} else if errors.Is(err, clientca.ErrNoCA) {
		logger.Info("no client CA yet: run `certfleet ca init` or start with --ca-init")
	}
	return store, nil
}
