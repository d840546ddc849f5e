package apiserver

import (
	"cmp"
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/apiserver/operator"
	"github.com/certfleet/certfleet/apiserver/projector"
)

// DefaultExpiryMetricsMaxSeries is the default Config.ExpiryMetricsMaxSeries.
const DefaultExpiryMetricsMaxSeries = 10000

// ExpiryMetricsCacheFor is how long the expiry series, once read, answer
// scrapes: reading them costs a read of every opted-in domain's view, so
// several Prometheus servers (or a fast scrape interval) read them once.
const ExpiryMetricsCacheFor = 15 * time.Second

// buildMetrics makes the /metrics handlers: the process's metrics for
// every scrape and, with an expiry metrics token, the expiry series on top
// for the scrapes that send it. The series name tenants and their hosts,
// so without a token they are not served at all.
func (s *Server) buildMetrics() error {
	s.metrics = promhttp.InstrumentMetricHandler(prometheus.DefaultRegisterer,
		promhttp.HandlerFor(s.cfg.Metrics, promhttp.HandlerOpts{}))
	if s.cfg.ExpiryMetricsTokenFile == "" {
		s.logger.Info("per-tenant expiry metrics off: certfleet_certificate_expiry_timestamp_seconds is served only to scrapes " +
			"of /metrics with the token of --expiry-metrics-token-file, which is not set")
		return nil
	}
	hash, err := operator.HashToken("expiry metrics token", s.cfg.ExpiryMetricsTokenFile)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(newExpiryCollector(s)); err != nil {
		return err
	}
	s.expiryToken = hash
	s.expiryMetrics = promhttp.InstrumentMetricHandler(prometheus.DefaultRegisterer,
		promhttp.HandlerFor(prometheus.Gatherers{s.cfg.Metrics, reg}, promhttp.HandlerOpts{}))
	s.logger.Info("per-tenant expiry metrics on: served on /metrics to scrapes with the expiry metrics token",
		zap.Int("max_series", s.cfg.ExpiryMetricsMaxSeries), zap.Duration("cache_for", ExpiryMetricsCacheFor))
	return nil
}

// serveMetrics is GET /metrics: the process's metrics; with the expiry
// metrics token as bearer, the expiry series too. A wrong bearer token is
// 401 and counts as a failed authentication of the client address
// (httpapi.Auth.LimitFailures), so it cannot be guessed at speed. A
// scrape without a bearer token, or any scrape when no expiry token is
// configured, is the anonymous scrape of before.
func (s *Server) serveMetrics(c *gin.Context) {
	token, ok := httpapi.BearerToken(c.GetHeader("Authorization"))
	if !ok || s.expiryMetrics == nil {
		s.metrics.ServeHTTP(c.Writer, c.Request)
		return
	}
	if !s.auth.FailuresLeft(c) {
		return
	}
	if !operator.TokenMatches(token, s.expiryToken) {
		s.auth.Failed(c)
		c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "invalid metrics token: scrape /metrics without Authorization, " +
			"or with the token of --expiry-metrics-token-file for the per-tenant expiry series"})
		return
	}
	s.expiryMetrics.ServeHTTP(c.Writer, c.Request)
}

// expiryCollector is certfleet_certificate_expiry_timestamp_seconds: per
// domain of each tenant that opted in (alert settings' expiry_metrics),
// the earliest notAfter over the regions and IPs of the projector's view,
// read from Redis at most once per ExpiryMetricsCacheFor. Its series are
// capped: past max, the rest are counted in
// certfleet_certificate_expiry_series_dropped_total, never exported.
type expiryCollector struct {
	s       *Server
	max     int
	expiry  *prometheus.Desc
	dropped prometheus.Counter

	// mu is held while the series are read, so that scrapes at once read
	// them once.
	mu     sync.Mutex
	series []expirySeries
	readAt time.Time
}

