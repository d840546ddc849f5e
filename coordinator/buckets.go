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
// (domains:{NN}:<b>, schedule:{NN}:<b>), and reg:domains its domains'
// registration references (reg:domains:{registration:jobs}:<b>), each
// small enough for Redis's compact listpack encoding (at most 128
// entries under its defaults, hash- and zset-max-listpack-entries). Each
// starts with a fixed count of buckets (bucketsPerShard, regBuckets); a
// bucket past Config.BucketSize entries is split in two, and again as
// its halves fill, so a fleet of any size keeps buckets of about half
// that to that many domains while a small one keeps its first buckets,
// without an operator choosing a count or raising Redis's limits. A
// bucketSet names the keys of one of them.
//
// Bucket ids. A domain's bucket hash h (bucketHash) picks its
// first-level bucket h mod base (ids 0 to base-1). A bucket of modulus m
// (base, 2 x base, 4 x base, ...) splits into the two buckets of modulus
// 2m its domains' hashes pick, numbered 2m + h mod 2m: ids from 2 x base
// on, each level's in a range of its own ([2m, 4m)), so an id names one
// level and residue (modulus). The ids of the split buckets are the
// members of the set's split set (split:{NN}, reg:split:{...}), written
// in the same script that moves the bucket's domains to its two halves
// (growScript). Every script that reads or writes a domain's entries
// finds its bucket by walking from the first level down the split
// buckets (bucketLua), in the same atomic step, so it never sees a
// domain half moved; Go code that only reads walks a copy of the split
// set (bucketSet.splits, leafOf).
//
// A coordinator splits a bucket as soon as a domain event leaves it past
// Config.BucketSize (applyEvent, applyRegistrationRef), and every
// migrateEvery checks the buckets of the shards it leases and, holding
// the registration lease, reg:domains' (growBuckets), so a bucket an
// event could not split (an error, a crash) is split a minute later. A
// split checks that the bucket still holds exactly the domains it was
// given, so two coordinators splitting at once, or an event landing in
// between, split it once, at the next try. A coordinator of before
// (layout generation 4) would still write the first-level buckets: the
// layout gate stops it within seconds, and settleSplits moves, every
// migrateEvery, what such a coordinator wrote into a split bucket to
// where it belongs (a record unless a newer one is there, a due time
// unless an earlier one is).

// defaultBucketSize is the number of entries (records and tombstones)
// past which a bucket is split (Config.BucketSize): below Redis's
// default of 128 listpack entries, so that the domains a bucket takes
// between an event and its split (a coordinator that could not split)
// seldom take it past that.
const defaultBucketSize = 100

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

// depth is the level of bucket b: 0 for a first-level bucket, one more
// for each split above it.
func depth(base, b int) int {
	m, _ := modulus(base, b)
	d := 0
	for x := base; x < m; x *= 2 {
		d++
	}
	return d
}

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

// A bucketSet is a hash of domains spread over buckets that split as they
// fill and, for a shard, the sorted set of their due times beside it, in
// buckets of the same ids.
type bucketSet struct {
	name  string // in logs and errors
	base  int    // first-level buckets
	split string // the split set's key
	hash  string // a hash bucket's key is hash + its id
	zset  string // a sorted set bucket's key is zset + its id; "" for none
	due   string // the due index (bucket -> earliest due time); "" for none
}

// shardSet is the bucket set of shard n: domainsKey, scheduleKey, dueKey.
func shardSet(n int) bucketSet {
	tag := events.ShardTag(n)
	return bucketSet{
		name: "shard " + strconv.Itoa(n), base: bucketsPerShard, split: "split:" + tag,
		hash: "domains:" + tag + ":", zset: "schedule:" + tag + ":", due: dueKey(n),
	}
}

// regSet is the bucket set of reg:domains.
var regSet = bucketSet{name: "reg:domains", base: regBuckets, split: "reg:split:" + regTag, hash: legacyRegDomainsKey + ":"}

