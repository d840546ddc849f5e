package schema

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// viewSnapshotsTable (migration 7) lists the snapshots of the projector's
// views that are complete: a snapshot's row goes in only after all its
// views were stored, so a snapshot cut short by a crash has none and is
// never used. snapshot_id is the snapshot's start in Unix milliseconds:
// it orders the snapshots and is the partition both tables drop an old
// snapshot by (no mutation). watermark_unix_ms is where the replay after
// the snapshot starts (apiserver/projector, viewsnapshot.go).
const viewSnapshotsTable = `CREATE TABLE IF NOT EXISTS view_snapshots (
	snapshot_id UInt64,
	started_at DateTime,
	watermark_unix_ms UInt64,
	views UInt64,
	completed_at DateTime
) ENGINE = ReplacingMergeTree()
PARTITION BY snapshot_id
ORDER BY snapshot_id`

// viewSnapshotRowsTable (migration 7) holds the views of each snapshot:
// one row per domain, its view hash as parallel arrays of fields and
// values (field_names, field_values: VALUES is a keyword), read with its
// version in one atomic step. A batch inserted
// again after an error collapses on the key; reads use FINAL.
const viewSnapshotRowsTable = `CREATE TABLE IF NOT EXISTS view_snapshot_rows (
	snapshot_id UInt64,
	domain_id String,
	tenant_id String,
	version Int64,
	field_names Array(String),
	field_values Array(String)
) ENGINE = ReplacingMergeTree()
PARTITION BY snapshot_id
ORDER BY (snapshot_id, domain_id)`

// ViewSnapshot is a complete snapshot of the views: a row of
// view_snapshots.
type ViewSnapshot struct {
	// ID is the snapshot's start in Unix milliseconds.
	ID uint64
	// StartedAt is when the snapshot started.
	StartedAt time.Time
	// WatermarkMS (Unix milliseconds): every event the projector had not
	// yet applied when the snapshot started entered its streams at or
	// after it, so a replay of the events from it (less an overlap for
	// clocks and late publishers) brings back all the snapshot lacks.
	WatermarkMS int64
	// Views is how many views the snapshot holds.
	Views uint64
	// CompletedAt is when its last view was stored.
	CompletedAt time.Time
}

// SnapshotView is one domain's view in a snapshot.
type SnapshotView struct {
	DomainID string
	TenantID string
	// Version is the view's version when read.
	Version int64
	// Fields and Values are the view hash's fields and their values, in
	// the same order.
	Fields []string
	Values []string
}

// InsertSnapshotViews stores views of snapshot id in one insert. Storing
// one again is harmless: reads use FINAL.
func InsertSnapshotViews(ctx context.Context, conn driver.Conn, id uint64, views []SnapshotView) error {
	n := len(views)
	var (
		ids              = make([]uint64, n)
		domains, tenants = make([]string, n), make([]string, n)
		versions         = make([]int64, n)
		fields, values   = make([][]string, n), make([][]string, n)
	)
	for i, v := range views {
		ids[i], domains[i], tenants[i], versions[i] = id, v.DomainID, v.TenantID, v.Version
		fields[i], values[i] = nonNil(v.Fields), nonNil(v.Values)
	}
	return insertColumns(ctx, conn, "view_snapshot_rows", "snapshot_id, domain_id, tenant_id, version, field_names, field_values",
		ids, domains, tenants, versions, fields, values)
}

// CompleteSnapshot records s as complete. Call it only once every view of
// the snapshot is stored: from then on LatestSnapshot may return it.
func CompleteSnapshot(ctx context.Context, conn driver.Conn, s ViewSnapshot) error {
	return insertColumns(ctx, conn, "view_snapshots", "snapshot_id, started_at, watermark_unix_ms, views, completed_at",
		[]uint64{s.ID}, []time.Time{clampDateTime(s.StartedAt)}, []uint64{uint64(max(s.WatermarkMS, 0))},
		[]uint64{s.Views}, []time.Time{clampDateTime(s.CompletedAt)})
}

// LatestSnapshot returns the newest complete snapshot whose views are all
// there; false when there is none.
func LatestSnapshot(ctx context.Context, conn driver.Conn) (ViewSnapshot, bool, error) {
	rows, err := conn.Query(ctx, `SELECT snapshot_id, started_at, watermark_unix_ms, views, completed_at
		FROM view_snapshots FINAL ORDER BY snapshot_id DESC`)
	if err != nil {
		return ViewSnapshot{}, false, fmt.Errorf("query view snapshots: %w", err)
	}
	var snaps []ViewSnapshot
	for rows.Next() {
		var (
			s  ViewSnapshot
			wm uint64
		)
		if err := rows.Scan(&s.ID, &s.StartedAt, &wm, &s.Views, &s.CompletedAt); err != nil {
			rows.Close()
			return ViewSnapshot{}, false, fmt.Errorf("read view snapshots: %w", err)
		}
		s.WatermarkMS, s.StartedAt, s.CompletedAt = int64(wm), s.StartedAt.UTC(), s.CompletedAt.UTC()
		snaps = append(snaps, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return ViewSnapshot{}, false, fmt.Errorf("read view snapshots: %w", err)
	}
	for _, s := range snaps {
		// A snapshot whose rows are not all there (dropped by hand, a
		// partition lost) is skipped for the one before it.
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT uniqExact(domain_id) FROM view_snapshot_rows WHERE snapshot_id = ?", s.ID).Scan(&n); err != nil {
			return ViewSnapshot{}, false, fmt.Errorf("count views of snapshot %d: %w", s.ID, err)
		}
		if n == s.Views {
			return s, true, nil
		}
	}
	return ViewSnapshot{}, false, nil
}

