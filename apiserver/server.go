// Package apiserver mounts certfleet's HTTP APIs on one server: each API
// style is a package of its own (keychest, v1, clientcerts, audit, over
// the shared plumbing of httpapi), and this package builds them, serves
// their routes beside /healthz, /readyz, /metrics, the OpenAPI document
// and the web dashboard at / (dashboard), and runs the server and the
// client-certificate renewal loop as actors of the process.
package apiserver

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/audit"
	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/apiserver/clientcerts"
	"github.com/certfleet/certfleet/apiserver/dashboard"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/apiserver/keychest"
	"github.com/certfleet/certfleet/apiserver/managedcerts"
	"github.com/certfleet/certfleet/apiserver/operator"
	"github.com/certfleet/certfleet/apiserver/tenants"
	v1 "github.com/certfleet/certfleet/apiserver/v1"
	"github.com/certfleet/certfleet/internal/channels"
	"github.com/certfleet/certfleet/internal/claimlink"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/health"
	"github.com/certfleet/certfleet/internal/managedcert"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/ratelimit"
	"github.com/certfleet/certfleet/internal/replicated"
	"github.com/certfleet/certfleet/internal/seal"
)

var (
	requestsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_apiserver_requests_total",
		Help: "HTTP requests served, by method, route template and status code.",
	}, []string{"method", "route", "code"})
	requestSeconds = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "certfleet_apiserver_request_duration_seconds",
		Help:    "Time to serve an HTTP request, by route template.",
		Buckets: prometheus.DefBuckets,
	}, []string{"route"})
)

// DefaultRateLimitAuthFailures is failed authentications a minute per
// client address (Config.RateLimitAuthFailures).
const DefaultRateLimitAuthFailures = 30

// Config configures the server.
type Config struct {
	// Listen is the HTTP address. Default 127.0.0.1:8080.
	Listen string
	// Health answers /healthz and /readyz: the process's checks. Nil: the
	// process is live, and ready while Redis answers.
	Health *health.Registry
	// ExpiryMetricsMaxSeries caps the series of the per-certificate expiry
	// gauge (expirymetrics.go); past it they are counted as dropped.
	// Default DefaultExpiryMetricsMaxSeries.
	ExpiryMetricsMaxSeries int
	// ExpiryMetricsTokenFile is a file whose first line (at least
	// operator.MinTokenLen characters) is the bearer token a scrape of
	// /metrics must send to get the per-tenant expiry series: they name
	// tenants and their hosts. Empty: they are not served at all.
	ExpiryMetricsTokenFile string
	// RegionStaleAfter: a region none of whose agents was seen for this
	// long is stale (GET /api/v1/regions). Default 10m; the alert engine
	// takes the same value.
	RegionStaleAfter time.Duration
	// Metrics gathers what /metrics serves: the metrics of the process's
	// roles. Nil: every metric of the default registry. A scrape with the
	// expiry metrics token gets the expiry series too.
	Metrics prometheus.Gatherer
	// RenewalWindow: a certificate expiring within it is renewal_due.
	// Default 672h (28 days).
	RenewalWindow time.Duration
	// Now is the clock renewal_due and expired are computed against.
	// Default time.Now.
	Now func() time.Time
	// MaxBodyBytes caps a request body. Default 64 KiB.
	MaxBodyBytes int64
	// MaxBulkBodyBytes caps the body of POST /api/v1/domains/bulk, which
	// carries up to 10,000 domains. Default 16 MiB.
	MaxBulkBodyBytes int64
	// ImportSpacing spreads the first scans of a bulk import: n domains
	// are due over n*ImportSpacing (accounts.Config). Default 20ms.
	ImportSpacing time.Duration
	// RedisWait is how many replicas must hold a command before it is
	// answered: domain, account and API key commands (accounts.Config.Wait),
	// notification channels (channels.Config.Wait), the client CA
	// (clientca.Config.Wait) and managed certificates and DNS accounts
	// (managedcert.Config.Wait). Default: no wait.
	RedisWait replicated.Config
	// ShutdownTimeout is how long Run waits for requests in flight when
	// ctx ends. Default 10s.
	ShutdownTimeout time.Duration
	// RateLimitGeneral, RateLimitCheck and RateLimitAPIKeys are requests a
	// minute per API key, shared by every replica: general counts every
	// v1 and KeyChest request, check POST /api/v1/check, apikeys POST
	// /api/v1/api-keys. Defaults 100, 10 and 5.
	RateLimitGeneral, RateLimitCheck, RateLimitAPIKeys int
	// RateLimitChannelTests is test messages a minute per tenant, shared
	// by every replica (POST /api/v1/channels/{id}/test, the dashboard's
	// Send test): each reaches an address the tenant chose, and a tenant
	// may hold many keys. Default 10.
	RateLimitChannelTests int
	// RateLimitClaimAccounts is the accounts KeyChest claims may create
	// an hour per client address (keychest.Config.RateLimitClaimAccounts).
	// Default 10.
	RateLimitClaimAccounts int
	// RateLimitAuthFailures is failed authentications a minute per client
	// address, shared by every replica: refused API keys on every API
	// (v1, KeyChest, client certificates) and refused dashboard sign-ins.
	// Past it the address is answered 429 before its key is checked
	// (httpapi.Auth.LimitFailures). Default 30.
	RateLimitAuthFailures int
	// WarningDays and CriticalDays: a certificate expiring within this many
	// days has status warning or critical (and critical caps the grade at
	// B). Defaults 30 and 7.
	WarningDays, CriticalDays int
	// CheckTimeout is how long POST /api/v1/check waits for every active
	// region's scan before answering 504. Default 30s.
	CheckTimeout time.Duration

	// Claims is the KeyChest claim policy (keychest.ClaimsApprove,
	// ClaimsOpen, ClaimsOff; docs/tenancy.md). Default approve.
	Claims string
	// ClaimQuota caps the servers a claimed key adds before the account
	// approves it. Default accounts.DefaultHeldQuota.
	ClaimQuota int64
	// Quotas are the operator's default limits per tenant
	// (internal/quota); a tenant's overrides win. Default quota.Defaults.
	Quotas quota.Limits

	// Notify configures the notification channels' store.
	Notify NotifyConfig
	// CA configures the private CA and its client-certificate API; its
	// Now and WarningDays are the server's, and its PublicURL defaults to
	// "http://" + Listen.
	CA clientcerts.Config
	// Audit configures the audit log.
	Audit audit.Config
	// Operator configures the operator API (/api/operator/...); it is
	// served only when TokenFile is set.
	Operator OperatorConfig
	// Dashboard configures the web dashboard served at /; its Now is the
	// server's.
	Dashboard dashboard.Config
}

