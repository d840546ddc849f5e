package stream_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/backoff"
	"github.com/certfleet/certfleet/internal/testenv"
)

func TestMain(m *testing.M) {
	// A re-executed test binary plays a consumer process (see child_test.go).
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	os.Exit(testenv.Main(m))
}

// mode is one way of consuming: both must pass every conformance test.
type mode struct {
	name string
	run  func(ctx context.Context, c *stream.Consumer, h stream.Handler) error
}

var modes = []mode{
	{"each", func(ctx context.Context, c *stream.Consumer, h stream.Handler) error { return c.RunEach(ctx, h) }},
	{"each concurrent", func(ctx context.Context, c *stream.Consumer, h stream.Handler) error { return c.RunEach(ctx, h) }},
	{"batches", func(ctx context.Context, c *stream.Consumer, h stream.Handler) error {
		return c.RunBatches(ctx, func(ctx context.Context, batch []stream.Entry) error {
			for _, e := range batch {
				if err := h(ctx, e); err != nil {
					return err
				}
			}
			return nil
		})
	}},
}

func testConfig(m mode, streams ...string) stream.Config {
	cfg := stream.Config{
		Streams: streams, Group: "g", Consumer: "c1", Count: 10,
		PollInterval: 10 * time.Millisecond, ClaimIdle: time.Minute, MaxDeliveries: 3,
		Backoff: backoff.Policy{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond},
		Linger:  20 * time.Millisecond, StatsInterval: 50 * time.Millisecond,
	}
	if m.name == "each concurrent" {
		cfg.Concurrency = 4
	}
	return cfg
}

// run runs a consumer in the background until the test ends or stop is
// called.
func run(t *testing.T, rdb redis.UniversalClient, m mode, cfg stream.Config, h stream.Handler) (c *stream.Consumer, stop func()) {
	t.Helper()
	c, err := stream.New(cfg, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.run(ctx, c, h) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("run: got %v, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return c, stop
}

// recorder remembers the entries it accepted, in the order it first
// accepted them: like every handler it is idempotent, and the batch mode
// hands a failed batch over again from its first entry.
type recorder struct {
	mu    sync.Mutex
	got   []string // aggregate ids
	calls map[string]int
	fail  func(e stream.Entry, call int) error
}

func (r *recorder) handle(_ context.Context, e stream.Entry) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls == nil {
		r.calls = map[string]int{}
	}
	r.calls[e.Event.AggregateID]++
	if r.fail != nil {
		if err := r.fail(e, r.calls[e.Event.AggregateID]); err != nil {
			return err
		}
	}
	if !slices.Contains(r.got, e.Event.AggregateID) {
		r.got = append(r.got, e.Event.AggregateID)
	}
	return nil
}

func (r *recorder) accepted() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func (r *recorder) sorted() []string {
	s := r.accepted()
	slices.Sort(s)
	return s
}

// publish appends events whose aggregate ids are the given keys.
func publish(t testing.TB, rdb redis.UniversalClient, s string, keys ...string) []string {
	t.Helper()
	var ids []string
	for _, k := range keys {
		e, err := events.New("test.happened.v1", "tenant", k, struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		v, err := e.StreamValues()
		if err != nil {
			t.Fatal(err)
		}
		id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: s, Values: v}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func keys(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%03d", prefix, i)
	}
	return out
}

func pending(t testing.TB, rdb redis.UniversalClient, s, group string) int64 {
	t.Helper()
	p, err := rdb.XPending(context.Background(), s, group).Result()
	if err != nil {
		t.Fatalf("xpending %s: %v", s, err)
	}
	return p.Count
}

func deadLetters(t testing.TB, rdb redis.UniversalClient) []redis.XMessage {
	t.Helper()
	msgs, err := rdb.XRange(context.Background(), stream.DeadLetterStream, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

func eventually(t testing.TB, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after 20s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDeliversEveryEntryOfEveryStreamAndAcks(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			rdb := testenv.Redis(t).Client(t)
			streams := []string{"s:{0}", "s:{1}", "s:{2}"}
			var want []string
			for i, s := range streams {
				k := keys(strconv.Itoa(i)+"-", 25)
				publish(t, rdb, s, k...)
				want = append(want, k...)
			}
			r := &recorder{}
			_, stop := run(t, rdb, m, testConfig(m, streams...), r.handle)
			eventually(t, "all entries handled", func() bool { return len(r.accepted()) >= len(want) })
			stop()
			if got := r.sorted(); !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			for _, s := range streams {
				if n := pending(t, rdb, s, "g"); n != 0 {
					t.Fatalf("%s: got %d pending, want 0", s, n)
				}
			}
		})
	}
}

func TestKeepsOrderPerStream(t *testing.T) {
	// Ordering is promised per stream with Concurrency 1 (and in batches).
	for _, m := range modes {
		if m.name == "each concurrent" {
			continue
		}
		t.Run(m.name, func(t *testing.T) {
			rdb := testenv.Redis(t).Client(t)
			want := keys("k", 60)
			publish(t, rdb, "s", want...)
			// Every fifth entry fails twice first: a retry must not let a
			// later entry overtake it.
			r := &recorder{fail: func(e stream.Entry, call int) error {
				if e.Event.AggregateID[len(e.Event.AggregateID)-1]%5 == 0 && call <= 2 {
					return errors.New("store unavailable")
				}
				return nil
			}}
			run(t, rdb, m, testConfig(m, "s"), r.handle)
			eventually(t, "all handled", func() bool { return len(r.accepted()) >= len(want) })
			if got := r.accepted(); !slices.Equal(got, want) {
				t.Fatalf("got order %v, want %v", got, want)
			}
		})
	}
}

func TestTransientFailuresAreRetriedNotDeadLettered(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			rdb := testenv.Redis(t).Client(t)
			want := keys("k", 5)
			publish(t, rdb, "s", want...)
			// More failures than MaxDeliveries: in-process retries are not
			// deliveries.
			r := &recorder{fail: func(e stream.Entry, call int) error {
				if call <= 10 {
					return errors.New("clickhouse down")
				}
				return nil
			}}
			run(t, rdb, m, testConfig(m, "s"), r.handle)
			eventually(t, "all handled", func() bool { return len(r.accepted()) >= len(want) })
			if got := r.sorted(); !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			if dl := deadLetters(t, rdb); len(dl) != 0 {
				t.Fatalf("got %d dead letters, want 0", len(dl))
			}
		})
	}
}