// ReadSnapshotViews calls fn with every view of snapshot id, streamed, and
// stops at the first error fn returns.
func ReadSnapshotViews(ctx context.Context, conn driver.Conn, id uint64, fn func(SnapshotView) error) error {
	rows, err := conn.Query(ctx, `SELECT domain_id, tenant_id, version, field_names, field_values
		FROM view_snapshot_rows FINAL WHERE snapshot_id = ?`, id)
	if err != nil {
		return fmt.Errorf("query snapshot %d: %w", id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var v SnapshotView
		if err := rows.Scan(&v.DomainID, &v.TenantID, &v.Version, &v.Fields, &v.Values); err != nil {
			return fmt.Errorf("read snapshot %d: %w", id, err)
		}
		if len(v.Fields) != len(v.Values) {
			return fmt.Errorf("read snapshot %d: view of %s has %d fields and %d values", id, v.DomainID, len(v.Fields), len(v.Values))
		}
		if err := fn(v); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read snapshot %d: %w", id, err)
	}
	return nil
}

// snapshotPartition is how system.parts names a partition of snapshot_id;
// only such a name is spliced into DROP PARTITION.
var snapshotPartition = regexp.MustCompile(`^[0-9]{1,20}$`)

// DropSnapshotsBefore drops every snapshot, complete or cut short, whose id
// is below id, from both tables, by partition, and returns how many
// partitions it dropped.
func DropSnapshotsBefore(ctx context.Context, conn driver.Conn, id uint64) (int, error) {
	dropped := 0
	for _, table := range []string{"view_snapshots", "view_snapshot_rows"} {
		rows, err := conn.Query(ctx, `SELECT DISTINCT partition FROM system.parts
			WHERE database = currentDatabase() AND table = ? AND active`, localTable(conn, table))
		if err != nil {
			return dropped, fmt.Errorf("list %s partitions: %w", table, err)
		}
		var old []string
		for rows.Next() {
			var p string
			if err := rows.Scan(&p); err != nil {
				rows.Close()
				return dropped, fmt.Errorf("read %s partitions: %w", table, err)
			}
			if !snapshotPartition.MatchString(p) {
				continue
			}
			if n, err := strconv.ParseUint(p, 10, 64); err == nil && n < id {
				old = append(old, p)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return dropped, fmt.Errorf("read %s partitions: %w", table, err)
		}
		for _, p := range old {
			if err := conn.Exec(ctx, "ALTER TABLE "+table+" DROP PARTITION "+p); err != nil {
				return dropped, fmt.Errorf("drop %s partition %s: %w", table, p, err)
			}
			dropped++
		}
	}
	return dropped, nil
}

// DeleteEventsBefore deletes the stored events that occurred before
// cutoff and were stored before storedBefore (an event published late
// stays until a snapshot covers it), with an ALTER TABLE ... DELETE
// mutation (18.16 has no TTL), and returns how many rows it asked to
// delete. The mutation rewrites the table's parts in the background;
// nothing is asked while an earlier mutation of events is still running,
// or when no row is that old, so a caller may ask every hour.
func DeleteEventsBefore(ctx context.Context, conn driver.Conn, cutoff, storedBefore time.Time) (uint64, error) {
	ms, sec := cutoff.UnixMilli(), storedBefore.Unix()
	if ms <= 0 || sec <= 0 {
		return 0, nil
	}
	var running uint64
	if err := conn.QueryRow(ctx, `SELECT count() FROM system.mutations
		WHERE database = currentDatabase() AND table = ? AND is_done = 0`, localTable(conn, "events")).Scan(&running); err != nil {
		return 0, fmt.Errorf("list events mutations: %w", err)
	}
	if running > 0 {
		return 0, nil
	}
	where := "occurred_at_unix_ms < " + strconv.FormatInt(ms, 10) + " AND inserted_at < toDateTime(" + strconv.FormatInt(sec, 10) + ")"
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM events WHERE "+where).Scan(&n); err != nil {
		return 0, fmt.Errorf("count old events: %w", err)
	}
	if n == 0 {
		return 0, nil
	}
	if err := conn.Exec(ctx, "ALTER TABLE events DELETE WHERE "+where); err != nil {
		return 0, fmt.Errorf("delete events before %s: %w", cutoff.UTC().Format(time.RFC3339), err)
	}
	return n, nil
}

// KeptBeforeWatermark is how far before the latest complete snapshot's
// watermark the event store is always kept, whatever the retention: more
// than any replay overlap a rebuild uses.
const KeptBeforeWatermark = 24 * time.Hour

// DeleteExpiredEvents deletes the events older than retention before now
// (DeleteEventsBefore), but never one a rebuild from the latest complete
// snapshot replays: the cutoff is at most that snapshot's watermark less
// KeptBeforeWatermark, and an event stored after that stays too. With no complete snapshot nothing is deleted,
// since the full replay then needs every event. It returns the cutoff used
// (zero when none) and how many rows it asked to delete.
func DeleteExpiredEvents(ctx context.Context, conn driver.Conn, now time.Time, retention time.Duration) (time.Time, uint64, error) {
	snap, ok, err := LatestSnapshot(ctx, conn)
	if err != nil || !ok {
		return time.Time{}, 0, err
	}
	cutoff := now.Add(-retention)
	keep := time.UnixMilli(snap.WatermarkMS).Add(-KeptBeforeWatermark)
	if keep.Before(cutoff) {
		cutoff = keep
	}
	n, err := DeleteEventsBefore(ctx, conn, cutoff, keep)
	return cutoff, n, err
}
