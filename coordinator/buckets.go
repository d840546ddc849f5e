package coordinator

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/events"
)

// Buckets that split as they fill.
//
// A shard keeps its domains and their due times in buckets
// (domains:{NN}:<b>, schedule:{NN}:<b>), each small enough for Redis's
// compact listpack encoding (at most 128 entries under its defaults,
// hash- and zset-max-listpack-entries). A shard starts with
// bucketsPerShard of them; a bucket past splitAbove entries is split in
// two, and again as its halves fill, so a fleet of any size keeps buckets
// of about splitAbove/2 to splitAbove domains while a small one keeps its
// first buckets, without an operator choosing a count or raising Redis's
// limits.
//
// Bucket ids. A domain's bucket hash h (bucketHash) picks its first-level
// bucket h mod base (ids 0 to base-1). A bucket of modulus m (base, 2 x
// base, 4 x base, ...) splits into the two buckets of modulus 2m its
// domains' hashes pick, numbered 2m + h mod 2m: ids from 2 x base on,
// each level's in a range of its own ([2m, 4m)), so an id names one
// level and residue (modulus). The ids of the split buckets are the
// members of the shard's split set split:{NN}, written in the same
// script that moves the bucket's domains to its two halves (growScript).
// Every script that reads or writes a domain's entries finds its bucket
// by walking from the first level down the split buckets (bucketLua), in
// the same atomic step, so it never sees a domain half moved; Go code
// that only reads walks a copy of the split set (splitSet, leafOf).
//
// A coordinator splits a bucket as soon as a domain event leaves it past
// splitAbove (applyEvent), and every migrateEvery checks the buckets of
// the shards it leases (growBuckets), so a bucket an event could not
// split (an error, a crash) is split a minute later. A split checks that
// the bucket still holds exactly the domains it was given, so two
// coordinators splitting at once, or an event landing in between, split
// it once, at the next try. A coordinator of before (layout generation 4)
// would still write the first-level buckets: the layout gate stops it
// within a minute, and settleSplits moves, every migrateEvery, what such
// a coordinator wrote into a split bucket to where it belongs (a record
// unless a newer one is there, a due time unless an earlier one is).

// defaultSplitAbove is the number of entries (records and tombstones)
// past which a bucket is split (Coordinator.splitAbove): below Redis's
// default of 128 listpack entries, so that the domains a bucket takes
// between an event and its split (a coordinator that could not split)
// seldom take it past that.
const defaultSplitAbove = 100

// maxSplitLevels bounds the walk down the split buckets: 2^24 buckets
// per shard is far past any fleet; a longer chain is a corrupt split set.
const maxSplitLevels = 24

// bucketHash is the hash a domain's bucket is chosen from: the upper half
// of FNV-1a (64 bit) of the domain id as text. Not the lower half: FNV's
// low bits depend only on the low bits of the input, so the low bits of
// FNV-1a 64 equal those of ShardOf's FNV-1a 32 and a shard's domains
// would share a few buckets.
func bucketHash(domainID string) uint32 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(domainID))
	return uint32(h.Sum64() >> 32)
}

// bucketOf is a domain's first-level bucket within its shard.
func bucketOf(domainID string) int { return int(bucketHash(domainID) % bucketsPerShard) }

// modulus returns the modulus m of bucket b (of a bucket set whose first
// level has base buckets) and its residue: b is the bucket of the domains
// whose hash is the residue modulo m.
func modulus(base, b int) (m, r int) {
	if b < base {
		return base, b
	}
	m = 2 * base
	for 2*m <= b {
		m *= 2
	}
	return m, b - m
}

// validBucket reports whether b names a bucket of a set of base
// first-level buckets.
func validBucket(base, b int) bool { return b >= 0 && (b < base || b >= 2*base) }

// halves returns the two buckets bucket b splits into.
func halves(base, b int) (int, int) {
	m, r := modulus(base, b)
	return 2*m + r, 3*m + r
}

// leafOf is the bucket of a domain of hash h: its first-level bucket, or
// down the split buckets in split, bucketLua's walk.
func leafOf(h uint32, base int, split map[int]bool) int {
	m, b := base, int(h%uint32(base))
	for range maxSplitLevels {
		if !split[b] {
			break
		}
		m *= 2
		b = m + int(uint64(h)%uint64(m))
	}
	return b
}

// bucketLua defines bucket_of(split, h, base), leafOf in a script: the
// bucket of a domain of hash h, walking from its first-level bucket down
// the members of the split set split.
var bucketLua = `
local function bucket_of(split, h, base)
  local m, b = base, h % base
  for _ = 1, ` + strconv.Itoa(maxSplitLevels) + ` do
    if redis.call('SISMEMBER', split, b) == 0 then return b end
    m = m * 2
    b = m + h % m
  end
  error('split buckets nest too deep')
end
`

