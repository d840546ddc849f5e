package domainindex

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

var sweepsTotal = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "certfleet_attention_sweeps_total",
	Help: "Sweeps of the tenants' attention indexes (domainindex.Sweeper), by outcome.",
}, []string{"outcome"})

// sweepQueue is how many tenants may wait for a sweep; a list finding
// the queue full leaves its tenant to a later list.
const sweepQueue = 1024

// Sweeper builds and sweeps the tenants' attention indexes in the
// background, a tenant at a time, when a list says one is due
// (Page.SweepDue): so no request waits for a build, and no step holds
// Redis for long. Replicas may sweep a tenant at once: the steps take
// turns and repeat nothing harmful.
type Sweeper struct {
	rdb               redis.UniversalClient
	recordPrefix      func(tenantID string) string
	now               func() time.Time
	warning, critical int
	logger            *zap.Logger

	mu     sync.Mutex
	queued map[string]bool
	ch     chan string
}

// NewSweeper returns a sweeper for lists counting statuses with the
// thresholds warningDays and criticalDays on the clock now; recordPrefix
// gives the start of a tenant's domain record keys (List's recordPrefix).
func NewSweeper(rdb redis.UniversalClient, recordPrefix func(tenantID string) string, now func() time.Time,
	warningDays, criticalDays int, logger *zap.Logger) *Sweeper {
	return &Sweeper{rdb: rdb, recordPrefix: recordPrefix, now: now, warning: warningDays, critical: criticalDays,
		logger: logger.Named("attention"),
		queued: map[string]bool{}, ch: make(chan string, sweepQueue)}
}

// Due asks for a sweep of tenantID's attention index; it never blocks,
// and asking again before the sweep ran changes nothing.
func (s *Sweeper) Due(tenantID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.queued[tenantID] {
		return
	}
	select {
	case s.ch <- tenantID:
		s.queued[tenantID] = true
	default:
		sweepsTotal.WithLabelValues("dropped").Inc()
	}
}

// Run sweeps the tenants asked for until ctx is done; a sweep that fails
// is logged, and the tenant's next list asks again.
func (s *Sweeper) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case tenant := <-s.ch:
			s.mu.Lock()
			delete(s.queued, tenant)
			s.mu.Unlock()
			start := time.Now()
			q := Query{Now: s.now(), Warning: s.warning, Critical: s.critical}
			if err := SweepAttention(ctx, s.rdb, tenant, s.recordPrefix(tenant), q); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				sweepsTotal.WithLabelValues("failed").Inc()
				s.logger.Warn("attention sweep failed", zap.String("tenant_id", tenant), zap.Error(err))
				continue
			}
			sweepsTotal.WithLabelValues("done").Inc()
			s.logger.Debug("attention index swept", zap.String("tenant_id", tenant), zap.Duration("took", time.Since(start)))
		}
	}
}
