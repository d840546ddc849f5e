// Package acme is the worker that orders, renews and revokes the server
// certificates tenants ask certfleet to manage (internal/managedcert),
// from an ACME CA through DNS-01 with each tenant's DNS provider account.
// The coordinator role runs it; any number of replicas may, since every
// order is taken under a lease.
//
// Tenants are hostile: a provider is built from the tenant's own
// credentials only (never the process environment), its endpoints are
// judged by --allow-dns-targets when dialed, and each tenant orders under
// its own ACME account, so its failures never spend another tenant's CA
// rate limits.
package acme

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	legoacme "github.com/go-acme/lego/v5/acme"
	"github.com/go-acme/lego/v5/certcrypto"
	"github.com/go-acme/lego/v5/certificate"
	"github.com/go-acme/lego/v5/challenge/dns01"
	"github.com/go-acme/lego/v5/lego"
	legolog "github.com/go-acme/lego/v5/log"
	"github.com/go-acme/lego/v5/registration"
	"github.com/miekg/dns"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/lease"
	"github.com/certfleet/certfleet/internal/managedcert"
	"github.com/certfleet/certfleet/internal/quota"
)

// LetsEncrypt is the default directory; LetsEncryptStaging is the one to
// try a set-up against.
const (
	LetsEncrypt        = "https://acme-v02.api.letsencrypt.org/directory"
	LetsEncryptStaging = "https://acme-staging-v02.api.letsencrypt.org/directory"
)

// Config configures a Worker.
type Config struct {
	// DirectoryURL is the ACME directory (--acme-directory). Default
	// LetsEncrypt.
	DirectoryURL string
	// Email is the contact of ACME accounts whose tenant gave none
	// (--acme-email).
	Email string
	// Roots verify the ACME server's HTTPS (--acme-ca-roots); nil: the
	// system's roots.
	Roots *x509.CertPool
	// Resolvers, when set, are the only DNS servers the propagation check
	// asks, with the check of the authoritative name servers off
	// (--acme-dns-resolvers). lego keeps resolvers process-wide.
	Resolvers []string
	// DNSTargets judges the addresses of tenants' DNS provider endpoints
	// (--allow-dns-targets).
	DNSTargets guard.Policy
	// PollInterval is how often the schedule is read. Default 5 s.
	PollInterval time.Duration
	// LeaseTTL is how long a domain stays taken after its worker died:
	// a live worker renews its lease every third of it. Default 1 min.
	LeaseTTL time.Duration
	// OrderTimeout bounds one order, challenges included. Default 5 min.
	OrderTimeout time.Duration
	// RetryMin and RetryMax bound the backoff after failures (doubling
	// from RetryMin). Defaults 1 min and 6 h.
	RetryMin, RetryMax time.Duration
	// Workers is how many orders run at once. Default 2.
	Workers int
	// SequenceInterval is the gap between names an RFC 2136 account
	// solves one after another when it sets none
	// (RFC2136_SEQUENCE_INTERVAL). Default 5 s.
	SequenceInterval time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.DirectoryURL == "" {
		c.DirectoryURL = LetsEncrypt
	}
	if c.PollInterval == 0 {
		c.PollInterval = 5 * time.Second
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = time.Minute
	}
	if c.OrderTimeout == 0 {
		c.OrderTimeout = 5 * time.Minute
	}
	if c.RetryMin == 0 {
		c.RetryMin = time.Minute
	}
	if c.RetryMax == 0 {
		c.RetryMax = 6 * time.Hour
	}
	if c.Workers == 0 {
		c.Workers = 2
	}
	if c.SequenceInterval == 0 {
		c.SequenceInterval = 5 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if !strings.HasPrefix(c.DirectoryURL, "https://") {
		errs = append(errs, fmt.Errorf("acme directory %q: want an https URL", c.DirectoryURL))
	}
	if c.PollInterval <= 0 || c.LeaseTTL <= 0 || c.OrderTimeout <= 0 || c.RetryMin <= 0 || c.SequenceInterval < 0 {
		errs = append(errs, errors.New("acme intervals must be positive"))
	}
	if c.RetryMax < c.RetryMin {
		errs = append(errs, errors.New("acme retry max must not be below retry min"))
	}
	if c.LeaseTTL > 0 && c.LeaseTTL < 30*time.Millisecond {
		errs = append(errs, errors.New("acme lease ttl must be at least 30ms (it is renewed every third)"))
	}
	if c.Workers < 1 {
		errs = append(errs, errors.New("acme workers must be at least 1"))
	}
	return errors.Join(errs...)
}

// Worker orders and renews managed certificates.
type Worker struct {
	cfg    Config
	store  *managedcert.Store
	rdb    redis.UniversalClient
	logger *zap.Logger

	dialer     *guard.Dialer
	acmeHTTP   *http.Client // the operator's CA: trusted
	tenantHTTP *http.Client // tenants' provider APIs: guarded

	// resolver looks up tenants' name servers (RFC 2136, the zone's
	// authoritative ones) and nsPort is the port those are asked on:
	// net.DefaultResolver and 53 but in tests.
	resolver *net.Resolver
	nsPort   string
	// recursive are the resolvers lego asks, as host:port: the
	// operator's, which a tenant's error never names.
	recursive []string
}

// resolversOnce guards lego's process-wide DNS client.
var resolversMu sync.Mutex

// New returns a worker on store.
func New(cfg Config, store *managedcert.Store, rdb redis.UniversalClient, logger *zap.Logger) (*Worker, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("acme worker config: %w", err)
	}
	if store == nil || rdb == nil {
		return nil, errors.New("acme worker: store and redis client are required")
	}
	w := &Worker{cfg: cfg, store: store, rdb: rdb, logger: logger.Named("acme"),
		dialer: &guard.Dialer{Policy: cfg.DNSTargets, Timeout: 10 * time.Second}, resolver: net.DefaultResolver, nsPort: "53",
		recursive: recursiveResolvers(cfg.Resolvers)}
	w.acmeHTTP = guard.HTTPClient(w.dialer.DialTrusted, 30*time.Second, cfg.Roots)
	w.tenantHTTP = guard.HTTPClient(w.dialer.DialHost, 30*time.Second, nil)
	legolog.SetDefault(newSlogger(w.logger.Named("lego")))
	if len(cfg.Resolvers) > 0 {
		resolversMu.Lock()
		dns01.SetDefaultClient(dns01.NewClient(&dns01.Options{RecursiveNameservers: cfg.Resolvers, Timeout: 5 * time.Second}))
		resolversMu.Unlock()
	}
	return w, nil
}

