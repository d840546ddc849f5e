package stream

import (
	"context"
	"fmt"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/redis/go-redis/v9"
)

var trimmedTotal = promauto.NewCounterVec(prometheus.CounterOpts{
	Name: "certfleet_stream_trimmed_total",
	Help: "Stream entries removed because every consumer group had read and acknowledged them.",
}, []string{"stream"})

// TrimAcknowledged removes the entries of a stream that every consumer
// group of it has read and acknowledged: those before each group's oldest
// pending entry and after none of its deliveries. It returns how many it
// removed. A stream without groups is left as it is: nothing says what a
// reader still needs (the dead-letter stream is kept for the operator).
//
// It is safe against consumers at work and against itself run by several
// processes at once: what a group has delivered and what it still has
// pending only move forward, so a bound read a moment ago is still one.
// The trim is exact (XTRIM MINID without ~): run once a minute, the cost of
// cutting into a macro-node does not matter, and a small stream is trimmed
// too.
func TrimAcknowledged(ctx context.Context, rdb redis.UniversalClient, stream string) (int64, error) {
	groups, err := rdb.XInfoGroups(ctx, stream).Result()
	if err != nil {
		if HasRedisError(err, "no such key") {
			return 0, nil
		}
		return 0, fmt.Errorf("groups of %s: %w", stream, err)
	}
	if len(groups) == 0 {
		return 0, nil
	}
	minID := ""
	for _, g := range groups {
		bound := nextID(g.LastDeliveredID)
		if g.Pending > 0 {
			p, err := rdb.XPending(ctx, stream, g.Name).Result()
			if err != nil {
				return 0, fmt.Errorf("pending of %s in %s: %w", g.Name, stream, err)
			}
			if p.Count > 0 && CompareIDs(p.Lower, bound) < 0 {
				bound = p.Lower
			}
		}
		if minID == "" || CompareIDs(bound, minID) < 0 {
			minID = bound
		}
	}
	n, err := rdb.XTrimMinID(ctx, stream, minID).Result()
	if err != nil {
		return 0, fmt.Errorf("trim %s below %s: %w", stream, minID, err)
	}
	trimmedTotal.WithLabelValues(stream).Add(float64(n))
	return n, nil
}

// nextID is the smallest stream id after id.
func nextID(id string) string {
	ms, seq := splitID(id)
	return strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq+1, 10)
}
