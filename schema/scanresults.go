package schema

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"

	"github.com/certfleet/certfleet/events"
)

// scanResultsTable is the final shape of scan_results (migration 4), the
// one the history API and a ClickHouse cluster build on; see "scan_results"
// in docs/architecture.md.
//
//   - One row per scan of a job from one region and IP, whatever the
//     redeliveries: the sorting key holds only what every delivery of the
//     job shares (tenant, domain, the job's scheduled time, region, IP, job
//     id), never when the scan ran. job_id last keeps two jobs scheduled in
//     the same second (a manual check beside the schedule) apart.
//   - ReplacingMergeTree(scanned_at): of the copies of a row, merges and
//     FINAL keep the latest scan: a job rescanned after a redelivery is
//     shown as last seen, and the choice does not depend on which copy was
//     inserted last (replicas merge alike).
//   - PARTITION BY month of scheduled_at: a row and its copies always share
//     a partition (so they can merge), and history reads of a time range
//     touch only its months. The key starts with tenant and domain, so a
//     domain's history is one range of the index.
//   - not_before_unix / not_after_unix are Unix seconds (Int64), exact for
//     every date a certificate can carry: DateTime ends in 2106, and
//     notAfter 99991231235959Z (RFC 5280: no well-defined expiration,
//     events.NoExpiry) is 253402300799. NULL when no certificate was seen.
//   - chain_length stays UInt8: a longer chain is refused where the event
//     is decoded (events.MaxChainLength).
const scanResultsTable = `CREATE TABLE IF NOT EXISTS %s (
	event_id UUID,
	job_id UUID,
	scheduled_at DateTime,
	tenant_id String,
	domain_id String,
	host String,
	port UInt16,
	region String,
	agent String,
	ip String,
	outcome String,
	detail String,
	certificate_found UInt8,
	subject String,
	issuer String,
	sans Array(String),
	serial String,
	not_before_unix Nullable(Int64),
	not_after_unix Nullable(Int64),
	leaf_sha256 String,
	key_type String,
	key_bits UInt16,
	signature_algorithm String,
	chain_length UInt8,
	tls_version String,
	cipher_suite String,
	chain_valid UInt8,
	hostname_valid UInt8,
	connect_ms UInt32,
	handshake_ms UInt32,
	started_at DateTime,
	scanned_at DateTime,
	http_status UInt16,
	hsts_max_age Int64,
	hsts_include_subdomains UInt8,
	legacy_tls_checked UInt8,
	legacy_tls Array(String)
) ENGINE = ReplacingMergeTree(scanned_at)
PARTITION BY toYYYYMM(scheduled_at)
ORDER BY (tenant_id, domain_id, scheduled_at, region, ip, job_id)`

const (
	// scanResultsNext is where the new shape is created before it takes
	// scan_results' name.
	scanResultsNext = "scan_results_v4"
	// scanResultsParked prefixes the names old-shaped tables are renamed
	// to; they are copied into the new table and left for the operator to
	// drop (nothing is dropped automatically: see reshapeScanResults).
	scanResultsParked = "scan_results_v3_"
)

// oldScanSelect reads a table of the shape of migrations 1 and 2 as rows
// of the new one. An old row has no scheduled time: its started_at stands
// in. Its dates were clamped into DateTime: a not_after at the top of the
// range (2106-02-07 06:28:15) was a later date, by far most often RFC
// 5280's 99991231235959Z, and becomes that.
var oldScanSelect = strings.NewReplacer(
	"scheduled_at", "started_at",
	"not_before_unix", "toInt64(not_before)",
	"not_after_unix", "if(toInt64(not_after) = 4294967295, toInt64("+strconv.FormatInt(events.NoExpiry.Unix(), 10)+"), toInt64(not_after))",
).Replace(ScanColumns)