// Run works the schedule until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	w.logger.Info("acme worker started", zap.String("directory", w.cfg.DirectoryURL), zap.Int("workers", w.cfg.Workers))
	sem := make(chan struct{}, w.cfg.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(w.cfg.PollInterval)
	defer tick.Stop()
	for {
		var waiting int64
		for _, tag := range events.TenantTags() {
			if n, err := w.store.DueCount(ctx, tag, w.cfg.Now()); err == nil {
				waiting += n
			}
			due, err := w.store.Due(ctx, tag, w.cfg.Now(), 20)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				w.logger.Warn("read acme schedule", zap.String("tag", tag), zap.Error(err))
				continue
			}
			for _, d := range due {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return nil
				}
				wg.Go(func() {
					defer func() { <-sem }()
					w.Process(ctx, d[0], d[1])
				})
			}
		}
		dueGauge.Set(float64(waiting))
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Process does what tenant's domain is due for, under its lease: order,
// renew, or revoke and remove. Another replica holding the lease wins.
func (w *Worker) Process(ctx context.Context, tenant, domain string) {
	token := lease.NewToken()
	key := managedcert.LeaseKey(tenant, domain)
	ok, err := lease.Acquire(ctx, w.rdb, key, token, w.cfg.LeaseTTL)
	if err != nil || !ok {
		return
	}
	defer func() { _, _ = lease.Release(context.WithoutCancel(ctx), w.rdb, key, token) }()
	log := w.logger.With(zap.String("tenant_id", tenant), zap.String("domain", domain))

	c, err := w.store.Get(ctx, tenant, domain)
	if errors.Is(err, managedcert.ErrNotFound) {
		_ = w.store.Unschedule(ctx, tenant, domain)
		return
	}
	if err != nil {
		log.Warn("read managed certificate", zap.Error(err))
		return
	}
	if w.cfg.Now().Before(c.RetryAt) || (c.Status == managedcert.StatusIssued && !c.Renewing && !c.Deleting &&
		w.cfg.Now().Before(c.NextRenewal)) {
		return // the schedule moved under us; its entry is right already
	}
	octx, cancel := context.WithTimeout(ctx, w.cfg.OrderTimeout)
	defer cancel()
	stopLease, lost := w.keepLease(octx, cancel, log, key, token)
	defer stopLease()
	if c.Deleting {
		w.revoke(octx, log, c)
		return
	}
	if err := w.store.CountOrder(ctx, tenant); err != nil {
		var ex *quota.Exceeded
		if errors.As(err, &ex) {
			tomorrow := w.cfg.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
			_, _ = w.store.Postpone(ctx, tenant, domain, fmt.Sprintf("the account's %d ACME orders of the day are spent; next attempt %s", ex.Limit, tomorrow.Format(time.RFC3339)), tomorrow)
			ordersTotal.WithLabelValues("postponed").Inc()
		}
		return
	}
	start := time.Now()
	res, leaf, client, err := w.obtain(octx, c)
	if err != nil && lost() {
		return // the replica holding the domain now records its own outcome
	}
	if err != nil {
		w.failed(ctx, log, c, err)
		return
	}
	next, source := w.nextRenewal(octx, client, leaf)
	m, _, err := managedcert.ParseMaterial(res.Certificate, res.PrivateKey)
	if err != nil {
		w.failed(ctx, log, c, err)
		return
	}
	saved, err := w.store.SaveIssued(ctx, tenant, domain, m, leaf, next, source)
	if err != nil {
		log.Error("save issued certificate", zap.Error(err))
		return
	}
	result := "issued"
	if c.SHA256 != "" {
		result = "renewed"
	}
	ordersTotal.WithLabelValues(result).Inc()
	orderSeconds.Observe(time.Since(start).Seconds())
	log.Info("certificate saved", zap.String("result", result), zap.String("serial", saved.Serial), zap.Time("not_after", saved.NotAfter),
		zap.Time("next_renewal", saved.NextRenewal), zap.String("renewal_source", source), zap.Duration("took", time.Since(start)))
}

