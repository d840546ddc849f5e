// Package presence records which regions have live scan agents. Agents
// write it (Seen, on start and then periodically); readers that must know
// which regions will answer a job, such as the API's manual check waiting
// for a fresh scan from every region, ask Active. It is the only state the
// agents and the API server share outside the event streams.
package presence

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// RegionsKey is a zset of the regions agents scan from, scored by the last
// time (unix ms) an agent of the region said it was alive.
const RegionsKey = "agents:regions"

// Seen records that an agent of region is alive at now. Agents call it on
// start and then periodically, well within the window readers pass to
// Active.
func Seen(ctx context.Context, rdb redis.UniversalClient, region string, now time.Time) error {
	if err := rdb.ZAdd(ctx, RegionsKey, redis.Z{Score: float64(now.UnixMilli()), Member: region}).Err(); err != nil {
		return fmt.Errorf("record region %s: %w", region, err)
	}
	return nil
}

// Active returns, sorted, the regions an agent of which was seen at or
// after since.
func Active(ctx context.Context, rdb redis.UniversalClient, since time.Time) ([]string, error) {
	regions, err := rdb.ZRangeByScore(ctx, RegionsKey, &redis.ZRangeBy{
		Min: strconv.FormatInt(since.UnixMilli(), 10), Max: "+inf",
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("read active regions: %w", err)
	}
	sort.Strings(regions)
	return regions, nil
}

// Region is a region agents scan from, and when one of its agents last
// said it was alive.
type Region struct {
	Name     string    `json:"name"`
	LastSeen time.Time `json:"last_seen"`
}

// Stale tells whether the region's agents had been silent for longer than
// after at at.
func (r Region) Stale(at time.Time, after time.Duration) bool { return at.Sub(r.LastSeen) > after }

// All returns every region an agent was ever seen in, sorted by name. A
// region whose agents are gone stays listed (stale) until an operator
// forgets it (Forget).
func All(ctx context.Context, rdb redis.UniversalClient) ([]Region, error) {
	zs, err := rdb.ZRangeWithScores(ctx, RegionsKey, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("read regions: %w", err)
	}
	out := make([]Region, 0, len(zs))
	for _, z := range zs {
		name, _ := z.Member.(string)
		out = append(out, Region{Name: name, LastSeen: time.UnixMilli(int64(z.Score)).UTC()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Forget removes a region from the list; an agent of it that is still
// alive adds it again within seconds.
func Forget(ctx context.Context, rdb redis.UniversalClient, region string) (bool, error) {
	n, err := rdb.ZRem(ctx, RegionsKey, region).Result()
	if err != nil {
		return false, fmt.Errorf("forget region %s: %w", region, err)
	}
	return n > 0, nil
}
