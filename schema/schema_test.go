package schema_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestOpenCreatesDatabase(t *testing.T) {
	db := testenv.ClickHouse(t)
	ctx := context.Background()
	name := db.Database + "_new"
	dsn := "clickhouse://" + db.Addr + "/" + name
	t.Cleanup(func() {
		if c, err := schema.Open(ctx, "clickhouse://"+db.Addr+"/default", testenv.Logger(t)); err == nil {
			_ = c.Exec(ctx, "DROP DATABASE IF EXISTS "+name)
			_ = c.Close()
		}
	})
	for i := range 2 { // the second Open finds it existing
		conn, err := schema.Open(ctx, dsn, testenv.Logger(t))
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		var got string
		if err := conn.QueryRow(ctx, "SELECT currentDatabase()").Scan(&got); err != nil {
			t.Fatalf("current database: %v", err)
		}
		_ = conn.Close()
		if got != name {
			t.Fatalf("current database: got %q, want %q", got, name)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	for _, tc := range []struct{ name, dsn string }{
		{"bad database name", "clickhouse://127.0.0.1:1/bad-name;drop"},
		{"not a dsn", "://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := schema.Open(context.Background(), tc.dsn, testenv.Logger(t)); err == nil {
				t.Fatalf("open %q: got no error, want one", tc.dsn)
			}
		})
	}
}

