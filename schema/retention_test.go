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

// TestDropScanMonthsBefore: a month of scan_results is dropped once its
// newest row is older than the cutoff, never before; other tables and
// younger months keep their rows.
func TestDropScanMonthsBefore(t *testing.T) {
	ctx := context.Background()
	db := testenv.ClickHouse(t)
	conn := db.Conn(t)
	if err := schema.Migrate(ctx, conn, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	var rows []schema.ScanRow
	for _, s := range []string{"2030-01-03T00:00:00Z", "2030-01-20T00:00:00Z", "2030-02-27T00:00:00Z", "2030-02-28T22:00:00Z", "2030-03-02T00:00:00Z"} {
		rows = append(rows, schema.ScanRow{EventID: uuid.New(), JobID: uuid.New(), ScheduledAt: at(s), TenantID: "t", DomainID: "d",
			Region: "eu", IP: "192.0.2.1", Outcome: "ok", StartedAt: at(s), ScannedAt: at(s)})
	}
	if err := schema.InsertScanRows(ctx, conn, rows); err != nil {
		t.Fatal(err)
	}
	count := func() uint64 {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM scan_results").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, tc := range []struct {
		cutoff string
		want   []string
		left   uint64
	}{
		{"2030-01-20T00:00:00Z", nil, 5},                // January's newest row is not older
		{"2030-02-28T21:00:00Z", []string{"203001"}, 3}, // February's is not yet either
		{"2030-02-28T21:00:00Z", nil, 3},                // nothing left to drop
		{"2030-03-01T12:00:00Z", []string{"203002"}, 1}, // March's row is younger
	} {
		got, err := schema.DropScanMonthsBefore(ctx, conn, at(tc.cutoff))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, tc.want) || count() != tc.left {
			t.Errorf("cutoff %s: dropped %v leaving %d rows, want %v leaving %d", tc.cutoff, got, count(), tc.want, tc.left)
		}
	}
}
