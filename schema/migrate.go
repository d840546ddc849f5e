package schema

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.uber.org/zap"
)

// Migration is one step of the schema. Its statements and its Step must be
// idempotent (IF NOT EXISTS and the like): a process that dies halfway
// through a migration runs all of it again, and two processes starting
// together may both apply it, interleaved in any way.
type Migration struct {
	// Version orders the migrations; it is never reused or changed once
	// released.
	Version int
	// Name says what the migration does.
	Name string
	// Statements run in order.
	Statements []string
	// Columns are added to existing tables after Statements, in order,
	// each only if its table lacks it: ClickHouse 18.16 has no ADD COLUMN
	// IF NOT EXISTS.
	Columns []Column
	// Step, when set, runs after Columns: for what statements alone cannot
	// do idempotently, such as copying a table into a new shape. It must
	// hold the same contract, working from the state it finds.
	Step func(ctx context.Context, conn driver.Conn) error
	// reshape, when set, runs after Step: it gives a table a new sorting
	// key (reshape.go). On a cluster it creates the table's final shape
	// directly, and the earlier migrations' statements and columns on
	// that table are skipped (superseded).
	reshape *reshape
}

// Column is a column a migration adds to a table; it goes after the
// table's last column.
type Column struct {
	Table, Name, Type string
}

