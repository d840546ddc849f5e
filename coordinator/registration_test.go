package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/backoff"
	"github.com/certfleet/certfleet/internal/testenv"
)

// tenantDomain is a domain event of tenant for host, as the API writes it.
func tenantDomain(t *testing.T, name, tenant, id, host string, active bool) events.Envelope {
	t.Helper()
	var payload any
	switch name {
	case events.DomainAdded:
		payload = events.DomainAddedV1{DomainID: id, Host: host, Port: 443, Source: "api"}
	case events.DomainUpdated:
		payload = events.DomainUpdatedV1{DomainID: id, Host: host, Port: 443, Active: active}
	case events.DomainRemoved:
		payload = events.DomainRemovedV1{DomainID: id, Host: host, Port: 443}
	}
	e, err := events.New(name, tenant, id, payload)
	if err != nil {
		t.Fatal(err)
	}
	// Events of one domain in a test follow each other within a
	// millisecond; their versions must still order them.
	time.Sleep(2 * time.Millisecond)
	return e
}

// regJobs reads every registration job.
func regJobs(t *testing.T, rdb *redis.Client) []events.RegistrationRequestedV1 {
	t.Helper()
	envs, err := events.ReadAll(context.Background(), rdb, events.StreamRegistrationJobs)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]events.RegistrationRequestedV1, len(envs))
	for i, e := range envs {
		j, err := events.DecodeRegistrationRequested(e)
		if err != nil {
			t.Fatalf("job %d: %v", i, err)
		}
		if want := events.RegistrationJobID(j.Domain, j.ScheduledAt.UnixMilli()); e.EventID != want {
			t.Errorf("job %d: event id %s, want %s", i, e.EventID, want)
		}
		out[i] = j
	}
	return out
}

func jobDomains(jobs []events.RegistrationRequestedV1) []string {
	out := make([]string, len(jobs))
	for i, j := range jobs {
		out[i] = j.Domain
	}
	sort.Strings(out)
	return out
}

