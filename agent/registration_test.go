package agent

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/events/stream"
	"github.com/certfleet/certfleet/internal/testenv"
)

// addRegistrationJob appends the lookup job of domain due at due, as the
// coordinator does.
func addRegistrationJob(t *testing.T, rdb *redis.Client, domain string, due time.Time) {
	t.Helper()
	e, err := events.NewWithID(events.RegistrationJobID(domain, due.UnixMilli()), events.RegistrationRequested, "", domain,
		events.RegistrationRequestedV1{Domain: domain, ScheduledAt: due})
	if err != nil {
		t.Fatal(err)
	}
	values, err := e.StreamValues()
	if err != nil {
		t.Fatal(err)
	}
	if err := rdb.XAdd(context.Background(), &redis.XAddArgs{Stream: events.StreamRegistrationJobs, Values: values}).Err(); err != nil {
		t.Fatal(err)
	}
}

// runRegistrationWorker runs a worker until the returned stop is called or
// the test ends.
func runRegistrationWorker(t *testing.T, rdb *redis.Client, cfg RegistrationConfig) (stop func()) {
	t.Helper()
	w, err := NewRegistrationWorker(cfg, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run %s: got %v, want nil", cfg.Name, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// results reads the registration results on domain's event stream.
func results(t *testing.T, rdb *redis.Client, domain string) []events.Envelope {
	t.Helper()
	all, err := events.ReadAll(context.Background(), rdb, events.EventStream(domain))
	if err != nil {
		t.Fatal(err)
	}
	var out []events.Envelope
	for _, e := range all {
		if e.Name == events.RegistrationLookedUp {
			out = append(out, e)
		}
	}
	return out
}

// until polls cond for 10s (waitFor with a fixed complaint).
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitFor(t, 10*time.Second, func() string {
		if cond() {
			return ""
		}
		return what + ": not true after 10s"
	})
}

func TestRegistrationWorkerPublishesResult(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	expires := time.Date(2027, 8, 13, 4, 0, 0, 0, time.UTC)
	runRegistrationWorker(t, rdb, RegistrationConfig{Name: "w1", Block: 10 * time.Millisecond,
		Lookup: func(_ context.Context, domain string) events.RegistrationV1 {
			return events.RegistrationV1{Domain: "ignored", Status: events.RegistrationOK, Source: "rdap", ExpiresAt: &expires}
		}})
	due := time.Now().UTC().Truncate(time.Millisecond)
	addRegistrationJob(t, rdb, "example.com", due)
	until(t, "result published", func() bool { return len(results(t, rdb, "example.com")) == 1 })
	e := results(t, rdb, "example.com")[0]
	r, err := events.DecodeRegistrationLookedUp(e)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ field, got, want string }{
		{"event id", e.EventID.String(), events.RegistrationEventID("example.com", due).String()},
		{"tenant", e.TenantID, ""},
		{"aggregate", e.AggregateID, "example.com"},
		{"domain", r.Domain, "example.com"},
		{"status", r.Status, events.RegistrationOK},
		{"expires", r.ExpiresAt.String(), expires.String()},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.field, c.got, c.want)
		}
	}
	if r.LookedUpAt.IsZero() {
		t.Error("looked_up_at not set")
	}
	until(t, "job acknowledged", func() bool {
		p, err := rdb.XPending(context.Background(), events.StreamRegistrationJobs, RegistrationGroup).Result()
		return err == nil && p.Count == 0
	})
}

// A job whose worker died in the lookup is claimed and done by another,
// with the same event id; a malformed job is dead-lettered; a slow lookup
// holds only its own worker slot.
func TestRegistrationWorkerRecovery(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	ctx := context.Background()
	due := time.Now().UTC().Truncate(time.Millisecond)

	started := make(chan struct{})
	var once sync.Once
	stopA := runRegistrationWorker(t, rdb, RegistrationConfig{Name: "a", Block: 10 * time.Millisecond, ClaimIdle: 300 * time.Millisecond,
		ShutdownTimeout: time.Millisecond,
		Lookup: func(ctx context.Context, domain string) events.RegistrationV1 {
			once.Do(func() { close(started) })
			<-ctx.Done() // the registry never answers before the worker dies
			return events.RegistrationV1{Status: events.RegistrationError, Detail: "timeout"}
		}})
	addRegistrationJob(t, rdb, "example.org", due)
	<-started
	stopA()
	if got := len(results(t, rdb, "example.org")); got != 0 {
		t.Fatalf("results of the killed worker: got %d, want 0", got)
	}

	var lookups atomic.Int64
	slow := make(chan struct{})
	t.Cleanup(func() { close(slow) })
	runRegistrationWorker(t, rdb, RegistrationConfig{Name: "b", Workers: 2, ShutdownTimeout: 100 * time.Millisecond, Block: 10 * time.Millisecond, ClaimIdle: 300 * time.Millisecond,
		Lookup: func(ctx context.Context, domain string) events.RegistrationV1 {
			lookups.Add(1)
			if domain == "slow.example" {
				select {
				case <-slow:
				case <-ctx.Done():
				}
			}
			return events.RegistrationV1{Status: events.RegistrationNoExpiry, Source: "whois"}
		}})
	addRegistrationJob(t, rdb, "slow.example", due)
	until(t, "claimed job done by b", func() bool { return len(results(t, rdb, "example.org")) == 1 })
	addRegistrationJob(t, rdb, "fast.example", due)
	until(t, "fast job done beside the slow one", func() bool { return len(results(t, rdb, "fast.example")) == 1 })

	got := results(t, rdb, "example.org")[0]
	if want := events.RegistrationEventID("example.org", due); got.EventID != want {
		t.Errorf("event id: got %s, want %s", got.EventID, want)
	}
	if r, _ := events.DecodeRegistrationLookedUp(got); r.Status != events.RegistrationNoExpiry {
		t.Errorf("status: got %q, want b's %q", r.Status, events.RegistrationNoExpiry)
	}

	// A malformed job.
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: events.StreamRegistrationJobs, Values: map[string]any{
		"payload": `{"event_id":"6f1c6a3e-5b1e-4c55-9a4e-1d7f3c2b8e90","name":"registration.requested.v1","payload":{"domain":"BAD DOMAIN"}}`,
	}}).Err(); err != nil {
		t.Fatal(err)
	}
	until(t, "malformed job dead-lettered", func() bool {
		msgs, err := rdb.XRange(ctx, stream.DeadLetterStream, "-", "+").Result()
		if err != nil {
			return false
		}
		for _, m := range msgs {
			if s, _ := m.Values["stream"].(string); s == events.StreamRegistrationJobs {
				return true
			}
		}
		return false
	})
	if n := lookups.Load(); n != 3 {
		t.Errorf("lookups by b: got %d, want 3 (claimed, slow, fast)", n)
	}
}

func TestRegistrationConfigValidate(t *testing.T) {
	cfg := RegistrationConfig{Workers: -1, Timeout: -time.Second}
	cfg.setDefaults()
	err := cfg.Validate()
	for _, want := range []string{"lookup function", "workers", "timeout"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want an error naming %q", err, want)
		}
	}
	if _, err := NewRegistrationWorker(RegistrationConfig{}, nil, testenv.Logger(t)); err == nil {
		t.Errorf("got %v, want an error", err)
	}
}
