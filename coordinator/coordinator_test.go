package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/backoff"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/redis/go-redis/v9"
)

const testTenant = "9b2f8f4e-0000-5000-8000-000000000001"

func TestShardOf(t *testing.T) {
	// Expected values are FNV-1a 32 computed by hand: offset basis
	// 0x811c9dc5 for "", 0xe40c292c for "a".
	for _, tc := range []struct {
		name   string
		id     string
		shards int
		want   int
	}{
		{"empty id", "", 16, 0x811c9dc5 % 16},
		{"a over 16", "a", 16, 0xe40c292c % 16},
		{"a over 7", "a", 7, 0xe40c292c % 7},
		{"one shard", "anything", 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ShardOf(tc.id, tc.shards); got != tc.want {
				t.Errorf("ShardOf(%q, %d) = %d, want %d", tc.id, tc.shards, got, tc.want)
			}
		})
	}
}

func TestShardOfDistribution(t *testing.T) {
	const shards, domains = 16, 16000
	counts := make([]int, shards)
	for i := 0; i < domains; i++ {
		counts[ShardOf(events.DomainID(testTenant, fmt.Sprintf("host-%d.example.com", i), 443), shards)]++
	}
	mean := domains / shards
	for n, got := range counts {
		// Binomial sd is about 31 here; 15% is over 4 sd.
		if got < mean*85/100 || got > mean*115/100 {
			t.Errorf("shard %d: got %d domains, want %d ± 15%%", n, got, mean)
		}
	}
}

func TestNextDue(t *testing.T) {
	const iv = 10 * time.Second
	for _, tc := range []struct {
		name           string
		due, now, want int64
	}{
		{"on time", 1_000, 1_050, 11_000},
		{"late within interval", 1_000, 10_999, 11_000},
		{"late exactly one interval", 1_000, 11_000, 21_000},
		{"down for 3.5 intervals keeps phase", 1_000, 36_000, 41_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := nextDue(tc.due, tc.now, iv); got != tc.want {
				t.Errorf("nextDue(%d, %d) = %d, want %d", tc.due, tc.now, got, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		wantErr []string
	}{
		{"defaults", Config{}, nil},
		{"bad everything", Config{Shards: 101, Interval: time.Millisecond, Tick: time.Millisecond, LeaseTTL: time.Millisecond},
			[]string{"shards", "interval", "tick", "lease ttl"}},
		{"negative shards", Config{Shards: -1}, []string{"shards"}},
		{"registration", Config{RegistrationInterval: time.Millisecond, RegistrationRetry: backoff.Policy{Initial: time.Hour, Max: time.Minute}},
			[]string{"registration interval", "registration retry"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.setDefaults()
			err := cfg.Validate()
			if len(tc.wantErr) == 0 && err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			for _, w := range tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("got error %v, want one mentioning %q", err, w)
				}
			}
		})
	}
}

// --- helpers ---

type harness struct {
	t   *testing.T
	rdb *redis.Client
	pub *events.Publisher
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	rdb := testenv.Redis(t).Client(t)
	pub, err := events.NewPublisher(rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, rdb: rdb, pub: pub}
}

// start runs a coordinator until the returned stop is called (or the test ends).
func (h *harness) start(cfg Config) (*Coordinator, func()) {
	h.t.Helper()
	c, err := New(cfg, h.rdb, testenv.Logger(h.t))
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					h.t.Errorf("run %s: got error %v, want nil", cfg.Name, err)
				}
			case <-time.After(10 * time.Second):
				h.t.Errorf("run %s did not return 10s after cancel", cfg.Name)
			}
		})
	}
	h.t.Cleanup(stop)
	return c, stop
}

func (h *harness) publish(evs ...events.Envelope) {
	h.t.Helper()
	for _, e := range evs {
		if err := h.pub.Publish(events.EventStream(e.TenantID), e); err != nil {
			h.t.Fatal(err)
		}
	}
}

func domainAdded(t *testing.T, host string, port int) (events.Envelope, string) {
	t.Helper()
	id := events.DomainID(testTenant, host, port)
	e, err := events.New(events.DomainAdded, testTenant, id, events.DomainAddedV1{DomainID: id, Host: host, Port: port, Source: "api"})
	if err != nil {
		t.Fatal(err)
	}
	return e, id
}

