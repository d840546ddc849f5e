package sink_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/coordinator/sink"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// env is a Redis and a ClickHouse database for one test.
type env struct {
	rdb  *redis.Client
	conn driver.Conn
	db   testenv.ClickHouseDB
}

func newEnv(t *testing.T, migrate bool) env {
	t.Helper()
	db := testenv.ClickHouse(t)
	conn, err := schema.Open(context.Background(), db.DSN, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if migrate {
		if err := schema.Migrate(context.Background(), conn, testenv.Logger(t)); err != nil {
			t.Fatal(err)
		}
	}
	return env{rdb: testenv.Redis(t).Client(t), conn: conn, db: db}
}

// run starts a sink that stops when the test ends.
func (e env) run(t *testing.T) {
	t.Helper()
	s, err := sink.New(sink.Config{Consumer: "test", FlushInterval: 20 * time.Millisecond}, e.rdb, e.conn, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: got %v, want nil", err)
		}
	})
}

func (e env) publish(t *testing.T, stream string, evs ...events.Envelope) {
	t.Helper()
	p, err := events.NewPublisher(e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(stream, evs...); err != nil {
		t.Fatal(err)
	}
}

// settled waits until the sink has read every entry of both streams and
// acknowledged them.
func (e env) settled(t *testing.T) {
	t.Helper()
	eventually(t, "sink acknowledged every entry", func() bool {
		for _, s := range append(events.EventStreams(), events.StreamResults) {
			groups, err := e.rdb.XInfoGroups(context.Background(), s).Result()
			if err != nil || len(groups) != 1 || groups[0].Pending != 0 || groups[0].Lag != 0 {
				return false
			}
		}
		return true
	})
}

func (e env) count(t *testing.T, query string) uint64 {
	t.Helper()
	var n uint64
	if err := e.conn.QueryRow(context.Background(), query).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after 15s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var (
	tenant   = events.TenantID("owner@example.com")
	domainID = events.DomainID(tenant, "a.example", 8443)
	started  = time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	notAfter = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
)

func scanCompleted(t *testing.T, region string) events.Envelope {
	t.Helper()
	return scanAt(t, region, started, notAfter)
}

// scanAt is the result of the job due at started, scanned from region at
// at, seeing a certificate that expires at notAfter.
func scanAt(t *testing.T, region string, at, notAfter time.Time) events.Envelope {
	t.Helper()
	job := events.JobID(domainID, started.UnixMilli())
	e, err := events.NewWithID(events.ScanEventID(job, region), events.ScanCompleted, tenant, domainID, events.ScanCompletedV1{
		JobID: job, DomainID: domainID, Host: "a.example", Port: 8443, Region: region, Agent: "agent-" + region,
		ScheduledAt: started, StartedAt: at, FinishedAt: at.Add(2 * time.Second),
		Results: []events.IPResult{
			{
				IP: "192.0.2.10", Outcome: events.OutcomeOK, CertificateFound: true, Subject: "CN=a.example",
				Issuer: "CN=Lab CA", SANs: []string{"a.example"}, Serial: "01", NotBefore: started.Add(-24 * time.Hour),
				NotAfter: notAfter, LeafSHA256: "aa", KeyType: "ECDSA", KeyBits: 256, SignatureAlgorithm: "ECDSA-SHA256",
				ChainLength: 2, TLSVersion: "TLS 1.3", CipherSuite: "TLS_AES_128_GCM_SHA256", ChainValid: true,
				HostnameValid: true, ConnectMS: 1, HandshakeMS: 4,
				HTTPStatus: 200, HSTSMaxAge: 600, LegacyTLSChecked: true, LegacyTLS: []string{"TLS 1.0"},
			},
			{IP: "2001:db8::10", Outcome: events.OutcomeConnectionRefused},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestSinkStoresEventsAndScanResults(t *testing.T) {
	e := newEnv(t, true)
	e.run(t)
	scan := scanCompleted(t, "eu")
	added, err := events.New(events.DomainAdded, tenant, domainID, events.DomainAddedV1{DomainID: domainID, Host: "a.example", Port: 8443, Source: "api"})
	if err != nil {
		t.Fatal(err)
	}
	rowsBefore := sink.RowsTotal()
	e.publish(t, events.EventStream(added.TenantID), added)
	e.publish(t, events.StreamResults, scan)
	e.settled(t)

	t.Run("events", func(t *testing.T) {
		rows, err := e.conn.Query(context.Background(), "SELECT "+schema.EventColumns+" FROM events FINAL ORDER BY stream")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		type stored struct {
			id                                 uuid.UUID
			name, tenant, agg, payload, stream string
			occurred, inserted                 time.Time
			ms                                 uint64
		}
		var got []stored
		for rows.Next() {
			var s stored
			if err := rows.Scan(&s.id, &s.name, &s.occurred, &s.ms, &s.tenant, &s.agg, &s.payload, &s.stream, &s.inserted); err != nil {
				t.Fatal(err)
			}
			got = append(got, s)
		}
		if len(got) != 2 {
			t.Fatalf("events: got %d rows, want 2", len(got))
		}
		for i, want := range []struct {
			env    events.Envelope
			stream string
		}{{added, events.EventStream(added.TenantID)}, {scan, events.StreamResults}} {
			g := got[i]
			for _, c := range []struct {
				field     string
				got, want any
			}{
				{"event_id", g.id, want.env.EventID},
				{"name", g.name, want.env.Name},
				{"occurred_at", g.occurred.Unix(), want.env.OccurredAt.Unix()},
				{"occurred_at_unix_ms", g.ms, uint64(want.env.OccurredAt.UnixMilli())},
				{"tenant_id", g.tenant, want.env.TenantID},
				{"aggregate_id", g.agg, want.env.AggregateID},
				{"payload", g.payload, string(want.env.Payload)},
				{"stream", g.stream, want.stream},
				{"inserted_at recent", time.Since(g.inserted) < time.Minute, true},
			} {
				if c.got != c.want {
					t.Errorf("%s %s: got %v, want %v", want.env.Name, c.field, c.got, c.want)
				}
			}
		}
	})

	t.Run("scan_results", func(t *testing.T) {
		got, err := schema.ScanHistory(context.Background(), e.conn, tenant, domainID, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 {
			t.Fatalf("scan rows: got %d, want 2", len(got))
		}
		want, err := schema.ScanRows(scan)
		if err != nil {
			t.Fatal(err)
		}
		byIP := map[string]schema.ScanRow{}
		for _, r := range got {
			byIP[r.IP] = r
		}
		for _, w := range want {
			g, ok := byIP[w.IP]
			if !ok {
				t.Errorf("no row for ip %q", w.IP)
				continue
			}
			for _, c := range []struct {
				field     string
				got, want any
			}{
				{"event_id", g.EventID, scan.EventID},
				{"job_id", g.JobID, w.JobID},
				{"tenant_id", g.TenantID, tenant},
				{"domain_id", g.DomainID, domainID},
				{"host", g.Host, "a.example"},
				{"port", g.Port, uint16(8443)},
				{"region", g.Region, "eu"},
				{"agent", g.Agent, "agent-eu"},
				{"outcome", g.Outcome, w.Outcome},
				{"detail", g.Detail, w.Detail},
				{"certificate_found", g.CertificateFound, w.CertificateFound},
				{"subject", g.Subject, w.Subject},
				{"issuer", g.Issuer, w.Issuer},
				{"sans", strings.Join(g.SANs, ","), strings.Join(w.SANs, ",")},
				{"serial", g.Serial, w.Serial},
				{"not_before", timeOrNil(g.NotBefore), timeOrNil(w.NotBefore)},
				{"not_after", timeOrNil(g.NotAfter), timeOrNil(w.NotAfter)},
				{"leaf_sha256", g.LeafSHA256, w.LeafSHA256},
				{"key_type", g.KeyType, w.KeyType},
				{"key_bits", g.KeyBits, w.KeyBits},
				{"signature_algorithm", g.SignatureAlgorithm, w.SignatureAlgorithm},
				{"chain_length", g.ChainLength, w.ChainLength},
				{"tls_version", g.TLSVersion, w.TLSVersion},
				{"cipher_suite", g.CipherSuite, w.CipherSuite},
				{"chain_valid", g.ChainValid, w.ChainValid},
				{"hostname_valid", g.HostnameValid, w.HostnameValid},
				{"connect_ms", g.ConnectMS, w.ConnectMS},
				{"handshake_ms", g.HandshakeMS, w.HandshakeMS},
				{"started_at", g.StartedAt.Unix(), started.Unix()},
				{"scanned_at", g.ScannedAt.Unix(), started.Add(2 * time.Second).Unix()},
				{"http_status", g.HTTPStatus, w.HTTPStatus},
				{"hsts_max_age", g.HSTSMaxAge, w.HSTSMaxAge},
				{"hsts_include_subdomains", g.HSTSIncludeSubdomains, w.HSTSIncludeSubdomains},
				{"legacy_tls_checked", g.LegacyTLSChecked, w.LegacyTLSChecked},
				{"legacy_tls", strings.Join(g.LegacyTLS, ","), strings.Join(w.LegacyTLS, ",")},
			} {
				if c.got != c.want {
					t.Errorf("ip %q %s: got %v, want %v", w.IP, c.field, c.got, c.want)
				}
			}
		}
		if got := sink.RowsTotal() - rowsBefore; got != 2 {
			t.Errorf("certfleet_sink_rows_total grew by %v, want 2", got)
		}
	})
}

func TestSinkRedeliveryIsInvisible(t *testing.T) {
	e := newEnv(t, true)
	e.run(t)
	scan := scanCompleted(t, "us")
	e.publish(t, events.StreamResults, scan)
	e.settled(t)
	e.publish(t, events.StreamResults, scan) // an agent redelivered its job
	e.settled(t)

	// Both deliveries were read and acknowledged (settled), so both were
	// inserted; a background merge may or may not have collapsed them yet.
	for _, tc := range []struct{ name, query string }{
		{"events", "SELECT count() FROM events FINAL"},
		{"scan_results", "SELECT count() FROM scan_results FINAL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := uint64(1)
			if tc.name == "scan_results" {
				want = 2 // one per IP
			}
			if got := e.count(t, tc.query); got != want {
				t.Fatalf("%s: got %d, want %d", tc.query, got, want)
			}
		})
	}
	rows, err := schema.ScanHistory(context.Background(), e.conn, tenant, domainID, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("scan history: got %d rows, want 2", len(rows))
	}
	replayed := 0
	if err := schema.ReplayEvents(context.Background(), e.conn, func(events.Envelope) error { replayed++; return nil }); err != nil {
		t.Fatal(err)
	}
	if replayed != 1 {
		t.Fatalf("replayed events: got %d, want 1", replayed)
	}
}

// A job redelivered to its region after a crash is scanned again: the
// rescan is stored as the same rows, and reads show the later scan.
func TestSinkStoresARescanOnce(t *testing.T) {
	e := newEnv(t, true)
	e.run(t)
	later := notAfter.AddDate(1, 0, 0)
	e.publish(t, events.StreamResults, scanAt(t, "eu", started, notAfter))
	e.settled(t)
	e.publish(t, events.StreamResults, scanAt(t, "eu", started.Add(95*time.Second), later))
	e.settled(t)
	rows, err := schema.ScanHistory(context.Background(), e.conn, tenant, domainID, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("scan history: got %d rows, want 2 (one per IP)", len(rows))
	}
	for _, r := range rows {
		if r.IP == "192.0.2.10" && (r.NotAfter == nil || !r.NotAfter.Equal(later)) {
			t.Errorf("not_after: got %v, want the rescan's %s", r.NotAfter, later)
		}
	}
}

// A scan result with a value its column cannot hold gets no row (nor
// wrapped or clamped ones); the entry is acknowledged, the event kept in
// the event store, the others of its batch stored.
func TestSinkRefusesValuesThatDoNotFit(t *testing.T) {
	e := newEnv(t, true)
	e.run(t)
	for _, tc := range []struct{ name, payload string }{
		{"port 70000", `{"domain_id":"d","port":70000,"region":"eu","results":[{"ip":"192.0.2.1","outcome":"ok"}]}`},
		{"chain of 300", `{"domain_id":"d","port":443,"region":"eu","results":[{"ip":"192.0.2.1","outcome":"ok","chain_length":300}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := events.Envelope{EventID: uuid.New(), Name: events.ScanCompleted, OccurredAt: started, TenantID: "t-" + tc.name,
				AggregateID: "d", Payload: []byte(tc.payload)}
			e.publish(t, events.StreamResults, bad, scanCompleted(t, tc.name))
			e.settled(t)
			if got := e.count(t, "SELECT count() FROM scan_results FINAL WHERE tenant_id = 't-"+tc.name+"'"); got != 0 {
				t.Errorf("rows of the refused event: got %d, want 0", got)
			}
			if got := e.count(t, "SELECT count() FROM scan_results FINAL WHERE region = '"+tc.name+"'"); got != 2 {
				t.Errorf("rows of the good event beside it: got %d, want 2", got)
			}
			if got := e.count(t, "SELECT count() FROM events FINAL WHERE event_id = '"+bad.EventID.String()+"'"); got != 1 {
				t.Errorf("refused event in the event store: got %d, want 1", got)
			}
		})
	}
}

// ClickHouse killed and started again: the running sink stores what
// waited, without a restart of its own. The time from ClickHouse answering
// to the rows being there is logged, not asserted (the bound is the retry
// ceiling, checked in TestRetryCeiling).
func TestSinkFlushesAfterClickHouseRestart(t *testing.T) {
	ch := testenv.OwnClickHouse(t)
	conn, err := schema.Open(context.Background(), ch.DSN, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if err := schema.Migrate(context.Background(), conn, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	e := env{rdb: testenv.Redis(t).Client(t), conn: conn}
	e.run(t)
	e.publish(t, events.StreamResults, scanCompleted(t, "eu"))
	e.settled(t)

	ch.Stop(t)
	errorsBefore := sink.BatchErrorsTotal()
	e.publish(t, events.StreamResults, scanCompleted(t, "us"))
	// Four failures in a row: the retry pause has grown to its ceiling.
	eventually(t, "four inserts failed", func() bool { return sink.BatchErrorsTotal() >= errorsBefore+4 })
	if got := pendingOf(t, e.rdb, events.StreamResults); got != 1 {
		t.Fatalf("pending entries while ClickHouse is down: got %d, want 1", got)
	}

	ch.Start(t)
	back := time.Now()
	e.settled(t)
	t.Logf("stored %s after ClickHouse answered again", time.Since(back).Round(10*time.Millisecond))
	if got := e.count(t, "SELECT count() FROM scan_results FINAL"); got != 4 {
		t.Fatalf("scan rows after the restart: got %d, want 4", got)
	}
}

func TestSinkAcksNothingWhenInsertFails(t *testing.T) {
	// No tables yet: every insert fails as it would with ClickHouse down.
	e := newEnv(t, false)
	errorsBefore := sink.BatchErrorsTotal()
	e.run(t)
	e.publish(t, events.StreamResults, scanCompleted(t, "eu"), scanCompleted(t, "us"))
	eventually(t, "an insert failed", func() bool { return sink.BatchErrorsTotal() > errorsBefore })
	if got := pendingOf(t, e.rdb, events.StreamResults); got != 2 {
		t.Fatalf("pending entries while inserts fail: got %d, want 2", got)
	}

	// ClickHouse is back: the same entries are stored and acknowledged.
	if err := schema.Migrate(context.Background(), e.conn, testenv.Logger(t)); err != nil {
		t.Fatal(err)
	}
	e.settled(t)
	if got := e.count(t, "SELECT count() FROM scan_results FINAL"); got != 4 {
		t.Fatalf("scan rows after recovery: got %d, want 4", got)
	}
}

func TestNewValidates(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	for _, tc := range []struct {
		name string
		cfg  sink.Config
		ok   bool
	}{
		{"defaults", sink.Config{}, true},
		{"negative batch", sink.Config{BatchSize: -1}, false},
		{"negative flush", sink.Config{FlushInterval: -time.Second}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := testenv.ClickHouse(t).Conn(t)
			_, err := sink.New(tc.cfg, rdb, conn, testenv.Logger(t))
			if (err == nil) != tc.ok {
				t.Fatalf("new: got %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func pendingOf(t *testing.T, rdb *redis.Client, stream string) int64 {
	t.Helper()
	p, err := rdb.XPending(context.Background(), stream, sink.Group).Result()
	if err != nil {
		t.Fatal(err)
	}
	return p.Count
}

func timeOrNil(p *time.Time) any {
	if p == nil {
		return nil
	}
	return p.Unix()
}
