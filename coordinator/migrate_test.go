package coordinator

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// at returns e occurred at unix ms ms.
func at(e events.Envelope, ms int64) events.Envelope {
	e.OccurredAt = time.UnixMilli(ms)
	return e
}

func value(t *testing.T, rdb *redis.Client, id string, shards int) string {
	t.Helper()
	domains, _ := keysOf(t, rdb, id, shards)
	v, err := rdb.HGet(context.Background(), domains, mem(t, id)).Result()
	if err != nil && err != redis.Nil {
		t.Fatal(err)
	}
	return v
}

// A removed domain's tombstone turns an older event away until it is
// swept, tombstoneTTL after the removal; a newer event adds it again.
func TestTombstoneGuardsUntilSwept(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	c, err := New(Config{Name: "c", Shards: 1, Interval: time.Hour}, h.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	added, id := domainAdded(t, "tomb.example.com", 443)
	t0 := time.Now().UnixMilli()
	mustApply(t, c, at(added, t0), at(domainRemoved(t, id, "tomb.example.com", 443), t0+1), at(added, t0))
	if known, scheduled, _ := DomainState(ctx, h.rdb, id, 1); known || scheduled {
		t.Fatalf("after a stale added: known %v scheduled %v, want neither", known, scheduled)
	}
	if v := value(t, h.rdb, id, 1); !isTombstone(v) {
		t.Fatalf("value after removal: got %q, want a tombstone", v)
	}

	regRef := func() string { return h.rdb.HGet(ctx, regKeyOf(t, h.rdb, id), mem(t, id)).Val() }
	if got, want := regRef(), fmt.Sprintf("%d ", t0+1); got != want {
		t.Fatalf("registration reference after removal: got %q, want %q", got, want)
	}

	if err := c.sweepTombstones(ctx, 0, t0); err != nil {
		t.Fatal(err)
	}
	if v := value(t, h.rdb, id, 1); !isTombstone(v) || regRef() == "" {
		t.Errorf("swept before its time: got %q and reference %q, want both kept", v, regRef())
	}
	if err := c.sweepTombstones(ctx, 0, t0+1); err != nil {
		t.Fatal(err)
	}
	if v := value(t, h.rdb, id, 1); v != "" || regRef() != "" {
		t.Errorf("after the sweep: got %q and reference %q, want neither", v, regRef())
	}
	if n := h.rdb.ZCard(ctx, removedKey(0)).Val(); n != 0 {
		t.Errorf("removed after the sweep: got %d, want 0", n)
	}

	// Added again after a removal: live, not swept.
	mustApply(t, c, at(domainRemoved(t, id, "tomb.example.com", 443), t0+2), at(added, t0+3))
	if err := c.sweepTombstones(ctx, 0, t0+10); err != nil {
		t.Fatal(err)
	}
	if known, scheduled, _ := DomainState(ctx, h.rdb, id, 1); !known || !scheduled {
		t.Errorf("added after removal: known %v scheduled %v, want both", known, scheduled)
	}
	if got, want := regRef(), fmt.Sprintf("%d example.com", t0+3); got != want {
		t.Errorf("registration reference added after removal: got %q, want %q", got, want)
	}
	if n := h.rdb.ZCard(ctx, removedKey(0)).Val(); n != 0 {
		t.Errorf("removed after re-adding: got %d, want 0", n)
	}
}

// A shard in the layout before the buckets is moved by two coordinators
// at once, each domain once and as it was: record, version, due time,
// activity, tombstone.
func TestMigrateLegacyLayout(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	const shards = 1
	recent := time.Now().Add(-time.Hour).UnixMilli()
	due := time.Now().Add(-time.Second).UnixMilli()
	js := `{"tenant_id":"` + testTenant + `","host":"a.example","port":8443}`
	pipe := h.rdb.Pipeline()
	pipe.HSet(ctx, legacyDomainsKey(0), "active", js, "paused", js, "unreadable", "not json")
	pipe.HSet(ctx, legacyVersionsKey(0), "active", 1000, "paused", 1001, "unreadable", 5, "removed", recent)
	pipe.ZAdd(ctx, legacyScheduleKey(0), redis.Z{Score: float64(due), Member: "active"}, redis.Z{Score: 1, Member: "orphan"})
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	var cs []*Coordinator
	for _, name := range []string{"c1", "c2"} {
		c, err := New(Config{Name: name, Shards: shards, Interval: time.Hour}, h.rdb, testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			if err := c.migrate(ctx); err != nil {
				t.Errorf("migrate: %v", err)
			}
		})
	}
	wg.Wait()

	rec := domainRecord{testTenant, "a.example", 8443}
	for _, tc := range []struct {
		id                string
		version           int64
		known, scheduled  bool
		removed, anything bool
	}{
		{"active", 1000, true, true, false, true},
		{"paused", 1001, true, false, false, true},
		{"removed", recent, false, false, true, true},
		{"orphan", 0, false, false, false, false},
	} {
		known, scheduled, err := DomainState(ctx, h.rdb, tc.id, shards)
		if err != nil || known != tc.known || scheduled != tc.scheduled {
			t.Errorf("%s: known %v scheduled %v (%v), want %v %v", tc.id, known, scheduled, err, tc.known, tc.scheduled)
		}
		v := value(t, h.rdb, tc.id, shards)
		if !tc.anything {
			if v != "" {
				t.Errorf("%s: got value %q, want none", tc.id, v)
			}
			continue
		}
		version, got, err := parseValue(v)
		if version != tc.version || tc.known && (err != nil || got != rec) || tc.removed && !isTombstone(v) {
			t.Errorf("%s: got value %q (%d %+v %v), want version %d", tc.id, v, version, got, err, tc.version)
		}
		if _, err := h.rdb.ZScore(ctx, removedKey(0), mem(t, tc.id)).Result(); (err == nil) != tc.removed {
			t.Errorf("%s: in %s: %v, want %v", tc.id, removedKey(0), err == nil, tc.removed)
		}
	}
	if _, schedule := keysOf(t, h.rdb, "active", shards); h.rdb.ZScore(ctx, schedule, mem(t, "active")).Val() != float64(due) {
		t.Errorf("active: due %v, want %d", h.rdb.ZScore(ctx, schedule, mem(t, "active")).Val(), due)
	}
	// What cannot be read stays where it was, for an operator to see.
	if left := h.rdb.HKeys(ctx, legacyDomainsKey(0)).Val(); len(left) != 1 || left[0] != "unreadable" {
		t.Errorf("legacy domains left: got %v, want [unreadable]", left)
	}
	if n := h.rdb.Exists(ctx, legacyScheduleKey(0)).Val(); n != 0 {
		t.Errorf("legacy schedule left")
	}

	cs[0].balanceLeases(ctx)
	if got, err := cs[0].dispatchShard(ctx, 0); err != nil || got != 1 {
		t.Fatalf("dispatch: got %d %v, want 1 job", got, err)
	}
	jobs := h.jobsOf(shards, "active")
	if len(jobs) != 1 || jobs[0].req.Host != "a.example" || jobs[0].req.Port != 8443 || jobs[0].env.TenantID != testTenant {
		t.Errorf("jobs: got %+v, want one for a.example:8443 of %s", jobs, testTenant)
	}
}

