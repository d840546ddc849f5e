package schema_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

// clusterDownEnv sets how long TestClusterServerDown keeps a server down
// (a Go duration; "1m" is the minute). The default suite takes a
// few seconds.
const clusterDownEnv = "CERTFLEET_TEST_CLICKHOUSE_DOWN"

// openCluster starts a cluster of two replicas and returns a migrated
// connection to it, closed when the test ends.
func openCluster(t *testing.T) (context.Context, *testenv.ClickHouseCluster, driver.Conn) {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	c := testenv.StartClickHouseCluster(t, "certfleet_test", 2)
	t.Logf("zookeeper and 2 clickhouse servers up in %s", time.Since(start).Round(time.Millisecond))
	conn, err := schema.OpenCluster(ctx, c.DSN, c.Name, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	start = time.Now()
	if err := schema.Migrate(ctx, conn, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	t.Logf("both servers migrated in %s", time.Since(start).Round(time.Millisecond))
	return ctx, c, conn
}

// rowsOn counts the rows of table's local table on server s, each key once.
func rowsOn(t *testing.T, ctx context.Context, s *testenv.ClickHouseServer, table string) uint64 {
	t.Helper()
	var n uint64
	if err := s.Conn(t).QueryRow(ctx, "SELECT count() FROM "+table+schema.LocalSuffix+" FINAL").Scan(&n); err != nil {
		t.Fatalf("%s on %s: %v", table, s.Addr, err)
	}
	return n
}

// waitRows waits until every server holds want rows of table.
func waitRows(t *testing.T, ctx context.Context, c *testenv.ClickHouseCluster, table string, want uint64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range c.Servers {
		for {
			got := rowsOn(t, ctx, s, table)
			if got == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s on %s: %d rows, want %d", table, s.Addr, got, want)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// One cluster for the tests that keep both servers up (each starts in
// about 3 s).
func TestClusterSchema(t *testing.T) {
	ctx, c, conn := openCluster(t)
	t.Run("migrate", func(t *testing.T) { testClusterMigrate(t, ctx, c, conn) })
	t.Run("write and read", func(t *testing.T) { testClusterWriteRead(t, ctx, c, conn) })
	t.Run("retention and forget", func(t *testing.T) { testClusterRetentionForget(t, ctx, c, conn) })
	t.Run("snapshots and event retention", func(t *testing.T) { testClusterSnapshots(t, ctx, c, conn) })
	t.Run("later migration", func(t *testing.T) { testClusterLaterMigration(t, ctx, c, conn) })
}

// A month dropped by --history-retention and a tenant's rows deleted by
// `certfleet tenant forget` go from every replica: the ALTERs go to the
// local tables, and ReplicatedMergeTree repeats them.
func testClusterRetentionForget(t *testing.T, ctx context.Context, c *testenv.ClickHouseCluster, conn driver.Conn) {
	old := time.Date(2020, 1, 3, 0, 0, 0, 0, time.UTC)
	if err := schema.InsertScanRows(ctx, conn, []schema.ScanRow{{EventID: uuid.New(), JobID: uuid.New(), ScheduledAt: old,
		TenantID: "tenant-gone", DomainID: "d", Region: "eu", IP: "192.0.2.9", Outcome: "ok", StartedAt: old, ScannedAt: old}}); err != nil {
		t.Fatal(err)
	}
	if err := schema.InsertEvents(ctx, conn, []schema.StoredEvent{copyOf(t, uuid.New(), "tenant-gone", old, 1)}); err != nil {
		t.Fatal(err)
	}
	before := rowsOn(t, ctx, c.Servers[0], "scan_results")
	waitRows(t, ctx, c, "scan_results", before)
	dropped, err := schema.DropScanMonthsBefore(ctx, conn, old.AddDate(0, 2, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(dropped) != 1 || dropped[0] != "202001" {
		t.Fatalf("dropped %v, want 202001", dropped)
	}
	waitRows(t, ctx, c, "scan_results", before-1)
	if _, err := schema.ForgetTenant(ctx, conn, "tenant-gone"); err != nil {
		t.Fatal(err)
	}
	for _, s := range c.Servers {
		deadline := time.Now().Add(20 * time.Second)
		for {
			var n uint64
			if err := s.Conn(t).QueryRow(ctx, "SELECT count() FROM events_local WHERE tenant_id = 'tenant-gone'").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d events of the forgotten tenant left", s.Addr, n)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// Every table is a replicated table on each server behind a Distributed
// one, in its final shape (the reshapes create it directly), and the
// migrations ran on each server, once.
func testClusterMigrate(t *testing.T, ctx context.Context, c *testenv.ClickHouseCluster, conn driver.Conn) {
	if err := schema.Migrate(ctx, conn, testenv.Logger(t)); err != nil {
		t.Fatalf("migrate again: %v", err)
	}
	want := map[string]string{
		"events": "Distributed", "events_local": "ReplicatedReplacingMergeTree",
		"scan_results": "Distributed", "scan_results_local": "ReplicatedReplacingMergeTree",
		"audit_log": "Distributed", "audit_log_local": "ReplicatedReplacingMergeTree",
		"registrations": "Distributed", "registrations_local": "ReplicatedReplacingMergeTree",
		"scan_outcomes_hourly": "Distributed", "scan_outcomes_hourly_local": "ReplicatedAggregatingMergeTree",
		"scan_outcomes_backfill": "Distributed", "scan_outcomes_backfill_local": "ReplicatedReplacingMergeTree",
		"scan_outcomes_hourly_mv": "MaterializedView",
		"view_snapshots":          "Distributed", "view_snapshots_local": "ReplicatedReplacingMergeTree",
		"view_snapshot_rows": "Distributed", "view_snapshot_rows_local": "ReplicatedReplacingMergeTree",
		"schema_migrations": "ReplacingMergeTree",
	}
	for _, s := range c.Servers {
		sc := s.Conn(t)
		rows, err := sc.Query(ctx, "SELECT name, engine, sorting_key FROM system.tables WHERE database = currentDatabase()")
		if err != nil {
			t.Fatal(err)
		}
		got, keys := map[string]string{}, map[string]string{}
		for rows.Next() {
			var name, engine, key string
			if err := rows.Scan(&name, &engine, &key); err != nil {
				t.Fatal(err)
			}
			got[name], keys[name] = engine, key
		}
		rows.Close()
		for name, engine := range want {
			if got[name] != engine {
				t.Errorf("%s on %s: engine %q, want %q", name, s.Addr, got[name], engine)
			}
		}
		if len(got) != len(want) {
			t.Errorf("tables on %s: %v, want %v", s.Addr, got, want)
		}
		if keys["events_local"] != "tenant_id, event_id" {
			t.Errorf("events_local on %s: sorting key %q, want migration 6's", s.Addr, keys["events_local"])
		}
		if !strings.HasPrefix(keys["scan_results_local"], "tenant_id, domain_id, scheduled_at") {
			t.Errorf("scan_results_local on %s: sorting key %q, want migration 4's", s.Addr, keys["scan_results_local"])
		}
		versions, err := schema.AppliedVersions(ctx, sc)
		if err != nil {
			t.Fatal(err)
		}
		if len(versions) != len(schema.Migrations) {
			t.Errorf("versions on %s: %v, want all %d", s.Addr, versions, len(schema.Migrations))
		}
		for _, col := range []string{"http_status", "legacy_tls"} { // migration 2's, now in migration 4's table
			var n uint64
			if err := sc.QueryRow(ctx, "SELECT count() FROM system.columns WHERE database = currentDatabase() AND table = 'scan_results' AND name = ?", col).Scan(&n); err != nil || n != 1 {
				t.Errorf("scan_results on %s: column %s: %d, %v", s.Addr, col, n, err)
			}
		}
	}
}

// A migration adding a table and a column, written for one server, gives
// a replicated table behind a Distributed one on every server, the column
// on both.
func testClusterLaterMigration(t *testing.T, ctx context.Context, c *testenv.ClickHouseCluster, conn driver.Conn) {
	later := append(schema.Migrations[:len(schema.Migrations):len(schema.Migrations)], schema.Migration{
		Version: 1000, Name: "a later table",
		Statements: []string{`CREATE TABLE IF NOT EXISTS later (tenant_id String, n UInt64) ENGINE = SummingMergeTree(n) ORDER BY tenant_id`},
		Columns:    []schema.Column{{Table: "later", Name: "note", Type: "String"}},
	})
	if err := schema.MigrateWith(ctx, conn, later, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	for _, s := range c.Servers {
		var engine, cols string
		if err := s.Conn(t).QueryRow(ctx, "SELECT engine FROM system.tables WHERE database = currentDatabase() AND name = 'later_local'").Scan(&engine); err != nil {
			t.Fatal(err)
		}
		if engine != "ReplicatedSummingMergeTree" {
			t.Errorf("later_local on %s: %s", s.Addr, engine)
		}
		if err := s.Conn(t).QueryRow(ctx, "SELECT arrayStringConcat(groupArray(name), ',') FROM (SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'later')").Scan(&cols); err != nil {
			t.Fatal(err)
		}
		if cols != "tenant_id,n,note" {
			t.Errorf("later on %s: columns %s", s.Addr, cols)
		}
	}
}

// Rows written through the Distributed tables reach both replicas and
// read back through them, FINAL collapsing copies.
func testClusterWriteRead(t *testing.T, ctx context.Context, c *testenv.ClickHouseCluster, conn driver.Conn) {
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	id := uuid.New()
	for range 2 { // a redelivery: the same event twice
		if err := schema.InsertEvents(ctx, conn, []schema.StoredEvent{copyOf(t, id, "tenant-1", at, 1), copyOf(t, uuid.New(), "tenant-1", at, 2)}); err != nil {
			t.Fatal(err)
		}
	}
	job := uuid.New()
	rows, err := schema.ScanRows(scanOf(t, job, "eu", at, at.Add(time.Second), at.AddDate(0, 2, 0), "192.0.2.1", "192.0.2.2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.InsertScanRows(ctx, conn, rows); err != nil {
		t.Fatal(err)
	}
	waitRows(t, ctx, c, "events", 3)
	waitRows(t, ctx, c, "scan_results", 2)
	got, err := schema.ScanHistory(ctx, conn, "tenant-1", "dom-1", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].JobID != job {
		t.Fatalf("history through the cluster: %d rows, want the 2 of job %s", len(got), job)
	}
	n := 0
	if err := schema.ReplayEvents(ctx, conn, func(events.Envelope) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("replayed %d events, want 3", n)
	}

	// The hourly rollup's view sits on each server's Distributed
	// scan_results: a scan stored through one server counts once, not
	// once per server or replica.
	now := time.Now().UTC()
	rows, err = schema.ScanRows(scanOf(t, uuid.New(), "us", now, now.Add(time.Second), now.AddDate(0, 2, 0), "192.0.2.1", "192.0.2.2"))
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.InsertScanRows(ctx, conn, rows); err != nil {
		t.Fatal(err)
	}
	waitRows(t, ctx, c, "scan_results", 4)
	var rolled uint64
	// Distributed inserts reach the replica asynchronously: wait for them.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if err := conn.QueryRow(ctx, "SELECT countMerge(scans) FROM scan_outcomes_hourly WHERE tenant_id = 'tenant-1' AND region = 'us'").Scan(&rolled); err != nil {
			t.Fatal(err)
		}
		if rolled >= 2 || time.Now().After(deadline) {
			break
		}
	}
	if rolled != 2 {
		t.Errorf("rollup through the cluster counts %d scans of region us, want 2", rolled)
	}
}

// A server stopped (SIGKILL) while the sink writes loses nothing: the
// writes go to the other replica through the same connection, reads keep
// answering, a migration run meanwhile migrates the live one, and the
// stopped server fetches every row once it is back.
func TestClusterServerDown(t *testing.T) {
	down := 3 * time.Second
	if v := os.Getenv(clusterDownEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: %v", clusterDownEnv, err)
		}
		down = d
	}
	ctx, c, conn := openCluster(t)
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	written := 0
	// write stores one batch as the sink does: a batch that fails stays
	// pending and is stored again, until it succeeds.
	write := func() {
		t.Helper()
		batch := []schema.StoredEvent{copyOf(t, uuid.New(), "tenant-1", at, written), copyOf(t, uuid.New(), "tenant-1", at, written+1)}
		rows, err := schema.ScanRows(scanOf(t, uuid.New(), "eu", at.Add(time.Duration(written)*time.Second), at, at.AddDate(0, 2, 0), "192.0.2.1"))
		if err != nil {
			t.Fatal(err)
		}
		var lastErr error
		for attempt := 0; ; attempt++ {
			err := schema.InsertEvents(ctx, conn, batch)
			if err == nil {
				err = schema.InsertScanRows(ctx, conn, rows)
			}
			if err == nil {
				break
			}
			lastErr = err
			if attempt == 50 {
				t.Fatalf("batch %d not stored: %v", written, lastErr)
			}
			time.Sleep(100 * time.Millisecond)
		}
		written += 2
	}
	for range 5 {
		write()
	}
	// Rows the stopped server took in its last moment, before the other
	// fetched them, are missing from reads until it is back (not lost):
	// stop it once both have all.
	waitRows(t, ctx, c, "scan_results", uint64(written/2))
	stopped := c.Servers[0] // the first the connection tries
	stopped.Stop(t)
	t0 := time.Now()
	for end := time.Now().Add(down); time.Now().Before(end); {
		write()
		got, err := schema.ScanHistory(ctx, conn, "tenant-1", "dom-1", 1000)
		if err != nil {
			t.Fatalf("history with %s down: %v", stopped.Addr, err)
		}
		if len(got) != written/2 {
			t.Fatalf("history with %s down: %d scans, want %d", stopped.Addr, len(got), written/2)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("down phase %s", time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	if err := schema.Migrate(ctx, conn, testenv.Logger(t)); err != nil {
		t.Fatalf("migrate with %s down: %v", stopped.Addr, err)
	}
	t.Logf("migrate with one down %s", time.Since(t0).Round(time.Millisecond))
	restart := time.Now()
	stopped.Start(t)
	t.Logf("restarted in %s", time.Since(restart).Round(time.Millisecond))
	write()
	t.Logf("%d events and %d scans written, %s of them with %s down", written, written/2, down, stopped.Addr)
	waitRows(t, ctx, c, "events", uint64(written))
	waitRows(t, ctx, c, "scan_results", uint64(written/2))
	t.Logf("caught up %s after its restart", time.Since(restart).Round(time.Millisecond))
	if got := fmt.Sprint(rowsOn(t, ctx, stopped, "events")); got != fmt.Sprint(written) {
		t.Errorf("events on %s after its restart: %s, want %d", stopped.Addr, got, written)
	}
}

// View snapshots are stored and read through the cluster, old ones are
// dropped on every replica, and the event retention's mutation is asked
// of the local table (a Distributed table takes no DELETE).
func testClusterSnapshots(t *testing.T, ctx context.Context, c *testenv.ClickHouseCluster, conn driver.Conn) {
	view := schema.SnapshotView{DomainID: "dom-s", TenantID: "tenant-s", Version: 3, Fields: []string{"@name"}, Values: []string{"a.example|0"}}
	now := time.Now().UTC()
	for _, id := range []uint64{1, 2} {
		if err := schema.InsertSnapshotViews(ctx, conn, id, []schema.SnapshotView{view}); err != nil {
			t.Fatal(err)
		}
		if err := schema.CompleteSnapshot(ctx, conn, schema.ViewSnapshot{ID: id, StartedAt: now, WatermarkMS: now.UnixMilli(), Views: 1, CompletedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	waitRows(t, ctx, c, "view_snapshot_rows", 2)
	latest, ok, err := schema.LatestSnapshot(ctx, conn)
	if err != nil || !ok || latest.ID != 2 {
		t.Fatalf("latest snapshot through the cluster: %+v %v %v, want id 2", latest, ok, err)
	}
	if n, err := schema.DropSnapshotsBefore(ctx, conn, 2); err != nil || n == 0 {
		t.Fatalf("drop snapshots before 2: %d partitions, %v", n, err)
	}
	waitRows(t, ctx, c, "view_snapshot_rows", 1)
	old := time.Date(2020, 2, 1, 0, 0, 0, 0, time.UTC)
	if err := schema.InsertEvents(ctx, conn, []schema.StoredEvent{copyOf(t, uuid.New(), "tenant-s", old, 1)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := schema.DeleteEventsBefore(ctx, conn, old.Add(time.Hour), time.Now().Add(time.Hour))
		if err != nil {
			t.Fatalf("delete old events on the cluster: %v", err)
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the old event was never found to delete")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
