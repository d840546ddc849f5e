package schema

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// monthPartition is how system.parts names a partition of
// toYYYYMM(<DateTime>); only such a name is spliced into DROP PARTITION.
var monthPartition = regexp.MustCompile(`^[0-9]{6}$`)

// DropScanMonthsBefore drops every partition (a month of scheduled_at) of
// scan_results whose rows were all scheduled before cutoff, and returns
// the months dropped (YYYYMM). Dropping a partition removes its parts at
// once, with no mutation or merge, on 18.16 and on current releases; a
// month is kept until its newest row passed the cutoff, so retention
// keeps up to a month more than asked. The partition's newest time comes
// from system.parts (max_time), so no row is read.
func DropScanMonthsBefore(ctx context.Context, conn driver.Conn, cutoff time.Time) ([]string, error) {
	return dropMonthsBefore(ctx, conn, "scan_results", cutoff)
}

// DropRollupMonthsBefore does what DropScanMonthsBefore does to each of
// RollupTables (partitioned by the month of their hour), with the rollups'
// own cutoff, and returns the months dropped as "<table> YYYYMM".
func DropRollupMonthsBefore(ctx context.Context, conn driver.Conn, cutoff time.Time) ([]string, error) {
	var out []string
	for _, t := range RollupTables {
		dropped, err := dropMonthsBefore(ctx, conn, t, cutoff)
		for _, p := range dropped {
			out = append(out, t+" "+p)
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// dropMonthsBefore drops the months of table, partitioned by
// toYYYYMM(<a DateTime>), whose rows are all older than cutoff.
func dropMonthsBefore(ctx context.Context, conn driver.Conn, table string, cutoff time.Time) ([]string, error) {
	if !validIdentifier.MatchString(table) {
		return nil, fmt.Errorf("drop months of %q: bad name", table)
	}
	rows, err := conn.Query(ctx, `SELECT partition, toInt64(toUnixTimestamp(max(max_time)))
		FROM system.parts
		WHERE database = currentDatabase() AND table = ? AND active
		GROUP BY partition
		ORDER BY partition`, localTable(conn, table))
	if err != nil {
		return nil, fmt.Errorf("list %s partitions: %w", table, err)
	}
	var old []string
	for rows.Next() {
		var (
			p      string
			newest int64
		)
		if err := rows.Scan(&p, &newest); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read %s partitions: %w", table, err)
		}
		if newest < cutoff.Unix() && monthPartition.MatchString(p) {
			old = append(old, p)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %s partitions: %w", table, err)
	}
	var dropped []string
	for _, p := range old {
		if err := conn.Exec(ctx, "ALTER TABLE "+table+" DROP PARTITION "+p); err != nil {
			return dropped, fmt.Errorf("drop %s partition %s: %w", table, p, err)
		}
		dropped = append(dropped, p)
	}
	return dropped, nil
}
