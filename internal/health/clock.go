package health

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// clockOffset is certfleet_clock_offset_seconds: how far this process's
// clock is ahead of Redis's (negative: behind). The coordinators schedule
// scans and the API servers compute statuses on their own clocks, while
// leases, rate limits and record generations run on Redis's, so a role
// whose clock is off shows here before its effects do.
var clockOffset = promauto.NewGauge(prometheus.GaugeOpts{
	Name: "certfleet_clock_offset_seconds",
	Help: "This process's clock minus Redis's (TIME), sampled every 30 s: positive when it runs ahead. Keep every host NTP-synced.",
})

// ClockOffsetEvery is how often WatchClockOffset samples the offset.
const ClockOffsetEvery = 30 * time.Second

// ClockOffset measures how far now's clock is ahead of Redis's: the
// local reading is taken halfway between the request's send and its
// answer, so the round trip cancels out up to its asymmetry.
func ClockOffset(ctx context.Context, rdb redis.UniversalClient, now func() time.Time) (time.Duration, error) {
	sent := now()
	t, err := rdb.Time(ctx).Result()
	if err != nil {
		return 0, fmt.Errorf("read redis time: %w", err)
	}
	answered := now()
	local := sent.Add(answered.Sub(sent) / 2)
	return local.Sub(t), nil
}

// WatchClockOffset samples ClockOffset of now (time.Now but in tests)
// every interval into certfleet_clock_offset_seconds until ctx ends, and
// warns once while the offset is past limit (again after it came back
// within it). A failed sample keeps the last value: Redis's own readiness
// check says it is away.
func WatchClockOffset(ctx context.Context, rdb redis.UniversalClient, now func() time.Time, interval, limit time.Duration,
	logger *zap.Logger) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	warned := false
	for {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		off, err := ClockOffset(sctx, rdb, now)
		cancel()
		if err == nil {
			clockOffset.Set(off.Seconds())
			far := off > limit || off < -limit
			if far && !warned {
				logger.Warn("clock differs from redis's: scans are dispatched and statuses computed off by as much; sync the host's clock (ntp)",
					zap.Duration("offset", off), zap.Duration("limit", limit))
			}
			warned = far
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
