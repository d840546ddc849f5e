package schema_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

// scanOf is the scan.completed event of job seen from region, with one ok
// result per ip whose certificate expires at notAfter.
func scanOf(t *testing.T, job uuid.UUID, region string, scheduled, started time.Time, notAfter time.Time, ips ...string) events.Envelope {
	t.Helper()
	p := events.ScanCompletedV1{JobID: job, DomainID: "dom-1", Host: "a.example", Port: 443, Region: region, Agent: "agent-" + region,
		ScheduledAt: scheduled, StartedAt: started, FinishedAt: started.Add(2 * time.Second)}
	for _, ip := range ips {
		p.Results = append(p.Results, events.IPResult{IP: ip, Outcome: events.OutcomeOK, CertificateFound: true, NotAfter: notAfter, ChainLength: 2})
	}
	e, err := events.NewWithID(events.ScanEventID(job, region), events.ScanCompleted, "tenant-1", "dom-1", p)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func store(t *testing.T, ctx context.Context, db testenv.ClickHouseDB, evs ...events.Envelope) {
	t.Helper()
	for _, e := range evs {
		rows, err := schema.ScanRows(e)
		if err != nil {
			t.Fatal(err)
		}
		if err := schema.InsertScanRows(ctx, db.Conn(t), rows); err != nil {
			t.Fatal(err)
		}
	}
}

// A job redelivered after a crash is scanned again, later, with the same
// job id and scheduled time: it reads as one row per region and IP, the
// latest scan's. Another job of the same domain stays apart, even when it
// was scheduled in the same second.
func TestRescanIsOneRow(t *testing.T) {
	ctx, db := migrated(t)
	scheduled := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	job, manual := uuid.New(), uuid.New()
	first, second := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2028, 1, 1, 0, 0, 0, 0, time.UTC)
	store(t, ctx, db,
		scanOf(t, job, "eu", scheduled, scheduled.Add(time.Second), first, "192.0.2.1", "192.0.2.2"),
		scanOf(t, job, "us", scheduled, scheduled.Add(time.Second), first, "192.0.2.1"),
		// The redelivery, scanned 90 s later and stored twice (the sink's
		// own redelivery too).
		scanOf(t, job, "eu", scheduled, scheduled.Add(91*time.Second), second, "192.0.2.1", "192.0.2.2"),
		scanOf(t, job, "eu", scheduled, scheduled.Add(91*time.Second), second, "192.0.2.1", "192.0.2.2"),
		scanOf(t, manual, "eu", scheduled, scheduled.Add(time.Second), first, "192.0.2.1"),
	)
	got, err := schema.ScanHistory(ctx, db.Conn(t), "tenant-1", "dom-1", 100)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, r := range got {
		k := r.JobID.String()[:4] + "/" + r.Region + "/" + r.IP
		if r.JobID == job && r.Region == "eu" && !r.NotAfter.Equal(second) {
			t.Errorf("%s: got not_after %s, want the later scan's %s", k, r.NotAfter, second)
		}
		keys = append(keys, k)
	}
	if len(got) != 4 {
		t.Fatalf("got %d rows %v, want 4 (job eu ×2, job us, manual eu)", len(got), keys)
	}
}

// An event of an agent that predates scheduled_at still stores, keyed by
// the scan's start; a value its column cannot hold refuses the event.
func TestScanRowsChecks(t *testing.T) {
	started := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	legacy := scanOf(t, uuid.New(), "eu", time.Time{}, started, events.NoExpiry, "192.0.2.1")
	rows, err := schema.ScanRows(legacy)
	if err != nil {
		t.Fatalf("legacy event: %v", err)
	}
	if !rows[0].ScheduledAt.Equal(started) {
		t.Errorf("legacy event: got scheduled_at %s, want the start %s", rows[0].ScheduledAt, started)
	}
	for _, tc := range []struct {
		name    string
		payload string
		want    string
	}{
		{"port 70000", `{"port":70000,"results":[{"ip":"192.0.2.1"}]}`, "port 70000"},
		{"chain of 300", `{"port":443,"results":[{"ip":"192.0.2.1","chain_length":300}]}`, "chain_length 300"},
		{"connect_ms past UInt32", `{"port":443,"results":[{"ip":"192.0.2.1","connect_ms":4294967296}]}`, "connect_ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := events.Envelope{EventID: uuid.New(), Name: events.ScanCompleted, Payload: []byte(tc.payload)}
			rows, err := schema.ScanRows(e)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %d rows and error %v, want an error naming %q", len(rows), err, tc.want)
			}
		})
	}
}

// oldColumns are scan_results' columns before migration 4.
const oldColumns = "event_id, job_id, tenant_id, domain_id, host, port, region, agent, ip, outcome, detail, " +
	"certificate_found, subject, issuer, sans, serial, not_before, not_after, leaf_sha256, key_type, key_bits, " +
	"signature_algorithm, chain_length, tls_version, cipher_suite, chain_valid, hostname_valid, connect_ms, " +
	"handshake_ms, started_at, scanned_at, http_status, hsts_max_age, hsts_include_subdomains, legacy_tls_checked, legacy_tls"