// OperatorConfig configures the operator API (apiserver/operator).
type OperatorConfig struct {
	// TokenFile holds the operator token (--operator-token-file): its
	// first line, at least operator.MinTokenLen characters. Empty: no
	// operator routes.
	TokenFile string
	// RateLimit is requests a minute per client address. Default 10.
	RateLimit int
	// Groups are the consumer groups a tenant deletion waits for (the
	// projector and the sink: tenants.Deleter.Groups).
	Groups []string
	// Wait bounds that wait. Default 20s, so the answer comes within the
	// server's write timeout.
	Wait time.Duration
}

// NotifyConfig configures the notification channels' store.
type NotifyConfig struct {
	// SecretsPassphrase derives the key sealing webhook secrets
	// (--secrets-passphrase); every apiserver and notifier must have the
	// same. Empty: channels with a secret are refused.
	SecretsPassphrase string
	// SecretsPassphraseFile is read for the passphrase when
	// SecretsPassphrase is empty (--secrets-passphrase-file).
	SecretsPassphraseFile string
	// Targets lists the private ranges a webhook or Slack URL may name
	// (--allow-webhook-targets, the notifier's list): a URL naming an IP
	// literal outside them is refused when the channel is written.
	Targets []netip.Prefix
	// DNSTargets lists the private ranges a tenant's DNS provider endpoint
	// may name (--allow-dns-targets, the ACME worker's list), checked when
	// a DNS account is saved. The secrets passphrase seals DNS credentials
	// and managed certificates' keys too.
	DNSTargets []netip.Prefix
	// KeyType is the key type of managed certificates whose request names
	// none (--acme-key-type). Default ec256.
	KeyType string
}