func (s bucketSet) hashKey(b int) string { return s.hash + strconv.Itoa(b) }
func (s bucketSet) zsetKey(b int) string { return s.zset + strconv.Itoa(b) }

// scriptKeys are the KEYS growScript and moveScript take: the split set
// (which also routes the script to the set's slot) and the due index, if
// any.
func (s bucketSet) scriptKeys() []string {
	if s.due == "" {
		return []string{s.split}
	}
	return []string{s.split, s.due}
}

// splits reads the split buckets of s.
func (s bucketSet) splits(ctx context.Context, rdb redis.UniversalClient) (map[int]bool, error) {
	ms, err := rdb.SMembers(ctx, s.split).Result()
	if err != nil {
		return nil, fmt.Errorf("read split buckets of %s: %w", s.name, err)
	}
	split := make(map[int]bool, len(ms))
	for _, m := range ms {
		b, err := strconv.Atoi(m)
		if err != nil || !validBucket(s.base, b) {
			return nil, fmt.Errorf("split buckets of %s: bad bucket %q", s.name, m)
		}
		split[b] = true
	}
	return split, nil
}

// of is the bucket of domainID as the split set reads now.
func (s bucketSet) of(ctx context.Context, rdb redis.UniversalClient, domainID string) (int, error) {
	split, err := s.splits(ctx, rdb)
	if err != nil {
		return 0, err
	}
	return leafOf(bucketHash(domainID), s.base, split), nil
}

// leaves returns the buckets of s that hold domains (the first-level
// buckets and the halves of split ones, but the split ones), as the split
// set reads now.
func (s bucketSet) leaves(ctx context.Context, rdb redis.UniversalClient) ([]int, error) {
	split, err := s.splits(ctx, rdb)
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, s.base+len(split))
	var walk func(b int, depth int)
	walk = func(b int, depth int) {
		if !split[b] || depth == maxSplitLevels {
			out = append(out, b)
			return
		}
		l, r := halves(s.base, b)
		walk(l, depth+1)
		walk(r, depth+1)
	}
	for b := range s.base {
		walk(b, 0)
	}
	return out, nil
}

// growScript splits one bucket of a bucket set in two, if it still holds
// exactly the domains given: moves their entries to the halves, lowers the
// due index, if any, to the halves' earliest due times, and names the
// bucket in the split set, in one step.
//
// KEYS: the split set, the due index (if any). ARGV: the hash and sorted
// set prefixes (bucketSet's hash and zset, "" for none), the bucket, its
// two halves, the number of hash fields and of sorted set members, then
// per field its domain (as kept) and half (1 or 2), then per member
// likewise. Returns 1 when split, 0 when it was split already, -1 when it
// holds other domains than given.
var growScript = redis.NewScript(keepNewerLua + `
local hp, zp, p = ARGV[1], ARGV[2], ARGV[3]
local half = {ARGV[4], ARGV[5]}
local nh, nz = tonumber(ARGV[6]), tonumber(ARGV[7])
if redis.call('SISMEMBER', KEYS[1], p) == 1 then return 0 end
local ph = hp .. p
if redis.call('HLEN', ph) ~= nh then return -1 end
local pz = zp ~= '' and zp .. p
if pz and redis.call('ZCARD', pz) ~= nz then return -1 end
local zs = 8 + 2 * nh
for i = 8, zs - 1, 2 do
  if redis.call('HEXISTS', ph, ARGV[i]) == 0 then return -1 end
end
for i = zs, #ARGV, 2 do
  if not redis.call('ZSCORE', pz, ARGV[i]) then return -1 end
end
for i = 8, zs - 1, 2 do
  keep_newer(hp .. half[tonumber(ARGV[i+1])], ARGV[i], redis.call('HGET', ph, ARGV[i]))
end
for i = zs, #ARGV, 2 do
  local b = half[tonumber(ARGV[i+1])]
  local s = redis.call('ZSCORE', pz, ARGV[i])
  redis.call('ZADD', zp .. b, 'LT', s, ARGV[i])
  if KEYS[2] then redis.call('ZADD', KEYS[2], 'LT', s, b) end
end
redis.call('DEL', ph)
if pz then redis.call('DEL', pz) end
if KEYS[2] then redis.call('ZREM', KEYS[2], p) end
redis.call('SADD', KEYS[1], p)
return 1
`)