// keepLease renews the lease every third of its TTL while the order runs
// and cancels the order when the lease was lost (another replica took the
// domain over): two replicas never place the same order. It returns a
// function that stops the renewal and waits for it, and one that tells
// whether the lease was lost.
func (w *Worker) keepLease(ctx context.Context, cancel context.CancelFunc, log *zap.Logger, key, token string) (stop func(), lost func() bool) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	var gone atomic.Bool
	go func() {
		defer close(stopped)
		tick := time.NewTicker(w.cfg.LeaseTTL / 3)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			ok, err := lease.Renew(ctx, w.rdb, key, token, w.cfg.LeaseTTL)
			if err == nil && !ok {
				log.Warn("acme lease lost: abandoning the order")
				gone.Store(true)
				cancel()
				return
			}
		}
	}()
	return func() { close(done); <-stopped }, gone.Load
}

// obtain orders c's certificate under the tenant's ACME account; an
// account the CA forgot is registered again, once.
func (w *Worker) obtain(ctx context.Context, c managedcert.Certificate) (*certificate.Resource, *x509.Certificate, *lego.Client, error) {
	provider, err := w.provider(ctx, c)
	if err != nil {
		return nil, nil, nil, err
	}
	provider = bound(ctx, provider)
	for attempt := 0; ; attempt++ {
		client, err := w.client(ctx, c.Tenant, c.Contact, attempt > 0)
		if err != nil {
			return nil, nil, nil, err
		}
		if err := client.Challenge.SetDNS01Provider(provider, w.challengeOptions()...); err != nil {
			return nil, nil, nil, fmt.Errorf("set dns provider: %w", err)
		}
		res, err := client.Certificate.Obtain(ctx, certificate.ObtainRequest{
			Domains: append([]string{c.Domain}, c.SANs...), Bundle: true, KeyType: keyType(c.KeyType)})
		var pd *legoacme.ProblemDetails
		if err != nil && attempt == 0 && errors.As(err, &pd) && pd.Type == legoacme.AccountDoesNotExistErrorType {
			w.logger.Info("acme account unknown to the CA: registering again", zap.String("tenant_id", c.Tenant))
			continue
		}
		if err != nil {
			return nil, nil, nil, err
		}
		leaf, err := certcrypto.ParsePEMCertificate(res.Certificate)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("parse the issued certificate: %w", err)
		}
		return res, leaf, client, nil
	}
}