// A domain still in the layout before is moved by its next event, under
// the same rules: an older event is a no-op, one keeping its name keeps
// its due time, a rename is due now.
func TestEventMovesLegacyDomain(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	c, err := New(Config{Name: "c", Shards: 1, Interval: time.Hour}, h.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour).UnixMilli()
	js := func(host string) string {
		return `{"tenant_id":"` + testTenant + `","host":"` + host + `","port":443}`
	}
	pipe := h.rdb.Pipeline()
	pipe.HSet(ctx, legacyDomainsKey(0), "same", js("same.example"), "renamed", js("old.example"), "newer", js("newer.example"))
	pipe.HSet(ctx, legacyVersionsKey(0), "same", 1000, "renamed", 1000, "newer", 5000)
	pipe.ZAdd(ctx, legacyScheduleKey(0), redis.Z{Score: float64(later), Member: "same"},
		redis.Z{Score: float64(later), Member: "renamed"}, redis.Z{Score: float64(later), Member: "newer"})
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	mustApply(t, c,
		at(domainUpdated(t, "same", "same.example", 443, true), 2000),
		at(domainUpdated(t, "renamed", "new.example", 443, true), 2000),
		at(domainUpdated(t, "newer", "other.example", 443, true), 4000))

	score := func(id string) float64 {
		_, schedule := keysOf(t, h.rdb, id, 1)
		return h.rdb.ZScore(ctx, schedule, mem(t, id)).Val()
	}
	if got := score("same"); got != float64(later) {
		t.Errorf("same name: due %v, want %d", got, later)
	}
	if got := score("renamed"); got > float64(time.Now().UnixMilli()) {
		t.Errorf("renamed: due %v, want now", got)
	}
	if v, rec, _ := parseValue(value(t, h.rdb, "renamed", 1)); v != 2000 || rec.Host != "new.example" {
		t.Errorf("renamed: got %d %+v, want version 2000 new.example", v, rec)
	}
	if v := value(t, h.rdb, "newer", 1); v != "" {
		t.Errorf("older event than the legacy version: got value %q, want none (no-op)", v)
	}
	if got := h.rdb.HGet(ctx, legacyDomainsKey(0), "newer").Val(); got != js("newer.example") {
		t.Errorf("legacy record of newer: got %q, want it untouched", got)
	}
	for _, id := range []string{"same", "renamed"} {
		if h.rdb.HExists(ctx, legacyDomainsKey(0), id).Val() || h.rdb.HExists(ctx, legacyVersionsKey(0), id).Val() ||
			h.rdb.ZScore(ctx, legacyScheduleKey(0), id).Err() == nil {
			t.Errorf("%s: still in the legacy keys", id)
		}
	}
}