// growBucket splits bucket b of s while it holds more than c.cfg.BucketSize
// entries, and its halves likewise; it returns the number of splits. A
// split that finds the bucket changed since it was read is tried again,
// up to a few times: the next event or growBuckets splits it otherwise.
func (c *Coordinator) growBucket(ctx context.Context, s bucketSet, b int) (int, error) {
	splits := 0
	todo := []int{b}
	for tries := 0; len(todo) > 0 && tries < 64; tries++ {
		b := todo[0]
		todo = todo[1:]
		pipe := c.rdb.Pipeline()
		fields := pipe.HKeys(ctx, s.hashKey(b))
		var members *redis.StringSliceCmd
		if s.zset != "" {
			members = pipe.ZRange(ctx, s.zsetKey(b), 0, -1)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return splits, fmt.Errorf("read bucket %d of %s: %w", b, s.name, err)
		}
		var ms []string
		if members != nil {
			ms = members.Val()
		}
		// The walk goes maxSplitLevels levels down at most: a bucket
		// that deep stays as it is (its domains' hashes would have to
		// agree on some 28 bits and more).
		if len(fields.Val()) <= c.cfg.BucketSize && len(ms) <= c.cfg.BucketSize || depth(s.base, b) >= maxSplitLevels-1 {
			continue
		}
		l, r := halves(s.base, b)
		m, _ := modulus(s.base, l)
		args := []any{s.hash, s.zset, b, l, r, len(fields.Val()), len(ms)}
		for _, page := range [][]string{fields.Val(), ms} {
			for _, x := range page {
				half := 1
				if int(uint64(bucketHash(IDOf(x)))%uint64(m)) != l-m {
					half = 2
				}
				args = append(args, x, half)
			}
		}
		res, err := growScript.Run(ctx, c.rdb, s.scriptKeys(), args...).Int()
		if err != nil {
			return splits, fmt.Errorf("split bucket %d of %s: %w", b, s.name, err)
		}
		switch res {
		case 1:
			splits++
			bucketSplits.Inc()
			c.logger.Debug("bucket split", zap.String("set", s.name), zap.Int("bucket", b),
				zap.Int("domains", len(fields.Val())), zap.Ints("halves", []int{l, r}))
			todo = append(todo, l, r)
		case -1:
			todo = append(todo, b) // changed under us: read it again
		}
	}
	return splits, nil
}

// growIfFull splits bucket b of s when an event left it with size
// entries, past c.cfg.BucketSize. A failure is not the event's: it is
// logged, and growBuckets tries again.
func (c *Coordinator) growIfFull(ctx context.Context, s bucketSet, b, size int64) {
	if size <= int64(c.cfg.BucketSize) {
		return
	}
	if _, err := c.growBucket(ctx, s, int(b)); err != nil {
		c.logger.Warn("bucket split failed, will retry", zap.String("set", s.name), zap.Error(err))
	}
}

// growBuckets splits the buckets past c.cfg.BucketSize of every shard this
// coordinator leases and, holding the registration lease, of
// reg:domains; and moves what a coordinator of before wrote into split
// buckets (settleSplits).
func (c *Coordinator) growBuckets(ctx context.Context) {
	sets := []bucketSet{}
	for _, n := range c.HeldShards() {
		sets = append(sets, shardSet(n))
	}
	if c.holdsRegistration() {
		sets = append(sets, regSet)
	}
	for _, s := range sets {
		if err := c.grow(ctx, s); err != nil {
			if ctx.Err() == nil {
				c.logger.Warn("bucket split failed, will retry", zap.String("set", s.name), zap.Error(err))
			}
			return
		}
	}
}

