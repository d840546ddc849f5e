package schema

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"

	"github.com/certfleet/certfleet/events"
)

// AuditColumns are the columns of audit_log, in table order.
const AuditColumns = "event_id, occurred_at, occurred_at_unix_ms, tenant_id, operation, resource_type, resource_id, " +
	"status, user, key_id, ip, method, route, http_status, response_time_ms, details, error, stream_ms, stream_seq, inserted_at"

// AuditRow is one row of audit_log: one audit.recorded.v1 event.
type AuditRow struct {
	EventID        uuid.UUID
	Timestamp      time.Time // the record's timestamp (the request's arrival), millisecond precision
	TenantID       string
	Operation      string
	ResourceType   string
	ResourceID     string
	Status         string
	User           string
	KeyID          string
	IP             string
	Method         string
	Route          string
	HTTPStatus     uint16
	ResponseTimeMS float64
	Details        string // a JSON object
	Error          string
	// StreamMS and StreamSeq are the entry id on the events stream
	// ("<ms>-<seq>"): the order in which records were appended.
	StreamMS, StreamSeq uint64
	InsertedAt          time.Time
}

// AuditRowOf returns the audit_log row of an audit.recorded.v1 event read
// from the stream entry streamID.
func AuditRowOf(e events.Envelope, streamID string, insertedAt time.Time) (AuditRow, error) {
	ms, seq, err := parseStreamID(streamID)
	if err != nil {
		return AuditRow{}, err
	}
	var p events.AuditRecordedV1
	if err := e.Decode(&p); err != nil {
		return AuditRow{}, err
	}
	if p.HTTPStatus < 0 || p.HTTPStatus > events.MaxHTTPStatus {
		// Never stored as a plausible clamped status.
		return AuditRow{}, fmt.Errorf("audit record %s: http status %d is outside 0..%d", e.EventID, p.HTTPStatus, events.MaxHTTPStatus)
	}
	ts := p.Timestamp
	if ts.IsZero() {
		ts = e.OccurredAt
	}
	details := strings.TrimSpace(string(p.Details))
	if details == "" || details == "null" {
		details = "{}"
	}
	return AuditRow{
		EventID:        e.EventID,
		Timestamp:      ts.UTC().Truncate(time.Millisecond),
		TenantID:       e.TenantID,
		Operation:      p.Operation,
		ResourceType:   p.ResourceType,
		ResourceID:     p.ResourceID,
		Status:         p.Status,
		User:           p.User,
		KeyID:          p.KeyID,
		IP:             p.IP,
		Method:         p.Method,
		Route:          p.Route,
		HTTPStatus:     uint16(p.HTTPStatus),
		ResponseTimeMS: max(p.ResponseTimeMS, 0),
		Details:        details,
		Error:          p.Error,
		StreamMS:       ms,
		StreamSeq:      seq,
		InsertedAt:     insertedAt,
	}, nil
}

// parseStreamID splits a Redis stream entry id, "<ms>-<seq>".
func parseStreamID(id string) (ms, seq uint64, err error) {
	a, b, ok := strings.Cut(id, "-")
	if ok {
		if ms, err = strconv.ParseUint(a, 10, 64); err == nil {
			if seq, err = strconv.ParseUint(b, 10, 64); err == nil {
				return ms, seq, nil
			}
		}
	}
	return 0, 0, fmt.Errorf("stream entry id %q: want <ms>-<seq>", id)
}

