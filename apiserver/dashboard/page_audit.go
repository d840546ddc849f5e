package dashboard

import (
	"time"

	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/schema"
)

// auditPage is /audit: the tenant's audit records, newest first (GET
// /api/audit's query), a page at a time: "Older" asks for the records
// before the oldest shown.
func (d *Dashboard) auditPage() Page {
	return Page{Path: "/audit", Title: "Audit log", Nav: "Audit log", Template: "audit.html", Get: d.auditLog}
}

// auditPerPage is the records a page of /audit shows.
const auditPerPage = 50

type auditData struct {
	Available bool
	Rows      []schema.AuditRow
	Operation string
	Status    string
	Statuses  []string
	// Older links the next page; First whether this is the newest.
	Older string
	First bool
}

func (d *Dashboard) auditLog(r *Request) (any, error) {
	out := auditData{Available: d.deps.Audit.Queryable(), Operation: r.Query("operation"), Status: r.Query("status"),
		Statuses: []string{events.AuditSuccess, events.AuditFailure}, First: r.Query("until") == ""}
	if !out.Available {
		return out, nil
	}
	f := schema.AuditFilter{TenantID: r.Tenant(), Operation: out.Operation, Status: out.Status, Limit: auditPerPage}
	if f.Status != "" && f.Status != events.AuditSuccess && f.Status != events.AuditFailure {
		return nil, httpapi.BadRequest("status must be success or failure")
	}
	if len(f.Operation) > 200 {
		return nil, httpapi.BadRequest("operation is too long")
	}
	if u := r.Query("until"); u != "" {
		t, err := time.Parse(time.RFC3339Nano, u)
		if err != nil {
			return nil, httpapi.BadRequest("until must be an RFC 3339 time")
		}
		f.Until = t
	}
	rows, err := d.deps.Audit.Query(r.Ctx(), f)
	if err != nil {
		return nil, err
	}
	out.Rows = rows
	if len(rows) == auditPerPage {
		out.Older = link("/audit", "operation", out.Operation, "status", out.Status,
			"until", rows[len(rows)-1].Timestamp.UTC().Format(time.RFC3339Nano))
	}
	return out, nil
}
