package coordinator

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// Bucket ids of every level are distinct, a bucket's halves take exactly
// its domains, and the scripts' walk (bucketLua) finds the bucket leafOf
// finds, on random split sets.
func TestBucketIDs(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	const base = bucketsPerShard
	seen := map[int]string{}
	for b := range base {
		seen[b] = "first level"
	}
	level := []int{}
	for b := range base {
		level = append(level, b)
	}
	for d := range 5 {
		var next []int
		for _, b := range level {
			if got := depth(base, b); got != d {
				t.Fatalf("bucket %d: depth %d, want %d", b, got, d)
			}
			if m, r := modulus(base, b); r < 0 || r >= m || !validBucket(base, b) {
				t.Fatalf("bucket %d: modulus %d residue %d valid %v", b, m, r, validBucket(base, b))
			}
			l, r := halves(base, b)
			for _, h := range []int{l, r} {
				if was, dup := seen[h]; dup {
					t.Fatalf("bucket %d (half of %d at depth %d) is also %s", h, b, d, was)
				}
				seen[h] = fmt.Sprintf("a half of %d", b)
				next = append(next, h)
			}
		}
		level = next
	}
	for b := base; b < 2*base; b++ {
		if validBucket(base, b) {
			t.Errorf("bucket %d is valid, no level numbers it", b)
		}
	}

	walk := redis.NewScript(bucketLua + `return bucket_of(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]))`)
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		// A random split set: split some buckets, then some of their halves.
		split := map[int]bool{}
		frontier := []int{}
		for b := range base {
			frontier = append(frontier, b)
		}
		for range 4 {
			var next []int
			for _, b := range frontier {
				if rng.IntN(3) == 0 {
					split[b] = true
					l, r := halves(base, b)
					next = append(next, l, r)
				}
			}
			frontier = next
		}
		key := "split:test" + strconv.Itoa(round)
		for b := range split {
			rdb.SAdd(ctx, key, b)
		}
		for range 200 {
			h := rng.Uint32()
			want := leafOf(h, base, split)
			if split[want] {
				t.Fatalf("leafOf(%d) = %d, a split bucket", h, want)
			}
			m, r := modulus(base, want)
			if int(uint64(h)%uint64(m)) != r {
				t.Fatalf("leafOf(%d) = %d, whose residue %d mod %d is not the hash's", h, want, r, m)
			}
			got, err := walk.Run(ctx, rdb, []string{key}, h, base).Int()
			if err != nil || got != want {
				t.Fatalf("bucket_of(%d) = %d (%v), leafOf %d", h, got, err, want)
			}
		}
	}
}

// strayInSplit writes, as a coordinator of before would, a domain into
// its first-level bucket of a shard of c that is split, and returns its
// id.
func strayInSplit(t *testing.T, c *Coordinator, rdb redis.UniversalClient, shards int) string {
	t.Helper()
	ctx := context.Background()
	for n := range shards {
		split, err := shardSet(n).splits(ctx, rdb)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 100_000; i++ {
			id := events.DomainID(testTenant, fmt.Sprintf("stray%d.example", i), 443)
			if ShardOf(id, shards) != n || !split[bucketOf(id)] {
				continue
			}
			b := bucketOf(id)
			if err := rdb.HSet(ctx, domainsKey(n, b), mem(t, id), storedValue(time.Now().UnixMilli(), "=t||stray.example")).Err(); err != nil {
				t.Fatal(err)
			}
			if err := rdb.ZAdd(ctx, scheduleKey(n, b), redis.Z{Score: 1, Member: mem(t, id)}).Err(); err != nil {
				t.Fatal(err)
			}
			return id
		}
	}
	t.Fatal("no split first-level bucket")
	return ""
}