// InsertAuditRows stores the rows in one insert. Inserting a row again is
// harmless: reads with FINAL see it once.
func InsertAuditRows(ctx context.Context, conn driver.Conn, rows []AuditRow) error {
	n := len(rows)
	var (
		ids                                             = make([]uuid.UUID, n)
		occurred, inserted                              = make([]time.Time, n), make([]time.Time, n)
		ms                                              = make([]uint64, n)
		tenants, ops, types, resources, statuses, users = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		keys, ips, methods, routes, details, errs       = make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
		codes                                           = make([]uint16, n)
		streamMS, streamSeq                             = make([]uint64, n), make([]uint64, n)
		took                                            = make([]float64, n)
	)
	for i := range rows {
		r := &rows[i]
		ids[i] = r.EventID
		occurred[i], ms[i], inserted[i] = clampDateTime(r.Timestamp), uint64(max(r.Timestamp.UnixMilli(), 0)), clampDateTime(r.InsertedAt)
		tenants[i], ops[i], types[i], resources[i], statuses[i], users[i] = r.TenantID, r.Operation, r.ResourceType, r.ResourceID, r.Status, r.User
		keys[i], ips[i], methods[i], routes[i], details[i], errs[i] = r.KeyID, r.IP, r.Method, r.Route, r.Details, r.Error
		codes[i], took[i] = r.HTTPStatus, r.ResponseTimeMS
		streamMS[i], streamSeq[i] = r.StreamMS, r.StreamSeq
	}
	return insertColumns(ctx, conn, "audit_log", AuditColumns,
		ids, occurred, ms, tenants, ops, types, resources, statuses, users, keys, ips, methods, routes, codes, took, details, errs,
		streamMS, streamSeq, inserted)
}

// AuditFilter selects audit records of one tenant. Empty strings and zero
// times do not filter.
type AuditFilter struct {
	TenantID     string
	Operation    string
	ResourceType string
	ResourceID   string
	Status       string
	// Since is inclusive, Until exclusive, both to the millisecond.
	Since, Until time.Time
	// Limit caps the rows returned; it must be positive.
	Limit int
}

// QueryAudit returns the tenant's audit records that match f, newest
// first (records of the same millisecond in the reverse order they were
// appended to the stream), each
// stored row once however often its event was delivered.
func QueryAudit(ctx context.Context, conn driver.Conn, f AuditFilter) ([]AuditRow, error) {
	return queryAudit(ctx, conn, f, "FINAL")
}

// queryAudit is QueryAudit; final is "FINAL", or "" for the benchmark's
// baseline.
func queryAudit(ctx context.Context, conn driver.Conn, f AuditFilter, final string) ([]AuditRow, error) {
	if f.Limit < 1 {
		return nil, fmt.Errorf("query audit log: limit must be positive, got %d", f.Limit)
	}
	where := []string{"tenant_id = ?"}
	args := []any{f.TenantID}
	for _, c := range []struct{ column, value string }{
		{"operation", f.Operation}, {"resource_type", f.ResourceType}, {"resource_id", f.ResourceID}, {"status", f.Status},
	} {
		if c.value != "" {
			where = append(where, c.column+" = ?")
			args = append(args, c.value)
		}
	}
	// The DateTime bounds let ClickHouse skip partitions and granules; the
	// millisecond ones decide.
	if !f.Since.IsZero() {
		where = append(where, "occurred_at >= toDateTime(?)", "occurred_at_unix_ms >= ?")
		args = append(args, clampDateTime(f.Since).Unix(), uint64(max(f.Since.UnixMilli(), 0)))
	}
	if !f.Until.IsZero() {
		where = append(where, "occurred_at <= toDateTime(?)", "occurred_at_unix_ms < ?")
		args = append(args, clampDateTime(f.Until).Unix(), uint64(max(f.Until.UnixMilli(), 0)))
	}
	args = append(args, f.Limit)
	rows, err := conn.Query(ctx, "SELECT "+AuditColumns+" FROM audit_log "+final+" WHERE "+strings.Join(where, " AND ")+
		" ORDER BY occurred_at DESC, occurred_at_unix_ms DESC, stream_ms DESC, stream_seq DESC, event_id DESC LIMIT ?", args...)
	if err != nil {
		return nil, fmt.Errorf("query audit log: %w", err)
	}
	defer rows.Close()
	var out []AuditRow
	for rows.Next() {
		var (
			r  AuditRow
			ms uint64
		)
		if err := rows.Scan(&r.EventID, &r.Timestamp, &ms, &r.TenantID, &r.Operation, &r.ResourceType, &r.ResourceID,
			&r.Status, &r.User, &r.KeyID, &r.IP, &r.Method, &r.Route, &r.HTTPStatus, &r.ResponseTimeMS, &r.Details,
			&r.Error, &r.StreamMS, &r.StreamSeq, &r.InsertedAt); err != nil {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		r.Timestamp = time.UnixMilli(int64(ms)).UTC()
		r.InsertedAt = r.InsertedAt.UTC()
		if !json.Valid([]byte(r.Details)) {
			r.Details = "{}"
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	return out, nil
}
