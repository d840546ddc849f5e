package sink_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/coordinator/sink"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

// TestRunRetention: the sink drops the months of scan_results past its
// retention, and of the rollups past theirs, at start, keeps the younger
// ones, and its loop stops with its context; without a retention it drops
// nothing and waits.
func TestRunRetention(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	now := time.Date(2030, 6, 15, 0, 0, 0, 0, time.UTC)
	var rows []schema.ScanRow
	for _, at := range []time.Time{now.AddDate(-2, 0, 0), now.AddDate(0, -14, 0), now.AddDate(0, -1, 0), now} {
		rows = append(rows, schema.ScanRow{EventID: uuid.New(), JobID: uuid.New(), ScheduledAt: at, TenantID: "t", DomainID: "d",
			Region: "eu", IP: "192.0.2.1", Outcome: "ok", StartedAt: at, ScannedAt: at})
	}
	if err := schema.InsertScanRows(ctx, e.conn, rows); err != nil {
		t.Fatal(err)
	}
	countOf := func(table string) uint64 {
		var n uint64
		if err := e.conn.QueryRow(ctx, "SELECT count() FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	count := func() uint64 { return countOf("scan_results") }
	for _, tc := range []struct {
		name              string
		retention, rollup time.Duration
		left, rollupLeft  uint64
	}{
		{"none", 0, 0, 4, 4},
		{"400 days", 400 * 24 * time.Hour, 0, 2, 4},
		// The rollups outlive the raw rows: 14 months ago is kept.
		{"rollups 500 days", 400 * 24 * time.Hour, 500 * 24 * time.Hour, 2, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := sink.New(sink.Config{Consumer: "test", HistoryRetention: tc.retention, RollupRetention: tc.rollup, Now: func() time.Time { return now }},
				e.rdb, e.conn, testenv.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- s.RunRetention(rctx) }()
			deadline := time.Now().Add(10 * time.Second)
			for (count() != tc.left || countOf("scan_outcomes_hourly") != tc.rollupLeft) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond) // nothing more goes
			if got := count(); got != tc.left {
				t.Errorf("got %d rows left, want %d", got, tc.left)
			}
			if got := countOf("scan_outcomes_hourly"); got != tc.rollupLeft {
				t.Errorf("got %d rollup rows left, want %d", got, tc.rollupLeft)
			}
			select {
			case err := <-done:
				t.Fatalf("retention loop returned %v before its context ended", err)
			default:
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run retention: got %v, want nil", err)
			}
		})
	}
	if _, err := sink.New(sink.Config{HistoryRetention: -time.Hour}, e.rdb, e.conn, testenv.Logger(t)); err == nil {
		t.Error("negative retention: got no error")
	}
	if _, err := sink.New(sink.Config{RollupRetention: -time.Hour}, e.rdb, e.conn, testenv.Logger(t)); err == nil {
		t.Error("negative rollup retention: got no error")
	}
}

// TestRunRetentionDeletesExpiredEvents: with a view snapshot there, the
// sink deletes the events past its event retention, keeps the younger
// ones, and of two sinks only the lease holder asks.
func TestRunRetentionDeletesExpiredEvents(t *testing.T) {
	e := newEnv(t, true)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	var rows []schema.StoredEvent
	for _, age := range []time.Duration{500, 401, 30, 0} {
		at := now.Add(-age * 24 * time.Hour)
		ev, err := events.New(events.DomainAdded, "t", "d", events.DomainAddedV1{DomainID: "d", Host: "d.example", Port: 443})
		if err != nil {
			t.Fatal(err)
		}
		ev.OccurredAt = at
		rows = append(rows, schema.StoredEvent{Event: ev, Stream: "s", InsertedAt: at})
	}
	if err := schema.InsertEvents(ctx, e.conn, rows); err != nil {
		t.Fatal(err)
	}
	if err := schema.CompleteSnapshot(ctx, e.conn, schema.ViewSnapshot{ID: uint64(now.UnixMilli()), StartedAt: now, WatermarkMS: now.UnixMilli()}); err != nil {
		t.Fatal(err)
	}
	count := func() uint64 {
		var n uint64
		if err := e.conn.QueryRow(ctx, "SELECT count() FROM events").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 2)
	for range 2 {
		s, err := sink.New(sink.Config{Consumer: "test", EventRetention: 400 * 24 * time.Hour}, e.rdb, e.conn, testenv.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		go func() { done <- s.RunRetention(rctx) }()
	}
	deadline := time.Now().Add(20 * time.Second)
	for count() != 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := count(); got != 2 {
		t.Errorf("got %d events left, want 2", got)
	}
	var mutations uint64
	if err := e.conn.QueryRow(ctx, "SELECT count() FROM system.mutations WHERE database = currentDatabase() AND table = 'events'").Scan(&mutations); err != nil {
		t.Fatal(err)
	}
	if mutations != 1 {
		t.Errorf("got %d mutations of events, want 1 (one lease holder)", mutations)
	}
	cancel()
	for range 2 {
		if err := <-done; err != nil {
			t.Errorf("run retention: got %v, want nil", err)
		}
	}
}