func TestPoisonEntriesAreDeadLettered(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			rdb := testenv.Redis(t).Client(t)
			ctx := context.Background()
			publish(t, rdb, "s", "a")
			badID := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "s", Values: []string{"foo", "bar"}}).Val()
			publish(t, rdb, "s", "b", "reject-me", "c")
			r := &recorder{fail: func(e stream.Entry, _ int) error {
				if e.Event.AggregateID == "reject-me" {
					return stream.Permanent(errors.New("malformed payload"))
				}
				return nil
			}}
			run(t, rdb, m, testConfig(m, "s"), r.handle)
			eventually(t, "good entries handled and two dead letters", func() bool {
				return len(r.accepted()) >= 3 && len(deadLetters(t, rdb)) >= 2
			})
			if got, want := r.sorted(), []string{"a", "b", "c"}; !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			eventually(t, "nothing pending", func() bool { return pending(t, rdb, "s", "g") == 0 })
			dl := deadLetters(t, rdb)
			reasons := map[string]string{}
			for _, d := range dl {
				if d.Values["stream"] != "s" || d.Values["group"] != "g" {
					t.Fatalf("got dead letter %v, want stream s and group g", d.Values)
				}
				reasons[d.Values["id"].(string)] = d.Values["reason"].(string)
			}
			if reasons[badID] != stream.ReasonUndecodable {
				t.Fatalf("got reason %q for the undecodable entry, want %q (all: %v)", reasons[badID], stream.ReasonUndecodable, reasons)
			}
			for _, d := range dl {
				if d.Values["id"] == badID && d.Values["fields"] != `{"foo":"bar"}` {
					t.Fatalf("got fields %v, want the original fields", d.Values["fields"])
				}
			}
			if len(dl) != 2 {
				t.Fatalf("got %d dead letters, want 2", len(dl))
			}
		})
	}
}

func TestResumesOwnPendingAfterRestart(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			rdb := testenv.Redis(t).Client(t)
			ctx := context.Background()
			want := keys("k", 5)
			publish(t, rdb, "s", want...)
			// A previous run of c1 read them and died.
			if err := stream.CreateGroup(ctx, rdb, "s", "g", "0"); err != nil {
				t.Fatal(err)
			}
			if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c1", Streams: []string{"s", ">"}, Count: 100}).Err(); err != nil {
				t.Fatal(err)
			}
			r := &recorder{}
			run(t, rdb, m, testConfig(m, "s"), r.handle)
			eventually(t, "pending entries handled", func() bool { return len(r.accepted()) >= len(want) })
			if got := r.sorted(); !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
		})
	}
}