// The registration references of the single reg:domains hash before its
// buckets are read where they are and moved, by an event or by migrate.
func TestMigrateRegistrationReferences(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	c := newRegCoordinator(t, rdb, "c1", Config{})
	pipe := rdb.Pipeline()
	pipe.HSet(ctx, legacyRegDomainsKey, "d1", "1000 example.com", "d2", "1000 example.com", "gone", "900 ")
	pipe.HSet(ctx, legacyRegRefsKey, "example.com", 2)
	pipe.ZAdd(ctx, RegistrationScheduleKey, redis.Z{Score: 1, Member: "example.com"})
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	tenant := events.TenantID("a@example.org")
	mustApply(t, c, at(tenantDomain(t, events.DomainRemoved, tenant, "d1", "www.example.com", true), 2000))
	if refs := regRefs(t, rdb); refs["example.com"] != "1" {
		t.Errorf("references after removing d1: got %v, want example.com 1", refs)
	}
	if err := c.migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, legacyRegDomainsKey).Val(); n != 0 {
		t.Errorf("legacy reg:domains left after migrate")
	}
	for id, want := range map[string]string{"d1": "2000 ", "d2": "1000 example.com", "gone": "900 "} {
		if got := rdb.HGet(ctx, regKeyOf(t, rdb, id), mem(t, id)).Val(); got != want {
			t.Errorf("%s: got %q, want %q", id, got, want)
		}
	}
	mustApply(t, c, at(tenantDomain(t, events.DomainRemoved, tenant, "d2", "api.example.com", true), 2000))
	if refs := regRefs(t, rdb); len(refs) != 0 {
		t.Errorf("references after removing both: got %v, want none", refs)
	}
	if n := rdb.ZCard(ctx, RegistrationScheduleKey).Val(); n != 0 {
		t.Errorf("registration schedule after removing both: got %d entries, want 0", n)
	}
}

