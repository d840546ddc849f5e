package coordinator

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// checkDueIndex fails unless the due index of every shard lists every
// bucket that has a domain scheduled, at most at its earliest due time:
// the index may only be early, never late.
func checkDueIndex(t *testing.T, rdb *redis.Client, shards int, when string) {
	t.Helper()
	ctx := context.Background()
	for n := range shards {
		bs, err := shardSet(n).leaves(ctx, rdb)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs {
			first := rdb.ZRangeWithScores(ctx, scheduleKey(n, b), 0, 0).Val()
			if len(first) == 0 {
				continue
			}
			got, err := rdb.ZScore(ctx, dueKey(n), strconv.Itoa(b)).Result()
			if err != nil || got > first[0].Score {
				t.Errorf("%s: shard %d bucket %d: due index %v (%v), earliest due %v", when, n, b, int64(got), err, int64(first[0].Score))
			}
		}
	}
}

// dispatchAll dispatches every shard and returns the domains of the jobs
// appended (the jobs streams are emptied).
func dispatchAll(t *testing.T, c *Coordinator, rdb *redis.Client) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	for n := range c.cfg.Shards {
		if _, err := c.dispatchShard(ctx, n); err != nil {
			t.Fatalf("dispatch shard %d: %v", n, err)
		}
		for _, msg := range rdb.XRange(ctx, events.JobStream(n), "-", "+").Val() {
			e, err := events.FromStreamValues(msg.Values)
			if err != nil {
				t.Fatal(err)
			}
			var req events.ScanRequestedV1
			if err := e.Decode(&req); err != nil {
				t.Fatal(err)
			}
			out = append(out, req.DomainID)
		}
		rdb.Del(ctx, events.JobStream(n))
	}
	return out
}