func regScore(t *testing.T, rdb *redis.Client, reg string) (int64, bool) {
	t.Helper()
	s, err := rdb.ZScore(context.Background(), RegistrationScheduleKey, reg).Result()
	if errors.Is(err, redis.Nil) {
		return 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return int64(s), true
}

// regRefs is each registrable's count of references: its state's
// (refsLua), or where the state holds none the count of the layout
// before (reg:refs).
func regRefs(t *testing.T, rdb *redis.Client) map[string]string {
	t.Helper()
	ctx := context.Background()
	out, err := rdb.HGetAll(ctx, legacyRegRefsKey).Result()
	if err != nil {
		t.Fatal(err)
	}
	states, err := rdb.HGetAll(ctx, regStateKey).Result()
	if err != nil {
		t.Fatal(err)
	}
	for reg, st := range states {
		if f := strings.Fields(st); len(f) == 3 {
			out[reg] = f[2]
		}
	}
	return out
}

// newRegCoordinator is a coordinator driven by hand (applyEvent,
// dispatchRegistrations) holding the registration lease.
func newRegCoordinator(t *testing.T, rdb *redis.Client, name string, cfg Config) *Coordinator {
	t.Helper()
	cfg.Name, cfg.Shards = name, 4
	c, err := New(cfg, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustApply(t *testing.T, c *Coordinator, evs ...events.Envelope) {
	t.Helper()
	for _, e := range evs {
		if err := c.applyEvent(context.Background(), e); err != nil {
			t.Fatalf("apply %s: %v", e.Name, err)
		}
	}
}

func mustDispatch(t *testing.T, c *Coordinator) int {
	t.Helper()
	n, err := c.dispatchRegistrations(context.Background())
	if err != nil {
		t.Fatalf("dispatch registrations: %v", err)
	}
	return n
}

// Many hosts of three tenants under two registrable domains are two
// lookups; references follow renames, pauses and removals exactly, however
// often and in whatever order events are redelivered.
func TestRegistrationReferences(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	c := newRegCoordinator(t, rdb, "c1", Config{})
	c.balanceLeases(ctx)
	if !c.holdsRegistration() {
		t.Fatal("registration lease not taken")
	}

	const hostsPerTenant = 40
	tenants := []string{events.TenantID("a@example.org"), events.TenantID("b@example.org"), events.TenantID("c@example.org")}
	type dom struct{ tenant, id, host string }
	var doms []dom
	var added []events.Envelope
	for ti, tenant := range tenants {
		for i := range hostsPerTenant {
			parent := "example.com"
			if i%2 == 1 {
				parent = "shop.example.co.uk"
			}
			host := fmt.Sprintf("h%d-t%d.%s", i, ti, parent)
			d := dom{tenant, events.DomainID(tenant, host, 443), host}
			doms = append(doms, d)
			added = append(added, tenantDomain(t, events.DomainAdded, d.tenant, d.id, d.host, true))
		}
	}
	mustApply(t, c, added...)
	mustApply(t, c, added...) // redelivered
	if got := mustDispatch(t, c); got != 2 {
		t.Fatalf("lookups dispatched for %d hosts: got %d, want 2", len(doms), got)
	}
	if got, want := jobDomains(regJobs(t, rdb)), []string{"example.co.uk", "example.com"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("jobs: got %v, want %v", got, want)
	}
	if got := mustDispatch(t, c); got != 0 {
		t.Errorf("dispatched again at once: got %d, want 0", got)
	}
	half := strconv.Itoa(len(doms) / 2)
	if got := regRefs(t, rdb); got["example.com"] != half || got["example.co.uk"] != half {
		t.Errorf("references: got %v, want %s each", got, half)
	}

	t.Run("rename moves the reference", func(t *testing.T) {
		d := doms[0] // under example.com
		renamed := tenantDomain(t, events.DomainUpdated, d.tenant, d.id, "www.other.org", true)
		mustApply(t, c, renamed, renamed, added[0]) // redelivered, and the older added after it
		refs := regRefs(t, rdb)
		if refs["example.com"] != strconv.Itoa(len(doms)/2-1) || refs["other.org"] != "1" {
			t.Errorf("references after rename: got %v, want example.com %d, other.org 1", refs, len(doms)/2-1)
		}
		if got := mustDispatch(t, c); got != 1 {
			t.Errorf("dispatched after rename: got %d, want 1 (other.org)", got)
		}
		// Renamed back: no lookup, example.com is scheduled already.
		mustApply(t, c, tenantDomain(t, events.DomainUpdated, d.tenant, d.id, d.host, true))
		if _, ok := regScore(t, rdb, "other.org"); ok {
			t.Error("other.org still scheduled without references")
		}
		if got := mustDispatch(t, c); got != 0 {
			t.Errorf("dispatched after renaming back: got %d, want 0", got)
		}
	})

	t.Run("removal of the last host drops it", func(t *testing.T) {
		var removed []events.Envelope
		var last events.Envelope
		for i, d := range doms {
			if i%2 == 0 {
				continue // example.com
			}
			if i == len(doms)-1 {
				// The last one paused first, then removed.
				last = tenantDomain(t, events.DomainUpdated, d.tenant, d.id, d.host, false)
			}
			removed = append(removed, tenantDomain(t, events.DomainRemoved, d.tenant, d.id, d.host, false))
		}
		mustApply(t, c, removed[:len(removed)-1]...)
		if _, ok := regScore(t, rdb, "example.co.uk"); !ok {
			t.Fatal("example.co.uk dropped with one host left")
		}
		mustApply(t, c, last)
		if _, ok := regScore(t, rdb, "example.co.uk"); ok {
			t.Error("example.co.uk still scheduled after its last host was paused")
		}
		mustApply(t, c, removed...)   // redelivered removals
		mustApply(t, c, added[1:]...) // and older adds: all no-ops
		if refs := regRefs(t, rdb); refs["example.co.uk"] != "" || refs["example.com"] != half {
			t.Errorf("references: got %v, want example.com %s and no example.co.uk", refs, half)
		}
		if _, ok := regScore(t, rdb, "example.co.uk"); ok {
			t.Error("example.co.uk scheduled again by redeliveries")
		}
	})

	t.Run("hosts without a registrable domain", func(t *testing.T) {
		for _, host := range []string{"192.0.2.7", "localhost", "co.uk"} {
			mustApply(t, c, tenantDomain(t, events.DomainAdded, tenants[0], events.DomainID(tenants[0], host, 443), host, true))
		}
		if got := mustDispatch(t, c); got != 0 {
			t.Errorf("dispatched: got %d, want 0", got)
		}
	})
}

// Only the holder of the registration lease dispatches, and a holder
// whose lease was taken over cannot.
func TestRegistrationDispatchIsFenced(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	c1 := newRegCoordinator(t, rdb, "c1", Config{})
	c2 := newRegCoordinator(t, rdb, "c2", Config{})
	c1.balanceLeases(ctx)
	c2.balanceLeases(ctx)
	if !c1.holdsRegistration() || c2.holdsRegistration() {
		t.Fatalf("lease holders: c1 %v, c2 %v, want c1 only", c1.holdsRegistration(), c2.holdsRegistration())
	}
	tenant := events.TenantID("a@example.org")
	mustApply(t, c2, tenantDomain(t, events.DomainAdded, tenant, "d1", "www.example.net", true))
	if got := mustDispatch(t, c2); got != 0 {
		t.Errorf("c2 without the lease dispatched %d, want 0", got)
	}
	// c1 paused past its lease; c2 took it over.
	if err := rdb.Set(ctx, RegistrationLeaseKey, c2.token, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := c1.dispatchRegistrations(ctx); !errors.Is(err, errLeaseLost) || n != 0 {
		t.Errorf("stale holder: got %d, %v, want 0, lease lost", n, err)
	}
	if c1.holdsRegistration() {
		t.Error("stale holder still believes it holds the lease")
	}
	if got := len(regJobs(t, rdb)); got != 0 {
		t.Errorf("jobs: got %d, want 0", got)
	}
}

func lookedUp(t *testing.T, r events.RegistrationV1) events.Envelope {
	t.Helper()
	e, err := events.NewWithID(events.RegistrationEventID(r.Domain, r.LookedUpAt), events.RegistrationLookedUp, "", r.Domain, r)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// The next lookup follows the result: an interval after an answer, daily
// near or after expiry, backing off after failures, at a rate-limited
// server's Retry-After; a redelivered or older result changes nothing.
func TestRegistrationNextDueFromResults(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	const interval = 7 * 24 * time.Hour
	retry := backoff.Policy{Initial: 10 * time.Minute}
	c := newRegCoordinator(t, rdb, "c1", Config{RegistrationInterval: interval, RegistrationRetry: retry})
	c.balanceLeases(ctx)
	tenant := events.TenantID("a@example.org")
	mustApply(t, c, tenantDomain(t, events.DomainAdded, tenant, "d1", "www.example.com", true))

	now := time.Now().UTC().Truncate(time.Millisecond)
	at := func(d time.Duration) *time.Time { v := now.Add(d); return &v }
	step := 0
	for _, tc := range []struct {
		name   string
		r      events.RegistrationV1
		lo, hi time.Duration // the next due, after the lookup
	}{
		{"ok far from expiry", events.RegistrationV1{Status: events.RegistrationOK, ExpiresAt: at(300 * 24 * time.Hour)}, interval, interval},
		{"ok within 30 days", events.RegistrationV1{Status: events.RegistrationOK, ExpiresAt: at(20 * 24 * time.Hour)}, 24 * time.Hour, 24 * time.Hour},
		{"expired", events.RegistrationV1{Status: events.RegistrationOK, ExpiresAt: at(-2 * 24 * time.Hour)}, 24 * time.Hour, 24 * time.Hour},
		{"no expiry", events.RegistrationV1{Status: events.RegistrationNoExpiry}, interval, interval},
		{"first error", events.RegistrationV1{Status: events.RegistrationError, Detail: "timeout"}, 5 * time.Minute, 10 * time.Minute},
		{"second error", events.RegistrationV1{Status: events.RegistrationError, Detail: "timeout"}, 10 * time.Minute, 20 * time.Minute},
		{"error with a later retry after", events.RegistrationV1{Status: events.RegistrationError, RetryAfter: at(5 * time.Hour)}, 5 * time.Hour, 5 * time.Hour},
		{"rate limited with retry after", events.RegistrationV1{Status: events.RegistrationRateLimited, RetryAfter: at(2 * time.Hour)}, 2 * time.Hour, 2 * time.Hour},
		{"rate limited retry after beyond the interval", events.RegistrationV1{Status: events.RegistrationRateLimited, RetryAfter: at(30 * 24 * time.Hour)}, interval, interval},
		{"answer resets the failures", events.RegistrationV1{Status: events.RegistrationNotFound}, interval, interval},
		{"error after the reset", events.RegistrationV1{Status: events.RegistrationError}, 5 * time.Minute, 10 * time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			step++
			r := tc.r
			r.Domain = "example.com"
			// Each result a second after the one before; its dates move
			// with it.
			shift := time.Duration(step) * time.Second
			r.LookedUpAt = now.Add(shift)
			for _, p := range []**time.Time{&r.ExpiresAt, &r.RetryAfter} {
				if *p != nil {
					v := (*p).Add(shift)
					*p = &v
				}
			}
			e := lookedUp(t, r)
			mustApply(t, c, e)
			got, ok := regScore(t, rdb, "example.com")
			if !ok {
				t.Fatal("example.com not scheduled")
			}
			lo, hi := r.LookedUpAt.Add(tc.lo).UnixMilli(), r.LookedUpAt.Add(tc.hi).UnixMilli()
			if got < lo || got > hi {
				t.Fatalf("next due: got lookup + %s, want lookup + %s..%s",
					time.Duration(got-r.LookedUpAt.UnixMilli())*time.Millisecond, tc.lo, tc.hi)
			}
			// Redelivered: the same next due (no second failure counted).
			mustApply(t, c, e)
			if again, _ := regScore(t, rdb, "example.com"); again != got {
				t.Errorf("after redelivery: got %d, want %d", again, got)
			}
		})
	}
	t.Run("older result ignored", func(t *testing.T) {
		before, _ := regScore(t, rdb, "example.com")
		mustApply(t, c, lookedUp(t, events.RegistrationV1{Domain: "example.com", Status: events.RegistrationOK, LookedUpAt: now.Add(-time.Hour)}))
		if got, _ := regScore(t, rdb, "example.com"); got != before {
			t.Errorf("next due: got %d, want %d", got, before)
		}
	})
	t.Run("result for an unreferenced domain ignored", func(t *testing.T) {
		mustApply(t, c, lookedUp(t, events.RegistrationV1{Domain: "gone.example", Status: events.RegistrationOK, LookedUpAt: now}))
		if _, ok := regScore(t, rdb, "gone.example"); ok {
			t.Error("gone.example scheduled by its result")
		}
	})
	t.Run("malformed result dead-lettered", func(t *testing.T) {
		e := lookedUp(t, events.RegistrationV1{Domain: "example.com", Status: "fine", LookedUpAt: now})
		if err := c.applyEvent(ctx, e); err == nil {
			t.Error("got nil, want a permanent error")
		}
	})
}

// domain.check_requested makes the registrable domain due now, unless it
// was looked up within the hour.
func TestRegistrationCheckRequested(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	c := newRegCoordinator(t, rdb, "c1", Config{})
	c.balanceLeases(ctx)
	tenant := events.TenantID("a@example.org")
	mustApply(t, c, tenantDomain(t, events.DomainAdded, tenant, "d1", "api.example.com", true))
	check := func() events.Envelope {
		e, err := events.New(events.DomainCheckRequested, tenant, "d1", events.DomainCheckRequestedV1{DomainID: "d1"})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	// Added and checked at once: the lookup the add dispatched serves
	// the check.
	if got := mustDispatch(t, c); got != 1 {
		t.Fatalf("dispatched after add: got %d, want 1", got)
	}
	mustApply(t, c, check())
	if got := mustDispatch(t, c); got != 0 {
		t.Errorf("dispatched after a check while the lookup is under way: got %d, want 0", got)
	}
	for _, tc := range []struct {
		name    string
		lookup  time.Duration // before now
		wantNow bool
	}{
		{"looked up 2 hours ago", 2 * time.Hour, true},
		{"looked up 10 minutes ago", 10 * time.Minute, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			at := time.Now().Add(-tc.lookup).UTC().Truncate(time.Millisecond)
			mustApply(t, c, lookedUp(t, events.RegistrationV1{Domain: "example.com", Status: events.RegistrationOK, LookedUpAt: at}))
			before := time.Now().UnixMilli()
			mustApply(t, c, check())
			got, _ := regScore(t, rdb, "example.com")
			if isNow := got >= before && got <= time.Now().UnixMilli(); isNow != tc.wantNow {
				t.Errorf("due now after check: got %v (due %s from now), want %v", isNow,
					time.Duration(got-before)*time.Millisecond, tc.wantNow)
			}
		})
	}
}

func TestRegistrationNextDuePolicy(t *testing.T) {
	const interval = 24 * time.Hour * 7
	at := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	in := func(d time.Duration) *time.Time { v := at.Add(d); return &v }
	retry := backoff.Policy{Initial: time.Hour}
	for _, tc := range []struct {
		name     string
		r        events.RegistrationV1
		failures int
		interval time.Duration
		lo, hi   time.Duration
	}{
		{"ok", events.RegistrationV1{Status: events.RegistrationOK, ExpiresAt: in(31 * 24 * time.Hour)}, 0, interval, interval, interval},
		{"ok, interval shorter than a day near expiry", events.RegistrationV1{Status: events.RegistrationOK, ExpiresAt: in(time.Hour)}, 0, time.Hour, time.Hour, time.Hour},
		{"tenth error capped at the interval", events.RegistrationV1{Status: events.RegistrationError}, 10, interval, interval / 2, interval},
		{"rate limited, retry after in the past", events.RegistrationV1{Status: events.RegistrationRateLimited, RetryAfter: in(-time.Hour)}, 1, interval, regMinRetry, regMinRetry},
		{"rate limited without retry after", events.RegistrationV1{Status: events.RegistrationRateLimited}, 1, interval, 30 * time.Minute, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.r.LookedUpAt = at
			got := registrationNextDue(tc.r, tc.failures, tc.interval, retry).Sub(at)
			if got < tc.lo || got > tc.hi {
				t.Errorf("got lookup + %s, want %s..%s", got, tc.lo, tc.hi)
			}
		})
	}
}

// Every registration script touches keys of one slot: on Redis Cluster a
// script naming keys of two slots fails with CROSSSLOT.
func TestRegistrationOnRedisCluster(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.RedisCluster(t).Client(t)
	c := newRegCoordinator(t, rdb, "c1", Config{})
	c.balanceLeases(ctx)
	tenant := events.TenantID("a@example.org")
	added := tenantDomain(t, events.DomainAdded, tenant, "d1", "www.example.com", true)
	mustApply(t, c, added)
	if got := mustDispatch(t, c); got != 1 {
		t.Fatalf("dispatched: got %d, want 1", got)
	}
	check, err := events.New(events.DomainCheckRequested, tenant, "d1", events.DomainCheckRequestedV1{DomainID: "d1"})
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, c,
		lookedUp(t, events.RegistrationV1{Domain: "example.com", Status: events.RegistrationOK, LookedUpAt: time.Now().UTC().Truncate(time.Millisecond)}),
		check,
		tenantDomain(t, events.DomainRemoved, tenant, "d1", "www.example.com", false))
	if _, ok := regScore(t, rdb, "example.com"); ok {
		t.Error("example.com still scheduled after its only host was removed")
	}
}

// Domains scheduled before registration lookups existed get their
// references once, from their shard records: paused ones none.
func TestRegistrationBackfill(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	c := newRegCoordinator(t, rdb, "c1", Config{})
	c.balanceLeases(ctx)
	tenant := events.TenantID("a@example.org")
	mustApply(t, c,
		tenantDomain(t, events.DomainAdded, tenant, "d1", "www.example.com", true),
		tenantDomain(t, events.DomainAdded, tenant, "d2", "api.example.com", true),
		tenantDomain(t, events.DomainAdded, tenant, "d3", "paused.example.net", true))
	mustApply(t, c, tenantDomain(t, events.DomainUpdated, tenant, "d3", "paused.example.net", false))
	// The fleet before the upgrade: shard keys only.
	keys, err := rdb.Keys(ctx, "reg:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	c.balanceLeases(ctx) // finds its lease gone
	c.balanceLeases(ctx) // takes it again

	if err := c.backfillRegistrations(ctx); err != nil {
		t.Fatal(err)
	}
	if refs := regRefs(t, rdb); len(refs) != 1 || refs["example.com"] != "2" {
		t.Errorf("references: got %v, want example.com 2", refs)
	}
	if got := mustDispatch(t, c); got != 1 {
		t.Errorf("dispatched: got %d, want 1", got)
	}
	// Once per deployment: a domain's reference removed by hand stays
	// removed by a second run.
	if err := rdb.HDel(ctx, regStateKey, "example.com").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.backfillRegistrations(ctx); err != nil {
		t.Fatal(err)
	}
	if refs := regRefs(t, rdb); len(refs) != 0 {
		t.Errorf("references after a second backfill: got %v, want none", refs)
	}
}
