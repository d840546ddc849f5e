package coordinator

import (
	"context"
	"strconv"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/internal/lease"
)

// balanceLeases heartbeats this coordinator, then renews its leases and
// takes or gives up leases until it holds its fair share: ceil(shards/live)
// where live counts the coordinators whose heartbeat has not expired.
// Giving up above the share lets a coordinator that just joined find free
// shards on its next round.
func (c *Coordinator) balanceLeases(ctx context.Context) {
	ttl := c.cfg.LeaseTTL.Milliseconds()
	now := nowMS()
	live, err := c.heartbeat(ctx, now, now+ttl)
	if err != nil {
		c.logger.Warn("heartbeat failed", zap.Error(err))
		// Without a count of peers, keep what we hold and take nothing new.
		live = 0
	}

	for _, n := range c.HeldShards() {
		ok, err := lease.Renew(ctx, c.rdb, LeaseKey(n), c.token, c.cfg.LeaseTTL)
		if err != nil {
			c.logger.Warn("renew lease failed", zap.Int("shard", n), zap.Error(err))
			continue
		}
		if !ok {
			c.logger.Warn("lease lost, shard dropped", zap.Int("shard", n))
			c.setHeld(n, false)
		}
	}
	c.balanceRegistrationLease(ctx)
	if live == 0 {
		return
	}
	target := (c.cfg.Shards + int(live) - 1) / int(live)
	held := c.HeldShards()

	// Above target: release from the end, so holdings stay stable between rounds.
	for i := len(held) - 1; i >= 0 && len(held) > target; i-- {
		n := held[i]
		if _, err := lease.Release(ctx, c.rdb, LeaseKey(n), c.token); err != nil {
			c.logger.Warn("release lease failed", zap.Int("shard", n), zap.Error(err))
			continue
		}
		c.setHeld(n, false)
		held = held[:i]
		c.logger.Info("lease released", zap.Int("shard", n), zap.Int("target", target))
	}

	// Below target: try free shards, starting at a point of our own so that
	// coordinators joining together do not all race for shard 0 first.
	start := ShardOf(c.token, c.cfg.Shards)
	for i := 0; i < c.cfg.Shards && len(held) < target; i++ {
		n := (start + i) % c.cfg.Shards
		if c.isHeld(n) {
			continue
		}
		ok, err := lease.Acquire(ctx, c.rdb, LeaseKey(n), c.token, c.cfg.LeaseTTL)
		if err != nil {
			c.logger.Warn("acquire lease failed", zap.Int("shard", n), zap.Error(err))
			continue
		}
		if ok {
			c.setHeld(n, true)
			held = append(held, n)
			c.logger.Info("lease acquired", zap.Int("shard", n), zap.Int("target", target))
		}
	}
}

// heartbeat records this coordinator as live until expiry and returns how
// many coordinators are live, itself included.
func (c *Coordinator) heartbeat(ctx context.Context, now, expiry int64) (int64, error) {
	pipe := c.rdb.TxPipeline()
	pipe.ZAdd(ctx, CoordinatorsKey, redis.Z{Score: float64(expiry), Member: c.token})
	pipe.ZRemRangeByScore(ctx, CoordinatorsKey, "-inf", strconv.FormatInt(now, 10))
	count := pipe.ZCount(ctx, CoordinatorsKey, "("+strconv.FormatInt(now, 10), "+inf")
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	return count.Val(), nil
}

// releaseAll gives up every lease and the heartbeat, so the remaining
// coordinators take the shards over on their next round.
func (c *Coordinator) releaseAll(ctx context.Context) {
	for _, n := range c.HeldShards() {
		if _, err := lease.Release(ctx, c.rdb, LeaseKey(n), c.token); err != nil {
			c.logger.Warn("release lease failed", zap.Int("shard", n), zap.Error(err))
		}
		c.setHeld(n, false)
	}
	c.releaseRegistrationLease(ctx)
	if err := c.rdb.ZRem(ctx, CoordinatorsKey, c.token).Err(); err != nil {
		c.logger.Warn("remove heartbeat failed", zap.Error(err))
	}
	c.logger.Info("stopped, leases released")
}

func (c *Coordinator) isHeld(n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.held[n]
}
