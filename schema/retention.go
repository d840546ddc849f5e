package schema

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// monthPartition is how system.parts names a partition of
// toYYYYMM(scheduled_at); only such a name is spliced into DROP PARTITION.
var monthPartition = regexp.MustCompile(`^[0-9]{6}$`)

// DropScanMonthsBefore drops every partition (a month of scheduled_at) of
// scan_results whose rows were all scheduled before cutoff, and returns
// the months dropped (YYYYMM). Dropping a partition removes its parts at
// once, with no mutation or merge, on 18.16 and on current releases; a
// month is kept until its newest row passed the cutoff, so retention
// keeps up to a month more than asked. The partition's newest time comes
// from system.parts (max_time), so no row is read.
func DropScanMonthsBefore(ctx context.Context, conn driver.Conn, cutoff time.Time) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT partition, toInt64(toUnixTimestamp(max(max_time)))
		FROM system.parts
		WHERE database = currentDatabase() AND table = ? AND active
		GROUP BY partition
		ORDER BY partition`, localTable(conn, "scan_results"))
	if err != nil {
		return nil, fmt.Errorf("list scan_results partitions: %w", err)
	}
	var old []string
	for rows.Next() {
		var (
			p      string
			newest int64
		)
		if err := rows.Scan(&p, &newest); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read scan_results partitions: %w", err)
		}
		if newest < cutoff.Unix() && monthPartition.MatchString(p) {
			old = append(old, p)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read scan_results partitions: %w", err)
	}
	var dropped []string
	for _, p := range old {
		if err := conn.Exec(ctx, "ALTER TABLE scan_results DROP PARTITION "+p); err != nil {
			return dropped, fmt.Errorf("drop scan_results partition %s: %w", p, err)
		}
		dropped = append(dropped, p)
	}
	return dropped, nil
}
