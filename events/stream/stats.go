package stream

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"go.uber.org/zap"
)

var (
	deadLettersTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_stream_dead_letters_total",
		Help: "Stream entries moved to the dead-letter stream, by source stream, group and reason.",
	}, []string{"stream", "group", "reason"})
	claimedTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_stream_claimed_total",
		Help: "Stream entries claimed from consumers that left them pending for too long.",
	}, []string{"stream", "group"})
	handlerFailuresTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_stream_handler_failures_total",
		Help: "Handler runs that failed and were retried, by group.",
	}, []string{"group"})
	readFailuresTotal = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "certfleet_stream_read_failures_total",
		Help: "Failed rounds of stream reads, by group.",
	}, []string{"group"})
	lagGauge = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "certfleet_stream_lag",
		Help: "Entries of a stream not yet delivered to the group (XINFO GROUPS lag).",
	}, []string{"stream", "group"})
	pendingGauge = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "certfleet_stream_pending",
		Help: "Entries delivered to the group and not yet acknowledged.",
	}, []string{"stream", "group"})
)

// background starts the stats loop; stop ends it and waits for it.
func (c *Consumer) background(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(c.cfg.StatsInterval)
		defer t.Stop()
		for {
			c.stats(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return func() {
		cancel()
		wg.Wait()
	}
}

// stats updates the lag and pending gauges, one XINFO GROUPS per stream,
// and whether the consumer is behind.
func (c *Consumer) stats(ctx context.Context) {
	var lag int64
	for _, s := range c.cfg.Streams {
		groups, err := c.rdb.XInfoGroups(ctx, s).Result()
		if err != nil {
			if ctx.Err() == nil {
				c.logger.Debug("xinfo groups failed", zap.String("stream", s), zap.Error(err))
			}
			return
		}
		for _, g := range groups {
			if g.Name != c.cfg.Group {
				continue
			}
			lagGauge.WithLabelValues(s, c.cfg.Group).Set(float64(max(g.Lag, 0)))
			pendingGauge.WithLabelValues(s, c.cfg.Group).Set(float64(g.Pending))
			lag += max(g.Lag, 0)
		}
	}
	switch {
	case lag <= c.cfg.MaxLag:
		c.behindAt.Store(0)
	case c.behindAt.Load() == 0:
		c.behindAt.Store(time.Now().UnixNano())
	}
}
