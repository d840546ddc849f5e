package events_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
)

// consumer runs ConsumeBatches in the background until the test ends or
// stop is called, and fails the test if it returns an error.
func consumer(t *testing.T, rdb redis.UniversalClient, cfg events.BatchConfig, h events.BatchHandler) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- events.ConsumeBatches(ctx, rdb, cfg, h, testenv.Logger(t)) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("consume batches: got %v, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("consume batches did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// recorder is a batch handler remembering the event names it accepted.
type recorder struct {
	mu      sync.Mutex
	names   []string
	batches int
	fail    int // fail this many calls first
	calls   int
	seen    [][]string // entry ids of every call
}

func (r *recorder) handle(_ context.Context, batch []events.Entry) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	ids := make([]string, 0, len(batch))
	for _, e := range batch {
		ids = append(ids, e.Stream+"/"+e.ID)
	}
	r.seen = append(r.seen, ids)
	if r.fail > 0 {
		r.fail--
		return errors.New("store unavailable")
	}
	r.batches++
	for _, e := range batch {
		r.names = append(r.names, e.Event.Name)
	}
	return nil
}

func (r *recorder) accepted() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.names)
}

func publish(t *testing.T, rdb redis.UniversalClient, stream string, names ...string) []string {
	t.Helper()
	var ids []string
	for _, n := range names {
		e, err := events.New(n, "tenant", "agg", struct{}{})
		if err != nil {
			t.Fatal(err)
		}
		v, err := e.StreamValues()
		if err != nil {
			t.Fatal(err)
		}
		id, err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: stream, Values: v}).Result()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

func pending(t *testing.T, rdb redis.UniversalClient, stream, group string) int64 {
	t.Helper()
	p, err := rdb.XPending(context.Background(), stream, group).Result()
	if err != nil {
		t.Fatalf("xpending %s: %v", stream, err)
	}
	return p.Count
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func config(streams ...string) events.BatchConfig {
	return events.BatchConfig{
		Streams: streams, Group: "g", Consumer: "c1", Count: 100,
		Block: 50 * time.Millisecond, Backoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	}
}

func TestConsumeBatchesAcksAfterSuccess(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	// Entries published before the group exists are read too (group at 0).
	publish(t, rdb, "a", events.DomainAdded, events.DomainRemoved)
	r := &recorder{}
	consumer(t, rdb, config("a", "b"), r.handle)
	publish(t, rdb, "b", events.ScanCompleted)
	eventually(t, "three events handled", func() bool { return len(r.accepted()) == 3 })
	eventually(t, "nothing pending", func() bool { return pending(t, rdb, "a", "g")+pending(t, rdb, "b", "g") == 0 })
	got := r.accepted()
	slices.Sort(got)
	want := []string{events.DomainAdded, events.DomainRemoved, events.ScanCompleted}
	if !slices.Equal(got, want) {
		t.Fatalf("handled: got %v, want %v", got, want)
	}
}

func TestConsumeBatchesRetriesTheSameBatch(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	ids := publish(t, rdb, "a", events.DomainAdded, events.DomainAdded, events.DomainAdded)
	r := &recorder{fail: 2}
	var pendingWhileFailing []int64
	h := func(ctx context.Context, batch []events.Entry) error {
		failing := func() bool { r.mu.Lock(); defer r.mu.Unlock(); return r.fail > 0 }()
		if failing {
			pendingWhileFailing = append(pendingWhileFailing, pending(t, rdb, "a", "g"))
		}
		return r.handle(ctx, batch)
	}
	consumer(t, rdb, config("a"), h)
	eventually(t, "batch accepted", func() bool { return len(r.accepted()) == 3 })
	eventually(t, "nothing pending", func() bool { return pending(t, rdb, "a", "g") == 0 })

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls != 3 {
		t.Fatalf("handler calls: got %d, want 3 (two failures, one success)", r.calls)
	}
	var want []string
	for _, id := range ids {
		want = append(want, "a/"+id)
	}
	for i, got := range r.seen {
		if !slices.Equal(got, want) {
			t.Errorf("call %d entries: got %v, want %v", i, got, want)
		}
	}
	if !slices.Equal(pendingWhileFailing, []int64{3, 3}) {
		t.Errorf("pending entries during the failing calls: got %v, want [3 3]", pendingWhileFailing)
	}
}

func TestConsumeBatchesResumesOwnPendingAfterRestart(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	publish(t, rdb, "a", events.DomainAdded, events.DomainRemoved)
	failing := &recorder{fail: 1 << 30}
	stop := consumer(t, rdb, config("a"), failing.handle)
	eventually(t, "first attempt", func() bool { failing.mu.Lock(); defer failing.mu.Unlock(); return failing.calls > 0 })
	stop()
	if got := pending(t, rdb, "a", "g"); got != 2 {
		t.Fatalf("pending after a crash: got %d, want 2", got)
	}
	// Same consumer name, and a claim idle far beyond the test: only the
	// consumer's own pending walk can bring the entries back.
	cfg := config("a")
	cfg.ClaimIdle = time.Hour
	r := &recorder{}
	consumer(t, rdb, cfg, r.handle)
	eventually(t, "pending entries handled", func() bool { return len(r.accepted()) == 2 })
	eventually(t, "nothing pending", func() bool { return pending(t, rdb, "a", "g") == 0 })
}

func TestConsumeBatchesClaimsFromDeadConsumer(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	ctx := context.Background()
	if err := events.CreateGroup(ctx, rdb, "a", "g"); err != nil {
		t.Fatal(err)
	}
	publish(t, rdb, "a", events.DomainAdded, events.DomainRemoved)
	// A consumer reads the entries and dies before acknowledging them.
	res, err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "dead", Streams: []string{"a", ">"}, Count: 10}).Result()
	if err != nil || len(res[0].Messages) != 2 {
		t.Fatalf("dead consumer read: got %v, %v; want 2 entries", res, err)
	}
	cfg := config("a")
	cfg.ClaimIdle = 200 * time.Millisecond
	r := &recorder{}
	consumer(t, rdb, cfg, r.handle)
	eventually(t, "claimed entries handled", func() bool { return len(r.accepted()) == 2 })
	eventually(t, "nothing pending", func() bool { return pending(t, rdb, "a", "g") == 0 })
}

