package dashboard_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/apiserver"
	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/dashboard"
	"github.com/certfleet/certfleet/internal/latency"
	"github.com/certfleet/certfleet/schema"
)

// benchDomains is the tenant's size in BenchmarkOverview.
const benchDomains = 10_000

// BenchmarkOverview times the overview page of a tenant with 10,000
// domains (each with a latest scan in ClickHouse, so the expiry planner
// counts 10,000 certificates) against a gin hello-world page served over
// HTTP in the same process, request by request in turns, and reports both
// p99s and their ratio (the target: within 25x).
//
// Sub-benchmark history is the overview as served with ClickHouse (its
// expiry planner reused for a minute, PlannerTTL); history-uncached runs
// the planner's ClickHouse query on every request; no-history is the same
// tenant on a server without ClickHouse (problems only).
func BenchmarkOverview(b *testing.B) {
	if testing.Short() {
		b.Skip("adds 10,000 domains")
	}
	b.Run("history", func(b *testing.B) { benchOverview(b, true, 0) })
	b.Run("history-uncached", func(b *testing.B) { benchOverview(b, true, -1) })
	b.Run("no-history", func(b *testing.B) { benchOverview(b, false, 0) })
}

func benchOverview(b *testing.B, history bool, plannerTTL time.Duration) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Second)
	// Pages count against the key's general rate limit: far above what
	// any -benchtime asks.
	e := newEnv(b, envOptions{ClickHouse: history, Dashboard: dashboard.Config{PlannerTTL: plannerTTL},
		Configure: func(cfg *apiserver.Config) { cfg.RateLimitGeneral = 1 << 30 }})
	nds := make([]accounts.NewDomain, benchDomains)
	for i := range nds {
		nds[i] = accounts.NewDomain{Host: fmt.Sprintf("d%d.example.com", i), Port: 443, Source: "bench"}
	}
	res, err := e.accounts.AddDomains(ctx, e.tenant, nds)
	if err != nil {
		b.Fatal(err)
	}
	rows := make([]schema.ScanRow, 0, len(res))
	for i, r := range res {
		na, nb := now.Add(time.Duration(i%120)*24*time.Hour), now.Add(-30*24*time.Hour)
		rows = append(rows, schema.ScanRow{EventID: uuid.New(), JobID: uuid.New(), TenantID: e.tenant, DomainID: r.Domain.ID,
			Host: r.Domain.Host, Port: 443, Region: "eu", IP: "192.0.2.1", ScheduledAt: now.Add(-time.Minute), ScannedAt: now.Add(-time.Minute),
			Outcome: "ok", CertificateFound: true, LeafSHA256: fmt.Sprintf("%064x", i), NotAfter: &na, NotBefore: &nb,
			Issuer: "Bench CA", TLSVersion: "TLS 1.3", KeyType: "ECDSA", KeyBits: 256, ChainValid: true, HostnameValid: true, HandshakeMS: 20})
	}
	c := e.client(b, e.read)
	if history {
		if err := schema.InsertScanRows(ctx, e.ch, rows); err != nil {
			b.Fatal(err)
		}
		if code, body := c.get("/"); code != http.StatusOK || !strings.Contains(body, fmt.Sprintf("%d domains", benchDomains)) {
			b.Fatalf("overview: got HTTP %d without %d domains", code, benchDomains)
		}
	}

	hello := latency.HelloWorld(b)
	hc := latency.Client()

	timed := func(client *http.Client, url string) time.Duration {
		start := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s: HTTP %d", url, resp.StatusCode)
		}
		return time.Since(start)
	}
	var page, base []time.Duration
	b.ResetTimer()
	for b.Loop() {
		base = append(base, timed(hc, hello))
		page = append(page, timed(c.http, e.URL+"/"))
	}
	b.StopTimer()
	pp, pb := latency.Percentile(page, 99), latency.Percentile(base, 99)
	b.ReportMetric(float64(pp.Microseconds())/1000, "overview-p99-ms")
	b.ReportMetric(float64(pb.Microseconds())/1000, "hello-p99-ms")
	b.ReportMetric(float64(pp)/float64(pb), "ratio-p99")
}
