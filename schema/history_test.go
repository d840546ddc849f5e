package schema_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

// TestScanHistoryPageWidens: the newest page is looked for in a day back
// from the clock first, then wider ranges: rows older than any range, or
// newer than the clock, are still where they belong, page after page.
func TestScanHistoryPageWidens(t *testing.T) {
	ctx := context.Background()
	conn := testenv.ClickHouse(t).Conn(t)
	if err := schema.Migrate(ctx, conn, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	ages := []time.Duration{-time.Hour, 2 * time.Hour, 3 * 24 * time.Hour, 30 * 24 * time.Hour, 100 * 24 * time.Hour, 400 * 24 * time.Hour}
	var rows []schema.ScanRow
	for _, a := range ages {
		at := now.Add(-a)
		rows = append(rows, schema.ScanRow{EventID: uuid.New(), JobID: uuid.New(), ScheduledAt: at, TenantID: "t", DomainID: "d",
			Region: "eu", IP: "192.0.2.1", Outcome: "ok", StartedAt: at, ScannedAt: at})
	}
	if err := schema.InsertScanRows(ctx, conn, rows); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{1, 2, 4, 6, 7} {
		var got []time.Duration
		q := schema.HistoryQuery{TenantID: "t", DomainID: "d", Limit: limit, Now: now}
		for range 10 {
			page, err := schema.ScanHistoryPage(ctx, conn, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range page {
				got = append(got, now.Sub(r.ScheduledAt))
			}
			if len(page) < limit {
				break
			}
			c := schema.CursorOf(page[len(page)-1])
			q.After = &c
		}
		if !reflect.DeepEqual(got, ages) {
			t.Errorf("limit %d: got ages %v, want %v", limit, got, ages)
		}
	}
}