func keyType(s string) certcrypto.KeyType {
	switch s {
	case managedcert.KeyRSA2048:
		return certcrypto.RSA2048
	case managedcert.KeyRSA4096:
		return certcrypto.RSA4096
	default:
		return certcrypto.EC256
	}
}

// nextRenewal is when to renew leaf: a time in the CA's ARI window when it
// offers one, else at two thirds of the lifetime.
func (w *Worker) nextRenewal(ctx context.Context, client *lego.Client, leaf *x509.Certificate) (time.Time, string) {
	if info, err := client.Certificate.GetRenewalInfo(ctx, leaf); err == nil && info != nil && info.ExtendedRenewalInfo != nil {
		start, end := info.SuggestedWindow.Start, info.SuggestedWindow.End
		if !start.IsZero() && !end.Before(start) {
			at := start
			if d := end.Sub(start); d > 0 {
				at = start.Add(time.Duration(rand.Int64N(int64(d))))
			}
			return at, "ari"
		}
	}
	return leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3), "lifetime"
}

// failed records a failed order and when to try again: the CA's
// Retry-After when it sent one, else a doubling backoff.
func (w *Worker) failed(ctx context.Context, log *zap.Logger, c managedcert.Certificate, err error) {
	retry := w.backoff(c.Attempt + 1)
	var rl *legoacme.RateLimitedError
	if errors.As(err, &rl) && rl.RetryAfter > retry {
		retry = rl.RetryAfter
	}
	reason := w.describe(err)
	ordersTotal.WithLabelValues("failed").Inc()
	log.Warn("acme order failed", zap.Int("attempt", c.Attempt+1), zap.Duration("retry_in", retry), zap.String("error", reason))
	if _, err := w.store.SaveFailed(ctx, c.Tenant, c.Domain, reason, w.cfg.Now().Add(retry)); err != nil {
		log.Error("record failed order", zap.Error(err))
	}
}

// backoff is the wait before the attempt-th retry: RetryMin doubled per
// failure, capped at RetryMax, with ±10 % jitter so that many failures
// spread out.
func (w *Worker) backoff(attempt int) time.Duration {
	d := w.cfg.RetryMin
	for i := 1; i < attempt && d < w.cfg.RetryMax; i++ {
		d *= 2
	}
	d = min(d, w.cfg.RetryMax)
	return d + time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
}

// describe is an error as the tenant reads it on the record: one line,
// bounded, naming none of the operator's addresses (guard.TenantError).
func (w *Worker) describe(err error) string {
	s := strings.Join(strings.Fields(guard.TenantError(err, w.recursive...)), " ")
	if len(s) > 1000 {
		s = strings.ToValidUTF8(s[:1000], "") + "..."
	}
	return s
}

// recursiveResolvers are the resolvers lego's propagation check asks, as
// host:port: --acme-dns-resolvers, else the system's (lego reads
// /etc/resolv.conf).
func recursiveResolvers(configured []string) []string {
	servers, port := configured, "53"
	if len(servers) == 0 {
		if cc, err := dns.ClientConfigFromFile("/etc/resolv.conf"); err == nil {
			servers, port = cc.Servers, cc.Port
		}
	}
	out := make([]string, 0, len(servers))
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err == nil {
			out = append(out, s)
		} else {
			out = append(out, net.JoinHostPort(s, port))
		}
	}
	return out
}