// Migrations is the schema, oldest first. Append to it; never edit a
// released entry.
var Migrations = []Migration{
	{
		Version: 1,
		Name:    "events and scan_results",
		Statements: []string{
			// The event store, reshaped by migration 6 (eventsTable): an
			// event published again after a crash (a job rescanned) has
			// the same id but a later occurred_at, so this key kept both.
			// occurred_at_unix_ms keeps the envelope's millisecond precision
			// (DateTime64 is not available on 18.16), so that a replay
			// orders events of the same second as they happened.
			`CREATE TABLE IF NOT EXISTS events (
				event_id UUID,
				name String,
				occurred_at DateTime,
				occurred_at_unix_ms UInt64,
				tenant_id String,
				aggregate_id String,
				payload String,
				stream String,
				inserted_at DateTime
			) ENGINE = ReplacingMergeTree()
			PARTITION BY toYYYYMM(occurred_at)
			ORDER BY (tenant_id, occurred_at, event_id)`,
			// One row per scan, IP and region, from scan.completed events.
			`CREATE TABLE IF NOT EXISTS scan_results (
				event_id UUID,
				job_id UUID,
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
				not_before Nullable(DateTime),
				not_after Nullable(DateTime),
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
				scanned_at DateTime
			) ENGINE = ReplacingMergeTree()
			PARTITION BY toYYYYMM(scanned_at)
			ORDER BY (tenant_id, domain_id, scanned_at, region, ip, event_id)`,
		},
	},
	{
		Version: 2,
		Name:    "scan_results: http status, hsts, legacy tls",
		// Rows stored before read the defaults: 0 and empty.
		Columns: []Column{
			{"scan_results", "http_status", "UInt16"},
			{"scan_results", "hsts_max_age", "Int64"},
			{"scan_results", "hsts_include_subdomains", "UInt8"},
			{"scan_results", "legacy_tls_checked", "UInt8"},
			{"scan_results", "legacy_tls", "Array(String)"},
		},
	},
	{
		Version: 3,
		Name:    "audit_log",
		Statements: []string{
			// One row per audit.recorded.v1 event (audit.go): the client
			// certificate API's audit records, read by GET /api/audit one
			// tenant and a time range at a time, newest first. A
			// redelivered event has the same sorting key and collapses on
			// merge; reads use FINAL. details is the JSON object as text
			// (no JSON type on 18.16); response_time_ms keeps fractions.
			// stream_ms and stream_seq are the event's entry id on the
			// events stream: they order records of the same millisecond
			// as they were recorded.
			`CREATE TABLE IF NOT EXISTS audit_log (
				event_id UUID,
				occurred_at DateTime,
				occurred_at_unix_ms UInt64,
				tenant_id String,
				operation String,
				resource_type String,
				resource_id String,
				status String,
				user String,
				key_id String,
				ip String,
				method String,
				route String,
				http_status UInt16,
				response_time_ms Float64,
				details String,
				error String,
				stream_ms UInt64,
				stream_seq UInt64,
				inserted_at DateTime
			) ENGINE = ReplacingMergeTree()
			PARTITION BY toYYYYMM(occurred_at)
			ORDER BY (tenant_id, occurred_at, event_id)`,
		},
	},
	{
		Version: 4,
		Name:    "scan_results: one row per job, region and ip, sorted by the job's scheduled time",
		// See scanResultsTable for the shape, reshape for how the rows
		// move.
		reshape: &scanResultsReshape,
	},
	{
		Version:    5,
		Name:       "registrations",
		Statements: []string{registrationsTable},
	},
	{
		Version: 6,
		Name:    "events: one row per event id, whenever its copies occurred",
		// See eventsTable for the shape, reshape for how the rows move.
		reshape: &eventsReshape,
	},
	{
		Version:    7,
		Name:       "view snapshots",
		Statements: []string{viewSnapshotsTable, viewSnapshotRowsTable},
	},
	{
		Version: 8,
		Name:    "scan_outcomes_hourly: GET /stats' scans by region and outcome, rolled up by hour",
		// See rollup.go: the tables, then the view and the backfill of
		// the rows before it.
		Statements: []string{scanOutcomesHourlyTable, scanOutcomesBackfillTable},
		Step:       rollupScanOutcomes,
	},
}

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version UInt32,
	name String,
	applied_at DateTime
) ENGINE = ReplacingMergeTree()
ORDER BY version`

// Migrate applies the migrations the database lacks, in order, and records
// each in schema_migrations once all its statements succeeded. On a
// connection of OpenCluster it does so on every server of the cluster.
func Migrate(ctx context.Context, conn driver.Conn, logger *zap.Logger) error {
	return MigrateWith(ctx, conn, Migrations, logger)
}

// MigrateWith applies the given migrations instead of Migrations; tests of
// the migration mechanism use it.
func MigrateWith(ctx context.Context, conn driver.Conn, migrations []Migration, logger *zap.Logger) error {
	logger = logger.Named("schema")
	if c, ok := conn.(*clusterConn); ok {
		return c.migrateServers(ctx, migrations, logger)
	}
	return migrate(ctx, conn, conn, migrations, logger)
}

// migrate applies migrations on one server: ddl runs them (a clusterConn
// on a cluster), conn keeps schema_migrations, which is the server's own.
func migrate(ctx context.Context, conn, ddl driver.Conn, migrations []Migration, logger *zap.Logger) error {
	if err := conn.Exec(ctx, createMigrationsTable); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	applied, err := AppliedVersions(ctx, conn)
	if err != nil {
		return err
	}
	done := make(map[int]bool, len(applied))
	for _, v := range applied {
		done[v] = true
	}
	// skip tells whether a cluster skips what version does to table.
	skip := func(version int, table string) bool { return false }
	if _, ok := ddl.(*clusterConn); ok {
		last := superseded(migrations)
		skip = func(version int, table string) bool { return version < last[table] }
	}
	last := 0
	for _, m := range migrations {
		if m.Version <= last {
			return fmt.Errorf("migration %d (%s) is out of order after %d", m.Version, m.Name, last)
		}
		last = m.Version
		if done[m.Version] {
			continue
		}
		for i, stmt := range m.Statements {
			if skip(m.Version, tableOf(stmt)) {
				continue
			}
			if err := ddl.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("migration %d (%s) statement %d: %w", m.Version, m.Name, i+1, err)
			}
		}
		for _, c := range m.Columns {
			if skip(m.Version, c.Table) {
				continue
			}
			if err := addColumn(ctx, ddl, c); err != nil {
				return fmt.Errorf("migration %d (%s): %w", m.Version, m.Name, err)
			}
		}
		if m.Step != nil {
			if err := m.Step(ctx, ddl); err != nil {
				return fmt.Errorf("migration %d (%s): %w", m.Version, m.Name, err)
			}
		}
		if m.reshape != nil && !skip(m.Version, m.reshape.table) {
			if err := m.reshape.run(ctx, ddl); err != nil {
				return fmt.Errorf("migration %d (%s): %w", m.Version, m.Name, err)
			}
		}
		// Two processes migrating at once may both record the version; the
		// table collapses duplicates and AppliedVersions reads distinct ones.
		if err := record(ctx, conn, m); err != nil {
			return fmt.Errorf("record migration %d (%s): %w", m.Version, m.Name, err)
		}
		logger.Info("applied migration", zap.Int("version", m.Version), zap.String("name", m.Name))
	}
	return nil
}

// addColumn adds c unless its table has it. Two processes may both find it
// missing; the one whose ALTER then fails finds it there and is done. Each
// column is added only once the ones before it exist, so the columns keep
// the migrations' order even then.
func addColumn(ctx context.Context, conn driver.Conn, c Column) error {
	if !validIdentifier.MatchString(c.Table) || !validIdentifier.MatchString(c.Name) {
		return fmt.Errorf("add column %s.%s: bad name", c.Table, c.Name)
	}
	if ok, err := hasColumn(ctx, conn, c); err != nil || ok {
		return err
	}
	err := conn.Exec(ctx, "ALTER TABLE "+c.Table+" ADD COLUMN "+c.Name+" "+c.Type)
	if err == nil {
		return nil
	}
	if ok, cerr := hasColumn(ctx, conn, c); cerr == nil && ok {
		return nil
	}
	return fmt.Errorf("add column %s.%s: %w", c.Table, c.Name, err)
}

func hasColumn(ctx context.Context, conn driver.Conn, c Column) (bool, error) {
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = ? AND name = ?",
		c.Table, c.Name).Scan(&n); err != nil {
		return false, fmt.Errorf("look up column %s.%s: %w", c.Table, c.Name, err)
	}
	return n > 0, nil
}

// record inserts through a batch: ClickHouse 18.16 waits for a data block
// after an INSERT ... VALUES sent as a plain query, so Exec would hang.
func record(ctx context.Context, conn driver.Conn, m Migration) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO schema_migrations (version, name, applied_at)")
	if err != nil {
		return err
	}
	if err := b.Append(uint32(m.Version), m.Name, time.Now().UTC()); err != nil {
		_ = b.Abort()
		return err
	}
	return b.Send()
}

// AppliedVersions lists the versions recorded in schema_migrations, in
// ascending order.
func AppliedVersions(ctx context.Context, conn driver.Conn) ([]int, error) {
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM schema_migrations ORDER BY version")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", err)
		}
		out = append(out, int(v))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	return out, nil
}
