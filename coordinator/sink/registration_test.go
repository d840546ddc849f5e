package sink_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certfleet/certfleet/agent"
	"github.com/certfleet/certfleet/coordinator"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

// runUntilCleanup runs f until the test ends.
func runUntilCleanup(t *testing.T, f func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: got %v, want nil", err)
		}
	})
}

// The registration pipeline on real Redis and ClickHouse: hosts of three
// tenants under two registrable domains are looked up twice, and each
// lookup is one row in registrations, also after its event is delivered
// to the sink again.
func TestRegistrationPipeline(t *testing.T) {
	e := newEnv(t, true)
	e.run(t)
	logger := testenv.Logger(t)
	co, err := coordinator.New(coordinator.Config{Name: "c1", Shards: 4, Tick: 20 * time.Millisecond}, e.rdb, logger)
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, co.Run)
	var lookups atomic.Int64
	expires := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC)
	w, err := agent.NewRegistrationWorker(agent.RegistrationConfig{Name: "w1", Block: 10 * time.Millisecond,
		Lookup: func(_ context.Context, domain string) events.RegistrationV1 {
			lookups.Add(1)
			return events.RegistrationV1{Status: events.RegistrationOK, Source: "rdap", Registrar: "R of " + domain, ExpiresAt: &expires}
		}}, e.rdb, logger)
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, w.Run)

	var added []events.Envelope
	for ti := range 3 {
		tenant := events.TenantID(fmt.Sprintf("t%d@example.org", ti))
		for i := range 30 {
			host := fmt.Sprintf("h%d.example.com", i)
			if i%2 == 1 {
				host = fmt.Sprintf("h%d.example.org", i)
			}
			id := events.DomainID(tenant, host, 443)
			ev, err := events.New(events.DomainAdded, tenant, id, events.DomainAddedV1{DomainID: id, Host: host, Port: 443, Source: "api"})
			if err != nil {
				t.Fatal(err)
			}
			added = append(added, ev)
		}
	}
	for _, ev := range added {
		e.publish(t, events.EventStream(ev.TenantID), ev)
	}
	count := func() uint64 { return e.count(t, "SELECT count() FROM registrations FINAL") }
	eventually(t, "two registrations stored", func() bool { return count() == 2 })

	// Redelivered to the sink: every result again.
	var results []events.Envelope
	for _, d := range []string{"example.com", "example.org"} {
		all, err := events.ReadAll(context.Background(), e.rdb, events.EventStream(d))
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range all {
			if ev.Name == events.RegistrationLookedUp {
				results = append(results, ev)
			}
		}
	}
	if len(results) != 2 {
		t.Fatalf("results on the event streams: got %d, want 2", len(results))
	}
	for _, ev := range results {
		e.publish(t, events.EventStream(ev.AggregateID), ev)
	}
	eventually(t, "redelivered rows stored", func() bool {
		return e.count(t, "SELECT count() FROM registrations") >= 4
	})
	if got := count(); got != 2 {
		t.Errorf("registrations read with FINAL: got %d, want 2", got)
	}
	if got := lookups.Load(); got != 2 {
		t.Errorf("lookups for %d hosts: got %d, want 2", len(added), got)
	}
	hist, err := schema.RegistrationHistory(context.Background(), e.conn, "example.org", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 1 || hist[0].Registrar != "R of example.org" || hist[0].ExpiresAt == nil || !hist[0].ExpiresAt.Equal(expires) {
		t.Errorf("history of example.org: got %+v, want one ok lookup expiring %s", hist, expires)
	}
	// The results set the next lookup an interval on.
	score, err := e.rdb.ZScore(context.Background(), coordinator.RegistrationScheduleKey, "example.com").Result()
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Until(time.UnixMilli(int64(score))); left < 6*24*time.Hour {
		t.Errorf("next lookup of example.com in %s, want about 7 days", left)
	}
}
