package schema

import (
	"context"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// QueryAuditNoFinal runs QueryAudit's query without FINAL: the
// benchmark's baseline.
func QueryAuditNoFinal(ctx context.Context, conn driver.Conn, f AuditFilter) error {
	_, err := queryAudit(ctx, conn, f, "")
	return err
}

// RollupScanOutcomes runs migration 8's step again, as a process that
// died in it or ran it beside another would.
func RollupScanOutcomes(ctx context.Context, conn driver.Conn) error {
	return rollupScanOutcomes(ctx, conn)
}