func (c *NotifyConfig) validate() []error {
	if err := seal.CheckPassphrase("secrets", c.SecretsPassphrase); err != nil {
		return []error{err}
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8080"
	}
	if c.RenewalWindow == 0 {
		c.RenewalWindow = 672 * time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.ExpiryMetricsMaxSeries == 0 {
		c.ExpiryMetricsMaxSeries = DefaultExpiryMetricsMaxSeries
	}
	if c.Metrics == nil {
		c.Metrics = prometheus.DefaultGatherer
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 64 << 10
	}
	if c.MaxBulkBodyBytes == 0 {
		c.MaxBulkBodyBytes = 16 << 20
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = 10 * time.Second
	}
	if c.RateLimitGeneral == 0 {
		c.RateLimitGeneral = 100
	}
	if c.RateLimitCheck == 0 {
		c.RateLimitCheck = 10
	}
	if c.RateLimitAPIKeys == 0 {
		c.RateLimitAPIKeys = 5
	}
	if c.RateLimitChannelTests == 0 {
		c.RateLimitChannelTests = 10
	}
	if c.RateLimitAuthFailures == 0 {
		c.RateLimitAuthFailures = DefaultRateLimitAuthFailures
	}
	if c.WarningDays == 0 {
		c.WarningDays = 30
	}
	if c.CriticalDays == 0 {
		c.CriticalDays = 7
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = 30 * time.Second
	}
	if c.RegionStaleAfter == 0 {
		c.RegionStaleAfter = 10 * time.Minute
	}
	if c.Claims == "" {
		c.Claims = keychest.ClaimsApprove
	}
	c.Quotas = c.Quotas.With(quota.Defaults)
	if c.CA.PublicURL == "" {
		c.CA.PublicURL = "http://" + c.Listen
	}
	c.CA.Now, c.CA.WarningDays = c.Now, c.WarningDays
	c.CA.SetDefaults()
	c.Audit.SetDefaults()
	if c.Operator.Wait == 0 {
		c.Operator.Wait = 20 * time.Second
	}
	c.Dashboard.Now = c.Now
	c.Dashboard.SetDefaults()
}

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen address %q: %w", c.Listen, err))
	}
	if c.ExpiryMetricsMaxSeries < 0 {
		errs = append(errs, fmt.Errorf("expiry metrics max series must not be negative, got %d", c.ExpiryMetricsMaxSeries))
	}
	if c.RenewalWindow < 0 {
		errs = append(errs, fmt.Errorf("renewal window must not be negative, got %s", c.RenewalWindow))
	}
	if c.MaxBodyBytes < 0 || c.MaxBulkBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("max body bytes must not be negative, got %d and %d (bulk)", c.MaxBodyBytes, c.MaxBulkBodyBytes))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("shutdown timeout must not be negative, got %s", c.ShutdownTimeout))
	}
	if c.RateLimitGeneral < 0 || c.RateLimitCheck < 0 || c.RateLimitAPIKeys < 0 || c.RateLimitAuthFailures < 0 || c.RateLimitChannelTests < 0 ||
		c.RateLimitClaimAccounts < 0 {
		errs = append(errs, fmt.Errorf("rate limits must not be negative, got general %d, check %d, apikeys %d, auth failures %d, channel tests %d, claim accounts %d",
			c.RateLimitGeneral, c.RateLimitCheck, c.RateLimitAPIKeys, c.RateLimitAuthFailures, c.RateLimitChannelTests, c.RateLimitClaimAccounts))
	}
	if c.CriticalDays < 0 || c.WarningDays < c.CriticalDays {
		errs = append(errs, fmt.Errorf("thresholds must satisfy 0 <= critical days <= warning days, got critical %d, warning %d", c.CriticalDays, c.WarningDays))
	}
	if c.CheckTimeout < 0 {
		errs = append(errs, fmt.Errorf("check timeout must not be negative, got %s", c.CheckTimeout))
	}
	switch c.Claims {
	case keychest.ClaimsApprove, keychest.ClaimsOpen, keychest.ClaimsOff:
	default:
		errs = append(errs, fmt.Errorf("claims must be approve, open or off, got %q", c.Claims))
	}
	if c.ClaimQuota < 0 {
		errs = append(errs, fmt.Errorf("claim quota must not be negative, got %d", c.ClaimQuota))
	}
	if err := c.Quotas.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.Notify.validate()...)
	errs = append(errs, c.CA.Validate(), c.Audit.Validate(), c.Dashboard.Validate())
	return errors.Join(errs...)
}

