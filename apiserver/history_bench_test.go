package apiserver

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

// historyBenchRowsEnv sets how many scan_results rows BenchmarkHistoryAPI
// generates: 1,000,000 by default, e.g. 10000000 for the long mode.
const historyBenchRowsEnv = "CERTFLEET_BENCH_HISTORY_ROWS"

// historyBenchDomains is how many domains of one tenant the rows are
// spread over: every hour each is scanned from 3 regions at 2 IPs.
const historyBenchDomains = 100

// generateScanRows inserts n rows with INSERT ... SELECT FROM numbers(n):
// row i is IP i%2, region i/2%3, domain i/6%100, round i/600, scheduled
// round hours before now (plus the domain's index in seconds). A domain's
// leaf is renewed every 60 days (90 days valid; domains spread their
// expiries over 50 days); one row in 50 timed out.
func generateScanRows(ctx context.Context, conn driver.Conn, tenant string, domains []string, n int) error {
	ids := make([]string, len(domains))
	for i, d := range domains {
		ids[i] = "'" + d + "'"
	}
	nowUnix, day := now.Unix(), int64(24*3600)
	q := fmt.Sprintf(`INSERT INTO scan_results (event_id, job_id, scheduled_at, tenant_id, domain_id, host, port, region, agent, ip,
		outcome, detail, certificate_found, subject, issuer, serial, not_before_unix, not_after_unix, leaf_sha256, key_type, key_bits,
		tls_version, connect_ms, handshake_ms, started_at, scanned_at)
	SELECT
		toUUID(concat('00000000-0000-4000-8000-', substring(hex(toUInt64(number) + 281474976710656), 3, 12))),
		toUUID(concat('00000000-0000-4000-9000-', substring(hex(toUInt64(intDiv(number, 6)) + 281474976710656), 3, 12))),
		toDateTime(%[1]d - round * 3600 - dom) AS sched,
		'%[2]s', [%[3]s][dom + 1], concat('d', toString(dom), '.example.com'), 443,
		['eu', 'us', 'ap'][intDiv(number, 2) %% 3 + 1], 'agent-1', concat('192.0.2.', toString(dom * 2 + number %% 2)),
		if(failed, 'timeout', 'ok'), '', if(failed, 0, 1), concat('CN=d', toString(dom), '.example.com'),
		['R3', 'E1', 'Sectigo RSA DV'][dom %% 3 + 1], hex(toUInt64(period)),
		if(failed, NULL, toInt64(%[1]d - (period + 1) * 60 * %[4]d + dom * 12 * 3600 - 50 * %[4]d)),
		if(failed, NULL, toInt64(%[1]d - (period + 1) * 60 * %[4]d + dom * 12 * 3600 - 50 * %[4]d + 90 * %[4]d)),
		if(failed, '', hex(toUInt64(dom * 100000 + period))),
		if(failed, '', ['ECDSA', 'RSA'][dom %% 2 + 1]), if(failed, 0, [256, 2048][dom %% 2 + 1]),
		if(failed, '', if(dom %% 10 = 0, 'TLS 1.2', 'TLS 1.3')),
		5 + number %% 20, if(failed, 0, 20 + (number * 7919) %% 80), sched, sched + 2
	FROM (
		SELECT number, intDiv(number, 6) %% %[5]d AS dom, intDiv(number, 600) AS round,
			intDiv(intDiv(number, 600), 1440) AS period, number %% 50 = 7 AS failed
		FROM numbers(%[6]d)
	)`, nowUnix, tenant, strings.Join(ids, ", "), day, len(domains), n)
	return conn.Exec(ctx, q)
}

