package schema

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// The per-region scan counts of GET /stats (scans by region and outcome,
// handshake quantiles) come from an hourly rollup of scan_results instead
// of its raw rows: scan_results' sorting key puts the domain before the
// time, so a tenant's window cannot be read as one index range and the raw
// query read every month the window touched, whole.
//
//   - scan_outcomes_hourly (AggregatingMergeTree): per tenant, hour
//     (Unix seconds floored to 3600: no time zone), region and outcome,
//     countState() and quantilesState(0.5, 0.95)(handshake_ms). Fed by the
//     materialized view scan_outcomes_hourly_mv with every row inserted
//     into scan_results scheduled at or after the view's cutoff (the hour
//     migration 8 created it in, written into the view as a constant).
//     A view sees inserted blocks, not FINAL: a job the sink wrote twice
//     (redelivered after a crash) or rescanned counts once per copy here.
//   - scan_outcomes_backfill (ReplacingMergeTree, the same columns): the
//     rows scheduled before the cutoff, rolled up from scan_results FINAL
//     when migration 8 ran. One row per key, complete, so a backfill run
//     twice (a process died in it, two processes at once) collapses; reads
//     use FINAL.
//
// Both are partitioned by month like scan_results and dropped by month
// after --rollup-retention (DropRollupMonthsBefore), longer than the raw
// rows.
const (
	rollupColumns = `tenant_id String,
	hour DateTime,
	region String,
	outcome String,
	scans AggregateFunction(count),
	handshake_ms AggregateFunction(quantiles(0.5, 0.95), UInt32)`

	scanOutcomesHourlyTable = `CREATE TABLE IF NOT EXISTS scan_outcomes_hourly (
	` + rollupColumns + `
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, hour, region, outcome)`

	scanOutcomesBackfillTable = `CREATE TABLE IF NOT EXISTS scan_outcomes_backfill (
	` + rollupColumns + `
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, hour, region, outcome)`

	// hourOf floors scheduled_at to its hour in Unix seconds, whatever
	// the server's time zone.
	hourOf = "toDateTime(intDiv(toUInt32(scheduled_at), 3600) * 3600)"

	// rollupSelect rolls scan_results rows up; %s is FINAL or "", %s the
	// condition on scheduled_at.
	rollupSelect = `SELECT tenant_id, ` + hourOf + ` AS hour, region, outcome,
	countState() AS scans, quantilesState(0.5, 0.95)(handshake_ms) AS handshake_ms
FROM scan_results %s
WHERE %s
GROUP BY tenant_id, hour, region, outcome`
)

// RollupTables are the rollups of scan_results, kept --rollup-retention.
var RollupTables = []string{"scan_outcomes_hourly", "scan_outcomes_backfill"}

// rollupView is the materialized view feeding scan_outcomes_hourly.
const rollupView = "scan_outcomes_hourly_mv"

// viewCutoff finds the cutoff in the view's definition.
var viewCutoff = regexp.MustCompile(`scheduled_at >= toDateTime\(([0-9]+)\)`)

// rollupScanOutcomes is migration 8's step: create the view with the
// current hour as cutoff unless it exists, read back the cutoff it has
// (another process may have created it first, with another hour), and
// roll every row scheduled before that cutoff into the backfill table.
// Rows scheduled before the cutoff that reach scan_results after the
// backfill read it (scans in flight while the migration ran) are in
// neither rollup.
func rollupScanOutcomes(ctx context.Context, conn driver.Conn) error {
	cutoff := time.Now().Unix() / 3600 * 3600
	view := fmt.Sprintf("CREATE MATERIALIZED VIEW IF NOT EXISTS %s TO scan_outcomes_hourly AS %s", rollupView,
		fmt.Sprintf(rollupSelect, "", "scheduled_at >= toDateTime("+strconv.FormatInt(cutoff, 10)+")"))
	createErr := conn.Exec(ctx, view)
	// Two processes creating it at once: the one whose CREATE lost the
	// race finds the other's view.
	cutoff, err := RollupCutoff(ctx, conn)
	if err != nil {
		if createErr != nil {
			return fmt.Errorf("create %s: %w", rollupView, createErr)
		}
		return err
	}
	backfill := "INSERT INTO scan_outcomes_backfill (tenant_id, hour, region, outcome, scans, handshake_ms) " +
		fmt.Sprintf(rollupSelect, "FINAL", "scheduled_at < toDateTime(?)")
	if err := conn.Exec(ctx, backfill, uint32(cutoff)); err != nil {
		return fmt.Errorf("backfill scan_outcomes_backfill: %w", err)
	}
	return nil
}

// RollupCutoff is the cutoff (Unix seconds) of scan_outcomes_hourly_mv:
// the rows scheduled from it on are in scan_outcomes_hourly, those
// before it in scan_outcomes_backfill.
func RollupCutoff(ctx context.Context, conn driver.Conn) (int64, error) {
	var def string
	if err := conn.QueryRow(ctx, `SELECT create_table_query FROM system.tables
		WHERE database = currentDatabase() AND name = ?`, rollupView).Scan(&def); err != nil {
		return 0, fmt.Errorf("read %s: %w", rollupView, err)
	}
	m := viewCutoff.FindStringSubmatch(def)
	if m == nil {
		return 0, fmt.Errorf("read %s: no cutoff in %q", rollupView, def)
	}
	return strconv.ParseInt(m[1], 10, 64)
}

// scanOutcomes counts a tenant's scans by region and outcome from the
// rollups, over the hours from since's to now's.
func scanOutcomes(ctx context.Context, conn driver.Conn, tenantID string, since, now time.Time) ([]RegionOutcome, error) {
	from, to := clampDateTime(since.Truncate(time.Hour)), clampDateTime(now)
	rows, err := conn.Query(ctx, `SELECT region, outcome, countMerge(scans), quantilesMerge(0.5, 0.95)(handshake_ms)
		FROM (
			SELECT region, outcome, scans, handshake_ms FROM scan_outcomes_hourly
			PREWHERE tenant_id = ? AND hour >= ? AND hour <= ?
			UNION ALL
			SELECT region, outcome, scans, handshake_ms FROM scan_outcomes_backfill FINAL
			PREWHERE tenant_id = ? AND hour >= ? AND hour <= ?
		)
		GROUP BY region, outcome
		ORDER BY region, outcome`, tenantID, from, to, tenantID, from, to)
	if err != nil {
		return nil, fmt.Errorf("query scans of %s: %w", tenantID, err)
	}
	defer rows.Close()
	var out []RegionOutcome
	for rows.Next() {
		var (
			r RegionOutcome
			q []float64
		)
		if err := rows.Scan(&r.Region, &r.Outcome, &r.Scans, &q); err != nil {
			return nil, fmt.Errorf("read scans of %s: %w", tenantID, err)
		}
		if len(q) == 2 {
			r.HandshakeP50, r.HandshakeP95 = q[0], q[1]
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read scans of %s: %w", tenantID, err)
	}
	return out, nil
}