func newExpiryCollector(s *Server) *expiryCollector {
	return &expiryCollector{s: s, max: s.cfg.ExpiryMetricsMaxSeries,
		expiry: prometheus.NewDesc("certfleet_certificate_expiry_timestamp_seconds",
			"Earliest notAfter (Unix seconds) of the certificates a domain serves over every region and IP, for tenants whose alert settings have expiry_metrics on.",
			[]string{"tenant", "domain"}, nil),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "certfleet_certificate_expiry_series_dropped_total",
			Help: "Series of certfleet_certificate_expiry_timestamp_seconds left out because --expiry-metrics-max-series was reached, counted each time the series are read (at most every 15s).",
		}),
	}
}

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.expiry
	c.dropped.Describe(ch)
}

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	for _, e := range c.read() {
		ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, float64(e.notAfter.Unix()), e.tenant, e.domain)
	}
	c.dropped.Collect(ch)
}

// read returns the series, read again when the last read is older than
// ExpiryMetricsCacheFor. A failed read serves what was read before.
func (c *expiryCollector) read() []expirySeries {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.readAt.IsZero() && time.Since(c.readAt) < ExpiryMetricsCacheFor {
		return c.series
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	series, dropped, err := c.s.expirySeries(ctx, c.max)
	if err != nil {
		// The cached series; the Redis metrics and /readyz say why.
		c.s.logger.Warn("expiry metrics not read", zap.Error(err))
		return c.series
	}
	c.dropped.Add(float64(dropped))
	c.series, c.readAt = series, time.Now()
	return series
}

// expirySeries is one value of the expiry gauge.
type expirySeries struct {
	tenant, domain string
	notAfter       time.Time
}

// expirySeries returns at most max series of the opted-in tenants and
// how many it left out. Past max, the tenants share it round-robin: each
// in turn (in tenant order) gets its next oldest domain, so one tenant
// with many domains does not crowd the others out, and the same series
// are kept scrape after scrape.
func (s *Server) expirySeries(ctx context.Context, max int) ([]expirySeries, int, error) {
	tenants, err := s.rdb.SMembers(ctx, alerts.ExpiryMetricsKey).Result()
	if err != nil {
		return nil, 0, err
	}
	slices.Sort(tenants)
	perTenant := make([][]expirySeries, 0, len(tenants))
	total := 0
	for _, tenant := range tenants {
		series, err := s.tenantExpirySeries(ctx, tenant)
		if err != nil {
			return nil, 0, err
		}
		perTenant = append(perTenant, series)
		total += len(series)
	}
	out := make([]expirySeries, 0, min(total, max))
	for round := 0; len(out) < min(total, max); round++ {
		for _, series := range perTenant {
			if round < len(series) && len(out) < max {
				out = append(out, series[round])
			}
		}
	}
	return out, total - len(out), nil
}

// tenantExpirySeries returns the series of tenant's domains that have a
// certificate, oldest domain first (ties by id).
func (s *Server) tenantExpirySeries(ctx context.Context, tenant string) ([]expirySeries, error) {
	domains, err := s.accounts.ListDomains(ctx, tenant)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(domains, func(a, b accounts.Domain) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
	})
	ids := make([]string, len(domains))
	for i, d := range domains {
		ids[i] = d.ID
	}
	views, err := projector.Views(ctx, s.rdb, ids)
	if err != nil {
		return nil, err
	}
	var out []expirySeries
	for _, d := range domains {
		name := d.Name()
		var earliest time.Time
		for _, e := range views[d.ID].For(name) {
			if !e.CertificateFound || e.NoExpiry || e.NotAfter.IsZero() {
				continue
			}
			if earliest.IsZero() || e.NotAfter.Before(earliest) {
				earliest = e.NotAfter
			}
		}
		if earliest.IsZero() {
			continue // no certificate seen yet
		}
		out = append(out, expirySeries{tenant: tenant, domain: name, notAfter: earliest})
	}
	return out, nil
}
