package apiserver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/internal/seal"
)

// CAConfig configures the private CA for client certificates.
type CAConfig struct {
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
	// <PublicURL>/ocsp. Default "http://" + Listen.
	PublicURL string
	// CRLValidity is a CRL's nextUpdate - thisUpdate. Default 24h.
	CRLValidity time.Duration
	// InitTimeout bounds the CA's creation or loading at start. Default 30s.
	InitTimeout time.Duration
}

func (c *CAConfig) setDefaults() {
	if c.KeyType == "" {
		c.KeyType = clientca.KeyECDSAP256
	}
	if c.CRLValidity == 0 {
		c.CRLValidity = 24 * time.Hour
	}
	if c.InitTimeout == 0 {
		c.InitTimeout = 30 * time.Second
	}
}

func (c *CAConfig) validate() []error {
	var errs []error
	if c.Passphrase != "" && c.PassphraseFile != "" {
		errs = append(errs, errors.New("CA passphrase: give the passphrase or its file, not both"))
	}
	if c.Passphrase != "" && len(c.Passphrase) < seal.MinPassphrase {
		errs = append(errs, fmt.Errorf("CA passphrase must be at least %d characters", seal.MinPassphrase))
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
	return errs
}

// caArea is the private CA's state, shared by the client certificate and
// revocation routes.
type caArea struct {
	// store is the CA: records, signing, revocation (never nil after
	// initCA). Without a passphrase, its signing methods return
	// clientca.ErrNoPassphrase.
	store *clientca.Store
}

func (s *Server) initCA() error {
	cfg := s.cfg.CA
	pass := cfg.Passphrase
	if cfg.PassphraseFile != "" {
		p, err := seal.ReadPassphraseFile(cfg.PassphraseFile)
		if err != nil {
			return fmt.Errorf("client CA: %w", err)
		}
		pass = p
	}
	publicURL := cfg.PublicURL
	if publicURL == "" {
		publicURL = "http://" + s.cfg.Listen
	}
	store, err := clientca.New(clientca.Config{
		Passphrase: pass, PublicURL: publicURL, CommonName: cfg.CommonName, Now: s.cfg.Now,
	}, s.rdb, s.logger)
	if err != nil {
		return err
	}
	s.ca.store = store
	if pass == "" {
		if cfg.Init {
			s.logger.Warn("client CA cannot sign: no CA passphrase (set CERTFLEET_CA_PASSPHRASE or --ca-passphrase-file)")
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.InitTimeout)
	defer cancel()
	if cfg.Init {
		if _, err := store.Ensure(ctx, cfg.KeyType); err != nil {
			return fmt.Errorf("client CA: %w", err)
		}
		return nil
	}
	// Without Init, check the passphrase opens an existing CA at once, so
	// a wrong one fails the start instead of every signing request.
	if _, err := store.Authority(ctx); err != nil && !errors.Is(err, clientca.ErrNoCA) {
		return fmt.Errorf("client CA: %w", err)
	} else if errors.Is(err, clientca.ErrNoCA) {
		s.logger.Info("no client CA yet: run `certfleet ca init` or start with --ca-init")
	}
	return nil
}