// The due index never delays a due domain: whatever gives a domain an
// earlier due time (an add, a rename, a check, a resume, a re-add after
// removal) lowers its bucket's score with it; dispatch sets the scores
// of the buckets it read to their earliest due time, which corrects the
// early ones; and buildDueIndex repairs a schedule written without it.
func TestDueIndexNeverDelays(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	const shards = 4
	c := newRegCoordinator(t, rdb, "c1", Config{Interval: time.Hour})
	c.balanceLeases(ctx)
	tenant := events.TenantID("a@example.org")
	ids := make([]string, 40)
	for i := range ids {
		ids[i] = events.DomainID(tenant, fmt.Sprintf("h%d.example.com", i), 443)
		mustApply(t, c, tenantDomain(t, events.DomainAdded, tenant, ids[i], fmt.Sprintf("h%d.example.com", i), true))
	}
	checkDueIndex(t, rdb, shards, "after the adds")
	if got := dispatchAll(t, c, rdb); len(got) != len(ids) {
		t.Fatalf("first dispatch: %d jobs, want %d", len(got), len(ids))
	}
	checkDueIndex(t, rdb, shards, "after the first dispatch")
	// Every domain is due in an hour: no bucket is due now.
	for n := range shards {
		if k := rdb.ZCount(ctx, dueKey(n), "-inf", strconv.FormatInt(nowMS(), 10)).Val(); k != 0 {
			t.Errorf("shard %d: %d buckets due after dispatch, want 0", n, k)
		}
	}

	for _, tc := range []struct {
		name  string
		id    string
		apply func(id string)
	}{
		{"renamed", ids[1], func(id string) {
			mustApply(t, c, tenantDomain(t, events.DomainUpdated, tenant, id, "renamed.example.com", true))
		}},
		{"check requested", ids[2], func(id string) { mustApply(t, c, checkRequested(t, id)) }},
		{"resumed", ids[3], func(id string) {
			mustApply(t, c, tenantDomain(t, events.DomainUpdated, tenant, id, "h3.example.com", false))
			checkDueIndex(t, rdb, shards, "paused")
			if got := dispatchAll(t, c, rdb); len(got) != 0 {
				t.Errorf("paused: jobs %v, want none", got)
			}
			mustApply(t, c, tenantDomain(t, events.DomainUpdated, tenant, id, "h3.example.com", true))
		}},
		{"added again after removal", ids[4], func(id string) {
			mustApply(t, c, tenantDomain(t, events.DomainRemoved, tenant, id, "h4.example.com", true))
			checkDueIndex(t, rdb, shards, "removed")
			if got := dispatchAll(t, c, rdb); len(got) != 0 {
				t.Errorf("removed: jobs %v, want none", got)
			}
			mustApply(t, c, tenantDomain(t, events.DomainAdded, tenant, id, "h4.example.com", true))
		}},
		{"rescheduled without the index", ids[6], func(id string) {
			// As a coordinator of before the index would: only the
			// schedule moves; buildDueIndex (at start and every
			// migrateEvery) repairs the index.
			_, schedule := keysOf(t, rdb, id, shards)
			rdb.ZAdd(ctx, schedule, redis.Z{Score: float64(nowMS()), Member: mem(t, id)})
			if got := dispatchAll(t, c, rdb); len(got) != 0 {
				t.Errorf("before the index is built: jobs %v, want none", got)
			}
			if err := c.buildDueIndex(ctx); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		id := tc.id
		tc.apply(id)
		checkDueIndex(t, rdb, shards, tc.name)
		if got := dispatchAll(t, c, rdb); len(got) != 1 || got[0] != id {
			t.Errorf("%s: jobs %v, want one of %s", tc.name, got, id)
		}
		checkDueIndex(t, rdb, shards, tc.name+", dispatched")
	}

	// An early score is corrected by the dispatch that reads its bucket;
	// an emptied bucket leaves the index when its score comes due.
	n, b := ShardOf(ids[5], shards), bucketOf(ids[5])
	rdb.ZAdd(ctx, dueKey(n), redis.Z{Score: 1, Member: strconv.Itoa(b)})
	if got := dispatchAll(t, c, rdb); len(got) != 0 {
		t.Errorf("early score: jobs %v, want none", got)
	}
	if s := rdb.ZScore(ctx, dueKey(n), strconv.Itoa(b)).Val(); s <= float64(nowMS()) {
		t.Errorf("early score not corrected: %d", int64(s))
	}
	for _, id := range ids {
		if ShardOf(id, shards) == n && bucketOf(id) == b {
			mustApply(t, c, tenantDomain(t, events.DomainRemoved, tenant, id, "gone.example.com", true))
		}
	}
	// Its score stays until it comes due, when dispatch reads the bucket.
	rdb.ZAdd(ctx, dueKey(n), redis.Z{Score: 1, Member: strconv.Itoa(b)})
	dispatchAll(t, c, rdb)
	if err := rdb.ZScore(ctx, dueKey(n), strconv.Itoa(b)).Err(); err == nil {
		t.Errorf("bucket %d of shard %d emptied, still in the due index", b, n)
	}
	checkDueIndex(t, rdb, shards, "at the end")
}

// A bucket with more due domains than a batch is dispatched whole in one
// tick: dispatch reads it again while its batches are full.
func TestDueIndexFullBatches(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	c := newRegCoordinator(t, rdb, "c1", Config{Interval: time.Hour})
	c.cfg.Shards = 1
	c.balanceLeases(ctx)
	tenant := events.TenantID("a@example.org")
	// Domains of one bucket (2.5 batches), added straight to it.
	want := map[string]bool{}
	pipe := rdb.Pipeline()
	for i := 0; len(want) < batchSize*5/2; i++ {
		id := events.DomainID(tenant, fmt.Sprintf("h%d.example.com", i), 443)
		if bucketOf(id) != 7 {
			continue
		}
		want[id] = true
		m := mem(t, id)
		pipe.HSet(ctx, domainsKey(0, 7), m, storedValue(1, "=t||h.example.com"))
		pipe.ZAdd(ctx, scheduleKey(0, 7), redis.Z{Score: 1, Member: m})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.buildDueIndex(ctx); err != nil {
		t.Fatal(err)
	}
	got := dispatchAll(t, c, rdb)
	if len(got) != len(want) {
		t.Errorf("jobs: got %d, want %d", len(got), len(want))
	}
	for _, id := range got {
		if !want[id] {
			t.Errorf("job of %s, not added", id)
		}
	}
	checkDueIndex(t, rdb, 1, "after dispatch")
}