// Server is the HTTP API server.
type Server struct {
	cfg    Config
	rdb    redis.UniversalClient
	logger *zap.Logger
	engine *gin.Engine
	// stopping is closed when Serve begins to shut down, so that requests
	// that wait (a manual check) answer at once instead of holding the
	// shutdown up.
	stopping chan struct{}

	accounts *accounts.Store
	auth     *httpapi.Auth
	caStore  *clientca.Store
	keychest *keychest.Handler
	v1       *v1.Handler
	operator *operator.Handler // nil without an operator token
	certs    *clientcerts.Handler
	managed  *managedcerts.Handler
	audit    *audit.Log
	dash     *dashboard.Dashboard
	// metrics serves /metrics without the expiry series, expiryMetrics
	// with them (nil without an expiry metrics token, whose hash is
	// expiryToken).
	metrics, expiryMetrics http.Handler
	expiryToken            [sha256.Size]byte
}

// New returns a server using rdb for commands and views.
func New(cfg Config, rdb redis.UniversalClient, logger *zap.Logger) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("apiserver config: %w", err)
	}
	if rdb == nil {
		return nil, errors.New("apiserver: redis client is nil")
	}
	logger = logger.Named("apiserver")
	s := &Server{cfg: cfg, rdb: rdb, logger: logger, stopping: make(chan struct{})}
	if err := s.build(); err != nil {
		return nil, err
	}
	s.engine = s.routes()
	return s, nil
}

// build makes each API style's handler and what they share.
func (s *Server) build() error {
	cfg, rdb, logger := s.cfg, s.rdb, s.logger
	store, err := accounts.New(accounts.Config{Now: cfg.Now, HoldClaims: cfg.Claims == keychest.ClaimsApprove,
		HeldQuota: cfg.ClaimQuota, Quotas: cfg.Quotas, ImportSpacing: cfg.ImportSpacing, Wait: cfg.RedisWait}, rdb, logger)
	if err != nil {
		return err
	}
	limiter, err := ratelimit.New(rdb, ratelimit.KeyPrefix)
	if err != nil {
		return err
	}
	engine, err := alerts.New(alerts.Config{Now: cfg.Now}, rdb, logger)
	if err != nil {
		return err
	}
	pass, err := channels.Passphrase(cfg.Notify.SecretsPassphrase, cfg.Notify.SecretsPassphraseFile)
	if err != nil {
		return err
	}
	chans, err := channels.New(channels.Config{Passphrase: pass, Now: cfg.Now, Quotas: cfg.Quotas,
		Targets: guard.Policy{Allow: cfg.Notify.Targets}, Wait: cfg.RedisWait}, rdb, logger)
	if err != nil {
		return err
	}
	caCfg := cfg.CA
	caCfg.Wait, caCfg.Quotas = cfg.RedisWait, cfg.Quotas
	if s.caStore, err = clientcerts.OpenCA(caCfg, rdb, logger); err != nil {
		return err
	}
	if s.audit, err = audit.New(cfg.Audit, rdb, store, logger); err != nil {
		return err
	}
	auth, limits := httpapi.NewAuth(store, quota.NewGate(rdb, cfg.Quotas)), httpapi.NewLimiter(limiter)
	auth.LimitFailures(limits, ratelimit.PerMinute(cfg.RateLimitAuthFailures))
	var links *claimlink.Links
	if pass != "" {
		links = claimlink.New(pass, rdb, cfg.Now)
	}
	if s.certs, err = clientcerts.New(cfg.CA, s.caStore, rdb, auth, limits, s.audit, logger); err != nil {
		return err
	}
	mstore, err := managedcert.New(managedcert.Config{Passphrase: pass, Now: cfg.Now, Quotas: cfg.Quotas,
		DNSTargets: guard.Policy{Allow: cfg.Notify.DNSTargets}, KeyType: cfg.Notify.KeyType, Wait: cfg.RedisWait}, rdb, logger)
	if err != nil {
		return err
	}
	s.managed = managedcerts.New(mstore, store, s.audit, func(scope string) []gin.HandlerFunc { return s.certs.Guard(scope) }, logger)
	s.accounts, s.auth = store, auth
	s.keychest = keychest.New(keychest.Config{RenewalWindow: cfg.RenewalWindow, Now: cfg.Now,
		RateLimitGeneral: cfg.RateLimitGeneral, RateLimitClaimAccounts: cfg.RateLimitClaimAccounts, Claims: cfg.Claims},
		rdb, store, auth, limits, links, logger)
	if cfg.Operator.TokenFile != "" {
		hash, err := operator.HashToken("operator token", cfg.Operator.TokenFile)
		if err != nil {
			return err
		}
		d := &tenants.Deleter{RDB: rdb, Accounts: store, Channels: chans, CA: s.caStore, CH: cfg.Audit.Conn,
			Groups: cfg.Operator.Groups, Wait: cfg.Operator.Wait, Logger: logger}
		if s.operator, err = operator.New(operator.Config{TokenHash: hash, RateLimit: cfg.Operator.RateLimit}, d, limits, logger); err != nil {
			return err
		}
	}
	if err := s.buildMetrics(); err != nil {
		return err
	}
	s.v1 = v1.New(v1.Config{
		Now: cfg.Now, WarningDays: cfg.WarningDays, CriticalDays: cfg.CriticalDays, CheckTimeout: cfg.CheckTimeout,
		RateLimitGeneral: cfg.RateLimitGeneral, RateLimitCheck: cfg.RateLimitCheck, RateLimitAPIKeys: cfg.RateLimitAPIKeys,
		RateLimitChannelTests: cfg.RateLimitChannelTests,
		Stopping:              s.stopping, Quotas: cfg.Quotas, ManagedCerts: mstore, ClientCA: s.caStore,
		ClickHouse:       cfg.Audit.Conn, // the API server's one ClickHouse connection
		RegionStaleAfter: cfg.RegionStaleAfter, Links: links,
	}, rdb, store, auth, limits, engine, chans, logger)
	s.dash, err = dashboard.New(cfg.Dashboard, dashboard.Deps{Redis: rdb, Accounts: store, Auth: auth, V1: s.v1, Alerts: engine,
		Channels: chans, ClientCA: s.caStore, Managed: mstore, Audit: s.audit}, logger)
	return err
}

