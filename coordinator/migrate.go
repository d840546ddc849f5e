package coordinator

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Before the buckets, a shard kept every domain in three big keys:
// domains:{NN} (hash id -> JSON record), schedule:{NN} (zset id -> due)
// and versions:{NN} (hash id -> version, kept after removal). A
// coordinator moves them to the buckets when it starts and then every
// migrateEvery (a coordinator of the version before, still running during
// a rollout, writes them), and the domain event script moves a domain it
// finds there. Moving is idempotent and per domain, so several
// coordinators moving at once move each domain once.
const migrateEvery = time.Minute

// migrateScript moves one domain from the keys of the layout before to
// its buckets: its record with its version and due time, or a tombstone
// when only its version was left. A domain already in its bucket at a
// version as new keeps it.
//
// KEYS: domains bucket, schedule bucket, removed, then the legacy domains,
// schedule and versions. ARGV: domain id, legacy record as read ("" =
// none), the record (encodeRecord). Returns 1 when moved, -1 when the
// legacy record is no longer the one read (not moved; the next run does).
var migrateScript = redis.NewScript(`
local id = ARGV[1]
local old = redis.call('HGET', KEYS[4], id) or ''
if old ~= ARGV[2] then return -1 end
local v = redis.call('HGET', KEYS[6], id)
local due = redis.call('ZSCORE', KEYS[5], id)
redis.call('HDEL', KEYS[4], id)
redis.call('ZREM', KEYS[5], id)
redis.call('HDEL', KEYS[6], id)
local cur = redis.call('HGET', KEYS[1], id)
if cur and tonumber(string.match(cur, '^%d+')) >= (tonumber(v) or 0) then return 0 end
if old ~= '' then
  redis.call('HSET', KEYS[1], id, (v or '0') .. '|' .. ARGV[3])
  redis.call('ZREM', KEYS[3], id)
  if due then redis.call('ZADD', KEYS[2], due, id) else redis.call('ZREM', KEYS[2], id) end
elseif v then
  redis.call('HSET', KEYS[1], id, v)
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[3], v, id)
else
  return 0
end
return 1
`)

// migrateLegacy moves what is left in the keys of the layout before, and
// logs what it could not.
func (c *Coordinator) migrateLegacy(ctx context.Context) {
	if err := c.migrate(ctx); err != nil && ctx.Err() == nil {
		c.logger.Warn("move of domains to the buckets failed, will retry", zap.Error(err))
	}
}

// migrate moves every domain left in the keys of the layout before to
// its buckets.
func (c *Coordinator) migrate(ctx context.Context) error {
	if err := c.migrateRegistrations(ctx); err != nil {
		return err
	}
	for n := range c.cfg.Shards {
		legacy := []string{legacyVersionsKey(n), legacyDomainsKey(n), legacyScheduleKey(n)}
		left, err := c.rdb.Exists(ctx, legacy...).Result()
		if err != nil {
			return fmt.Errorf("look for legacy keys of shard %d: %w", n, err)
		}
		if left == 0 {
			continue
		}
		moved := 0
		for _, key := range legacy {
			var cursor uint64
			for {
				var ids []string
				var err error
				if key == legacyScheduleKey(n) {
					ids, cursor, err = c.rdb.ZScan(ctx, key, cursor, "*", batchSize).Result()
				} else {
					ids, cursor, err = c.rdb.HScan(ctx, key, cursor, "*", batchSize).Result()
				}
				if err != nil {
					return fmt.Errorf("scan %s: %w", key, err)
				}
				// Scans return members (fields) and scores (values): only
				// the first are ids.
				k, err := c.migrateBatch(ctx, n, evenOnly(ids))
				moved += k
				if err != nil {
					return err
				}
				if cursor == 0 {
					break
				}
			}
		}
		c.logger.Info("domains moved to the buckets", zap.Int("shard", n), zap.Int("domains", moved))
	}
	return nil
}

func evenOnly(s []string) []string {
	out := make([]string, 0, len(s)/2)
	for i := 0; i < len(s); i += 2 {
		out = append(out, s[i])
	}
	return out
}

// migrateBatch moves the domains ids of shard n and returns how many it
// moved.
func (c *Coordinator) migrateBatch(ctx context.Context, n int, ids []string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	raws, err := c.rdb.HMGet(ctx, legacyDomainsKey(n), ids...).Result()
	if err != nil {
		return 0, fmt.Errorf("read legacy domains of shard %d: %w", n, err)
	}
	pipe := c.rdb.Pipeline()
	cmds := make([]*redis.Cmd, 0, len(ids))
	for i, id := range ids {
		raw, _ := raws[i].(string)
		var body string
		if raw != "" {
			rec, err := parseRecord(raw)
			if err == nil {
				body, err = encodeRecord(rec)
			}
			if err != nil {
				c.logger.Error("cannot move domain record, left in place", zap.Int("shard", n), zap.String("domain_id", id), zap.Error(err))
				continue
			}
		}
		b := bucketOf(id)
		keys := []string{domainsKey(n, b), scheduleKey(n, b), removedKey(n),
			legacyDomainsKey(n), legacyScheduleKey(n), legacyVersionsKey(n)}
		cmds = append(cmds, migrateScript.Eval(ctx, pipe, keys, id, raw, body))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("move domains of shard %d: %w", n, err)
	}
	moved := 0
	for _, cmd := range cmds {
		if v, _ := cmd.Int(); v == 1 {
			moved++
		}
	}
	return moved, nil
}

// migrateRegScript moves domains from the single reg:domains hash of the
// layout before to their buckets; a domain already in its bucket at a
// version as new keeps it.
//
// KEYS: legacy reg:domains, then per domain its bucket. ARGV: domain ids,
// in the order of their buckets (ARGV[i] is in KEYS[i+1]). Returns the
// number moved.
var migrateRegScript = redis.NewScript(`
local moved = 0
for i, id in ipairs(ARGV) do
  local old = redis.call('HGET', KEYS[1], id)
  if old then
    local cur = redis.call('HGET', KEYS[i+1], id)
    if not cur or tonumber(string.match(cur, '^%d+')) < tonumber(string.match(old, '^%d+') or 0) then
      redis.call('HSET', KEYS[i+1], id, old)
      moved = moved + 1
    end
    redis.call('HDEL', KEYS[1], id)
  end
end
return moved
`)

// migrateRegistrations moves the registration references of the domains
// to the buckets of reg:domains.
func (c *Coordinator) migrateRegistrations(ctx context.Context) error {
	moved := 0
	var cursor uint64
	for {
		fields, next, err := c.rdb.HScan(ctx, legacyRegDomainsKey, cursor, "*", batchSize).Result()
		if err != nil {
			return fmt.Errorf("scan %s: %w", legacyRegDomainsKey, err)
		}
		if ids := evenOnly(fields); len(ids) > 0 {
			keys := []string{legacyRegDomainsKey}
			args := make([]any, len(ids))
			for i, id := range ids {
				keys = append(keys, regDomainsKey(id))
				args[i] = id
			}
			k, err := migrateRegScript.Run(ctx, c.rdb, keys, args...).Int()
			if err != nil {
				return fmt.Errorf("move registration references: %w", err)
			}
			moved += k
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	if moved > 0 {
		c.logger.Info("registration references moved to the buckets", zap.Int("domains", moved))
	}
	return nil
}
