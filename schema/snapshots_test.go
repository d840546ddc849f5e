package schema_test

import (
	"context"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

// TestDeleteExpiredEvents: nothing is deleted without a complete
// snapshot; then only events both older than the retention and stored
// well before the snapshot's watermark go.
func TestDeleteExpiredEvents(t *testing.T) {
	ctx := context.Background()
	conn := testenv.ClickHouse(t).Conn(t)
	if err := schema.Migrate(ctx, conn, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	day := 24 * time.Hour
	stored := map[string]schema.StoredEvent{}
	put := func(name string, occurred, inserted time.Time) {
		e, err := events.New(events.DomainAdded, "t", name, events.DomainAddedV1{DomainID: name, Host: name + ".example", Port: 443})
		if err != nil {
			t.Fatal(err)
		}
		e.OccurredAt = occurred
		stored[name] = schema.StoredEvent{Event: e, Stream: "s", InsertedAt: inserted}
	}
	put("ancient", now.Add(-500*day), now.Add(-500*day))
	put("old", now.Add(-40*day), now.Add(-40*day))
	put("late", now.Add(-40*day), now.Add(-time.Hour)) // published late
	put("recent", now.Add(-10*day), now.Add(-10*day))
	put("after-watermark", now.Add(-time.Hour), now.Add(-time.Hour))
	var rows []schema.StoredEvent
	for _, r := range stored {
		rows = append(rows, r)
	}
	if err := schema.InsertEvents(ctx, conn, rows); err != nil {
		t.Fatal(err)
	}
	left := func() []string {
		t.Helper()
		// The mutation runs in the background: wait for it.
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			var running uint64
			if err := conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND is_done = 0").Scan(&running); err != nil {
				t.Fatal(err)
			}
			if running == 0 {
				break
			}
		}
		var out []string
		err := schema.ReplayEvents(ctx, conn, func(e events.Envelope) error {
			out = append(out, e.AggregateID)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(out)
		return out
	}

	if _, n, err := schema.DeleteExpiredEvents(ctx, conn, now, 30*day); err != nil || n != 0 {
		t.Fatalf("without a snapshot: got %d deleted, %v; want 0", n, err)
	}
	if got, want := left(), []string{"after-watermark", "ancient", "late", "old", "recent"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("without a snapshot: got %v left, want %v", got, want)
	}

	// A snapshot whose watermark is 20 days back: the retention of 30 days
	// applies; a snapshot 35 days back holds it to 36.
	wm := now.Add(-20 * day)
	if err := schema.CompleteSnapshot(ctx, conn, schema.ViewSnapshot{ID: uint64(wm.UnixMilli()), StartedAt: wm, WatermarkMS: wm.UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	cutoff, n, err := schema.DeleteExpiredEvents(ctx, conn, now, 30*day)
	if err != nil || n != 2 || !cutoff.Equal(now.Add(-30*day)) {
		t.Fatalf("30 days: got cutoff %s, %d deleted, %v; want %s, 2", cutoff, n, err, now.Add(-30*day))
	}
	if got, want := left(), []string{"after-watermark", "late", "recent"}; !reflect.DeepEqual(got, want) {
		t.Errorf("30 days: got %v left, want %v", got, want)
	}
	// A retention shorter than the snapshot's age is held to its watermark
	// less a day: "recent" (10 days) stays, and "late" was stored after.
	cutoff, n, err = schema.DeleteExpiredEvents(ctx, conn, now, time.Hour)
	if err != nil || n != 0 || !cutoff.Equal(wm.Add(-schema.KeptBeforeWatermark)) {
		t.Fatalf("1 hour: got cutoff %s, %d deleted, %v; want %s, 0", cutoff, n, err, wm.Add(-schema.KeptBeforeWatermark))
	}
}

// TestDropSnapshotsBefore drops older snapshots, complete or not, from
// both tables, and keeps the ones from the given id on.
func TestDropSnapshotsBefore(t *testing.T) {
	ctx := context.Background()
	conn := testenv.ClickHouse(t).Conn(t)
	if err := schema.Migrate(ctx, conn, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	view := []schema.SnapshotView{{DomainID: uuid.NewString(), TenantID: "t", Version: 3, Fields: []string{"@tenant"}, Values: []string{"t"}}}
	for _, id := range []uint64{100, 200, 300} {
		if err := schema.InsertSnapshotViews(ctx, conn, id, view); err != nil {
			t.Fatal(err)
		}
		if id != 200 { // 200 was cut short
			if err := schema.CompleteSnapshot(ctx, conn, schema.ViewSnapshot{ID: id, StartedAt: now, Views: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	latest, ok, err := schema.LatestSnapshot(ctx, conn)
	if err != nil || !ok || latest.ID != 300 {
		t.Fatalf("latest: got %d, %v, %v; want 300", latest.ID, ok, err)
	}
	n, err := schema.DropSnapshotsBefore(ctx, conn, 300)
	if err != nil || n != 3 {
		t.Fatalf("drop: got %d partitions, %v; want 3 (100 from both tables, 200's views)", n, err)
	}
	var ids []uint64
	rows, err := conn.Query(ctx, "SELECT DISTINCT snapshot_id FROM view_snapshot_rows ORDER BY snapshot_id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id uint64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if !reflect.DeepEqual(ids, []uint64{300}) {
		t.Errorf("snapshots left: got %v, want [300]", ids)
	}
	var got []schema.SnapshotView
	if err := schema.ReadSnapshotViews(ctx, conn, 300, func(v schema.SnapshotView) error { got = append(got, v); return nil }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, view) {
		t.Errorf("views of 300: got %+v, want %+v", got, view)
	}
}
