package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/coordinator/acme"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/managedcert"
	"github.com/certfleet/certfleet/internal/quota"
)

// acmeOptions are the flags of managed certificates: the key type and the
// DNS target policy on the API (which checks accounts when saved) and the
// worker (coordinator, all), the CA's settings on the worker.
type acmeOptions struct {
	ACME            bool
	ACMEDirectory   string
	ACMEEmail       string
	ACMECARoots     string
	ACMEResolvers   string
	ACMEKeyType     string
	ACMEWorkers     int
	ACMERetryMin    time.Duration
	AllowDNSTargets string
	DeployGrace     time.Duration
}

func (f *flagSet) acme() *flagSet {
	f.certQuotas()
	f.StringVar(&f.opts.ACMEKeyType, "acme-key-type", managedcert.KeyEC256, "key type of managed certificates whose request names none: ec256, rsa2048 or rsa4096")
	f.StringVar(&f.opts.AllowDNSTargets, "allow-dns-targets", "", "comma-separated CIDRs tenants' DNS provider endpoints (an RFC 2136 nameserver, an httpreq URL) may reach although private or loopback (the same on every apiserver and coordinator)")
	if f.Name() != "certfleet coordinator" {
		f.DurationVar(&f.opts.DeployGrace, "deploy-grace", 24*time.Hour, "how long after a managed certificate is issued every scanned IP and region must serve it before certificate_not_deployed is raised")
	}
	if f.Name() == "certfleet apiserver" {
		return f
	}
	f.BoolVar(&f.opts.ACME, "acme", true, "run the ACME worker: order and renew managed certificates (needs the secrets passphrase)")
	f.StringVar(&f.opts.ACMEDirectory, "acme-directory", acme.LetsEncrypt, "ACME directory URL of the CA ordering managed certificates (Let's Encrypt staging: "+acme.LetsEncryptStaging+")")
	f.StringVar(&f.opts.ACMEEmail, "acme-email", "", "contact of ACME accounts whose account (tenant) has no email")
	f.StringVar(&f.opts.ACMECARoots, "acme-ca-roots", "", "PEM file of roots trusted for the ACME server's HTTPS (a private ACME server); empty: the system's roots")
	f.StringVar(&f.opts.ACMEResolvers, "acme-dns-resolvers", "", "comma-separated HOST:PORT resolvers the DNS-01 propagation check asks, alone, with the check of the authoritative name servers off; empty: the system's resolvers and the authoritative check")
	f.IntVar(&f.opts.ACMEWorkers, "acme-workers", 2, "ACME orders this process runs at once")
	f.DurationVar(&f.opts.ACMERetryMin, "acme-retry-min", time.Minute, "wait before retrying a failed ACME order, doubled per failure up to 6h (the CA's Retry-After wins when longer)")
	return f
}

// certQuotas registers the quotas of managed certificates. They live in
// tenancyOptions with the others, but every role with the acme group
// needs them (the API counts certificates, the worker orders), the
// coordinator too, which has no tenancy group.
func (f *flagSet) certQuotas() *flagSet {
	o, d := &f.opts.tenancyOptions, quota.Defaults
	f.Int64Var(&o.QuotaCerts, "quota-managed-certificates", d[quota.ManagedCerts], "domains whose certificates certfleet orders over ACME for an account (0: unlimited); `certfleet quota set` overrides per account")
	f.Int64Var(&o.QuotaOrders, "quota-certificate-orders", d[quota.CertOrders], "ACME orders placed for an account per UTC day, renewals and retries included (0: unlimited)")
	return f
}

// managedCertStore is the store of managed certificates of a role.
func (o *options) managedCertStore(rdb redis.UniversalClient, logger *zap.Logger) (*managedcert.Store, error) {
	pass, err := channels.Passphrase(o.SecretsPassphrase, o.SecretsPassphraseFile)
	if err != nil {
		return nil, err
	}
	allow, err := parseAllow("--allow-dns-targets", o.AllowDNSTargets)
	if err != nil {
		return nil, err
	}
	return managedcert.New(managedcert.Config{Passphrase: pass, Quotas: o.tenancyOptions.quotas(),
		DNSTargets: guard.Policy{Allow: allow}, KeyType: o.ACMEKeyType}, rdb, logger)
}

// addACMEWorker adds the ACME worker to gr when role runs it.
func addACMEWorker(gr *group, role string, o *options, rdb redis.UniversalClient, logger *zap.Logger) error {
	if (role != "coordinator" && role != "all") || !o.ACME {
		return nil
	}
	store, err := o.managedCertStore(rdb, logger)
	if err != nil {
		return err
	}
	if !store.Enabled() {
		logger.Info("acme worker off: managed certificates need the secrets passphrase (--secrets-passphrase)")
		return nil
	}
	cfg := acme.Config{DirectoryURL: o.ACMEDirectory, Email: o.ACMEEmail, Workers: o.ACMEWorkers, RetryMin: o.ACMERetryMin, DNSTargets: store.DNSTargets()}
	if o.ACMECARoots != "" {
		pem, err := os.ReadFile(o.ACMECARoots)
		if err != nil {
			return fmt.Errorf("--acme-ca-roots: %w", err)
		}
		cfg.Roots = x509.NewCertPool()
		if !cfg.Roots.AppendCertsFromPEM(pem) {
			return errors.New("--acme-ca-roots: no PEM certificate in the file")
		}
	}
	for _, r := range strings.Split(o.ACMEResolvers, ",") {
		if r = strings.TrimSpace(r); r != "" {
			cfg.Resolvers = append(cfg.Resolvers, r)
		}
	}
	w, err := acme.New(cfg, store, rdb, logger)
	if err != nil {
		return err
	}
	gr.add(w.Run)
	return nil
}