func TestConsumeBatchesSkipsUndecodable(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	ctx := context.Background()
	for _, v := range []map[string]any{
		{"foo": "bar"},
		{"payload": "not json"},
		{"payload": `{"name":"x.v1"}`}, // no event id
	} {
		if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: "a", Values: v}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	publish(t, rdb, "a", events.DomainAdded)
	r := &recorder{}
	consumer(t, rdb, config("a"), r.handle)
	eventually(t, "good entry handled", func() bool { return len(r.accepted()) == 1 })
	eventually(t, "nothing pending", func() bool { return pending(t, rdb, "a", "g") == 0 })
	if got := r.accepted(); !slices.Equal(got, []string{events.DomainAdded}) {
		t.Fatalf("handled: got %v, want [%s]", got, events.DomainAdded)
	}
}

func TestConsumeBatchesLingers(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	cfg := config("a")
	cfg.Linger = 400 * time.Millisecond
	r := &recorder{}
	consumer(t, rdb, cfg, r.handle)
	time.Sleep(100 * time.Millisecond) // past the initial pending walk
	publish(t, rdb, "a", events.DomainAdded)
	time.Sleep(100 * time.Millisecond)
	publish(t, rdb, "a", events.DomainRemoved)
	eventually(t, "both handled", func() bool { return len(r.accepted()) == 2 })
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.batches != 1 {
		t.Fatalf("batches: got %d, want 1 (the second entry arrived within the linger)", r.batches)
	}
}

func TestBatchConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  events.BatchConfig
		ok   bool
	}{
		{"valid", events.BatchConfig{Streams: []string{"a"}, Group: "g", Consumer: "c", Block: time.Second, ClaimIdle: time.Second}, true},
		{"no streams", events.BatchConfig{Group: "g", Consumer: "c", Block: time.Second, ClaimIdle: time.Second}, false},
		{"no group", events.BatchConfig{Streams: []string{"a"}, Consumer: "c", Block: time.Second, ClaimIdle: time.Second}, false},
		{"no consumer", events.BatchConfig{Streams: []string{"a"}, Group: "g", Block: time.Second, ClaimIdle: time.Second}, false},
		{"block below 1ms", events.BatchConfig{Streams: []string{"a"}, Group: "g", Consumer: "c", Block: time.Microsecond, ClaimIdle: time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("validate: got %v, want ok=%v", err, tc.ok)
			}
		})
	}
	err := events.ConsumeBatches(context.Background(), nil, events.BatchConfig{}, nil, testenv.Logger(t))
	if err == nil {
		t.Fatal("consume with empty config: got nil, want an error")
	}
}
