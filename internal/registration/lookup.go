package registration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/ratelimit"
)

var (
	lookupsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_registration_lookups_total",
		Help: "Registration lookups, by the source that answered (rdap, whois, none) and status.",
	}, []string{"source", "status"})
	lookupSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "certfleet_registration_lookup_seconds",
		Help:    "Time of one registration lookup (rate-limit waits included), by the source that answered.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	}, []string{"source"})
)

// Fallback looks a domain up when RDAP cannot: the WHOIS client
// (internal/registration/whois).
type Fallback interface {
	Lookup(ctx context.Context, domain string) events.RegistrationV1
}

// FallbackDeps is what New hands the fallback's constructor, so that WHOIS
// dials through the same guard and shares the same per-server limits.
type FallbackDeps struct {
	// Servers is Config.WhoisServers.
	Servers map[string]string
	// DialTrusted dials a server the operator named (--whois-server, or
	// the first server of a lookup); Dial dials referral targets, checked
	// against Config.Allow. Unnamed func types, so that they assign to
	// the WHOIS client's own DialFunc fields.
	DialTrusted, Dial func(ctx context.Context, network, address string) (net.Conn, error)
	// Timeout and MaxBytes are Config's.
	Timeout  time.Duration
	MaxBytes int64
	// Wait and Defer are the shared per-server rate limiter.
	Wait  func(ctx context.Context, server string) error
	Defer func(ctx context.Context, server string, until time.Time)
}

// Config configures a Lookuper.
type Config struct {
	// Bootstrap is an RDAP bootstrap file in IANA's dns.json format
	// (--rdap-bootstrap), merged over the copy embedded at build time:
	// its entries win for their suffixes, every other TLD keeps IANA's
	// servers. Empty means the embedded copy alone.
	Bootstrap []byte
	// WhoisServers maps a TLD (lower-case, no dot) to the host:port of its
	// WHOIS server (--whois-server), overriding the usual one. These are
	// the operator's and dialed even on loopback or private addresses.
	WhoisServers map[string]string
	// Allow lists the special ranges (loopback, private, ...) that
	// redirect and referral targets may be in (--allow-targets). Servers
	// of the bootstrap file and WhoisServers need no entry: they are the
	// operator's.
	Allow []netip.Prefix
	// Timeout bounds one RDAP lookup (redirects and reading the answer
	// included, waiting for the first query's turn excluded), and the WHOIS
	// fallback on its own. Default 30s.
	Timeout time.Duration
	// MaxWait is how long a lookup waits for its server's turn under the
	// shared per-server limit; when the turn would come later the lookup
	// is rate-limited (Detail "local-limit") with RetryAfter at that turn,
	// so workers never sit out a registry's long Retry-After. Default 1m.
	MaxWait time.Duration
	// MaxBytes caps one answer; a longer one is an error "too-large".
	// Default 1 MiB.
	MaxBytes int64
	// MaxRedirects is how many RDAP redirects are followed. Default 3.
	MaxRedirects int
	// ServerRate is how fast certfleet asks any one registry server, all
	// replicas together. Default 1 request a second, no burst.
	ServerRate ratelimit.Limit
	// ServerRates overrides ServerRate per server: an RDAP URL's host (as
	// in the URL, with the port if it has one) or a WHOIS host:port.
	ServerRates map[string]ratelimit.Limit
	// NewFallback builds the WHOIS fallback from what New shares with it;
	// nil means none: a TLD without RDAP is an error "no-server".
	NewFallback func(FallbackDeps) (Fallback, error)
}

// bootstrapOf is the embedded IANA bootstrap with file, if any, over it.
func bootstrapOf(file []byte) (*Bootstrap, error) {
	iana, err := ParseBootstrap(ianaDNS)
	if err != nil {
		return nil, fmt.Errorf("embedded iana copy: %w", err)
	}
	if len(file) == 0 {
		return iana, nil
	}
	own, err := ParseBootstrap(file)
	if err != nil {
		return nil, err
	}
	return own.Over(iana), nil
}

func (c *Config) setDefaults() {
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if c.MaxWait == 0 {
		c.MaxWait = time.Minute
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 1 << 20
	}
	if c.MaxRedirects == 0 {
		c.MaxRedirects = 3
	}
	if c.ServerRate == (ratelimit.Limit{}) {
		c.ServerRate = ratelimit.Limit{Rate: 1, Period: time.Second, Burst: 1}
	}
}

