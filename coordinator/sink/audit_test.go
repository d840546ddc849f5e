package sink_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/certfleet/certfleet/coordinator/sink"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/schema"
)

func auditRecorded(t *testing.T, op, id string, at time.Time) events.Envelope {
	t.Helper()
	e, err := events.New(events.AuditRecorded, tenant, id, events.AuditRecordedV1{
		Timestamp: at, Operation: op, ResourceType: "certificate", ResourceID: id, Status: events.AuditSuccess,
		User: "owner@example.com", KeyID: "key-1", IP: "192.0.2.1", Method: "POST", Route: "/api/client-certs/create",
		HTTPStatus: 201, ResponseTimeMS: 3.5, Details: json.RawMessage(`{"common_name":"user@example.com"}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Audit records go to the event store and to audit_log; a redelivery is
// seen once and an undecodable one is kept in the event store only.
func TestSinkStoresAuditRecords(t *testing.T) {
	e := newEnv(t, true)
	e.run(t)
	before := sink.AuditRowsTotal()
	at := time.Date(2025, 3, 1, 10, 0, 0, 123e6, time.UTC)
	created, revoked := auditRecorded(t, "create", "c1", at), auditRecorded(t, "revoke", "c1", at.Add(time.Second))
	bad, err := events.New(events.AuditRecorded, tenant, "c2", "not an object")
	if err != nil {
		t.Fatal(err)
	}
	e.publish(t, events.EventStream(tenant), created, revoked, bad)
	e.settled(t)
	e.publish(t, events.EventStream(tenant), created) // redelivered
	e.settled(t)

	if got := e.count(t, "SELECT count() FROM events FINAL WHERE name = '"+events.AuditRecorded+"'"); got != 3 {
		t.Errorf("audit events in the event store: got %d, want 3", got)
	}
	rows, err := schema.QueryAudit(context.Background(), e.conn, schema.AuditFilter{TenantID: tenant, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].EventID != revoked.EventID || rows[1].EventID != created.EventID {
		t.Fatalf("audit_log: got %+v, want revoke then create", rows)
	}
	r := rows[1]
	if !r.Timestamp.Equal(at) || r.Operation != "create" || r.ResourceID != "c1" || r.User != "owner@example.com" ||
		r.KeyID != "key-1" || r.IP != "192.0.2.1" || r.HTTPStatus != 201 || r.ResponseTimeMS != 3.5 ||
		r.Details != `{"common_name":"user@example.com"}` || r.Route != "/api/client-certs/create" || time.Since(r.InsertedAt) > time.Minute || r.StreamMS == 0 {
		t.Errorf("audit row: got %+v", r)
	}
	if got := sink.AuditRowsTotal() - before; got != 3 {
		t.Errorf("certfleet_sink_audit_rows_total grew by %v, want 3 (two records, one redelivery)", got)
	}
}