// The references of reg:refs, the layout before, move into their
// registrations' states at start (foldRegRefs), kept with a state's
// result; a result applied before that keeps them too.
func TestFoldRegistrationReferences(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	c := newRegCoordinator(t, rdb, "c1", Config{})
	pipe := rdb.Pipeline()
	pipe.HSet(ctx, legacyRegRefsKey, "looked.example", 2, "new.example", 3, "result.example", 4)
	pipe.HSet(ctx, regStateKey, "looked.example", "5000 1", "result.example", "6000 0")
	pipe.ZAdd(ctx, RegistrationScheduleKey, redis.Z{Score: 1, Member: "result.example"})
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	// A result before the move keeps the references of before.
	ev, err := events.New(events.RegistrationLookedUp, "", "result.example",
		events.RegistrationV1{Domain: "result.example", Status: events.RegistrationOK, LookedUpAt: time.UnixMilli(7000)})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, c, ev)
	if err := c.migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, legacyRegRefsKey).Val(); n != 0 {
		t.Errorf("reg:refs left after migrate: %v", rdb.HGetAll(ctx, legacyRegRefsKey).Val())
	}
	want := map[string]string{"looked.example": "5000 1 2", "new.example": "0 0 3", "result.example": "7000 0 4"}
	if got := rdb.HGetAll(ctx, regStateKey).Val(); !reflect.DeepEqual(got, want) {
		t.Errorf("states: got %v, want %v", got, want)
	}
}

// A result read against a state whose references moved since (a domain
// added meanwhile) applies and keeps the count; one against another
// result is refused, for the consumer to read again.
func TestRegistrationResultAcrossReferences(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	keys := []string{regStateKey, RegistrationScheduleKey, regInflightKey, legacyRegRefsKey}
	pipe := rdb.Pipeline()
	pipe.HSet(ctx, regStateKey, "hot.example", "5000 1 3")
	pipe.ZAdd(ctx, RegistrationScheduleKey, redis.Z{Score: 1, Member: "hot.example"})
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := regResultScript.Run(ctx, rdb, keys, "hot.example", "4000 0 3", "6000 0", 6000, 9000).Int(); err != nil || got != -1 {
		t.Errorf("a result read against another: got %d %v, want -1", got, err)
	}
	if got, err := regResultScript.Run(ctx, rdb, keys, "hot.example", "5000 1 2", "6000 0", 6000, 9000).Int(); err != nil || got != 1 {
		t.Errorf("a result read before a reference was added: got %d %v, want 1", got, err)
	}
	if got := rdb.HGet(ctx, regStateKey, "hot.example").Val(); got != "6000 0 3" {
		t.Errorf("state: got %q, want 6000 0 3", got)
	}
}