// splitSetKey is the set of the split buckets of a shard.
func splitSetKey(shard int) string { return "split:" + events.ShardTag(shard) }

// bucketPrefixes are what a script appends a bucket id of shard n to for
// its keys: domainsKey's and scheduleKey's.
func bucketPrefixes(n int) (domains, schedule string) {
	return "domains:" + events.ShardTag(n) + ":", "schedule:" + events.ShardTag(n) + ":"
}

// splitSet reads the split buckets of shard n.
func splitSet(ctx context.Context, rdb redis.UniversalClient, n int) (map[int]bool, error) {
	ms, err := rdb.SMembers(ctx, splitSetKey(n)).Result()
	if err != nil {
		return nil, fmt.Errorf("read split buckets of shard %d: %w", n, err)
	}
	split := make(map[int]bool, len(ms))
	for _, m := range ms {
		b, err := strconv.Atoi(m)
		if err != nil || !validBucket(bucketsPerShard, b) {
			return nil, fmt.Errorf("split buckets of shard %d: bad bucket %q", n, m)
		}
		split[b] = true
	}
	return split, nil
}

// leaves returns the buckets of shard n that hold domains (the first-level
// buckets and the halves of split ones, but the split ones), as the split
// set reads now.
func leaves(ctx context.Context, rdb redis.UniversalClient, n int) ([]int, error) {
	split, err := splitSet(ctx, rdb, n)
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, bucketsPerShard+len(split))
	var walk func(b int, depth int)
	walk = func(b int, depth int) {
		if !split[b] || depth == maxSplitLevels {
			out = append(out, b)
			return
		}
		l, r := halves(bucketsPerShard, b)
		walk(l, depth+1)
		walk(r, depth+1)
	}
	for b := range bucketsPerShard {
		walk(b, 0)
	}
	return out, nil
}

// growScript splits one bucket of a shard in two, if it still holds
// exactly the domains given: moves their records and due times to the
// halves, lowers the due index to the halves' earliest due times, and
// names the bucket in the split set, in one step.
//
// KEYS: the split set, the due index. ARGV: the domains and schedule
// prefixes (bucketPrefixes), the bucket, its two halves, the number of
// records and of due times, then per record its domain (as kept) and
// half (1 or 2), then per due time likewise. Returns 1 when split, 0
// when it was split already, -1 when it holds other domains than given.
var growScript = redis.NewScript(keepNewerLua + `
local dp, sp, p = ARGV[1], ARGV[2], ARGV[3]
local half = {ARGV[4], ARGV[5]}
local nh, nz = tonumber(ARGV[6]), tonumber(ARGV[7])
if redis.call('SISMEMBER', KEYS[1], p) == 1 then return 0 end
local pd, ps = dp .. p, sp .. p
if redis.call('HLEN', pd) ~= nh or redis.call('ZCARD', ps) ~= nz then return -1 end
local zs = 8 + 2 * nh
for i = 8, zs - 1, 2 do
  if redis.call('HEXISTS', pd, ARGV[i]) == 0 then return -1 end
end
for i = zs, #ARGV, 2 do
  if not redis.call('ZSCORE', ps, ARGV[i]) then return -1 end
end
for i = 8, zs - 1, 2 do
  keep_newer(dp .. half[tonumber(ARGV[i+1])], ARGV[i], redis.call('HGET', pd, ARGV[i]))
end
for i = zs, #ARGV, 2 do
  local b = half[tonumber(ARGV[i+1])]
  local s = redis.call('ZSCORE', ps, ARGV[i])
  redis.call('ZADD', sp .. b, 'LT', s, ARGV[i])
  redis.call('ZADD', KEYS[2], 'LT', s, b)
end
redis.call('DEL', pd, ps)
redis.call('ZREM', KEYS[2], p)
redis.call('SADD', KEYS[1], p)
return 1
`)