// revoke revokes c's certificate at the CA (when it has one) and removes
// the record. A CA that keeps refusing does not keep the tenant's request
// forever: after three attempts the record goes without revocation.
func (w *Worker) revoke(ctx context.Context, log *zap.Logger, c managedcert.Certificate) {
	revoked := false
	if c.Status == managedcert.StatusIssued {
		_, m, err := w.store.OpenMaterial(ctx, c.Tenant, c.Domain)
		if err == nil {
			var client *lego.Client
			if client, err = w.client(ctx, c.Tenant, c.Contact, false); err == nil {
				err = client.Certificate.Revoke(ctx, []byte(m.CertPEM))
			}
		}
		if err != nil && c.Attempt < 2 {
			revocationsTotal.WithLabelValues("failed").Inc()
			w.failed(ctx, log, c, fmt.Errorf("revoke: %w", err))
			return
		}
		revoked = err == nil
		if err != nil {
			log.Warn("giving up revocation; removing the certificate anyway", zap.Error(err))
		}
	}
	revocationsTotal.WithLabelValues(map[bool]string{true: "revoked", false: "removed"}[revoked]).Inc()
	if err := w.store.Remove(ctx, c.Tenant, c.Domain, revoked); err != nil && !errors.Is(err, managedcert.ErrNotFound) {
		log.Error("remove managed certificate", zap.Error(err))
		return
	}
	log.Info("managed certificate removed", zap.Bool("revoked", revoked))
}

// user is a tenant's ACME account as lego needs it.
type user struct {
	email string
	reg   *legoacme.ExtendedAccount
	key   crypto.Signer
}

func (u *user) GetEmail() string                           { return u.email }
func (u *user) GetRegistration() *legoacme.ExtendedAccount { return u.reg }
func (u *user) GetPrivateKey() crypto.Signer               { return u.key }

// client returns a lego client under tenant's account on the directory,
// registering one (with a new key) when there is none or when fresh is
// set (the CA forgot the account).
func (w *Worker) client(ctx context.Context, tenant, contact string, fresh bool) (*lego.Client, error) {
	if contact == "" {
		contact = w.cfg.Email
	}
	newClient := func(u *user) (*lego.Client, error) {
		cfg := &lego.Config{CADirURL: w.cfg.DirectoryURL, User: u, UserAgent: "certfleet", HTTPClient: w.acmeHTTP,
			Certificate: lego.CertificateConfig{Timeout: 30 * time.Second, OverallRequestLimit: certificate.DefaultOverallRequestLimit}}
		c, err := lego.NewClient(cfg)
		if err != nil {
			return nil, fmt.Errorf("acme client for %s: %w", w.cfg.DirectoryURL, err)
		}
		return c, nil
	}
	acct, err := w.store.ACMEAccount(ctx, tenant, w.cfg.DirectoryURL)
	if err == nil && !fresh {
		key, err := certcrypto.ParsePEMPrivateKey(acct.KeyPEM)
		if err != nil {
			return nil, fmt.Errorf("acme account key of %s: %w", tenant, err)
		}
		return newClient(&user{email: acct.Email, key: key, reg: &legoacme.ExtendedAccount{Location: acct.URI}})
	}
	if err != nil && !errors.Is(err, managedcert.ErrNotFound) {
		return nil, err
	}
	key, err := certcrypto.GeneratePrivateKey(certcrypto.EC256)
	if err != nil {
		return nil, fmt.Errorf("acme account key: %w", err)
	}
	u := &user{email: contact, key: key}
	client, err := newClient(u)
	if err != nil {
		return nil, err
	}
	reg, err := client.Registration.Register(ctx, registration.RegisterOptions{TermsOfServiceAgreed: true})
	if err != nil {
		return nil, fmt.Errorf("register acme account: %w", err)
	}
	u.reg = reg
	if err := w.store.PutACMEAccount(ctx, tenant, w.cfg.DirectoryURL,
		managedcert.ACMEAccount{Email: contact, URI: reg.Location, KeyPEM: certcrypto.PEMEncode(key)}); err != nil {
		return nil, err
	}
	w.logger.Info("acme account registered", zap.String("tenant_id", tenant), zap.String("directory", w.cfg.DirectoryURL))
	return newClient(u)
}
