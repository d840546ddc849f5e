package coordinator

import (
	"context"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

var (
	shardBucketRE = regexp.MustCompile(`^((?:domains|schedule):\{\d+\}):(\d+)$`)
	regBucketRE   = regexp.MustCompile(`^(reg:domains:\{registration:jobs\}):(\d+)$`)
)

// unsplit moves every domain to the bucket it had with buckets buckets
// per shard and regs buckets of reg:domains (bucket modulo the count, as
// bucketOf and regBucketOf), as a coordinator of those counts kept them,
// and rebuilds the due index so.
func unsplit(t *testing.T, c *Coordinator, rdb *redis.Client, buckets, regs int) {
	t.Helper()
	ctx := context.Background()
	keys := rdb.Keys(ctx, "*").Val()
	for _, key := range keys {
		prefix, to := "", 0
		if m := shardBucketRE.FindStringSubmatch(key); m != nil {
			b, _ := strconv.Atoi(m[2])
			prefix, to = m[1], b%buckets
		} else if m := regBucketRE.FindStringSubmatch(key); m != nil {
			b, _ := strconv.Atoi(m[2])
			prefix, to = m[1], b%regs
		} else {
			continue
		}
		dest := prefix + ":" + strconv.Itoa(to)
		if dest == key {
			continue
		}
		if rdb.Type(ctx, key).Val() == "hash" {
			for f, v := range rdb.HGetAll(ctx, key).Val() {
				rdb.HSet(ctx, dest, f, v)
			}
		} else {
			for _, z := range rdb.ZRangeWithScores(ctx, key, 0, -1).Val() {
				rdb.ZAdd(ctx, dest, z)
			}
		}
		rdb.Del(ctx, key)
	}
	for n := range c.cfg.Shards {
		rdb.Del(ctx, dueKey(n))
	}
	if err := c.buildDueIndex(ctx); err != nil {
		t.Fatal(err)
	}
}

// Buckets of reg:domains of a smaller count are split by two coordinators
// at once, after one stopped midway: every registration reference lands
// in its bucket as it was, and every active domain is dispatched exactly
// once afterwards.
func TestSplitRegBuckets(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	const shards, regBefore = 4, 128
	c := newRegCoordinator(t, rdb, "c1", Config{Interval: time.Hour})
	tenant := events.TenantID("a@example.org")
	var ids []string
	for i := range 120 {
		id := events.DomainID(tenant, fmt.Sprintf("h%d.example.com", i), 443)
		ids = append(ids, id)
		mustApply(t, c, tenantDomain(t, events.DomainAdded, tenant, id, fmt.Sprintf("h%d.example.com", i), true))
	}
	paused, removed := ids[0], ids[1]
	mustApply(t, c,
		tenantDomain(t, events.DomainUpdated, tenant, paused, "h0.example.com", false),
		tenantDomain(t, events.DomainRemoved, tenant, removed, "h1.example.com", true))
	want := scheduleKeys(t, rdb)
	moved := 0
	for _, id := range ids {
		if regBucketOf(id) >= regBefore {
			moved++
		}
	}
	if moved < 60 {
		t.Fatalf("only %d of %d domains to move", moved, len(ids))
	}

	unsplit(t, c, rdb, bucketsPerShard, regBefore)
	if got := scheduleKeys(t, rdb); reflect.DeepEqual(got, want) {
		t.Fatal("nothing to split")
	}
	// One stopped midway: the references of one bucket moved.
	b0 := regBucketOf(ids[2]) % regBefore
	if _, err := c.splitKey(ctx, regBucketKey(b0), false, b0, regBucketOf, func(args []any, dests []int) (int, error) {
		keys := []string{regBucketKey(b0)}
		for _, d := range dests {
			keys = append(keys, regBucketKey(d))
		}
		return regSplitScript.Run(ctx, rdb, keys, args...).Int()
	}); err != nil {
		t.Fatal(err)
	}
	inTwoAtOnce(t, rdb, func(c *Coordinator) {
		if _, err := c.splitRegBuckets(ctx, regBefore); err != nil {
			t.Error(err)
		}
	})
	if got := scheduleKeys(t, rdb); !reflect.DeepEqual(got, want) {
		t.Errorf("after splitting:\n%v\nwant\n%v", got, want)
	}
	if k, err := c.splitRegBuckets(ctx, regBefore); err != nil || k != 0 {
		t.Errorf("splitting reg:domains again: %d moved (%v), want 0", k, err)
	}

	c.balanceLeases(ctx)
	got := dispatchAll(t, c, rdb)
	sort.Strings(got)
	var active []string
	for _, id := range ids {
		if id != paused && id != removed {
			active = append(active, id)
		}
	}
	sort.Strings(active)
	if !reflect.DeepEqual(got, active) {
		t.Errorf("jobs after splitting: %d %v\nwant each active domain once: %d %v", len(got), got, len(active), active)
	}
	if again := dispatchAll(t, c, rdb); len(again) != 0 {
		t.Errorf("jobs dispatched again: %v", again)
	}
	// Events find the moved domains: a removal is a tombstone in place.
	mustApply(t, c, tenantDomain(t, events.DomainRemoved, tenant, ids[2], "h2.example.com", true))
	for id, w := range map[string][2]bool{ids[2]: {false, false}, ids[3]: {true, true}, paused: {true, false}, removed: {false, false}} {
		known, scheduled, err := DomainState(ctx, rdb, id, shards)
		if err != nil || known != w[0] || scheduled != w[1] {
			t.Errorf("%s: known %v scheduled %v (%v), want %v", id, known, scheduled, err, w)
		}
	}
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