// The bucket scripts and pipelines keep to one slot per shard: they run
// on Redis Cluster.
func TestBucketsOnRedisCluster(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.RedisCluster(t).Client(t)
	c := newRegCoordinator(t, rdb, "c1", Config{Interval: time.Hour})
	if err := rdb.HSet(ctx, legacyDomainsKey(1), "legacy", `{"tenant_id":"t","host":"legacy.example","port":443}`).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(ctx, legacyScheduleKey(1), redis.Z{Score: 1, Member: "legacy"}).Err(); err != nil {
		t.Fatal(err)
	}
	// A domain whose id is kept as text, as before 2026-12-06 (sixth).
	text := events.DomainID(testTenant, "text.example", 443)
	domains, schedule := keysOf(t, rdb, text, 4)
	if err := rdb.HSet(ctx, domains, text, storedValue(1, "=t||text.example")).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(ctx, schedule, redis.Z{Score: 1, Member: text}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.migrateIDs(ctx); err != nil {
		t.Fatal(err)
	}
	// The text domain was scheduled without the due index, as before it.
	if err := c.buildDueIndex(ctx); err != nil {
		t.Fatal(err)
	}
	c.balanceLeases(ctx)
	// Buckets (the shards' and reg:domains') split as they fill (a low
	// BucketSize, so that 200 domains split many), and a domain a
	// coordinator of before wrote into a split bucket is moved to its
	// own.
	c.cfg.BucketSize = 1
	tenant := events.TenantID("a@example.org")
	for i := range 200 {
		mustApply(t, c, tenantDomain(t, events.DomainAdded, tenant, fmt.Sprintf("d%d", i), fmt.Sprintf("h%d.example.com", i), true))
	}
	stray := strayInSplit(t, c, rdb, 4)
	c.growBuckets(ctx)
	if d, _ := keysOf(t, rdb, stray, 4); !rdb.HExists(ctx, d, mem(t, stray)).Val() {
		t.Errorf("stray domain not moved to its bucket %s", d)
	}
	if jobs := dispatchAll(t, c, rdb); len(jobs) != 203 {
		t.Errorf("jobs: got %d, want 203", len(jobs))
	}
	if split, err := regSet.splits(ctx, rdb); err != nil || len(split) == 0 {
		t.Errorf("reg:domains split: %v (%v), want some", split, err)
	}
	removed := tenantDomain(t, events.DomainRemoved, tenant, "d0", "h0.example.com", true)
	mustApply(t, c, removed)
	n := ShardOf("d0", 4)
	if err := c.sweepTombstones(ctx, n, removed.OccurredAt.UnixMilli()); err != nil {
		t.Fatal(err)
	}
	if v := value(t, rdb, "d0", 4); v != "" {
		t.Errorf("d0 after the sweep: got %q, want no value", v)
	}
}

// scheduleKeys reads every key of the schedule that lists domain ids
// (buckets, tombstones, reg:domains), fields and members by the id they
// stand for (IDOf): what a coordinator reads, whatever the ids' form.
// It fails when two fields or members of a key stand for one id.
func scheduleKeys(t *testing.T, rdb *redis.Client) map[string]map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]map[string]string{}
	for _, pattern := range []string{"domains:{*", "schedule:{*", "reg:domains:*"} {
		keys, err := rdb.Keys(ctx, pattern).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range keys {
			got := map[string]string{}
			add := func(m, v string) {
				if _, dup := got[IDOf(m)]; dup {
					t.Errorf("%s: %s twice", key, IDOf(m))
				}
				got[IDOf(m)] = v
			}
			if rdb.Type(ctx, key).Val() == "hash" {
				for m, v := range rdb.HGetAll(ctx, key).Val() {
					add(m, v)
				}
			} else {
				for _, z := range rdb.ZRangeWithScores(ctx, key, 0, -1).Val() {
					add(z.Member.(string), fmt.Sprint(int64(z.Score)))
				}
			}
			out[key] = got
		}
	}
	return out
}

// idsAsText rewrites every field and member of the schedule's keys kept
// as bytes as its text, as a coordinator of before kept them.
func idsAsText(t *testing.T, rdb *redis.Client) {
	t.Helper()
	ctx := context.Background()
	for key := range scheduleKeys(t, rdb) {
		if rdb.Type(ctx, key).Val() == "hash" {
			for m, v := range rdb.HGetAll(ctx, key).Val() {
				if IDOf(m) != m {
					rdb.HDel(ctx, key, m)
					rdb.HSet(ctx, key, IDOf(m), v)
				}
			}
			continue
		}
		for _, z := range rdb.ZRangeWithScores(ctx, key, 0, -1).Val() {
			if m := z.Member.(string); IDOf(m) != m {
				rdb.ZRem(ctx, key, m)
				rdb.ZAdd(ctx, key, redis.Z{Score: z.Score, Member: IDOf(m)})
			}
		}
	}
}

