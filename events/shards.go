package events

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// DefaultShards is the default number of job shards.
const DefaultShards = 16

// shardsKey records the shard count the fleet was started with.
const shardsKey = "certfleet:shards"

// CheckShards records n as the fleet's shard count on first use and
// refuses a different count later: coordinators and agents must agree on
// it, or jobs on the shards one side does not know would never be read.
func CheckShards(ctx context.Context, rdb redis.UniversalClient, n int) error {
	if n < 1 || n > 100 {
		return fmt.Errorf("shards must be between 1 and 100, got %d", n)
	}
	if err := rdb.SetNX(ctx, shardsKey, n, 0).Err(); err != nil {
		return fmt.Errorf("record shard count: %w", err)
	}
	got, err := rdb.Get(ctx, shardsKey).Result()
	if err != nil {
		return fmt.Errorf("read shard count: %w", err)
	}
	if got != strconv.Itoa(n) {
		return fmt.Errorf("this fleet runs %s shards (key %s) but --shards is %d", got, shardsKey, n)
	}
	return nil
}

// Shards is the fleet's shard count as CheckShards recorded it; 0 before
// any coordinator or agent started.
func Shards(ctx context.Context, rdb redis.UniversalClient) (int, error) {
	got, err := rdb.Get(ctx, shardsKey).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read shard count: %w", err)
	}
	n, err := strconv.Atoi(got)
	if err != nil {
		return 0, fmt.Errorf("shard count %q (key %s): %w", got, shardsKey, err)
	}
	return n, nil
}