// Handler returns the HTTP handler: every API, the dashboard, /healthz,
// /readyz and /metrics.
func (s *Server) Handler() http.Handler { return s.engine }

func (s *Server) routes() *gin.Engine {
	// Release mode keeps gin from printing its routes and warnings to stdout;
	// it is process-wide, and no certfleet role wants debug mode.
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.RedirectTrailingSlash = false
	r.Use(s.recovery(), s.observe(), s.limitBody())
	// Answers to no route are in the shape of the API whose path was
	// asked for (a client of that API parses them), KeyChest's elsewhere.
	render := s.renderByPath()
	r.NoRoute(render, func(c *gin.Context) { httpapi.Fail(c, httpapi.Errorf(http.StatusNotFound, "no such endpoint")) })
	r.NoMethod(render, func(c *gin.Context) {
		httpapi.Fail(c, httpapi.Errorf(http.StatusMethodNotAllowed, "method not allowed"))
	})

	r.GET("/healthz", s.healthz)
	r.GET("/readyz", s.readyz)
	r.GET("/metrics", s.serveMetrics)
	r.GET("/api/openapi.json", s.openAPI)
	s.keychest.Routes(r)                                    // /api/v1.0/...
	s.v1.Routes(r)                                          // /api/v1/...
	s.certs.Routes(r)                                       // /api/ca/..., /api/client-certs/..., /api/crl/..., /api/ocsp/..., /ocsp
	s.managed.Routes(r)                                     // /api/certificates/..., CertMate's managed certificates
	s.audit.Routes(r, s.certs.Guard(accounts.ScopeRead)...) // /api/audit, in the client-certificate API's shapes
	if s.operator != nil {
		s.operator.Routes(r) // /api/operator/...
	}
	s.dash.Routes(r) // /, /signin, /assets/... and the dashboard's pages
	return r
}

// RunAttention builds and sweeps the tenants' attention indexes that
// lists found due, an actor of the process beside Run (v1.Handler's).
func (s *Server) RunAttention(ctx context.Context) error { return s.v1.RunAttention(ctx) }

// RunRenewal is the client-certificate auto-renewal loop, an actor of the
// process beside Run (clientcerts.Handler.RunRenewal).
func (s *Server) RunRenewal(ctx context.Context) error { return s.certs.RunRenewal(ctx) }