// Domain ids kept as text (before 2026-12-06, sixth), in the buckets of
// before, are converted to 16 bytes and split to their buckets by two
// coordinators at once, each field and member once and as it
// was (records, due times, tombstones, registration references), ids that
// are no UUIDs stay text, and the schedule works on: jobs name the ids as
// text, removal and the sweep find the converted domains.
func TestMigrateIDsToBytes(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	c := newRegCoordinator(t, rdb, "c1", Config{Interval: time.Hour})
	tenant := events.TenantID("a@example.org")
	var ids []string
	for i := range 40 {
		_, id := domainAdded(t, fmt.Sprintf("h%d.example.com", i), 443)
		ids = append(ids, id)
		mustApply(t, c, tenantDomain(t, events.DomainAdded, tenant, id, fmt.Sprintf("h%d.example.com", i), true))
	}
	paused, removed := ids[0], ids[1]
	mustApply(t, c,
		tenantDomain(t, events.DomainUpdated, tenant, paused, "h0.example.com", false),
		tenantDomain(t, events.DomainRemoved, tenant, removed, "h1.example.com", true),
		tenantDomain(t, events.DomainAdded, tenant, "plain", "plain.example.com", true))
	before := scheduleKeys(t, rdb)
	// As the coordinators that kept ids as text kept them.
	idsAsText(t, rdb)
	if len(before) == 0 || rdb.HExists(ctx, regBucketKey(regBucketOf(ids[5])), ids[5]).Val() == false {
		t.Fatalf("no ids as text to convert: %v", before)
	}

	inTwoAtOnce(t, rdb, func(c *Coordinator) {
		if err := c.migrateIDs(ctx); err != nil {
			t.Error(err)
		}
	})
	if after := scheduleKeys(t, rdb); !reflect.DeepEqual(after, before) {
		t.Errorf("after converting:\n%v\nwant\n%v", after, before)
	}
	for key, fields := range scheduleKeys(t, rdb) {
		for id := range fields {
			if m := mem(t, id); key[0] == 'r' && !rdb.HExists(ctx, key, m).Val() ||
				key[0] != 'r' && !rdb.HExists(ctx, key, m).Val() && rdb.ZScore(ctx, key, m).Err() != nil {
				t.Errorf("%s: %s not kept as Member", key, id)
			}
		}
	}
	for id, want := range map[string][2]bool{ids[2]: {true, true}, paused: {true, false}, removed: {false, false}, "plain": {true, true}} {
		known, scheduled, err := DomainState(ctx, rdb, id, 4)
		if err != nil || known != want[0] || scheduled != want[1] {
			t.Errorf("%s: known %v scheduled %v (%v), want %v", id, known, scheduled, err, want)
		}
	}
	if m, _ := Member(ids[2]); len(m) != 16 {
		t.Fatalf("Member of a UUID: %q", m)
	}
	if err := c.migrateIDs(ctx); err != nil {
		t.Fatal(err)
	}

	// The schedule works on from the converted keys.
	c.balanceLeases(ctx)
	jobs := dispatchAll(t, c, rdb)
	if len(jobs) != 39 { // 40 and plain, less paused and removed
		t.Errorf("jobs: got %d, want 39", len(jobs))
	}
	got := map[string]bool{}
	for _, id := range jobs {
		got[id] = true
	}
	if !got[ids[2]] || !got["plain"] || got[paused] || got[removed] {
		t.Errorf("jobs name %v, want the active ids as text", got)
	}
	gone := at(tenantDomain(t, events.DomainRemoved, tenant, ids[3], "h3.example.com", true), time.Now().UnixMilli())
	mustApply(t, c, gone)
	for n := range 4 {
		if err := c.sweepTombstones(ctx, n, gone.OccurredAt.UnixMilli()); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{removed, ids[3]} {
		if v := value(t, rdb, id, 4); v != "" || rdb.HExists(ctx, regKeyOf(t, rdb, id), mem(t, id)).Val() {
			t.Errorf("%s after the sweep: got %q, want no value and no reference", id, v)
		}
	}
}
