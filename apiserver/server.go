// Package apiserver serves certfleet's HTTP APIs: the KeyChest-compatible
// API under /api/v1.0, /healthz and /metrics. Commands go through
// apiserver/accounts (Lua scripts that append events); reads come from the
// views apiserver/projector keeps in Redis.
package apiserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/ratelimit"
	"github.com/certfleet/certfleet/internal/health"
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

// Config configures the server.
type Config struct {
	// Listen is the HTTP address. Default 127.0.0.1:8080.
	Listen string
	// Health answers /healthz and /readyz: the process's checks. Nil: the
	// process is live, and ready while Redis answers.
	Health *health.Registry
	// RenewalWindow: a certificate expiring within it is renewal_due.
	// Default 672h (28 days).
	RenewalWindow time.Duration
	// Now is the clock renewal_due and expired are computed against.
	// Default time.Now.
	Now func() time.Time
	// MaxBodyBytes caps a request body. Default 64 KiB.
	MaxBodyBytes int64
	// ShutdownTimeout is how long Run waits for requests in flight when
	// ctx ends. Default 10s.
	ShutdownTimeout time.Duration
	// RateLimitGeneral, RateLimitCheck and RateLimitAPIKeys are requests a
	// minute per API key, shared by every replica: general counts every
	// v1 and KeyChest request, check POST /api/v1/check, apikeys POST
	// /api/v1/api-keys. Defaults 100, 10 and 5.
	RateLimitGeneral, RateLimitCheck, RateLimitAPIKeys int
	// WarningDays and CriticalDays: a certificate expiring within this many
	// days has status warning or critical (and critical caps the grade at
	// B). Defaults 30 and 7.
	WarningDays, CriticalDays int
	// CheckTimeout is how long POST /api/v1/check waits for every active
	// region's scan before answering 504. Default 30s.
	CheckTimeout time.Duration

	// Each area of the API configures itself beside its code.
	Notify NotifyConfig // v1_channels.go
	CA     CAConfig     // ca.go
	Audit  AuditConfig  // audit.go
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
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 64 << 10
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
	if c.WarningDays == 0 {
		c.WarningDays = 30
	}
	if c.CriticalDays == 0 {
		c.CriticalDays = 7
	}
	if c.CheckTimeout == 0 {
		c.CheckTimeout = 30 * time.Second
	}
	c.CA.setDefaults()
	c.Audit.setDefaults()
}

// Validate reports every problem of the configuration.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		errs = append(errs, fmt.Errorf("listen address %q: %w", c.Listen, err))
	}
	if c.RenewalWindow < 0 {
		errs = append(errs, fmt.Errorf("renewal window must not be negative, got %s", c.RenewalWindow))
	}
	if c.MaxBodyBytes < 0 {
		errs = append(errs, fmt.Errorf("max body bytes must not be negative, got %d", c.MaxBodyBytes))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("shutdown timeout must not be negative, got %s", c.ShutdownTimeout))
	}
	if c.RateLimitGeneral < 0 || c.RateLimitCheck < 0 || c.RateLimitAPIKeys < 0 {
		errs = append(errs, fmt.Errorf("rate limits must not be negative, got general %d, check %d, apikeys %d",
			c.RateLimitGeneral, c.RateLimitCheck, c.RateLimitAPIKeys))
	}
	if c.CriticalDays < 0 || c.WarningDays < c.CriticalDays {
		errs = append(errs, fmt.Errorf("thresholds must satisfy 0 <= critical days <= warning days, got critical %d, warning %d", c.CriticalDays, c.WarningDays))
	}
	if c.CheckTimeout < 0 {
		errs = append(errs, fmt.Errorf("check timeout must not be negative, got %s", c.CheckTimeout))
	}
	errs = append(errs, c.Notify.validate()...)
	errs = append(errs, c.CA.validate()...)
	errs = append(errs, c.Audit.validate()...)
	return errors.Join(errs...)
}