// grow is growBuckets for the bucket set s.
func (c *Coordinator) grow(ctx context.Context, s bucketSet) error {
	if err := c.settleSplits(ctx, s); err != nil {
		return err
	}
	bs, err := s.leaves(ctx, c.rdb)
	if err != nil {
		return err
	}
	pipe := c.rdb.Pipeline()
	lens := make([]*redis.IntCmd, len(bs))
	for i, b := range bs {
		lens[i] = pipe.HLen(ctx, s.hashKey(b))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("read bucket sizes of %s: %w", s.name, err)
	}
	for i, b := range bs {
		if lens[i].Val() > int64(c.cfg.BucketSize) {
			if _, err := c.growBucket(ctx, s, b); err != nil {
				return err
			}
		}
	}
	return nil
}

// moveScript moves domains of one bucket of a bucket set to others: a
// hash field unless the destination holds one of a newer version
// (keep_newer), a due time unless the destination holds an earlier one,
// lowering the due index, if any, to it.
//
// KEYS: the split set (for the slot), the due index (if any). ARGV: the
// hash and sorted set prefixes ("" for none), the bucket, the number of
// destinations, their ids, then per domain its id as kept and its
// destination (1, 2, ...). Returns the number of fields and members
// moved.
var moveScript = redis.NewScript(keepNewerLua + `
local hp, zp, p, d, moved = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), 0
for i = 5 + d, #ARGV, 2 do
  local m, b = ARGV[i], ARGV[4 + tonumber(ARGV[i+1])]
  local v = redis.call('HGET', hp .. p, m)
  if v then
    keep_newer(hp .. b, m, v)
    redis.call('HDEL', hp .. p, m)
    moved = moved + 1
  end
  local s = zp ~= '' and redis.call('ZSCORE', zp .. p, m)
  if s then
    redis.call('ZADD', zp .. b, 'LT', s, m)
    if KEYS[2] then redis.call('ZADD', KEYS[2], 'LT', s, b) end
    redis.call('ZREM', zp .. p, m)
    moved = moved + 1
  end
end
return moved
`)

// settleSplits moves the domains found in split buckets of s (a
// coordinator of before wrote them there) to their buckets (moveScript),
// a page of a bucket at a time: atomic and idempotent per page, so two
// coordinators settling at once, or one stopped midway, leave every
// domain in one bucket.
func (c *Coordinator) settleSplits(ctx context.Context, s bucketSet) error {
	split, err := s.splits(ctx, c.rdb)
	if err != nil || len(split) == 0 {
		return err
	}
	var keys []string
	for b := range split {
		keys = append(keys, s.hashKey(b))
		if s.zset != "" {
			keys = append(keys, s.zsetKey(b))
		}
	}
	left, err := c.rdb.Exists(ctx, keys...).Result()
	if err != nil || left == 0 {
		return err
	}
	of := func(id string) int { return leafOf(bucketHash(id), s.base, split) }
	total := 0
	for b := range split {
		move := func(args []any, dests []int) (int, error) {
			head := []any{s.hash, s.zset, b}
			return moveScript.Run(ctx, c.rdb, s.scriptKeys(), append(head, args...)...).Int()
		}
		keys := []string{s.hashKey(b)}
		if s.zset != "" {
			keys = append(keys, s.zsetKey(b))
		}
		for i, key := range keys {
			k, err := c.splitKey(ctx, key, i == 1, b, of, move)
			total += k
			if err != nil {
				return fmt.Errorf("settle split bucket %d of %s: %w", b, s.name, err)
			}
		}
	}
	if total > 0 {
		c.logger.Info("domains written to split buckets moved to theirs",
			zap.String("set", s.name), zap.Int("fields_and_members", total))
	}
	return nil
}