func domainRemoved(t *testing.T, id, host string, port int) events.Envelope {
	t.Helper()
	e, err := events.New(events.DomainRemoved, testTenant, id, events.DomainRemovedV1{DomainID: id, Host: host, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func domainUpdated(t *testing.T, id, host string, port int, active bool) events.Envelope {
	t.Helper()
	e, err := events.New(events.DomainUpdated, testTenant, id, events.DomainUpdatedV1{DomainID: id, Host: host, Port: port, Active: active})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

type job struct {
	stream string
	env    events.Envelope
	req    events.ScanRequestedV1
}

// jobs reads every job on every jobs stream.
func (h *harness) jobs(shards int) []job {
	h.t.Helper()
	var out []job
	for n := 0; n < shards; n++ {
		msgs, err := h.rdb.XRange(context.Background(), events.JobStream(n), "-", "+").Result()
		if err != nil {
			h.t.Fatal(err)
		}
		for _, m := range msgs {
			env, err := events.FromStreamValues(m.Values)
			if err != nil {
				h.t.Fatalf("job %s on %s: %v", m.ID, events.JobStream(n), err)
			}
			var req events.ScanRequestedV1
			if err := env.Decode(&req); err != nil {
				h.t.Fatal(err)
			}
			out = append(out, job{stream: events.JobStream(n), env: env, req: req})
		}
	}
	return out
}

func (h *harness) jobsOf(shards int, domainID string) []job {
	var out []job
	for _, j := range h.jobs(shards) {
		if j.req.DomainID == domainID {
			out = append(out, j)
		}
	}
	return out
}

func (h *harness) score(shards int, domainID string) (int64, bool) {
	h.t.Helper()
	_, schedule := keysOf(h.t, h.rdb, domainID, shards)
	s, err := h.rdb.ZScore(context.Background(), schedule, mem(h.t, domainID)).Result()
	if errors.Is(err, redis.Nil) {
		return 0, false
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return int64(s), true
}

// mem is Member(id), the field or member of id in the schedule's keys.
// keysOf is DomainKeys, failing t on an error.
func keysOf(t testing.TB, rdb redis.UniversalClient, id string, shards int) (domains, schedule string) {
	t.Helper()
	domains, schedule, err := DomainKeys(context.Background(), rdb, id, shards)
	if err != nil {
		t.Fatal(err)
	}
	return domains, schedule
}

func mem(t testing.TB, id string) string {
	t.Helper()
	m, err := Member(id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// isTombstone reports whether v is the value of a removed domain.
func isTombstone(v string) bool {
	_, _, err := parseValue(v)
	return errors.Is(err, errTombstone)
}

// eventually polls cond every 20ms until it holds or d has passed.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not true after %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sync publishes a sentinel domain and waits until the coordinator applied
// it: the events stream is consumed in order, so everything published
// before is applied too.
func (h *harness) sync(shards int) {
	h.t.Helper()
	e, id := domainAdded(h.t, fmt.Sprintf("sentinel-%d.example.com", time.Now().UnixNano()), 443)
	h.publish(e)
	eventually(h.t, 5*time.Second, "sentinel applied", func() bool {
		domains, _ := keysOf(h.t, h.rdb, id, shards)
		ok, err := h.rdb.HExists(context.Background(), domains, mem(h.t, id)).Result()
		return err == nil && ok
	})
}

// --- integration tests ---

func TestDomainAddedDispatchesJob(t *testing.T) {
	h := newHarness(t)
	// Default Tick (1s) and shards: the promise is about defaults.
	cfg := Config{Name: "c1", Interval: time.Hour}
	h.start(cfg)
	const shards = events.DefaultShards

	e, id := domainAdded(t, "www.example.com", 8443)
	published := time.Now()
	h.publish(e)
	var jobs []job
	eventually(t, 2*time.Second, "job dispatched", func() bool {
		jobs = h.jobsOf(shards, id)
		return len(jobs) > 0
	})
	t.Logf("first job %s after publish", time.Since(published).Round(time.Millisecond))
	if len(jobs) != 1 {
		t.Fatalf("got %d jobs, want 1", len(jobs))
	}
	j := jobs[0]
	dueMS := j.req.ScheduledAt.UnixMilli()
	for _, c := range []struct{ field, got, want string }{
		{"stream", j.stream, events.JobStream(ShardOf(id, shards))},
		{"name", j.env.Name, events.ScanRequested},
		{"tenant_id", j.env.TenantID, testTenant},
		{"aggregate_id", j.env.AggregateID, id},
		{"event_id", j.env.EventID.String(), j.req.JobID.String()},
		{"job_id", j.req.JobID.String(), events.JobID(id, dueMS).String()},
		{"domain_id", j.req.DomainID, id},
		{"host", j.req.Host, "www.example.com"},
		{"port", fmt.Sprint(j.req.Port), "8443"},
		{"manual", fmt.Sprint(j.req.Manual), "false"},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.field, c.got, c.want)
		}
	}
	if d := dueMS - published.UnixMilli(); d < -50 || d > 2000 {
		t.Errorf("scheduled_at: got %s after publish, want within 2s", time.Duration(d)*time.Millisecond)
	}
	if got, _ := h.score(shards, id); got != dueMS+time.Hour.Milliseconds() {
		t.Errorf("next due: got %d, want due+interval %d", got, dueMS+time.Hour.Milliseconds())
	}
}

func TestRemovedDomainGetsNoMoreJobs(t *testing.T) {
	h := newHarness(t)
	const shards = 4
	h.start(Config{Name: "c1", Shards: shards, Interval: time.Second, Tick: 50 * time.Millisecond})

	e, id := domainAdded(t, "gone.example.com", 443)
	h.publish(e)
	eventually(t, 4*time.Second, "two jobs", func() bool { return len(h.jobsOf(shards, id)) >= 2 })
	h.publish(domainRemoved(t, id, "gone.example.com", 443))
	h.sync(shards)
	before := len(h.jobsOf(shards, id))
	time.Sleep(1500 * time.Millisecond)
	if got := len(h.jobsOf(shards, id)); got != before {
		t.Errorf("jobs after removal: got %d, want %d", got, before)
	}
	if _, ok := h.score(shards, id); ok {
		t.Errorf("removed domain still in schedule")
	}
	domains, _ := keysOf(t, h.rdb, id, shards)
	if v, _ := h.rdb.HGet(context.Background(), domains, mem(t, id)).Result(); !isTombstone(v) {
		t.Errorf("removed domain: got value %q, want a tombstone", v)
	}
}

func TestRedeliveredEventsKeepSchedule(t *testing.T) {
	h := newHarness(t)
	const shards = 4
	interval := time.Hour
	h.start(Config{Name: "c1", Shards: shards, Interval: interval, Tick: 50 * time.Millisecond})

	t.Run("added again does not reset due", func(t *testing.T) {
		e, id := domainAdded(t, "again.example.com", 443)
		h.publish(e)
		eventually(t, 2*time.Second, "job", func() bool { return len(h.jobsOf(shards, id)) == 1 })
		want, _ := h.score(shards, id)
		h.publish(e) // same event id: a redelivery
		h.sync(shards)
		time.Sleep(150 * time.Millisecond) // a few ticks
		if got, _ := h.score(shards, id); got != want {
			t.Errorf("due after redelivery: got %d, want %d", got, want)
		}
		if got := len(h.jobsOf(shards, id)); got != 1 {
			t.Errorf("jobs after redelivery: got %d, want 1", got)
		}
	})
	t.Run("old added after removed stays removed", func(t *testing.T) {
		added, id := domainAdded(t, "late.example.com", 443)
		removed := domainRemoved(t, id, "late.example.com", 443)
		removed.OccurredAt = added.OccurredAt.Add(time.Millisecond)
		h.publish(added, removed, added)
		h.sync(shards)
		if _, ok := h.score(shards, id); ok {
			t.Errorf("domain re-added by a stale added event")
		}
	})
	t.Run("inactive leaves schedule, active rejoins it", func(t *testing.T) {
		added, id := domainAdded(t, "pause.example.com", 443)
		h.publish(added)
		eventually(t, 2*time.Second, "job", func() bool { return len(h.jobsOf(shards, id)) == 1 })
		off := domainUpdated(t, id, "pause.example.com", 443, false)
		h.publish(off)
		h.sync(shards)
		if _, ok := h.score(shards, id); ok {
			t.Fatalf("inactive domain still scheduled")
		}
		on := domainUpdated(t, id, "pause.example.com", 443, true)
		on.OccurredAt = off.OccurredAt.Add(time.Millisecond)
		h.publish(on)
		eventually(t, 2*time.Second, "job after re-activation", func() bool { return len(h.jobsOf(shards, id)) == 2 })
	})
	t.Run("renamed is due at once, an update of the same name is not", func(t *testing.T) {
		added, id := domainAdded(t, "old-name.example.com", 443)
		h.publish(added)
		eventually(t, 2*time.Second, "job", func() bool { return len(h.jobsOf(shards, id)) == 1 })
		same := domainUpdated(t, id, "old-name.example.com", 443, true)
		h.publish(same)
		h.sync(shards)
		time.Sleep(150 * time.Millisecond) // a few ticks
		if got := len(h.jobsOf(shards, id)); got != 1 {
			t.Fatalf("jobs after an update keeping the name: got %d, want 1", got)
		}
		renamed := domainUpdated(t, id, "new-name.example.com", 8443, true)
		renamed.OccurredAt = same.OccurredAt.Add(time.Millisecond)
		h.publish(renamed)
		eventually(t, 2*time.Second, "job for the new name", func() bool {
			jobs := h.jobsOf(shards, id)
			return len(jobs) == 2 && jobs[1].req.Host == "new-name.example.com" && jobs[1].req.Port == 8443
		})
	})
}

// leaseHolders counts the shards each coordinator name holds, from Redis.
func leaseHolders(t *testing.T, rdb *redis.Client, shards int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for n := 0; n < shards; n++ {
		v, err := rdb.Get(context.Background(), LeaseKey(n)).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		name, _, _ := strings.Cut(v, "/")
		out[name]++
	}
	return out
}

func TestTwoCoordinatorsSplitShardsWithoutDoubleDispatch(t *testing.T) {
	h := newHarness(t)
	const shards, domains = 16, 200
	interval := 2 * time.Second
	cfg := func(name string) Config {
		return Config{Name: name, Shards: shards, Interval: interval, Tick: 100 * time.Millisecond, LeaseTTL: 900 * time.Millisecond}
	}
	_, stopA := h.start(cfg("a"))
	time.Sleep(200 * time.Millisecond) // a takes every shard first; b must win its share from it
	_, stopB := h.start(cfg("b"))

	evs := make([]events.Envelope, 0, domains)
	ids := map[string]bool{}
	for i := 0; i < domains; i++ {
		e, id := domainAdded(t, fmt.Sprintf("d%03d.example.com", i), 443)
		evs = append(evs, e)
		ids[id] = true
	}
	h.publish(evs...)

	eventually(t, 4*time.Second, "shards split 8±1", func() bool {
		got := leaseHolders(t, h.rdb, shards)
		return got["a"] >= 7 && got["a"] <= 9 && got["b"] >= 7 && got["b"] <= 9 && got["a"]+got["b"] == shards
	})
	t.Logf("split: %v", leaseHolders(t, h.rdb, shards))
	time.Sleep(3 * time.Second)

	stopA()
	live, err := h.rdb.ZRange(context.Background(), CoordinatorsKey, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range live {
		if strings.HasPrefix(m, "a/") {
			t.Errorf("heartbeat of a: got %q still there, want removed", m)
		}
	}
	eventually(t, 2*time.Second, "b holds every shard", func() bool {
		return leaseHolders(t, h.rdb, shards)["b"] == shards
	})
	time.Sleep(2500 * time.Millisecond)
	stoppedAt := time.Now().UnixMilli()
	stopB()
	if got := leaseHolders(t, h.rdb, shards); len(got) != 0 {
		t.Errorf("leases after both stopped: got %v, want none", got)
	}

	jobs := h.jobs(shards)
	seen := map[string]int{}
	perDomain := map[string][]int64{}
	for _, j := range jobs {
		seen[j.req.JobID.String()]++
		perDomain[j.req.DomainID] = append(perDomain[j.req.DomainID], j.req.ScheduledAt.UnixMilli())
		if want := events.JobStream(ShardOf(j.req.DomainID, shards)); j.stream != want {
			t.Errorf("job of %s on %s, want %s", j.req.DomainID, j.stream, want)
		}
	}
	dups := 0
	for id, n := range seen {
		if n > 1 {
			dups++
			t.Errorf("job %s dispatched %d times, want once", id, n)
		}
	}
	t.Logf("%d jobs for %d domains, %d duplicates", len(jobs), len(perDomain), dups)
	for id := range ids {
		due := perDomain[id]
		// Jobs every interval without a gap (a missed dispatch across the
		// handover would show as a 2x gap), up to when b stopped.
		if len(due) < 3 {
			t.Errorf("domain %s: got %d jobs, want at least 3", id, len(due))
			continue
		}
		// Slack: one tick plus one lease round for the handover.
		if last := due[len(due)-1]; last < stoppedAt-interval.Milliseconds()-500 {
			t.Errorf("domain %s: last job due %dms before stop, want under %d", id, stoppedAt-last, interval.Milliseconds()+500)
		}
		for i := 1; i < len(due); i++ {
			if d := due[i] - due[i-1]; d != interval.Milliseconds() {
				t.Errorf("domain %s: jobs %d and %d are %dms apart, want %d", id, i-1, i, d, interval.Milliseconds())
			}
		}
	}
}

func TestStaleLeaseHolderCannotDispatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steal func(ctx context.Context, rdb *redis.Client, key string) error
		want  int
	}{
		{"own lease dispatches", func(context.Context, *redis.Client, string) error { return nil }, 1},
		{"lease taken by another", func(ctx context.Context, rdb *redis.Client, key string) error {
			return rdb.Set(ctx, key, "other/token", time.Minute).Err()
		}, 0},
		{"lease expired", func(ctx context.Context, rdb *redis.Client, key string) error {
			return rdb.Del(ctx, key).Err()
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			h := newHarness(t)
			const shards = 2
			c, err := New(Config{Name: "stale", Shards: shards, Interval: time.Hour}, h.rdb, testenv.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			e, id := domainAdded(t, "fenced.example.com", 443)
			if err := c.applyEvent(ctx, e); err != nil {
				t.Fatal(err)
			}
			c.balanceLeases(ctx)
			n := ShardOf(id, shards)
			if got := len(c.HeldShards()); got != shards {
				t.Fatalf("held shards: got %d, want %d", got, shards)
			}
			due, _ := h.score(shards, id)
			if err := tc.steal(ctx, h.rdb, LeaseKey(n)); err != nil {
				t.Fatal(err)
			}

			got, err := c.dispatchShard(ctx, n)
			if got != tc.want {
				t.Errorf("dispatched: got %d, want %d", got, tc.want)
			}
			if got := len(h.jobs(shards)); got != tc.want {
				t.Errorf("jobs on streams: got %d, want %d", got, tc.want)
			}
			after, _ := h.score(shards, id)
			if tc.want == 0 {
				if !errors.Is(err, errLeaseLost) {
					t.Errorf("error: got %v, want %v", err, errLeaseLost)
				}
				if after != due {
					t.Errorf("due after refused dispatch: got %d, want unchanged %d", after, due)
				}
				if c.isHeld(n) {
					t.Errorf("shard %d still counted as held after the lease was lost", n)
				}
			} else if after != due+time.Hour.Milliseconds() {
				t.Errorf("due after dispatch: got %d, want %d", after, due+time.Hour.Milliseconds())
			}
		})
	}
}

func TestRemovedWhileDueIsDroppedNotDispatched(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	const shards = 1
	c, err := New(Config{Name: "c", Shards: shards, Interval: time.Hour}, h.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	e, id := domainAdded(t, "orphan.example.com", 443)
	if err := c.applyEvent(ctx, e); err != nil {
		t.Fatal(err)
	}
	// A schedule entry without a record (e.g. left by an older version).
	if err := h.rdb.HDel(ctx, domainsKey(0, bucketOf(id)), mem(t, id)).Err(); err != nil {
		t.Fatal(err)
	}
	c.balanceLeases(ctx)
	got, err := c.dispatchShard(ctx, 0)
	if err != nil || got != 0 {
		t.Errorf("dispatch: got %d, %v, want 0, nil", got, err)
	}
	if _, ok := h.score(shards, id); ok {
		t.Errorf("orphan still scheduled, want dropped")
	}
}

func checkRequested(t *testing.T, id string) events.Envelope {
	t.Helper()
	e, err := events.New(events.DomainCheckRequested, testTenant, id, events.DomainCheckRequestedV1{DomainID: id})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// domain.check_requested makes a scheduled domain due now; one due earlier
// keeps its time, and an unscheduled one is not added.
func TestCheckRequested(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	const shards = 4
	c, err := New(Config{Name: "c", Shards: shards, Interval: time.Hour}, h.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	e, id := domainAdded(t, "now.example.com", 443)
	if err := c.applyEvent(ctx, e); err != nil {
		t.Fatal(err)
	}
	c.balanceLeases(ctx)
	if _, err := c.dispatchShard(ctx, ShardOf(id, shards)); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.score(shards, id); got < time.Now().Add(30*time.Minute).UnixMilli() {
		t.Fatalf("due after dispatch: got %d, want about an hour from now", got)
	}
	before := time.Now().UnixMilli()
	if err := c.applyEvent(ctx, checkRequested(t, id)); err != nil {
		t.Fatalf("apply check requested: %v", err)
	}
	if got, _ := h.score(shards, id); got < before || got > time.Now().UnixMilli() {
		t.Errorf("due after check requested: got %d, want about %d", got, before)
	}
	if got, _ := c.dispatchShard(ctx, ShardOf(id, shards)); got != 1 {
		t.Errorf("dispatched after check requested: got %d, want 1", got)
	}

	earlier := time.Now().Add(-time.Minute).UnixMilli()
	_, schedule := keysOf(t, h.rdb, id, shards)
	if err := h.rdb.ZAdd(ctx, schedule, redis.Z{Score: float64(earlier), Member: mem(t, id)}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.applyEvent(ctx, checkRequested(t, id)); err != nil {
		t.Fatal(err)
	}
	if got, _ := h.score(shards, id); got != earlier {
		t.Errorf("due earlier, after check requested: got %d, want %d", got, earlier)
	}

	const unknown = "no-such-domain"
	if err := c.applyEvent(ctx, checkRequested(t, unknown)); err != nil {
		t.Errorf("check of unknown domain: got %v, want nil", err)
	}
	if got, ok := h.score(shards, unknown); ok {
		t.Errorf("unknown domain scheduled at %d after check requested, want not scheduled", got)
	}
}

// TestDelayedFirstScan: a domain.added with first_scan_delay_ms (a bulk
// import) is due that long after its event, not at once, and its first
// job waits for it; one without a delay (a single add) is due at once.
func TestDelayedFirstScan(t *testing.T) {
	h := newHarness(t)
	const shards = 4
	h.start(Config{Name: "c1", Shards: shards, Interval: time.Hour, Tick: 50 * time.Millisecond})

	prompt, promptID := domainAdded(t, "prompt.example.com", 443)
	delayedID := events.DomainID(testTenant, "delayed.example.com", 443)
	delayed, err := events.New(events.DomainAdded, testTenant, delayedID, events.DomainAddedV1{
		DomainID: delayedID, Host: "delayed.example.com", Port: 443, Source: "api", FirstScanDelayMS: 600,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.publish(prompt, delayed)
	eventually(t, 2*time.Second, "job of the prompt domain", func() bool { return len(h.jobsOf(shards, promptID)) == 1 })
	if got := len(h.jobsOf(shards, delayedID)); got != 0 && time.Since(delayed.OccurredAt) < 600*time.Millisecond {
		t.Errorf("delayed domain: got %d jobs before its delay passed, want 0", got)
	}
	eventually(t, 3*time.Second, "job of the delayed domain", func() bool { return len(h.jobsOf(shards, delayedID)) == 1 })
	if j := h.jobsOf(shards, delayedID)[0]; j.env.OccurredAt.Before(delayed.OccurredAt.Add(600 * time.Millisecond)) {
		t.Errorf("delayed domain's job at %s, want at least 600ms after its event at %s", j.env.OccurredAt, delayed.OccurredAt)
	}
}

func TestFirstDue(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		occurred, delay, now int64
		want                 int64
	}{
		{"no delay is now", 1000, 0, 1500, 1500},
		{"delay ahead", 1000, 2000, 1500, 3000},
		{"delay already past (a backlog) is now", 1000, 200, 1500, 1500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := firstDue(tc.occurred, tc.delay, tc.now); got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}

// The domains of one shard spread over all its buckets.
func TestBucketOfDistribution(t *testing.T) {
	const shards, perBucket = 16, 100
	counts := make([]int, bucketsPerShard)
	total := 0
	for i := 0; total < perBucket*bucketsPerShard; i++ {
		id := events.DomainID(testTenant, fmt.Sprintf("host-%d.example.com", i), 443)
		if ShardOf(id, shards) != 3 {
			continue
		}
		counts[bucketOf(id)]++
		total++
	}
	for b, got := range counts {
		// Binomial sd is about 10 here; 40% is 4 sd.
		if got < perBucket*60/100 || got > perBucket*140/100 {
			t.Errorf("bucket %d of shard 3: got %d domains, want %d ± 40%%", b, got, perBucket)
		}
	}
}