// healthz answers whether the process is alive, never whether Redis is up
// (a blip must restart nothing); readyz whether its dependencies answer and
// its consumers keep up. Both come from the process's health registry
// (internal/health), which cmd/certfleet fills and hands over as
// Config.Health; without one, readiness is Redis answering.
func (s *Server) healthz(c *gin.Context) { s.health().Healthz().ServeHTTP(c.Writer, c.Request) }

func (s *Server) readyz(c *gin.Context) { s.health().Readyz().ServeHTTP(c.Writer, c.Request) }

func (s *Server) health() *health.Registry {
	if s.cfg.Health != nil {
		return s.cfg.Health
	}
	r := health.New()
	r.Ready("redis", health.PingFunc(func(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }))
	return r
}

// observe logs and counts every request by its route template, so that
// neither logs nor metrics carry emails or domains from paths, and never the
// query string, which holds api_key.
func (s *Server) observe() gin.HandlerFunc {
	return func(c *gin.Context) {
		start := time.Now()
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		took := time.Since(start)
		code := c.Writer.Status()
		requestsTotal.WithLabelValues(c.Request.Method, route, strconv.Itoa(code)).Inc()
		requestSeconds.WithLabelValues(route).Observe(took.Seconds())
		fields := []zap.Field{
			zap.String("method", c.Request.Method),
			zap.String("route", route),
			zap.Int("status", code),
			zap.Duration("latency", took),
		}
		switch {
		case code >= 500:
			s.logger.Error("request", fields...)
		case route == "/healthz" || route == "/readyz" || route == "/metrics":
			s.logger.Debug("request", fields...)
		default:
			s.logger.Info("request", fields...)
		}
	}
}

// apiStyles are the error styles of the API path prefixes: a path under
// one of them answers errors as that API does, whether or not a route
// matched. The first match wins; a path under none is KeyChest's.
var apiStyles = []struct {
	prefix string
	style  httpapi.Style
}{
	{"/api/v1.0/", keychest.Style},
	{"/api/v1/", v1.ErrorStyle()},
	{"/api/client-certs/", clientcerts.ErrorStyle()},
	{"/api/crl/", clientcerts.ErrorStyle()},
	{"/api/ocsp/", clientcerts.ErrorStyle()},
	{"/api/ca/", clientcerts.ErrorStyle()},
	{"/api/certificates/", clientcerts.ErrorStyle()},
	{"/api/audit/", clientcerts.ErrorStyle()},
	{"/api/operator/", operator.ErrorStyle()},
}

// styleOf returns the error style of the API path belongs to (a
// prefix's own path without its trailing slash included), KeyChest's for
// a path under none.
func styleOf(path string) httpapi.Style {
	for _, a := range apiStyles {
		if strings.HasPrefix(path, a.prefix) || path == strings.TrimSuffix(a.prefix, "/") {
			return a.style
		}
	}
	return keychest.Style
}

// renderByPath is httpapi.Render in the style of the request's path
// (styleOf), for the answers no API's route group renders.
func (s *Server) renderByPath() gin.HandlerFunc {
	return func(c *gin.Context) { httpapi.Render(s.logger, styleOf(c.Request.URL.Path))(c) }
}

// recovery turns a panicking handler into a JSON 500 in the shape of the
// API whose path was asked for (styleOf).
func (s *Server) recovery() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			if r == http.ErrAbortHandler {
				panic(r)
			}
			s.logger.Error("handler panicked", zap.String("route", c.FullPath()), zap.Any("panic", r), zap.Stack("stack"))
			if !c.Writer.Written() {
				c.AbortWithStatusJSON(http.StatusInternalServerError,
					styleOf(c.Request.URL.Path).Body(&httpapi.Error{Status: http.StatusInternalServerError, Msg: "internal error"}))
			}
		}()
		c.Next()
	}
}

// bulkRoute is the route whose body may be MaxBulkBodyBytes.
const bulkRoute = "/api/v1/domains/bulk"

func (s *Server) limitBody() gin.HandlerFunc {
	return func(c *gin.Context) {
		limit := s.cfg.MaxBodyBytes
		if c.FullPath() == bulkRoute {
			limit = s.cfg.MaxBulkBodyBytes
		}
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, limit)
		c.Next()
	}
}