// BenchmarkHistoryAPI times GET /domains/{id}/history, /certificates and
// /stats over generated scan_results (1M rows by default, see
// historyBenchRowsEnv), each in turns with a SELECT 1 round trip to the
// same ClickHouse (the baseline), and reports the rows ClickHouse read
// for the endpoint's queries (from the query's progress packets).
func BenchmarkHistoryAPI(b *testing.B) {
	if testing.Short() {
		b.Skip("generates a million rows in ClickHouse")
	}
	n := 1_000_000
	if v := os.Getenv(historyBenchRowsEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 600 {
			b.Fatalf("%s=%q: want a number of rows of at least 600", historyBenchRowsEnv, v)
		}
	}
	ctx := context.Background()
	conn := testenv.ClickHouse(b).Conn(b)
	if err := schema.Migrate(ctx, conn, testenv.Logger(b)); err != nil {
		b.Fatal(err)
	}
	rdb := testenv.Redis(b).Client(b)
	cfg := Config{Now: func() time.Time { return now }}
	cfg.Audit.Conn = conn
	srv, err := New(cfg, rdb, testenv.Logger(b))
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	b.Cleanup(hs.Close)
	tenant, err := srv.accounts.EnsureAccount(ctx, "bench@example.com")
	if err != nil {
		b.Fatal(err)
	}
	key, err := srv.accounts.CreateKey(ctx, tenant, "read", []string{"read"}, nil, "cli")
	if err != nil {
		b.Fatal(err)
	}
	domains := make([]string, historyBenchDomains)
	for i := range domains {
		d, _, err := srv.accounts.AddDomain(ctx, tenant, accounts.NewDomain{Host: fmt.Sprintf("d%d.example.com", i), Port: 443, Source: "api"})
		if err != nil {
			b.Fatal(err)
		}
		domains[i] = d.ID
	}
	start := time.Now()
	if err := generateScanRows(ctx, conn, tenant, domains, n); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated %d rows in %v", n, time.Since(start).Round(time.Millisecond))

	get := func(path string) {
		req, _ := http.NewRequest(http.MethodGet, hs.URL+"/api/v1"+path, nil)
		req.Header.Set("Authorization", "Bearer "+key.Key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: HTTP %d %s", path, resp.StatusCode, body)
		}
	}
	baseline := func() {
		var one uint8
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			b.Fatal(err)
		}
	}
	// rowsRead runs an endpoint's queries through schema with a progress
	// callback: system.query_log is off on 18.16 by default.
	rowsRead := func(f func(ctx context.Context) error) uint64 {
		var rows atomic.Uint64
		pctx := clickhouse.Context(ctx, clickhouse.WithProgress(func(p *clickhouse.Progress) { rows.Add(p.Rows) }))
		if err := f(pctx); err != nil {
			b.Fatal(err)
		}
		return rows.Load()
	}
	dom := domains[42]
	mid := now.Add(-time.Duration(n/600/2) * time.Hour)
	day := 24 * time.Hour
	for _, tc := range []struct {
		name, path string
		queries    func(ctx context.Context) error
	}{
		{"history newest 100", "/domains/" + dom + "/history", func(ctx context.Context) error {
			_, err := schema.ScanHistoryPage(ctx, conn, schema.HistoryQuery{TenantID: tenant, DomainID: dom, Limit: 101, Now: now})
			return err
		}},
		{"history a day mid-range", "/domains/" + dom + "/history?limit=1000&from=" + url.QueryEscape(mid.Add(-day).Format(time.RFC3339)) +
			"&to=" + url.QueryEscape(mid.Format(time.RFC3339)), func(ctx context.Context) error {
			_, err := schema.ScanHistoryPage(ctx, conn, schema.HistoryQuery{TenantID: tenant, DomainID: dom, From: mid.Add(-day), To: mid, Limit: 1001, Now: now})
			return err
		}},
		{"certificates", "/domains/" + dom + "/certificates", func(ctx context.Context) error {
			_, err := schema.CertificateTimeline(ctx, conn, tenant, dom, 500)
			return err
		}},
		{"stats 24h", "/stats?window=24h", func(ctx context.Context) error {
			_, err := schema.QueryFleetStats(ctx, conn, tenant, now.Add(-day), now, 12)
			return err
		}},
		{"stats 7d", "/stats?window=7d", func(ctx context.Context) error {
			_, err := schema.QueryFleetStats(ctx, conn, tenant, now.Add(-7*day), now, 12)
			return err
		}},
		{"stats 30d", "/stats?window=30d", func(ctx context.Context) error {
			_, err := schema.QueryFleetStats(ctx, conn, tenant, now.Add(-30*day), now, 12)
			return err
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			read := rowsRead(tc.queries)
			var endpoint, base time.Duration
			var took, baseTook []time.Duration
			for b.Loop() {
				t0 := time.Now()
				get(tc.path)
				d := time.Since(t0)
				endpoint += d
				took = append(took, d)
				t0 = time.Now()
				baseline()
				d = time.Since(t0)
				base += d
				baseTook = append(baseTook, d)
			}
			ops := len(took)
			b.ReportMetric(float64(endpoint.Microseconds())/float64(ops)/1000, "ms/request")
			b.ReportMetric(float64(base.Microseconds())/float64(ops)/1000, "ms/select-1")
			b.ReportMetric(float64(endpoint)/float64(base), "request/select-1")
			b.ReportMetric(float64(p95(took).Microseconds())/1000, "p95-ms/request")
			b.ReportMetric(float64(p95(baseTook).Microseconds())/1000, "p95-ms/select-1")
			b.ReportMetric(float64(read), "rows-read")
		})
	}
}

// p95 is the 95th percentile of ds (nearest rank); ds is sorted in place.
func p95(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[(len(ds)*95+99)/100-1]
}