// insertOld stores a row the way the sink did before migration 4.
func insertOld(t *testing.T, db testenv.ClickHouseDB, job uuid.UUID, ip string, notAfter *time.Time, started time.Time) {
	t.Helper()
	b, err := db.Conn(t).PrepareBatch(context.Background(), "INSERT INTO scan_results ("+oldColumns+")")
	if err != nil {
		t.Fatal(err)
	}
	notBefore := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	found := uint8(0)
	if notAfter != nil {
		found = 1
	}
	if err := b.Append(events.ScanEventID(job, "eu"), job, "tenant-1", "dom-1", "a.example", uint16(443), "eu", "agent-1", ip,
		"ok", "", found, "CN=a", "CN=CA", []string{"a.example"}, "0a", &notBefore, notAfter, "ab", "RSA", uint16(2048),
		"SHA256-RSA", uint8(2), "TLS 1.3", "TLS_AES_128_GCM_SHA256", uint8(1), uint8(1), uint32(3),
		uint32(7), started, started.Add(time.Second), uint16(200), int64(0), uint8(0), uint8(0), []string{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}

// Migration 4 copies every old row into the new table, keeps the dates
// (the old clamp at 2106 read as no expiry), and survives two processes
// at once, a process that died after the swap, and running again.
func TestMigrateScanResults(t *testing.T) {
	db := testenv.ClickHouse(t)
	ctx := context.Background()
	conn := db.Conn(t)
	if err := schema.MigrateWith(ctx, conn, schema.Migrations[:3], testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	started := time.Date(2026, 2, 1, 10, 0, 0, 0, time.UTC)
	notAfter, clamped := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC), time.Unix(1<<32-1, 0).UTC()
	jobs := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	insertOld(t, db, jobs[0], "192.0.2.1", &notAfter, started)
	insertOld(t, db, jobs[1], "192.0.2.1", &clamped, started.Add(time.Hour))
	insertOld(t, db, jobs[2], "", nil, started.Add(2*time.Hour))

	migrateConcurrently(t, db)
	check := func(t *testing.T) {
		t.Helper()
		got, err := schema.ScanHistory(ctx, conn, "tenant-1", "dom-1", 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 3 {
			t.Fatalf("got %d rows, want 3", len(got))
		}
		byJob := map[uuid.UUID]schema.ScanRow{}
		for _, r := range got {
			byJob[r.JobID] = r
		}
		for _, c := range []struct {
			name      string
			got, want any
		}{
			{"date kept", byJob[jobs[0]].NotAfter != nil && byJob[jobs[0]].NotAfter.Equal(notAfter), true},
			{"scheduled_at from started_at", byJob[jobs[0]].ScheduledAt.Equal(started), true},
			{"clamped date reads as no expiry", byJob[jobs[1]].HasNoExpiry(), true},
			{"no certificate", byJob[jobs[2]].NotAfter == nil, true},
			{"key bits", byJob[jobs[0]].KeyBits, uint16(2048)},
		} {
			if c.got != c.want {
				t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
			}
		}
		if got, want := columns(t, db, "scan_results"), strings.Split(schema.ScanColumns, ", "); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("columns: got %v, want %v", got, want)
		}
	}
	check(t)

	reshapeAgain(t, db, 4, "scan_results_v3_", check)
}

// migrateConcurrently runs three migrations at once, as three processes
// starting together do.
func migrateConcurrently(t *testing.T, db testenv.ClickHouseDB) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() { errs[i] = schema.Migrate(context.Background(), db.Conn(t), testenv.Logger(t)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent migrate: %v", err)
	}
}

// reshapeAgain is a process that died after a reshape's swap, before
// recording the version: it runs the step again, the copy repeats and
// collapses (check still holds), and the parked old table is kept for the
// operator.
func reshapeAgain(t *testing.T, db testenv.ClickHouseDB, version int, parkedPrefix string, check func(*testing.T)) {
	t.Helper()
	ctx, conn := context.Background(), db.Conn(t)
	if err := conn.Exec(ctx, "ALTER TABLE schema_migrations DELETE WHERE version = ?", version); err != nil {
		t.Fatal(err)
	}
	waitMutations(t, db)
	if err := schema.Migrate(ctx, conn, testenv.Logger(t)); err != nil {
		t.Fatalf("migrate again: %v", err)
	}
	check(t)
	var parked uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND startsWith(name, ?)", parkedPrefix).Scan(&parked); err != nil {
		t.Fatal(err)
	}
	if parked < 1 {
		t.Errorf("got %d parked old tables, want at least 1 (kept for the operator)", parked)
	}
}

func waitMutations(t *testing.T, db testenv.ClickHouseDB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var n uint64
		if err := db.Conn(t).QueryRow(context.Background(), "SELECT count() FROM system.mutations WHERE database = ? AND is_done = 0", db.Database).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("mutation did not finish")
}
