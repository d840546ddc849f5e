package apiserver

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/alerts"
	"github.com/certfleet/certfleet/apiserver/projector"
)

// DefaultExpiryMetricsMaxSeries is the default Config.ExpiryMetricsMaxSeries.
const DefaultExpiryMetricsMaxSeries = 10000

// expiryCollector is certfleet_certificate_expiry_timestamp_seconds: per
// domain of each tenant that opted in (alert settings' expiry_metrics),
// the earliest notAfter over the regions and IPs of the projector's view,
// read from Redis at each scrape. Its series are capped: past max, the
// rest are counted in certfleet_certificate_expiry_series_dropped_total,
// never exported.
type expiryCollector struct {
	s       *Server
	max     int
	expiry  *prometheus.Desc
	dropped prometheus.Counter
}

// RegisterMetrics registers the server's collectors that read Redis at
// scrape time (the per-certificate expiry gauge) on reg.
func (s *Server) RegisterMetrics(reg prometheus.Registerer) error {
	c := &expiryCollector{s: s, max: s.cfg.ExpiryMetricsMaxSeries,
		expiry: prometheus.NewDesc("certfleet_certificate_expiry_timestamp_seconds",
			"Earliest notAfter (Unix seconds) of the certificates a domain serves over every region and IP, for tenants whose alert settings have expiry_metrics on.",
			[]string{"tenant", "domain"}, nil),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "certfleet_certificate_expiry_series_dropped_total",
			Help: "Series of certfleet_certificate_expiry_timestamp_seconds left out of scrapes because --expiry-metrics-max-series was reached.",
		}),
	}
	return reg.Register(c)
}

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.expiry
	c.dropped.Describe(ch)
}

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	defer c.dropped.Collect(ch)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	series, dropped, err := c.s.expirySeries(ctx, c.max)
	if err != nil {
		// A scrape without these series; the Redis metrics and /readyz say why.
		c.s.logger.Warn("expiry metrics not read", zap.Error(err))
	}
	c.dropped.Add(float64(dropped))
	for _, e := range series {
		ch <- prometheus.MustNewConstMetric(c.expiry, prometheus.GaugeValue, float64(e.notAfter.Unix()), e.tenant, e.domain)
	}
}

// expirySeries is one value of the expiry gauge.
type expirySeries struct {
	tenant, domain string
	notAfter       time.Time
}

// expirySeries returns at most max series of the opted-in tenants (in
// tenant order, each tenant's oldest domains first, so the same ones
// are kept scrape after scrape) and how
// many it left out.
func (s *Server) expirySeries(ctx context.Context, max int) ([]expirySeries, int, error) {
	tenants, err := s.rdb.SMembers(ctx, alerts.ExpiryMetricsKey).Result()
	if err != nil {
		return nil, 0, err
	}
	slices.Sort(tenants)
	var out []expirySeries
	dropped := 0
	for _, tenant := range tenants {
		domains, err := s.accounts.ListDomains(ctx, tenant)
		if err != nil {
			return out, dropped, err
		}
		// The tenant's oldest domains first (ties by id), so that a cap
		// keeps the same series scrape after scrape.
		slices.SortFunc(domains, func(a, b accounts.Domain) int {
			return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), cmp.Compare(a.ID, b.ID))
		})
		ids := make([]string, len(domains))
		for i, d := range domains {
			ids[i] = d.ID
		}
		views, err := projector.Views(ctx, s.rdb, ids)
		if err != nil {
			return out, dropped, err
		}
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
			if len(out) >= max {
				dropped++
				continue
			}
			out = append(out, expirySeries{tenant: tenant, domain: name, notAfter: earliest})
		}
	}
	return out, dropped, nil
}