// pendingWithDeadConsumer publishes five entries on stream s and leaves
// them pending in group g with a consumer that never comes back; it
// returns their keys.
func pendingWithDeadConsumer(t *testing.T, rdb *redis.Client) []string {
	t.Helper()
	ctx := context.Background()
	want := keys("k", 5)
	publish(t, rdb, "s", want...)
	if err := stream.CreateGroup(ctx, rdb, "s", "g", "0"); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "dead", Streams: []string{"s", ">"}, Count: 100}).Err(); err != nil {
		t.Fatal(err)
	}
	return want
}

func TestClaimsAfterIdle(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			rdb := testenv.Redis(t).Client(t)
			want := pendingWithDeadConsumer(t, rdb)
			cfg := testConfig(m, "s")
			cfg.ClaimIdle = 300 * time.Millisecond
			r := &recorder{}
			run(t, rdb, m, cfg, r.handle)
			eventually(t, "claimed entries handled", func() bool { return len(r.accepted()) >= len(want) })
			if got := r.sorted(); !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			eventually(t, "nothing pending", func() bool { return pending(t, rdb, "s", "g") == 0 })
		})
	}
}

// TestDeliveryCountSemantics pins what the dead-letter rule relies on in
// the Redis the product runs on: every read of a pending entry (the pending
// walk after a restart, a claim) increments its delivery count.
func TestDeliveryCountSemantics(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	ctx := context.Background()
	id := publish(t, rdb, "s", "a")[0]
	if err := stream.CreateGroup(ctx, rdb, "s", "g", "0"); err != nil {
		t.Fatal(err)
	}
	count := func() int64 {
		p, err := rdb.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: "s", Group: "g", Start: id, End: id, Count: 1}).Result()
		if err != nil || len(p) != 1 {
			t.Fatalf("xpending: %v %v", p, err)
		}
		return p[0].RetryCount
	}
	steps := []struct {
		name string
		do   func() error
		want int64
	}{
		{"new read", func() error {
			return rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{"s", ">"}, Block: -1}).Err()
		}, 1},
		{"pending walk", func() error {
			return rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{"s", "0"}, Block: -1}).Err()
		}, 2},
		{"xautoclaim", func() error {
			return rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: "s", Group: "g", Consumer: "d", Start: "0-0"}).Err()
		}, 3},
		{"xclaim justid does not count", func() error {
			return rdb.XClaimJustID(ctx, &redis.XClaimArgs{Stream: "s", Group: "g", Consumer: "d", Messages: []string{id}}).Err()
		}, 3},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := count(); got != s.want {
			t.Fatalf("after %s: got delivery count %d, want %d", s.name, got, s.want)
		}
	}
}

func TestSurvivesRedisRestart(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			srv := testenv.RedisAOF(t)
			rdb := srv.Client(t)
			before := keys("before", 5)
			publish(t, rdb, "s", before...)
			r := &recorder{}
			c, _ := run(t, rdb, m, testConfig(m, "s"), r.handle)
			eventually(t, "first entries handled", func() bool { return len(r.accepted()) >= len(before) })
			srv.Restart(t)
			after := keys("later", 5)
			publish(t, rdb, "s", after...)
			eventually(t, "entries after the restart handled", func() bool { return len(r.accepted()) >= len(before)+len(after) })
			if got, want := r.sorted(), append(slices.Clone(before), after...); !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			if err := c.Ready(context.Background()); err != nil {
				t.Fatalf("ready after the restart: got %v, want nil", err)
			}
		})
	}
}

func TestBatchPermanentErrorDeadLettersOnlyTheBadEntry(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	publish(t, rdb, "s", "a", "bad", "b")
	var mu sync.Mutex
	var stored []string
	c, err := stream.New(testConfig(modes[2], "s"), rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.RunBatches(ctx, func(_ context.Context, batch []stream.Entry) error {
			for _, e := range batch {
				if e.Event.AggregateID == "bad" {
					return stream.Permanent(errors.New("bad row"))
				}
			}
			mu.Lock()
			defer mu.Unlock()
			for _, e := range batch {
				stored = append(stored, e.Event.AggregateID)
			}
			return nil
		})
	}()
	defer func() { cancel(); <-done }()
	eventually(t, "good entries stored", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(stored) >= 2
	})
	eventually(t, "one dead letter", func() bool { return len(deadLetters(t, rdb)) == 1 })
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"a", "b"}; !slices.Equal(stored, want) {
		t.Fatalf("got stored %v, want %v", stored, want)
	}
}