// Server is the HTTP API server.
type Server struct {
	cfg      Config
	rdb      redis.UniversalClient
	logger   *zap.Logger
	accounts *accounts.Store
	keyUsage *accounts.KeyUsage
	limiter  *ratelimit.Limiter
	engine   *gin.Engine
	// stopping is closed when Run begins to shut down, so that requests
	// that wait (a manual check) answer at once instead of holding the
	// shutdown up.
	stopping chan struct{}

	// The state of each area, set up by its init function in New.
	alerts alertsArea // v1_alerts.go
	notify notifyArea // v1_channels.go
	ca     caArea     // ca.go
	audit  auditArea  // audit.go
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
	store, err := accounts.New(accounts.Config{Now: cfg.Now}, rdb, logger)
	if err != nil {
		return nil, err
	}
	limiter, err := ratelimit.New(rdb)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, rdb: rdb, logger: logger, accounts: store, keyUsage: store.NewKeyUsage(), limiter: limiter,
		stopping: make(chan struct{})}
	for _, init := range []func() error{s.initAlerts, s.initNotify, s.initCA, s.initAudit} {
		if err := init(); err != nil {
			return nil, err
		}
	}
	s.engine = s.routes()
	return s, nil
}

// Handler returns the HTTP handler: /api/v1/..., /api/v1.0/..., /healthz
// and /metrics.
func (s *Server) Handler() http.Handler { return s.engine }

func (s *Server) routes() *gin.Engine {
	// Release mode keeps gin from printing its routes and warnings to stdout;
	// it is process-wide, and no certfleet role wants debug mode.
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.RedirectTrailingSlash = false
	r.Use(s.recovery(), s.observe(), s.limitBody())
	r.NoRoute(func(c *gin.Context) { fail(c, http.StatusNotFound, "no such endpoint") })
	r.NoMethod(func(c *gin.Context) { fail(c, http.StatusMethodNotAllowed, "method not allowed") })

	r.GET("/healthz", s.healthz)
	r.GET("/readyz", s.readyz)
	r.GET("/metrics", gin.WrapH(promhttp.Handler()))
	r.GET("/api/openapi.json", s.openAPI)

	v1 := r.Group("/api/v1.0")
	v1.GET("/access/claim/:email", s.limitByAddress(), s.claimGenerated)
	v1.POST("/access/claim", s.limitByAddress(), s.claimOwn)
	v1.POST("/servers/add", s.limitKeyChestKey(), s.addServer)
	v1.GET("/servers/expiration/:domain", s.limitKeyChestKey(), s.expiration)
	s.v1Routes(r)
	s.caRoutes(r)         // /api/ca/..., /api/client-certs/... (clientcerts.go)
	s.revocationRoutes(r) // /api/crl/..., /api/ocsp/..., /ocsp (revocation.go)
	s.auditRoutes(r)      // /api/audit (audit.go)
	return r
}

// Run serves on cfg.Listen until ctx is done, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", s.cfg.Listen, err)
	}
	// A manual check holds its request for up to CheckTimeout; its answer
	// (a 504 at worst) must still be written.
	writeTimeout := max(30*time.Second, s.cfg.CheckTimeout+10*time.Second)
	srv := &http.Server{
		Handler:           s.engine,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          zap.NewStdLog(s.logger.Named("http")),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s.logger.Info("listening", zap.String("addr", ln.Addr().String()))
	select {
	case err := <-served:
		return fmt.Errorf("serve %s: %w", s.cfg.Listen, err)
	case <-ctx.Done():
	}
	close(s.stopping)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-served
	if err != nil {
		return fmt.Errorf("shutdown %s: %w", s.cfg.Listen, err)
	}
	s.logger.Info("stopped")
	return nil
}

// errorBody is every error answer: KeyChest's status field plus a message.
type errorBody struct {
	Status string `json:"status"`
	Error  string `json:"error"`
}

func fail(c *gin.Context, code int, msg string) {
	c.AbortWithStatusJSON(code, errorBody{Status: "error", Error: msg})
}

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

// recovery turns a panicking handler into a JSON 500.
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
				fail(c, http.StatusInternalServerError, "internal error")
			}
		}()
		c.Next()
	}
}

func (s *Server) limitBody() gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxBodyBytes)
		c.Next()
	}
}
