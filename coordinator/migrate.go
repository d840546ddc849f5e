package coordinator

import (
	"context"
	"fmt"
	"strconv"
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
// A domain moved with a due time lowers its bucket's score in the due
// index to it. The bucket is found in the script (bucketLua).
//
// KEYS: split set, removed, then the legacy domains, schedule and
// versions, then the due index. ARGV: domain id (as text, as the legacy
// keys keep it), legacy record as read ("" = none), the record
// (encodeRecord), domain id as the buckets keep it (Member), bucket hash,
// domains and schedule prefixes (shardSet). Returns 1 when moved,
// -1 when the legacy record is no longer the one read (not moved; the
// next run does).
var migrateScript = redis.NewScript(bucketLua + `
local id, m = ARGV[1], ARGV[4]
local old = redis.call('HGET', KEYS[3], id) or ''
if old ~= ARGV[2] then return -1 end
local b = bucket_of(KEYS[1], tonumber(ARGV[5]), ` + strconv.Itoa(bucketsPerShard) + `)
local dk, sk = ARGV[6] .. b, ARGV[7] .. b
local v = redis.call('HGET', KEYS[5], id)
local due = redis.call('ZSCORE', KEYS[4], id)
redis.call('HDEL', KEYS[3], id)
redis.call('ZREM', KEYS[4], id)
redis.call('HDEL', KEYS[5], id)
local cur = redis.call('HGET', dk, m)
if cur and tonumber(string.match(cur, '^%d+')) >= (tonumber(v) or 0) then return 0 end
if old ~= '' then
  redis.call('HSET', dk, m, (v or '0') .. '|' .. ARGV[3])
  redis.call('ZREM', KEYS[2], m)
  if due then
    redis.call('ZADD', sk, due, m)
    redis.call('ZADD', KEYS[6], 'LT', due, b)
  else
    redis.call('ZREM', sk, m)
  end
elseif v then
  redis.call('HSET', dk, m, v)
  redis.call('ZREM', sk, m)
  redis.call('ZADD', KEYS[2], v, m)
else
  return 0
end
return 1
`)

// migrateLegacy moves what is left in the keys of the layout before, and
// logs what it could not; then it lowers the due index to the buckets'
// earliest due times (buildDueIndex).
func (c *Coordinator) migrateLegacy(ctx context.Context) {
	if err := c.migrate(ctx); err != nil && ctx.Err() == nil {
		c.logger.Warn("move of domains to the buckets failed, will retry", zap.Error(err))
	}
	if err := c.buildDueIndex(ctx); err != nil && ctx.Err() == nil {
		c.logger.Warn("build of the due index failed, will retry", zap.Error(err))
	}
}

// dueIndexScript lowers the score of every bucket of a shard in the due
// index to the bucket's earliest due time (ZADD LT: a score already
// earlier stays, dispatch corrects it). A schedule written without the
// index (before 2026-12-06, sixth, or by a coordinator of before still
// running during a rollout) is so dispatched at most one run late.
//
// KEYS: due index, then schedule buckets of the shard. ARGV: those
// buckets. Returns the number of buckets scheduled.
var dueIndexScript = redis.NewScript(`
local n = 0
for k = 2, #KEYS do
  local first = redis.call('ZRANGE', KEYS[k], 0, 0, 'WITHSCORES')
  if first[2] then
    redis.call('ZADD', KEYS[1], 'LT', first[2], ARGV[k - 1])
    n = n + 1
  end
end
return n
`)

// buildDueIndex runs dueIndexScript on every shard, on the buckets that
// hold domains (leaves), a batchSize at a time. A bucket split meanwhile
// is empty: its halves are in the index already (growScript).
func (c *Coordinator) buildDueIndex(ctx context.Context) error {
	for n := range c.cfg.Shards {
		bs, err := shardSet(n).leaves(ctx, c.rdb)
		if err != nil {
			return err
		}
		for len(bs) > 0 {
			part := bs[:min(len(bs), batchSize)]
			bs = bs[len(part):]
			keys, args := []string{dueKey(n)}, make([]any, len(part))
			for i, b := range part {
				keys = append(keys, scheduleKey(n, b))
				args[i] = b
			}
			if err := dueIndexScript.Run(ctx, c.rdb, keys, args...).Err(); err != nil {
				return fmt.Errorf("build due index of shard %d: %w", n, err)
			}
		}
	}
	return nil
}

// migrate moves every domain left in the keys of the layout before to
// its buckets.
func (c *Coordinator) migrate(ctx context.Context) error {
	if err := c.migrateRegistrations(ctx); err != nil {
		return err
	}
	if err := c.foldRegRefs(ctx); err != nil {
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
		m, err := Member(id)
		if err != nil {
			c.logger.Error("cannot move domain, left in place", zap.Int("shard", n), zap.String("domain_id", id), zap.Error(err))
			continue
		}
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
		s := shardSet(n)
		keys := []string{s.split, removedKey(n),
			legacyDomainsKey(n), legacyScheduleKey(n), legacyVersionsKey(n), dueKey(n)}
		cmds = append(cmds, migrateScript.Eval(ctx, pipe, keys, id, raw, body, m, bucketHash(id), s.hash, s.zset))
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
// KEYS: legacy reg:domains, the split set of reg:domains. ARGV: the
// buckets' prefix, then per domain its id as text (the legacy hash's
// field), as the buckets keep it (Member) and its bucket hash. Returns
// the number moved.
var migrateRegScript = redis.NewScript(bucketLua + keepNewerLua + `
local moved = 0
for i = 2, #ARGV, 3 do
  local id, m = ARGV[i], ARGV[i+1]
  local old = redis.call('HGET', KEYS[1], id)
  if old then
    local key = ARGV[1] .. bucket_of(KEYS[2], tonumber(ARGV[i+2]), ` + strconv.Itoa(regBuckets) + `)
    local cur = redis.call('HGET', key, m)
    keep_newer(key, m, old)
    if redis.call('HGET', key, m) ~= cur then moved = moved + 1 end
    redis.call('HDEL', KEYS[1], id)
  end
end
return moved
`)

// migrateRegistrations moves the registration references of the domains
// to the buckets of reg:domains.
func (c *Coordinator) migrateRegistrations(ctx context.Context) error {
	moved := 0
	err := c.scanIDs(ctx, legacyRegDomainsKey, false, func(ids []string) error {
		keys := []string{legacyRegDomainsKey, regSet.split}
		args := make([]any, 0, 1+3*len(ids))
		args = append(args, regSet.hash)
		for _, id := range ids {
			m, err := Member(id)
			if err != nil {
				c.logger.Error("cannot move registration reference, left in place", zap.String("domain_id", id), zap.Error(err))
				continue
			}
			args = append(args, id, m, bucketHash(id))
		}
		k, err := migrateRegScript.Run(ctx, c.rdb, keys, args...).Int()
		if err != nil {
			return fmt.Errorf("move registration references: %w", err)
		}
		moved += k
		return nil
	})
	if err != nil {
		return err
	}
	if moved > 0 {
		c.logger.Info("registration references moved to the buckets", zap.Int("domains", moved))
	}
	return nil
}

// foldRegRefsScript moves the references of the registrables ARGV from
// the hash of the layout before (KEYS[2], reg:refs) into their states
// (KEYS[1]): reg_refs with nothing added. Returns how many it moved.
var foldRegRefsScript = redis.NewScript(refsLua + `
for _, reg in ipairs(ARGV) do reg_refs(KEYS[1], KEYS[2], reg, 0) end
return #ARGV
`)

// foldRegRefs moves every count of reg:refs, the registration
// references of before 2026-12-07 (fifteenth), into reg:state, a batch
// at a time; the scripts take over a count they meet first.
func (c *Coordinator) foldRegRefs(ctx context.Context) error {
	moved := 0
	err := c.scanIDs(ctx, legacyRegRefsKey, false, func(regs []string) error {
		args := make([]any, len(regs))
		for i, r := range regs {
			args[i] = r
		}
		k, err := foldRegRefsScript.Run(ctx, c.rdb, []string{regStateKey, legacyRegRefsKey}, args...).Int()
		if err != nil {
			return fmt.Errorf("move registration references into their states: %w", err)
		}
		moved += k
		return nil
	})
	if err != nil {
		return err
	}
	if moved > 0 {
		c.logger.Info("registration references moved into their states", zap.Int("registrables", moved))
	}
	return nil
}

// Until 2026-12-06 (sixth) the buckets, the tombstones and reg:domains
// kept every domain id as text; now they keep Member(id), a UUID as its
// 16 bytes. A coordinator converts what is left as text at start, before
// it applies an event or dispatches (the scripts find a domain by one
// form only): migrateIDs. A domain stays in its bucket, which is chosen
// from the id as text. Converting is per batch of ids, atomic for all the
// keys of a bucket and idempotent, so two coordinators converting at once
// or one stopped midway leave every domain in one form; the next start
// converts the rest.

// keepNewerLua defines keep_newer(key, field, v): it writes v, a value
// of a versioned hash (its leading digits), to field of key unless the
// field holds one of a newer version. The conversion and the splits
// merge a domain's value into a bucket that may hold one already.
const keepNewerLua = `
local function keep_newer(key, field, v)
  local cur = redis.call('HGET', key, field)
  if not cur or (tonumber(string.match(cur, '^%d+')) or 0) < (tonumber(string.match(v, '^%d+')) or 0) then
    redis.call('HSET', key, field, v)
  end
end
`

// convertIDsScript converts ids kept as text to Member in some keys of
// one slot: a field's value or a member's score moves to the id's Member
// unless that is there already, then the text goes; where both are, a
// hash keeps the value of the newer version (its leading digits), the
// schedule the earlier due time, the tombstones the newer version.
//
// KEYS: the keys. ARGV: their kinds, one letter each ('h' hash of
// versioned values, 's' schedule, 'r' tombstones), then per id its text
// and its Member. Returns the number of fields and members converted.
var convertIDsScript = redis.NewScript(keepNewerLua + `
local kinds, n = ARGV[1], 0
for k, key in ipairs(KEYS) do
  local kind = string.sub(kinds, k, k)
  for i = 2, #ARGV, 2 do
    local t, m = ARGV[i], ARGV[i+1]
    if kind == 'h' then
      local v = redis.call('HGET', key, t)
      if v then
        keep_newer(key, m, v)
        redis.call('HDEL', key, t)
        n = n + 1
      end
    else
      local s = redis.call('ZSCORE', key, t)
      if s then
        redis.call('ZADD', key, kind == 's' and 'LT' or 'GT', s, m)
        redis.call('ZREM', key, t)
        n = n + 1
      end
    end
  end
end
return n
`)

// migrateIDs converts the ids kept as text in every bucket, tombstone
// set and bucket of reg:domains to Member. Only the first-level buckets
// can hold any: the coordinators that kept ids as text wrote no others,
// and splits (growBucket) come after this at start.
func (c *Coordinator) migrateIDs(ctx context.Context) error {
	total := 0
	convert := func(scanned string, zset bool, keys []string, kinds string) error {
		k, err := c.convertIDs(ctx, scanned, zset, keys, kinds)
		total += k
		return err
	}
	for n := range c.cfg.Shards {
		for b := range bucketsPerShard {
			// Every domain of the schedule and the tombstones has its
			// field in the bucket's hash; the schedule is scanned for
			// what is left apart.
			keys := []string{domainsKey(n, b), scheduleKey(n, b), removedKey(n)}
			if err := convert(keys[0], false, keys, "hsr"); err != nil {
				return err
			}
			if err := convert(keys[1], true, keys, "hsr"); err != nil {
				return err
			}
		}
		if err := convert(removedKey(n), true, []string{removedKey(n)}, "r"); err != nil {
			return err
		}
	}
	for b := range regBuckets {
		if err := convert(regBucketKey(b), false, []string{regBucketKey(b)}, "h"); err != nil {
			return err
		}
	}
	if total > 0 {
		c.logger.Info("domain ids kept as text converted to bytes", zap.Int("fields_and_members", total))
	}
	return nil
}

// convertIDs scans scanned, a hash or (zset) a sorted set, for ids kept
// as text (those Member writes otherwise) and converts them, batchSize at
// a time, in keys, of kinds kinds (convertIDsScript). It returns the
// number of fields and members converted.
func (c *Coordinator) convertIDs(ctx context.Context, scanned string, zset bool, keys []string, kinds string) (int, error) {
	total := 0
	err := c.scanIDs(ctx, scanned, zset, func(ids []string) error {
		args := []any{kinds}
		for _, id := range ids {
			if m, err := Member(id); err == nil && m != id {
				args = append(args, id, m)
			}
		}
		if len(args) == 1 {
			return nil
		}
		k, err := convertIDsScript.Run(ctx, c.rdb, keys, args...).Int()
		if err != nil {
			return fmt.Errorf("convert ids of %s: %w", scanned, err)
		}
		total += k
		return nil
	})
	return total, err
}

// scanIDs scans key, a hash or (zset) a sorted set, batchSize at a time,
// and calls each with the fields or members of every page, until each
// fails.
func (c *Coordinator) scanIDs(ctx context.Context, key string, zset bool, each func(ids []string) error) error {
	var cursor uint64
	for {
		var page []string
		var err error
		if zset {
			page, cursor, err = c.rdb.ZScan(ctx, key, cursor, "*", batchSize).Result()
		} else {
			page, cursor, err = c.rdb.HScan(ctx, key, cursor, "*", batchSize).Result()
		}
		if err != nil {
			return fmt.Errorf("scan %s: %w", key, err)
		}
		// Scans return members (fields) and scores (values): only the
		// first are ids.
		if ids := evenOnly(page); len(ids) > 0 {
			if err := each(ids); err != nil {
				return err
			}
		}
		if cursor == 0 {
			return nil
		}
	}
}

// splitKey scans key, bucket b's hash or (zset) sorted set, for domains
// whose bucket (of their id as text) is another, and moves them a page
// at a time with move, whose ARGV it builds (moveScript's, from the number
// of destinations on). It returns what move returned, added up.
func (c *Coordinator) splitKey(ctx context.Context, key string, zset bool, b int, of func(string) int,
	move func(args []any, dests []int) (int, error)) (int, error) {
	total := 0
	err := c.scanIDs(ctx, key, zset, func(ids []string) error {
		var dests []int
		index := map[int]int{}
		var pairs []any
		for _, m := range ids {
			d := of(IDOf(m))
			if d == b {
				continue
			}
			k, ok := index[d]
			if !ok {
				dests = append(dests, d)
				k = len(dests)
				index[d] = k
			}
			pairs = append(pairs, m, k)
		}
		if len(pairs) == 0 {
			return nil
		}
		args := make([]any, 0, 1+len(dests)+len(pairs))
		args = append(args, len(dests))
		for _, d := range dests {
			args = append(args, d)
		}
		k, err := move(append(args, pairs...), dests)
		total += k
		return err
	})
	return total, err
}