func TestConfigValidate(t *testing.T) {
	valid := stream.Config{Streams: []string{"a"}, Group: "g", Consumer: "c"}
	tests := []struct {
		name   string
		change func(*stream.Config)
		ok     bool
	}{
		{"valid", func(*stream.Config) {}, true},
		{"no streams", func(c *stream.Config) { c.Streams = nil }, false},
		{"duplicate streams", func(c *stream.Config) { c.Streams = []string{"a", "a"} }, false},
		{"no group", func(c *stream.Config) { c.Group = "" }, false},
		{"no consumer", func(c *stream.Config) { c.Consumer = "" }, false},
		{"bad start id", func(c *stream.Config) { c.StartID = "5-0" }, false},
		{"negative concurrency", func(c *stream.Config) { c.Concurrency = -1 }, false},
		{"negative linger", func(c *stream.Config) { c.Linger = -time.Second }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.change(&cfg)
			_, err := stream.New(cfg, redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}), testenv.Logger(t))
			if (err == nil) != tt.ok {
				t.Fatalf("got error %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestHasRedisError(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	ctx := context.Background()
	err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "nope", Consumer: "c", Streams: []string{"missing", ">"}, Block: -1}).Err()
	if !stream.HasRedisError(err, "NOGROUP") {
		t.Fatalf("got %v, want a NOGROUP reply", err)
	}
	if stream.HasRedisError(errors.New("NOGROUP lookalike"), "NOGROUP") {
		t.Fatal("a plain error was taken for a Redis reply")
	}
	for range 2 {
		if err := stream.CreateGroup(ctx, rdb, "s", "g", "$"); err != nil {
			t.Fatalf("create group twice: got %v, want nil", err)
		}
	}
}

// An entry whose handler runs far past ClaimIdle stays owned by its
// consumer: a second consumer of the group, claiming all along, never gets
// it, and it is handled once.
func TestSlowHandlerKeepsItsEntries(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			rdb := testenv.Redis(t).Client(t)
			publish(t, rdb, "s", "slow")
			var mu sync.Mutex
			calls := map[string]int{}
			started := make(chan struct{}, 2)
			// 1 s, touches every 333 ms: at 200 ms a loaded CI machine
			// (load 11 on 2 cores, -race) once stalled a touch past it.
			const claimIdle = time.Second
			slow := func(consumer string) stream.Handler {
				return func(ctx context.Context, e stream.Entry) error {
					mu.Lock()
					calls[consumer]++
					mu.Unlock()
					started <- struct{}{}
					// Five claim periods: without keep-alives the other
					// consumer (or this one's own claimer) takes it.
					select {
					case <-time.After(5 * claimIdle):
					case <-ctx.Done():
						return ctx.Err()
					}
					return nil
				}
			}
			cfg := testConfig(m, "s")
			cfg.ClaimIdle = claimIdle
			run(t, rdb, m, cfg, slow("c1"))
			<-started
			other := cfg
			other.Consumer = "c2"
			run(t, rdb, m, other, slow("c2"))
			eventually(t, "entry acknowledged", func() bool { return pending(t, rdb, "s", "g") == 0 })
			// The second consumer kept claiming for a few more periods.
			time.Sleep(3 * claimIdle)
			mu.Lock()
			defer mu.Unlock()
			if calls["c1"] != 1 || calls["c2"] != 0 {
				t.Fatalf("got handler runs %v, want c1:1 and c2:0", calls)
			}
		})
	}
}

// Entries already idle past ClaimIdle when a consumer starts are claimed
// once and handled once: the claim must not race the start's pending walk,
// which would find them again in the consumer's own pending list.
func TestIdleAtStartHandledOnce(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			rdb := testenv.Redis(t).Client(t)
			want := pendingWithDeadConsumer(t, rdb)
			cfg := testConfig(m, "s")
			cfg.ClaimIdle = 50 * time.Millisecond
			time.Sleep(2 * cfg.ClaimIdle)
			r := &recorder{}
			run(t, rdb, m, cfg, r.handle)
			eventually(t, "nothing pending", func() bool { return len(r.accepted()) == len(want) && pending(t, rdb, "s", "g") == 0 })
			time.Sleep(3 * cfg.ClaimIdle)
			r.mu.Lock()
			defer r.mu.Unlock()
			for k, n := range r.calls {
				if n != 1 {
					t.Errorf("%s: got %d handler calls, want 1", k, n)
				}
			}
		})
	}
}