// Validate reports every problem of the configuration (the bootstrap
// file's are reported by New, which parses it).
func (c *Config) Validate() error {
	var errs []error
	for tld, hp := range c.WhoisServers {
		if tld == "" || tld != strings.ToLower(strings.Trim(tld, ".")) {
			errs = append(errs, fmt.Errorf("whois server %q: TLD must be lower-case without dots at the ends", tld))
		}
		if host, port, err := net.SplitHostPort(hp); err != nil || host == "" || port == "" {
			errs = append(errs, fmt.Errorf("whois server for %q: %q is not host:port", tld, hp))
		}
	}
	if c.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout must be positive, got %s", c.Timeout))
	}
	if c.MaxWait < 0 {
		errs = append(errs, fmt.Errorf("max wait must be positive, got %s", c.MaxWait))
	}
	if c.MaxBytes < 0 {
		errs = append(errs, fmt.Errorf("max bytes must be positive, got %d", c.MaxBytes))
	}
	if c.MaxRedirects < 0 {
		errs = append(errs, fmt.Errorf("max redirects must not be negative, got %d", c.MaxRedirects))
	}
	if err := c.ServerRate.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("server rate: %w", err))
	}
	for s, l := range c.ServerRates {
		if err := l.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("server rate of %s: %w", s, err))
		}
	}
	return errors.Join(errs...)
}

// Lookuper looks up registrations: RDAP first, WHOIS where the bootstrap
// has no RDAP server for the TLD or RDAP gives no answer.
type Lookuper struct {
	bootstrap *Bootstrap
	rdap      *rdapClient
	fallback  Fallback
	logger    *zap.Logger
	now       func() time.Time
}

// New returns a Lookuper whose per-server limits live in rdb.
func New(cfg Config, rdb redis.UniversalClient, logger *zap.Logger) (*Lookuper, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("registration config: %w", err)
	}
	if rdb == nil {
		return nil, errors.New("registration: redis client is required")
	}
	logger = logger.Named("registration")
	bs, err := bootstrapOf(cfg.Bootstrap)
	if err != nil {
		return nil, fmt.Errorf("registration: %w", err)
	}
	limiter, err := newServerLimiter(rdb, cfg.ServerRate, cfg.ServerRates, logger)
	if err != nil {
		return nil, fmt.Errorf("registration: %w", err)
	}
	d := &guard.Dialer{Policy: guard.Policy{Allow: cfg.Allow}, Timeout: cfg.Timeout}
	l := &Lookuper{
		bootstrap: bs,
		rdap: &rdapClient{
			trusted:      guard.HTTPClient(d.DialTrusted, cfg.Timeout, nil),
			checked:      guard.HTTPClient(d.DialHost, cfg.Timeout, nil),
			timeout:      cfg.Timeout,
			maxWait:      cfg.MaxWait,
			maxBytes:     cfg.MaxBytes,
			maxRedirects: cfg.MaxRedirects,
			wait:         limiter.Wait,
			hold:         limiter.Defer,
			now:          time.Now,
		},
		logger: logger,
		now:    time.Now,
	}
	if cfg.NewFallback != nil {
		l.fallback, err = cfg.NewFallback(FallbackDeps{
			Servers: cfg.WhoisServers, DialTrusted: d.DialTrusted, Dial: d.DialHost,
			Timeout: cfg.Timeout, MaxBytes: cfg.MaxBytes, Wait: limiter.Wait, Defer: limiter.Defer,
		})
		if err != nil {
			return nil, fmt.Errorf("registration: whois: %w", err)
		}
	}
	return l, nil
}

// Lookup looks up domain's registration. It never fails: every outcome is
// a status (events.Registration*) with a Detail when it is an error.
func (l *Lookuper) Lookup(ctx context.Context, domain string) events.RegistrationV1 {
	start := l.now()
	res := l.lookup(ctx, domain)
	source := res.Source
	if source == "" {
		source = "none"
	}
	lookupsTotal.WithLabelValues(source, res.Status).Inc()
	lookupSeconds.WithLabelValues(source).Observe(l.now().Sub(start).Seconds())
	if res.Status == events.RegistrationError {
		l.logger.Info("registration lookup failed", zap.String("domain", res.Domain),
			zap.String("source", res.Source), zap.String("server", res.Server), zap.String("detail", res.Detail))
	}
	return res
}

func (l *Lookuper) lookup(ctx context.Context, domain string) events.RegistrationV1 {
	d, err := Registrable(domain)
	if err != nil || d != strings.TrimSuffix(strings.ToLower(domain), ".") {
		// Registries answer for registrable domains only; the caller
		// passes one (the job's), anything else is a caller's bug.
		return failed(events.RegistrationV1{Domain: domain, LookedUpAt: l.now()}, DetailNotRegistrable)
	}
	var rdapRes events.RegistrationV1
	if servers := l.bootstrap.Servers(d); len(servers) > 0 {
		rdapRes = l.rdap.lookup(ctx, d, servers[0])
		if rdapRes.Status != events.RegistrationError || l.fallback == nil || ctx.Err() != nil {
			return rdapRes
		}
	}
	if l.fallback == nil {
		return failed(events.RegistrationV1{Domain: d, LookedUpAt: l.now()}, DetailNoServer)
	}
	res := l.fallback.Lookup(ctx, d)
	if res.Status == events.RegistrationError && rdapRes.Status != "" {
		// Both failed: RDAP's reason is the one to fix first.
		return rdapRes
	}
	return res
}
