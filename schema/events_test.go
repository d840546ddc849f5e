package schema_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

// copyOf is the event with id published at at: a publisher that crashed
// before acknowledging its cause publishes it again, same id, later.
func copyOf(t *testing.T, id uuid.UUID, tenant string, at time.Time, n int) schema.StoredEvent {
	t.Helper()
	e, err := events.NewWithID(id, events.ScanCompleted, tenant, "dom-1", map[string]int{"n": n})
	if err != nil {
		t.Fatal(err)
	}
	e.OccurredAt = at
	return schema.StoredEvent{Event: e, Stream: events.StreamResults, InsertedAt: time.Now()}
}

// replayed is every event ReplayEvents gives, by id, with how often.
func replayed(t *testing.T, ctx context.Context, db testenv.ClickHouseDB) (map[uuid.UUID]events.Envelope, map[uuid.UUID]int) {
	t.Helper()
	got, seen := map[uuid.UUID]events.Envelope{}, map[uuid.UUID]int{}
	if err := schema.ReplayEvents(ctx, db.Conn(t), func(e events.Envelope) error {
		got[e.EventID] = e
		seen[e.EventID]++
		return nil
	}); err != nil {
		t.Fatalf("replay: %v", err)
	}
	return got, seen
}

// An event published again after a crash (same id, later occurred_at,
// even in another month) is stored once, as its latest copy, whichever
// copy was inserted first. The chaos suite found the second copy when an
// agent was killed between publishing a scan and acknowledging its job.
func TestEventCopiesReadOnce(t *testing.T) {
	ctx, db := migrated(t)
	id, other := uuid.New(), uuid.New()
	first := time.Date(2026, 1, 31, 23, 59, 59, 0, time.UTC)
	later := first.Add(90 * time.Second) // next month
	for _, rows := range [][]schema.StoredEvent{
		{copyOf(t, id, "tenant-1", later, 2)},
		{copyOf(t, id, "tenant-1", first, 1), copyOf(t, other, "tenant-1", first, 3)},
		{copyOf(t, id, "tenant-1", first, 1)}, // the sink's own redelivery
	} {
		if err := schema.InsertEvents(ctx, db.Conn(t), rows); err != nil {
			t.Fatal(err)
		}
	}
	got, seen := replayed(t, ctx, db)
	if seen[id] != 1 || seen[other] != 1 || len(seen) != 2 {
		t.Fatalf("replayed %v, want each of %s and %s once", seen, id, other)
	}
	if !got[id].OccurredAt.Equal(later) || string(got[id].Payload) != `{"n":2}` {
		t.Errorf("kept the copy of %s with payload %s, want the latest's", got[id].OccurredAt, got[id].Payload)
	}
}

// Migration 6 moves the old events table's rows, copies of one event
// collapsing into the latest, and survives two processes at once, a
// process that died after the swap, and running again.
func TestMigrateEvents(t *testing.T) {
	db := testenv.ClickHouse(t)
	ctx := context.Background()
	conn := db.Conn(t)
	if err := schema.MigrateWith(ctx, conn, schema.Migrations[:5], testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	id, other := uuid.New(), uuid.New()
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	if err := schema.InsertEvents(ctx, conn, []schema.StoredEvent{
		copyOf(t, id, "tenant-1", at, 1), copyOf(t, id, "tenant-1", at.Add(time.Minute), 2), copyOf(t, other, "tenant-2", at, 3),
	}); err != nil {
		t.Fatal(err)
	}

	migrateConcurrently(t, db)
	check := func(t *testing.T) {
		t.Helper()
		got, seen := replayed(t, ctx, db)
		if seen[id] != 1 || seen[other] != 1 || len(seen) != 2 {
			t.Fatalf("replayed %v, want each of %s and %s once", seen, id, other)
		}
		if string(got[id].Payload) != `{"n":2}` || got[other].TenantID != "tenant-2" {
			t.Errorf("got %s of %s and tenant %q of %s, want the latest copy and tenant-2", got[id].Payload, id, got[other].TenantID, other)
		}
		var key string
		if err := conn.QueryRow(ctx, "SELECT sorting_key FROM system.tables WHERE database = currentDatabase() AND name = 'events'").Scan(&key); err != nil {
			t.Fatal(err)
		}
		if key != "tenant_id, event_id" {
			t.Errorf("sorting key %q, want tenant_id, event_id", key)
		}
	}
	check(t)
	reshapeAgain(t, db, 6, "events_v1_", check)
}

// Processes starting together on a fresh database all migrate it to the
// end: the chaos suite once saw one fail in migration 6, asking
// system.tables for a sorting key while another renamed a table.
func TestMigrateFromScratchTogether(t *testing.T) {
	for range 5 {
		db := testenv.ClickHouse(t)
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() { errs[i] = schema.Migrate(context.Background(), db.Conn(t), testenv.Logger(t)) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("migrate together: %v", err)
		}
	}
}
