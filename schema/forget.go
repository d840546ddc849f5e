package schema

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// TenantTables are the tables holding rows of a tenant, each with a
// tenant_id column: ForgetTenant deletes from each. view_snapshot_rows is
// among them so that a rebuild from a snapshot taken before a tenant left
// does not bring its views back.
var TenantTables = []string{"events", "scan_results", "audit_log", "scan_outcomes_hourly", "scan_outcomes_backfill", "view_snapshot_rows"}

// ForgetTenant issues `ALTER TABLE t DELETE WHERE tenant_id = ?` on every
// tenant table (a tenant leaving) and returns the tables it issued it on.
// A DELETE is a mutation: ClickHouse rewrites the parts holding the rows
// in the background, so the rows are gone when system.mutations shows the
// mutation done (MutationsDone), not when this returns. It applies to the
// parts there when it is issued: rows inserted later (events the sink
// writes after it) stay. Running it again is harmless.
//
// keep names events the events table keeps (the tenant.deleted.v1 record),
// so that a second run keeps it too.
func ForgetTenant(ctx context.Context, conn driver.Conn, tenantID string, keep ...string) ([]string, error) {
	var done []string
	for _, t := range TenantTables {
		q, args := "ALTER TABLE "+t+" DELETE WHERE tenant_id = ?", []any{tenantID}
		for _, name := range keep {
			if t == "events" {
				q += " AND name != ?"
				args = append(args, name)
			}
		}
		if err := conn.Exec(ctx, q, args...); err != nil {
			return done, fmt.Errorf("delete rows of tenant %s from %s: %w", tenantID, t, err)
		}
		done = append(done, t)
	}
	return done, nil
}

// MutationsDone tells whether every mutation of the tenant tables has
// finished (system.mutations has none left to do).
func MutationsDone(ctx context.Context, conn driver.Conn) (bool, error) {
	var n uint64
	row := conn.QueryRow(ctx, `SELECT count() FROM system.mutations
		WHERE database = currentDatabase() AND is_done = 0`)
	if err := row.Scan(&n); err != nil {
		return false, fmt.Errorf("read system.mutations: %w", err)
	}
	return n == 0, nil
}
