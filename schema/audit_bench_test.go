package schema_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/testenv"
	"github.com/certfleet/certfleet/schema"
)

// BenchmarkQueryAudit times GET /api/audit's queries on an audit_log of
// 200,000 records (20 tenants, 30 days, 1,000 certificates per tenant),
// each against the same query without FINAL (what deduplication costs),
// in turns within one loop.
func BenchmarkQueryAudit(b *testing.B) {
	db := testenv.ClickHouse(b)
	conn := db.Conn(b)
	ctx := context.Background()
	if err := schema.Migrate(ctx, conn, testenv.Logger(b)); err != nil {
		b.Fatal(err)
	}
	const tenants, perTenant = 20, 10_000
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ops := []string{"create", "revoke", "renew", "download", "batch", "failed_auth"}
	for t := range tenants {
		rows := make([]schema.AuditRow, perTenant)
		for i := range rows {
			status := events.AuditSuccess
			if i%7 == 0 {
				status = events.AuditFailure
			}
			rows[i] = schema.AuditRow{
				EventID: uuid.New(), Timestamp: base.Add(time.Duration(i) * 30 * 24 * time.Hour / perTenant),
				TenantID: fmt.Sprintf("tenant-%02d", t), Operation: ops[i%len(ops)], ResourceType: "certificate",
				ResourceID: fmt.Sprintf("cert-%04d", i%1000), Status: status, User: "u@example.com", KeyID: "k",
				IP: "192.0.2.1", Method: "POST", Route: "/api/client-certs/:id/revoke", HTTPStatus: 200,
				ResponseTimeMS: 1.5, Details: string(json.RawMessage(`{"common_name":"user@example.com","usage":"api-mtls"}`)),
				InsertedAt: base,
			}
		}
		if err := schema.InsertAuditRows(ctx, conn, rows); err != nil {
			b.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		f    schema.AuditFilter
	}{
		{"newest 100", schema.AuditFilter{TenantID: "tenant-07", Limit: 100}},
		{"newest 1000", schema.AuditFilter{TenantID: "tenant-07", Limit: 1000}},
		{"resource id", schema.AuditFilter{TenantID: "tenant-07", ResourceID: "cert-0042", Limit: 100}},
		{"failures of one day", schema.AuditFilter{TenantID: "tenant-07", Status: events.AuditFailure,
			Since: base.AddDate(0, 0, 10), Until: base.AddDate(0, 0, 11), Limit: 1000}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var final, plain time.Duration
			n := 0
			for b.Loop() {
				start := time.Now()
				got, err := schema.QueryAudit(ctx, conn, tc.f)
				if err != nil || len(got) == 0 {
					b.Fatalf("query: got %d rows, %v", len(got), err)
				}
				final += time.Since(start)
				start = time.Now()
				if err := schema.QueryAuditNoFinal(ctx, conn, tc.f); err != nil {
					b.Fatal(err)
				}
				plain += time.Since(start)
				n++
			}
			b.ReportMetric(float64(final.Microseconds())/float64(n), "µs/query")
			b.ReportMetric(float64(plain.Microseconds())/float64(n), "µs/without-final")
			b.ReportMetric(float64(final)/float64(plain), "final/plain")
		})
	}
}