// Buckets split as they fill, while two coordinators apply events at
// once: every domain stays in exactly one bucket, the one the walk down
// the split buckets finds; no bucket is left past Config.BucketSize;
// every bucket is a listpack; the due index covers every bucket; every
// active domain is dispatched exactly once; and renames, pauses, checks,
// removals and the tombstone sweep find the domains in the buckets they
// moved to.
func TestBucketsGrow(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	const shards, total, splitAt = 4, 3000, 8
	tenant := events.TenantID("grow@example.org")
	ids := make([]string, total)
	for i := range ids {
		ids[i] = events.DomainID(tenant, fmt.Sprintf("h%d.example.com", i), 443)
	}
	var wg sync.WaitGroup
	for k, name := range []string{"c1", "c2"} {
		c := newRegCoordinator(t, rdb, name, Config{Interval: time.Hour})
		c.cfg.BucketSize = splitAt
		wg.Go(func() {
			for i := k; i < total; i += 2 {
				if err := c.applyEvent(ctx, tenantDomain(t, events.DomainAdded, tenant, ids[i], fmt.Sprintf("h%d.example.com", i), true)); err != nil {
					t.Errorf("apply: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	sets := []bucketSet{regSet}
	for n := range shards {
		sets = append(sets, shardSet(n))
	}
	// Whatever the splits' timing, no split bucket holds anything and
	// every domain is in exactly the bucket the walk finds.
	placed := func(when string) {
		t.Helper()
		for _, set := range sets {
			split, err := set.splits(ctx, rdb)
			if err != nil {
				t.Fatal(err)
			}
			for b := range split {
				if k := rdb.Exists(ctx, set.hashKey(b), set.zsetKey(b)).Val(); k != 0 {
					t.Errorf("%s: split bucket %d of %s still has keys", when, b, set.name)
				}
			}
		}
		held := map[string]string{}
		for key, fields := range scheduleKeys(t, rdb) {
			if key[0] == 's' || strings.HasSuffix(key, ":removed") {
				continue
			}
			for id := range fields {
				if was, dup := held[key[0:1]+id]; dup {
					t.Errorf("%s: %s in %s and %s", when, id, was, key)
				}
				held[key[0:1]+id] = key
			}
		}
		for _, id := range ids {
			d, _ := keysOf(t, rdb, id, shards)
			r := regKeyOf(t, rdb, id)
			if held["d"+id] != d || held["r"+id] != r {
				t.Errorf("%s: %s in %q and %q, the walks find %q and %q", when, id, held["d"+id], held["r"+id], d, r)
			}
		}
	}
	placed("after the events")
	c := newRegCoordinator(t, rdb, "c3", Config{Interval: time.Hour})
	c.cfg.BucketSize = splitAt
	c.balanceLeases(ctx)
	c.growBuckets(ctx)
	placed("after growBuckets")

	splits := map[string]int{}
	for _, set := range sets {
		split, err := set.splits(ctx, rdb)
		if err != nil {
			t.Fatal(err)
		}
		splits[set.name[:3]] += len(split)
		bs, err := set.leaves(ctx, rdb)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs {
			keys := []string{set.hashKey(b)}
			if set.zset != "" {
				keys = append(keys, set.zsetKey(b))
			}
			for _, key := range keys {
				if k := rdb.HLen(ctx, key).Val() + rdb.ZCard(ctx, key).Val(); k > splitAt {
					t.Errorf("%s: %d entries, past %d", key, k, splitAt)
				}
				if enc := rdb.ObjectEncoding(ctx, key).Val(); enc != "listpack" && enc != "" {
					t.Errorf("%s: encoding %s", key, enc)
				}
			}
		}
	}
	// 3,000 domains in 128 first-level buckets of at most 8: at least
	// 3000/8 buckets, so some 250 splits; reg:domains' 512 buckets hold
	// about 6 each, some more than 8.
	if splits["sha"] < total/splitAt-shards*bucketsPerShard || splits["reg"] == 0 {
		t.Fatalf("splits %v for %d domains in buckets of %d", splits, total, splitAt)
	}
	t.Logf("splits: %v", splits)
	checkDueIndex(t, rdb, shards, "after growing")
	if n, err := ScheduledCount(ctx, rdb, shards); err != nil || n != total {
		t.Errorf("scheduled: %d (%v), want %d", n, err, total)
	}

	got := dispatchAll(t, c, rdb)
	sort.Strings(got)
	want := append([]string(nil), ids...)
	sort.Strings(want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("jobs: %d, want each of %d domains once", len(got), len(want))
	}
	if again := dispatchAll(t, c, rdb); len(again) != 0 {
		t.Errorf("jobs dispatched again: %d", len(again))
	}

	// Events find the domains where the splits put them.
	renamed, paused, checked, removed := ids[0], ids[1], ids[2], ids[3]
	mustApply(t, c,
		tenantDomain(t, events.DomainUpdated, tenant, renamed, "renamed.example.com", true),
		tenantDomain(t, events.DomainUpdated, tenant, paused, "h1.example.com", false),
		checkRequested(t, checked),
		tenantDomain(t, events.DomainRemoved, tenant, removed, "h3.example.com", true))
	got = dispatchAll(t, c, rdb)
	sort.Strings(got)
	if want := []string{checked, renamed}; !reflect.DeepEqual(got, sortedCopy(want)) {
		t.Errorf("jobs after rename, pause, check and removal: %v, want %v", got, sortedCopy(want))
	}
	for id, w := range map[string][2]bool{renamed: {true, true}, paused: {true, false}, removed: {false, false}, ids[4]: {true, true}} {
		known, scheduled, err := DomainState(ctx, rdb, id, shards)
		if err != nil || known != w[0] || scheduled != w[1] {
			t.Errorf("%s: known %v scheduled %v (%v), want %v", id, known, scheduled, err, w)
		}
	}
	n := ShardOf(removed, shards)
	if err := c.sweepTombstones(ctx, n, time.Now().UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if v := value(t, rdb, removed, shards); v != "" {
		t.Errorf("removed domain after the sweep: %q, want nothing", v)
	}
}

// regKeyOf is the bucket of reg:domains of id, failing t on an error.
func regKeyOf(t testing.TB, rdb redis.UniversalClient, id string) string {
	t.Helper()
	b, err := regSet.of(context.Background(), rdb, id)
	if err != nil {
		t.Fatal(err)
	}
	return regSet.hashKey(b)
}

// inTwoAtOnce runs step in two more coordinators (c2, c3) at once, as
// replicas starting together do, and waits for both.
func inTwoAtOnce(t *testing.T, rdb *redis.Client, step func(c *Coordinator)) {
	t.Helper()
	var wg sync.WaitGroup
	for _, name := range []string{"c2", "c3"} {
		c := newRegCoordinator(t, rdb, name, Config{Interval: time.Hour})
		wg.Go(func() { step(c) })
	}
	wg.Wait()
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

// A split finds the bucket changed since it was read (an event landed in
// between) and splits nothing: no domain is left where no walk finds it.
func TestGrowChecksTheBucket(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	c := newRegCoordinator(t, rdb, "c1", Config{Interval: time.Hour})
	tenant := events.TenantID("grow@example.org")
	var in []string
	var b, n int
	for i := 0; len(in) < 5; i++ {
		id := events.DomainID(tenant, fmt.Sprintf("h%d.example.com", i), 443)
		if len(in) == 0 {
			n, b = ShardOf(id, 4), bucketOf(id)
		}
		if ShardOf(id, 4) == n && bucketOf(id) == b {
			in = append(in, id)
			mustApply(t, c, tenantDomain(t, events.DomainAdded, tenant, id, fmt.Sprintf("h%d.example.com", i), true))
		}
	}
	l, r := halves(bucketsPerShard, b)
	s := shardSet(n)
	// The split of the first four, while the bucket holds five.
	args := []any{s.hash, s.zset, b, l, r, 4, 4}
	for range 2 {
		for _, id := range in[:4] {
			args = append(args, mem(t, id), 1)
		}
	}
	res, err := growScript.Run(ctx, rdb, s.scriptKeys(), args...).Int()
	if err != nil || res != -1 {
		t.Fatalf("split of a changed bucket: %d (%v), want -1", res, err)
	}
	if rdb.SIsMember(ctx, s.split, b).Val() || rdb.HLen(ctx, domainsKey(n, b)).Val() != 5 {
		t.Fatal("a changed bucket was split")
	}
	c.cfg.BucketSize = 4
	if k, err := c.growBucket(ctx, s, b); err != nil || k < 1 {
		t.Fatalf("growBucket: %d splits (%v)", k, err)
	}
	if k, err := c.growBucket(ctx, s, b); err != nil || k != 0 {
		t.Errorf("growBucket of a split bucket: %d splits (%v), want 0", k, err)
	}
	for _, id := range in {
		if v := value(t, rdb, id, 4); v == "" {
			t.Errorf("%s: no record where the walk looks", id)
		}
	}
}

// Two domains whose bucket hashes are equal cannot be told apart by any
// split: with buckets of one, splitting stops at the deepest level the
// walk reaches instead of going on, and both stay where the walk finds
// them.
func TestSplitDepthCap(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	c := newRegCoordinator(t, rdb, "c1", Config{Interval: time.Hour, BucketSize: 1})
	tenant := events.TenantID("twins@example.org")
	seen := map[uint32]int{}
	var twins [2]int
	for i := 0; ; i++ {
		id := events.DomainID(tenant, fmt.Sprintf("h%d.example.com", i), 443)
		h := bucketHash(id)
		if j, ok := seen[h]; ok && ShardOf(id, 4) == ShardOf(events.DomainID(tenant, fmt.Sprintf("h%d.example.com", j), 443), 4) {
			twins = [2]int{j, i}
			break
		}
		seen[h] = i
		if i > 5_000_000 {
			t.Fatal("no two ids of one shard with one bucket hash")
		}
	}
	var ids []string
	for _, i := range twins {
		host := fmt.Sprintf("h%d.example.com", i)
		id := events.DomainID(tenant, host, 443)
		ids = append(ids, id)
		mustApply(t, c, tenantDomain(t, events.DomainAdded, tenant, id, host, true))
	}
	s := shardSet(ShardOf(ids[0], 4))
	split, err := s.splits(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	b := leafOf(bucketHash(ids[0]), s.base, split)
	if got := depth(s.base, b); got != maxSplitLevels-1 {
		t.Errorf("twins' bucket %d at depth %d, want %d", b, got, maxSplitLevels-1)
	}
	for _, id := range ids {
		if known, scheduled, err := DomainState(ctx, rdb, id, 4); err != nil || !known || !scheduled {
			t.Errorf("%s: known %v scheduled %v (%v)", id, known, scheduled, err)
		}
	}
	c.balanceLeases(ctx)
	if got := dispatchAll(t, c, rdb); len(got) != 2 {
		t.Errorf("jobs: %v, want the twins'", got)
	}
}