// reshapeScanResults moves scan_results to its final shape: ClickHouse
// 18.16 cannot change a sorting key, so the new table is created beside
// the old one, the two swap names in one RENAME, and the old rows are
// copied over with INSERT ... SELECT.
//
// It follows the Migration contract by working from the state it finds,
// as often as needed:
//   - scan_results old-shaped: create scan_results_v4, then one RENAME
//     parks the old table as scan_results_v3_<ns> and gives the new one
//     its name. If the RENAME fails, another process swapped first (or
//     the names changed under it): look again.
//   - scan_results new-shaped: copy every parked table (and a stray
//     scan_results_v4 that a concurrent process created too late) into it.
//     A copy that runs twice (a process died in it, two processes at once)
//     inserts rows with the same keys, which collapse: reads use FINAL.
//
// Parked tables are never dropped here: an INSERT that a sink of the old
// version had in flight when the names swapped may still land in one, and
// only the operator knows when no such sink is left. docs/architecture.md says how
// to check and drop them.
func reshapeScanResults(ctx context.Context, conn driver.Conn) error {
	const attempts = 10
	var renameErr error
	for range attempts {
		shape, err := tableShape(ctx, conn, "scan_results")
		if err != nil {
			return err
		}
		switch shape {
		case shapeNew:
			// Another process that read the old shape before this one's
			// swap may park the new table in turn, between its two
			// renames: scan_results is missing for that moment. Look
			// again; what it parked is copied then.
			err := copyParked(ctx, conn)
			if !unknownTable(err) {
				return err
			}
			renameErr = err
		case shapeOld:
			if err := conn.Exec(ctx, fmt.Sprintf(scanResultsTable, scanResultsNext)); err != nil {
				return fmt.Errorf("create %s: %w", scanResultsNext, err)
			}
			parked := scanResultsParked + strconv.FormatInt(time.Now().UnixNano(), 10)
			renameErr = conn.Exec(ctx, "RENAME TABLE scan_results TO "+parked+", "+scanResultsNext+" TO scan_results")
		case shapeMissing:
			if err := conn.Exec(ctx, fmt.Sprintf(scanResultsTable, "scan_results")); err != nil {
				return fmt.Errorf("create scan_results: %w", err)
			}
		}
	}
	return fmt.Errorf("scan_results did not take its new shape after %d attempts: %w", attempts, renameErr)
}

// copyParked copies every parked table, and a stray scan_results_v4, into
// scan_results.
func copyParked(ctx context.Context, conn driver.Conn) error {
	rows, err := conn.Query(ctx, `SELECT name FROM system.tables WHERE database = currentDatabase()
		AND (startsWith(name, ?) OR name = ?) ORDER BY name`, scanResultsParked, scanResultsNext)
	if err != nil {
		return fmt.Errorf("list parked scan_results tables: %w", err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return fmt.Errorf("list parked scan_results tables: %w", err)
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list parked scan_results tables: %w", err)
	}
	for _, n := range names {
		if !validIdentifier.MatchString(n) {
			continue
		}
		shape, err := tableShape(ctx, conn, n)
		if err != nil {
			return err
		}
		sel := ScanColumns
		switch shape {
		case shapeMissing:
			continue // gone since it was listed
		case shapeOld:
			sel = oldScanSelect
		}
		if err := conn.Exec(ctx, "INSERT INTO scan_results ("+ScanColumns+") SELECT "+sel+" FROM "+n); err != nil {
			return fmt.Errorf("copy %s into scan_results: %w", n, err)
		}
	}
	return nil
}

// unknownTable tells whether err is ClickHouse's UNKNOWN_TABLE (60).
func unknownTable(err error) bool {
	var ex *proto.Exception
	return errors.As(err, &ex) && ex.Code == 60
}

type shape int

const (
	shapeMissing shape = iota
	shapeOld
	shapeNew
)

// tableShape tells whether table exists and, if so, whether it has the
// final shape (a scheduled_at column).
func tableShape(ctx context.Context, conn driver.Conn, table string) (shape, error) {
	var tables uint64
	if err := conn.QueryRow(ctx, `SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?`,
		table).Scan(&tables); err != nil {
		return 0, fmt.Errorf("look up table %s: %w", table, err)
	}
	if tables == 0 {
		return shapeMissing, nil
	}
	if ok, err := hasColumn(ctx, conn, Column{Table: table, Name: "scheduled_at"}); err != nil || !ok {
		return shapeOld, err
	}
	return shapeNew, nil
}