func TestMigrate(t *testing.T) {
	db := testenv.ClickHouse(t)
	ctx := context.Background()
	conn, err := schema.Open(ctx, db.DSN, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// Two processes at once, then a restart: none may fail.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Go(func() {
			c, err := schema.Open(ctx, db.DSN, testenv.Logger(t))
			if err != nil {
				errs[i] = err
				return
			}
			defer c.Close()
			errs[i] = schema.Migrate(ctx, c, testenv.Logger(t))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent migrate: %v", err)
	}
	if err := schema.Migrate(ctx, conn, testenv.Logger(t)); err != nil {
		t.Fatalf("migrate again: %v", err)
	}

	versions, err := schema.AppliedVersions(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	var want []int
	for _, m := range schema.Migrations {
		want = append(want, m.Version)
	}
	if !slices.Equal(versions, want) {
		t.Fatalf("applied versions: got %v, want %v", versions, want)
	}

	for _, tc := range []struct {
		table   string
		columns string
	}{
		{"events", schema.EventColumns},
		{"scan_results", schema.ScanColumns},
		{"audit_log", schema.AuditColumns},
		{"schema_migrations", "version, name, applied_at"},
	} {
		t.Run(tc.table, func(t *testing.T) {
			if got, want := columns(t, db, tc.table), strings.Split(tc.columns, ", "); !slices.Equal(got, want) {
				t.Fatalf("columns: got %v, want %v", got, want)
			}
		})
	}
}

// A migration's columns are added once, in order, however often the
// migration runs: a process that died after adding some of them, or two
// processes at once.
func TestMigrateColumns(t *testing.T) {
	db := testenv.ClickHouse(t)
	conn := db.Conn(t)
	ctx := context.Background()
	create := schema.Migration{Version: 1, Name: "t", Statements: []string{"CREATE TABLE IF NOT EXISTS t (a UInt8) ENGINE = MergeTree() ORDER BY a"}}
	partial := schema.Migration{Version: 2, Name: "b", Columns: []schema.Column{{Table: "t", Name: "b", Type: "String"}}}
	if err := schema.MigrateWith(ctx, conn, []schema.Migration{create, partial}, testenv.Logger(t)); err != nil {
		t.Fatalf("first migrate: %v", err)
	}
	full := schema.Migration{Version: 3, Name: "b, c, d", Columns: []schema.Column{
		{Table: "t", Name: "b", Type: "String"}, {Table: "t", Name: "c", Type: "Array(String)"}, {Table: "t", Name: "d", Type: "Int64"},
	}}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() {
			errs[i] = schema.MigrateWith(ctx, db.Conn(t), []schema.Migration{create, partial, full}, testenv.Logger(t))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent migrate: %v", err)
	}
	if got := columns(t, db, "t"); !slices.Equal(got, []string{"a", "b", "c", "d"}) {
		t.Errorf("columns: got %v, want [a b c d]", got)
	}
	bad := schema.Migration{Version: 4, Name: "bad", Columns: []schema.Column{{Table: "t", Name: "e; DROP TABLE t", Type: "String"}}}
	if err := schema.MigrateWith(ctx, conn, []schema.Migration{create, partial, full, bad}, testenv.Logger(t)); err == nil {
		t.Error("column with a bad name: got no error, want one")
	}
}

// columns lists a table's columns in table order.
func columns(t *testing.T, db testenv.ClickHouseDB, table string) []string {
	t.Helper()
	// No ORDER BY position: 18.16 lacks that column but lists in table order.
	rows, err := db.Conn(t).Query(context.Background(), "SELECT name FROM system.columns WHERE database = ? AND table = ?", db.Database, table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		got = append(got, n)
	}
	return got
}

func TestMigrateRejectsOutOfOrder(t *testing.T) {
	db := testenv.ClickHouse(t)
	conn := db.Conn(t)
	bad := []schema.Migration{{Version: 2, Name: "b"}, {Version: 1, Name: "a"}}
	if err := schema.MigrateWith(context.Background(), conn, bad, testenv.Logger(t)); err == nil {
		t.Fatal("migrate out-of-order list: got no error, want one")
	}
}

// migrated returns a connection to a fresh, migrated database.
func migrated(t *testing.T) (context.Context, testenv.ClickHouseDB) {
	t.Helper()
	db := testenv.ClickHouse(t)
	ctx := context.Background()
	if err := schema.Migrate(ctx, db.Conn(t), testenv.Logger(t)); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return ctx, db
}

func TestReplayEvents(t *testing.T) {
	ctx, db := migrated(t)
	conn := db.Conn(t)
	base := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	mk := func(name string, at time.Time) events.Envelope {
		e, err := events.New(name, "tenant-1", "agg-1", map[string]int{"n": at.Nanosecond()})
		if err != nil {
			t.Fatal(err)
		}
		e.OccurredAt = at
		return e
	}
	// Same second, different milliseconds, inserted out of order, and the
	// first one inserted twice as a redelivery would.
	added := mk(events.DomainAdded, base.Add(100*time.Millisecond))
	removed := mk(events.DomainRemoved, base.Add(900*time.Millisecond))
	earlier := mk(events.AccountCreated, base.Add(-time.Hour))
	insert := func(evs ...events.Envelope) {
		var rows []schema.StoredEvent
		for _, e := range evs {
			rows = append(rows, schema.StoredEvent{Event: e, Stream: events.StreamEvents, InsertedAt: time.Now()})
		}
		if err := schema.InsertEvents(ctx, conn, rows); err != nil {
			t.Fatal(err)
		}
	}
	insert(removed, added)
	insert(added, earlier)

	var got []events.Envelope
	if err := schema.ReplayEvents(ctx, conn, func(e events.Envelope) error {
		got = append(got, e)
		return nil
	}); err != nil {
		t.Fatalf("replay: %v", err)
	}
	want := []events.Envelope{earlier, added, removed}
	if len(got) != len(want) {
		t.Fatalf("replayed %d events, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.EventID != w.EventID || g.Name != w.Name || !g.OccurredAt.Equal(w.OccurredAt) ||
			g.TenantID != w.TenantID || g.AggregateID != w.AggregateID || string(g.Payload) != string(w.Payload) {
			t.Errorf("event %d: got %+v, want %+v", i, g, w)
		}
	}

	stop := errors.New("stop")
	calls := 0
	err := schema.ReplayEvents(ctx, conn, func(events.Envelope) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("replay with failing fn: got err %v after %d calls, want %v after 1", err, calls, stop)
	}
}

func TestScanRowsAndHistory(t *testing.T) {
	ctx, db := migrated(t)
	conn := db.Conn(t)
	started := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	notBefore := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	job := uuid.New()
	p := events.ScanCompletedV1{
		JobID: job, DomainID: "dom-1", Host: "a.example", Port: 8443, Region: "eu", Agent: "agent-1",
		ScheduledAt: started.Add(-time.Minute), StartedAt: started, FinishedAt: started.Add(1500 * time.Millisecond),
		Results: []events.IPResult{
			{
				IP: "192.0.2.1", Outcome: events.OutcomeOK, CertificateFound: true, Subject: "CN=a.example",
				Issuer: "CN=CA", SANs: []string{"a.example", "b.example"}, Serial: "0a", NotBefore: notBefore,
				NotAfter: time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), LeafSHA256: "ab", KeyType: "ECDSA",
				KeyBits: 256, SignatureAlgorithm: "ECDSA-SHA256", ChainLength: 2, TLSVersion: "TLS 1.3",
				CipherSuite: "TLS_AES_128_GCM_SHA256", ChainValid: true, HostnameValid: false, ConnectMS: 3, HandshakeMS: 7,
				HTTPStatus: 301, HSTSMaxAge: 31536000, HSTSIncludeSubdomains: true, LegacyTLSChecked: true, LegacyTLS: []string{"TLS 1.1"},
			},
			{IP: "", Outcome: events.OutcomeTimeout, Detail: "connect"},
		},
	}
	e, err := events.NewWithID(events.ScanEventID(job, "eu"), events.ScanCompleted, "tenant-1", "dom-1", p)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := schema.ScanRows(e)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("rows: got %d, want 2", len(rows))
	}
	for range 2 { // a redelivery stores the same rows again
		if err := schema.InsertScanRows(ctx, conn, rows); err != nil {
			t.Fatal(err)
		}
	}
	got, err := schema.ScanHistory(ctx, conn, "tenant-1", "dom-1", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("history: got %d rows, want 2", len(got))
	}
	byIP := map[string]schema.ScanRow{}
	for _, r := range got {
		byIP[r.IP] = r
	}
	ok, failed := byIP["192.0.2.1"], byIP[""]
	for _, c := range []struct {
		field     string
		got, want any
	}{
		{"event_id", ok.EventID, e.EventID},
		{"job_id", ok.JobID, job},
		{"scheduled_at", ok.ScheduledAt.Equal(started.Add(-time.Minute)), true},
		{"tenant_id", ok.TenantID, "tenant-1"},
		{"domain_id", ok.DomainID, "dom-1"},
		{"host", ok.Host, "a.example"},
		{"port", ok.Port, uint16(8443)},
		{"region", ok.Region, "eu"},
		{"agent", ok.Agent, "agent-1"},
		{"outcome", ok.Outcome, "ok"},
		{"certificate_found", ok.CertificateFound, true},
		{"subject", ok.Subject, "CN=a.example"},
		{"issuer", ok.Issuer, "CN=CA"},
		{"sans", strings.Join(ok.SANs, ","), "a.example,b.example"},
		{"serial", ok.Serial, "0a"},
		{"not_before", ok.NotBefore.Equal(notBefore), true},
		{"not_after (no expiry, exact)", ok.NotAfter.Equal(events.NoExpiry), true},
		{"no expiry", ok.HasNoExpiry(), true},
		{"leaf_sha256", ok.LeafSHA256, "ab"},
		{"key_type", ok.KeyType, "ECDSA"},
		{"key_bits", ok.KeyBits, uint16(256)},
		{"signature_algorithm", ok.SignatureAlgorithm, "ECDSA-SHA256"},
		{"chain_length", ok.ChainLength, uint8(2)},
		{"tls_version", ok.TLSVersion, "TLS 1.3"},
		{"cipher_suite", ok.CipherSuite, "TLS_AES_128_GCM_SHA256"},
		{"chain_valid", ok.ChainValid, true},
		{"hostname_valid", ok.HostnameValid, false},
		{"connect_ms", ok.ConnectMS, uint32(3)},
		{"handshake_ms", ok.HandshakeMS, uint32(7)},
		{"started_at", ok.StartedAt.Equal(started), true},
		{"scanned_at", ok.ScannedAt.Equal(started.Add(time.Second)), true},
		{"http_status", ok.HTTPStatus, uint16(301)},
		{"hsts_max_age", ok.HSTSMaxAge, int64(31536000)},
		{"hsts_include_subdomains", ok.HSTSIncludeSubdomains, true},
		{"legacy_tls_checked", ok.LegacyTLSChecked, true},
		{"legacy_tls", strings.Join(ok.LegacyTLS, ","), "TLS 1.1"},
		{"failed outcome", failed.Outcome, "timeout"},
		{"failed detail", failed.Detail, "connect"},
		{"failed not_after", failed.NotAfter == nil, true},
		{"failed no expiry", failed.HasNoExpiry(), false},
		{"failed sans", len(failed.SANs), 0},
		{"failed http_status", failed.HTTPStatus, uint16(0)},
		{"failed legacy_tls_checked", failed.LegacyTLSChecked, false},
		{"failed legacy_tls", len(failed.LegacyTLS), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.field, c.got, c.want)
		}
	}
}
