package schema_test

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

// rollupRows are scans of tenant t (and one of another tenant) over hours
// before and after at, from two regions with three outcomes.
func rollupRows(at time.Time) []schema.ScanRow {
	var rows []schema.ScanRow
	for i := range 60 {
		s := at.Add(time.Duration(i-30) * 17 * time.Minute)
		region, outcome := []string{"eu", "us"}[i%2], []string{"ok", "ok", "timeout"}[i%3]
		hs := uint32(0)
		if outcome == "ok" {
			hs = uint32(10 + i)
		}
		rows = append(rows, schema.ScanRow{EventID: uuid.New(), JobID: uuid.New(), ScheduledAt: s, TenantID: "t", DomainID: fmt.Sprint("d", i%7),
			Region: region, IP: "192.0.2.1", Outcome: outcome, StartedAt: s, ScannedAt: s, HandshakeMS: hs})
	}
	rows = append(rows, schema.ScanRow{EventID: uuid.New(), JobID: uuid.New(), ScheduledAt: at, TenantID: "other", DomainID: "x",
		Region: "eu", IP: "192.0.2.9", Outcome: "ok", StartedAt: at, ScannedAt: at, HandshakeMS: 999})
	return rows
}

// rawOutcomesOf counts what the rollups should from scan_results FINAL:
// tenant t's scans of the hours from since's through now's.
func rawOutcomesOf(t *testing.T, ctx context.Context, conn driver.Conn, since, now time.Time) []schema.RegionOutcome {
	t.Helper()
	rows, err := conn.Query(ctx, `SELECT region, outcome, count(), quantiles(0.5, 0.95)(handshake_ms)
		FROM scan_results FINAL
		WHERE tenant_id = 't' AND scheduled_at >= ? AND scheduled_at < ?
		GROUP BY region, outcome ORDER BY region, outcome`, since.Truncate(time.Hour), now.Truncate(time.Hour).Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []schema.RegionOutcome
	for rows.Next() {
		var (
			r schema.RegionOutcome
			q []float64
		)
		if err := rows.Scan(&r.Region, &r.Outcome, &r.Scans, &q); err != nil {
			t.Fatal(err)
		}
		r.HandshakeP50, r.HandshakeP95 = q[0], q[1]
		out = append(out, r)
	}
	return out
}

// TestRollupMatchesRaw: GET /stats' scans by region and outcome, read from
// the hourly rollup the view fills, are what scan_results FINAL holds for
// the hours of the window, per tenant; a rescanned job counts per copy.
func TestRollupMatchesRaw(t *testing.T) {
	ctx := context.Background()
	conn := testenv.ClickHouse(t).Conn(t)
	if err := schema.Migrate(ctx, conn, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 6, 1, 12, 30, 0, 0, time.UTC) // after the view's cutoff: the view rolls these up
	rows := rollupRows(now.Add(-5 * time.Hour))
	// Each in its own insert, as the sink's batches arrive.
	for i := 0; i < len(rows); i += 7 {
		if err := schema.InsertScanRows(ctx, conn, rows[i:min(i+7, len(rows))]); err != nil {
			t.Fatal(err)
		}
	}
	for _, since := range []time.Time{now.Add(-24 * time.Hour), now.Add(-5*time.Hour - 10*time.Minute), now.Add(-3 * time.Hour)} {
		got, err := schema.QueryFleetStats(ctx, conn, "t", since, now, 12)
		if err != nil {
			t.Fatal(err)
		}
		want := rawOutcomesOf(t, ctx, conn, since, now)
		if !reflect.DeepEqual(got.Outcomes, want) || len(want) == 0 {
			t.Errorf("since %s: got %+v, want %+v from the raw rows", since, got.Outcomes, want)
		}
	}
}

// TestRollupBackfill: migration 8 rolls the rows scheduled before the
// view's cutoff up from scan_results FINAL (a rescanned job once), the
// view those after it (a rescanned job per copy); running the step again,
// as a process that died in it would, changes no count; and the rollups
// are dropped by month past their own retention.
func TestRollupBackfill(t *testing.T) {
	ctx := context.Background()
	conn := testenv.ClickHouse(t).Conn(t)
	var before []schema.Migration
	for _, m := range schema.Migrations {
		if m.Version < 8 {
			before = append(before, m)
		}
	}
	if err := schema.MigrateWith(ctx, conn, before, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
	oldRows := rollupRows(old)
	rescan := oldRows[0]
	rescan.ScannedAt = rescan.ScannedAt.Add(time.Minute)
	oldRows = append(oldRows, rescan)
	if err := schema.InsertScanRows(ctx, conn, oldRows); err != nil {
		t.Fatal(err)
	}
	if err := schema.Migrate(ctx, conn, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	cutoff, err := schema.RollupCutoff(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if cutoff%3600 != 0 || cutoff > time.Now().Unix() || cutoff < time.Now().Add(-time.Hour).Unix() {
		t.Errorf("cutoff: got %s, want the hour the migration ran in", time.Unix(cutoff, 0).UTC())
	}
	recent := time.Date(2030, 6, 1, 7, 30, 0, 0, time.UTC)
	newRows := rollupRows(recent)
	rescan = newRows[0]
	rescan.ScannedAt = rescan.ScannedAt.Add(time.Minute)
	if err := schema.InsertScanRows(ctx, conn, append(newRows, rescan)); err != nil {
		t.Fatal(err)
	}
	check := func(name string) {
		t.Helper()
		for _, tc := range []struct {
			at     time.Time
			copies uint64 // counted of the rescanned job
		}{{old, 1}, {recent, 2}} {
			since, now := tc.at.Add(-10*time.Hour), tc.at.Add(10*time.Hour)
			got, err := schema.QueryFleetStats(ctx, conn, "t", since, now, 12)
			if err != nil {
				t.Fatal(err)
			}
			want := rawOutcomesOf(t, ctx, conn, since, now)
			var total, wantTotal uint64
			for _, o := range got.Outcomes {
				total += o.Scans
			}
			for _, o := range want {
				wantTotal += o.Scans
			}
			if wantTotal != 60 || total != wantTotal+tc.copies-1 {
				t.Errorf("%s, scans around %s: got %d scans %+v, want %d (%d raw)", name, tc.at, total, got.Outcomes, wantTotal+tc.copies-1, wantTotal)
			}
		}
	}
	check("after the migration")
	for range 2 {
		if err := schema.RollupScanOutcomes(ctx, conn); err != nil {
			t.Fatal(err)
		}
	}
	check("after the backfill ran twice more")

	// 2025-03 goes past a cutoff in April 2025; 2030-06 stays.
	dropped, err := schema.DropRollupMonthsBefore(ctx, conn, time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"scan_outcomes_backfill 202503"}; !reflect.DeepEqual(dropped, want) {
		t.Errorf("dropped: got %v, want %v", dropped, want)
	}
	got, err := schema.QueryFleetStats(ctx, conn, "t", old.Add(-10*time.Hour), old.Add(10*time.Hour), 12)
	if err != nil || len(got.Outcomes) != 0 {
		t.Errorf("after the drop: got %+v %v, want no scans", got.Outcomes, err)
	}
}
