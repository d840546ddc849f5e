package coordinator

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RegionsKey is a zset of the regions agents scan from, scored by the last
// time (unix ms) an agent of the region said it was alive. Readers that need
// to know which regions will answer a job (a manual check waiting for every
// region) ask ActiveRegions.
const RegionsKey = "agents:regions"

// AgentSeen records that an agent of region is alive at now. Agents call it
// on start and then periodically, well within the window readers pass to
// ActiveRegions.
func AgentSeen(ctx context.Context, rdb redis.UniversalClient, region string, now time.Time) error {
	if err := rdb.ZAdd(ctx, RegionsKey, redis.Z{Score: float64(now.UnixMilli()), Member: region}).Err(); err != nil {
		return fmt.Errorf("record region %s: %w", region, err)
	}
	return nil
}

// ActiveRegions returns, sorted, the regions an agent of which was seen at
// or after since.
func ActiveRegions(ctx context.Context, rdb redis.UniversalClient, since time.Time) ([]string, error) {
	regions, err := rdb.ZRangeByScore(ctx, RegionsKey, &redis.ZRangeBy{
		Min: strconv.FormatInt(since.UnixMilli(), 10), Max: "+inf",
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("read active regions: %w", err)
	}
	sort.Strings(regions)
	return regions, nil
}
