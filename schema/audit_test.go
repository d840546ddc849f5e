package schema_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/schema"
)

func TestAuditLog(t *testing.T) {
	ctx, db := migrated(t)
	conn := db.Conn(t)
	base := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	type spec struct {
		name                  string
		tenant, op, rtype, id string
		status                string
		at                    time.Duration
	}
	specs := []spec{
		{"create", "t1", "create", "certificate", "c1", events.AuditSuccess, 100 * time.Millisecond},
		{"revoke", "t1", "revoke", "certificate", "c1", events.AuditSuccess, 900 * time.Millisecond},
		{"download", "t1", "download", "certificate", "c2", events.AuditFailure, 2 * time.Second},
		// The same millisecond, appended after download: newer.
		{"renew same ms", "t1", "renew", "certificate", "c2", events.AuditSuccess, 2 * time.Second},
		{"failed auth", "t1", events.AuditOperationFailedAuth, "certificate", "", events.AuditFailure, time.Hour},
		{"other tenant", "t2", "create", "certificate", "c9", events.AuditSuccess, 200 * time.Millisecond},
		{"no tenant", "", events.AuditOperationFailedAuth, "", "", events.AuditFailure, 300 * time.Millisecond},
	}
	byName := map[string]schema.AuditRow{}
	var rows []schema.AuditRow
	for i, s := range specs {
		rec := events.AuditRecordedV1{
			Timestamp: base.Add(s.at), Operation: s.op, ResourceType: s.rtype, ResourceID: s.id, Status: s.status,
			User: s.tenant + "@example.com", KeyID: "k-" + s.tenant, IP: "192.0.2.7", Method: "POST", Route: "/api/x",
			HTTPStatus: 201, ResponseTimeMS: 1.25, Details: json.RawMessage(`{"common_name":"` + s.name + `"}`),
		}
		if s.status == events.AuditFailure {
			rec.HTTPStatus, rec.Error = 404, "Certificate not found: "+s.id
		}
		e, err := events.New(events.AuditRecorded, s.tenant, s.id, rec)
		if err != nil {
			t.Fatal(err)
		}
		r, err := schema.AuditRowOf(e, fmt.Sprintf("%d-%d", base.Add(2*time.Hour).UnixMilli(), i), base.Add(2*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		byName[s.name] = r
		rows = append(rows, r)
	}
	// Out of order, and the first rows twice as a redelivery would.
	slices.Reverse(rows)
	for _, batch := range [][]schema.AuditRow{rows, rows[3:]} {
		if err := schema.InsertAuditRows(ctx, conn, batch); err != nil {
			t.Fatal(err)
		}
	}

	got, err := schema.QueryAudit(ctx, conn, schema.AuditFilter{TenantID: "t1", Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if want := byName["create"]; len(got) != 5 || !equalAuditRow(got[4], want) {
		t.Errorf("rows: got %+v, want create last:\n%+v", got, want)
	}

	tests := []struct {
		name   string
		filter schema.AuditFilter
		want   []string
	}{
		{"tenant, newest first", schema.AuditFilter{TenantID: "t1"}, []string{"failed auth", "renew same ms", "download", "revoke", "create"}},
		{"other tenant", schema.AuditFilter{TenantID: "t2"}, []string{"other tenant"}},
		{"no tenant", schema.AuditFilter{TenantID: ""}, []string{"no tenant"}},
		{"unknown tenant", schema.AuditFilter{TenantID: "t3"}, nil},
		{"limit", schema.AuditFilter{TenantID: "t1", Limit: 3}, []string{"failed auth", "renew same ms", "download"}},
		{"operation", schema.AuditFilter{TenantID: "t1", Operation: "revoke"}, []string{"revoke"}},
		{"resource type", schema.AuditFilter{TenantID: "t1", ResourceType: "certificate"}, []string{"failed auth", "renew same ms", "download", "revoke", "create"}},
		{"resource id", schema.AuditFilter{TenantID: "t1", ResourceID: "c1"}, []string{"revoke", "create"}},
		{"status", schema.AuditFilter{TenantID: "t1", Status: events.AuditFailure}, []string{"failed auth", "download"}},
		{"since is inclusive to the millisecond", schema.AuditFilter{TenantID: "t1", Since: base.Add(900 * time.Millisecond)}, []string{"failed auth", "renew same ms", "download", "revoke"}},
		{"until is exclusive to the millisecond", schema.AuditFilter{TenantID: "t1", Until: base.Add(900 * time.Millisecond)}, []string{"create"}},
		{"since and until", schema.AuditFilter{TenantID: "t1", Since: base.Add(101 * time.Millisecond), Until: base.Add(time.Hour)}, []string{"renew same ms", "download", "revoke"}},
		{"far future", schema.AuditFilter{TenantID: "t1", Since: base.AddDate(200, 0, 0)}, nil},
		{"filters combine", schema.AuditFilter{TenantID: "t1", ResourceID: "c1", Operation: "create", Status: events.AuditSuccess}, []string{"create"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.filter.Limit == 0 {
				tc.filter.Limit = 100
			}
			rows, err := schema.QueryAudit(ctx, conn, tc.filter)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, r := range rows {
				for n, w := range byName {
					if r.EventID == w.EventID {
						names = append(names, n)
					}
				}
			}
			if !slices.Equal(names, tc.want) {
				t.Errorf("got %v, want %v", names, tc.want)
			}
		})
	}
	if _, err := schema.QueryAudit(ctx, conn, schema.AuditFilter{TenantID: "t1"}); err == nil {
		t.Error("limit 0: got no error, want one")
	}
	if _, err := schema.AuditRowOf(byNameEnvelope(t), "not-an-id", time.Now()); err == nil {
		t.Error("bad stream id: got no error, want one")
	}
}

func equalAuditRow(a, b schema.AuditRow) bool {
	return a.EventID == b.EventID && a.Timestamp.Equal(b.Timestamp) && a.InsertedAt.Equal(b.InsertedAt) &&
		a.TenantID == b.TenantID && a.Operation == b.Operation && a.ResourceType == b.ResourceType &&
		a.ResourceID == b.ResourceID && a.Status == b.Status && a.User == b.User && a.KeyID == b.KeyID &&
		a.IP == b.IP && a.Method == b.Method && a.Route == b.Route && a.HTTPStatus == b.HTTPStatus &&
		a.ResponseTimeMS == b.ResponseTimeMS && a.Details == b.Details && a.Error == b.Error &&
		a.StreamMS == b.StreamMS && a.StreamSeq == b.StreamSeq
}

func byNameEnvelope(t *testing.T) events.Envelope {
	t.Helper()
	e, err := events.New(events.AuditRecorded, "t1", "c1", events.AuditRecordedV1{Operation: "create"})
	if err != nil {
		t.Fatal(err)
	}
	return e
}