// growBucket splits bucket b of shard n while it holds more than
// splitAbove entries, and its halves likewise; it returns the number of
// splits. A split that finds the bucket changed since it was read is
// tried again, up to a few times: the next event or growBuckets splits it
// otherwise.
func (c *Coordinator) growBucket(ctx context.Context, n, b int) (int, error) {
	splits := 0
	todo := []int{b}
	for tries := 0; len(todo) > 0 && tries < 64; tries++ {
		b := todo[0]
		todo = todo[1:]
		dk, sk := domainsKey(n, b), scheduleKey(n, b)
		pipe := c.rdb.Pipeline()
		fields := pipe.HKeys(ctx, dk)
		members := pipe.ZRange(ctx, sk, 0, -1)
		if _, err := pipe.Exec(ctx); err != nil {
			return splits, fmt.Errorf("read bucket %d of shard %d: %w", b, n, err)
		}
		if len(fields.Val()) <= c.splitAbove && len(members.Val()) <= c.splitAbove {
			continue
		}
		l, r := halves(bucketsPerShard, b)
		dp, sp := bucketPrefixes(n)
		args := []any{dp, sp, b, l, r, len(fields.Val()), len(members.Val())}
		m, _ := modulus(bucketsPerShard, l)
		for _, ms := range [][]string{fields.Val(), members.Val()} {
			for _, x := range ms {
				half := 1
				if int(uint64(bucketHash(IDOf(x)))%uint64(m)) != l-m {
					half = 2
				}
				args = append(args, x, half)
			}
		}
		res, err := growScript.Run(ctx, c.rdb, []string{splitSetKey(n), dueKey(n)}, args...).Int()
		if err != nil {
			return splits, fmt.Errorf("split bucket %d of shard %d: %w", b, n, err)
		}
		switch res {
		case 1:
			splits++
			bucketSplits.Inc()
			c.logger.Debug("bucket split", zap.Int("shard", n), zap.Int("bucket", b),
				zap.Int("domains", len(fields.Val())), zap.Ints("halves", []int{l, r}))
			todo = append(todo, l, r)
		case -1:
			todo = append(todo, b) // changed under us: read it again
		}
	}
	return splits, nil
}

// growBuckets splits the buckets past splitAbove of every shard this
// coordinator leases, and moves what a coordinator of before wrote into
// split buckets (settleSplits).
func (c *Coordinator) growBuckets(ctx context.Context) {
	for _, n := range c.HeldShards() {
		if err := c.growShard(ctx, n); err != nil {
			if ctx.Err() == nil {
				c.logger.Warn("bucket split failed, will retry", zap.Int("shard", n), zap.Error(err))
			}
			return
		}
	}
}

// growShard is growBuckets for shard n.
func (c *Coordinator) growShard(ctx context.Context, n int) error {
	if err := c.settleSplits(ctx, n); err != nil {
		return err
	}
	bs, err := leaves(ctx, c.rdb, n)
	if err != nil {
		return err
	}
	pipe := c.rdb.Pipeline()
	lens := make([]*redis.IntCmd, len(bs))
	for i, b := range bs {
		lens[i] = pipe.HLen(ctx, domainsKey(n, b))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("read bucket sizes of shard %d: %w", n, err)
	}
	for i, b := range bs {
		if lens[i].Val() > int64(c.splitAbove) {
			if _, err := c.growBucket(ctx, n, b); err != nil {
				return err
			}
		}
	}
	return nil
}

// settleSplits moves the domains found in split buckets of shard n (a
// coordinator of before wrote them there) to their buckets, with
// splitScript's merge: a record unless the bucket holds a newer one, a
// due time unless it holds an earlier one.
func (c *Coordinator) settleSplits(ctx context.Context, n int) error {
	split, err := splitSet(ctx, c.rdb, n)
	if err != nil || len(split) == 0 {
		return err
	}
	keys := make([]string, 0, 2*len(split))
	for b := range split {
		keys = append(keys, domainsKey(n, b), scheduleKey(n, b))
	}
	left, err := c.rdb.Exists(ctx, keys...).Result()
	if err != nil || left == 0 {
		return err
	}
	of := func(id string) int { return leafOf(bucketHash(id), bucketsPerShard, split) }
	total := 0
	for b := range split {
		move := func(args []any, dests []int) (int, error) {
			keys := []string{domainsKey(n, b), scheduleKey(n, b), dueKey(n)}
			for _, d := range dests {
				keys = append(keys, domainsKey(n, d), scheduleKey(n, d))
			}
			return splitScript.Run(ctx, c.rdb, keys, args...).Int()
		}
		for _, zset := range []bool{false, true} {
			key := domainsKey(n, b)
			if zset {
				key = scheduleKey(n, b)
			}
			k, err := c.splitKey(ctx, key, zset, b, of, move)
			total += k
			if err != nil {
				return fmt.Errorf("settle split bucket %d of shard %d: %w", b, n, err)
			}
		}
	}
	if total > 0 {
		c.logger.Info("domains written to split buckets moved to theirs",
			zap.Int("shard", n), zap.Int("records_and_due_times", total))
	}
	return nil
}
