package dashboard

import (
	"time"

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
	// GET /api/audit's reading of the query: a filter it refuses (an
	// unknown operation or resource type, a bad status) is the same 400
	// here, not an empty list.
	f, err := d.deps.Audit.Filter(r.Context)
	if err != nil {
		return nil, err
	}
	f.TenantID, f.Limit = r.Tenant(), auditPerPage
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
