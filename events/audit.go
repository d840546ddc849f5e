package events

import (
	"encoding/json"
	"time"
)

// AuditRecorded: an audited API operation was attempted (issue 5: the
// client certificate API). TenantID is the caller's account, empty when
// the request carried no valid key; AggregateID is the resource id, or
// the operation when there is none. The sink stores it in the events table
// and, one row per event, in audit_log (schema.AuditRows).
const AuditRecorded = "audit.recorded.v1"

// Audit statuses.
const (
	AuditSuccess = "success"
	AuditFailure = "failure"
)

// AuditOperationFailedAuth is the operation of a request refused for its
// key (401 or 403); the operation it attempted is in Details
// ("attempted_operation").
const AuditOperationFailedAuth = "failed_auth"

// AuditRecordedV1 is one audit record, CertMate's audit log entry
// (timestamp, operation, resource_type, resource_id, status, user,
// ip_address, details, error) plus the key, the route and the answer.
type AuditRecordedV1 struct {
	// Timestamp is when the request arrived (UTC, millisecond precision).
	Timestamp time.Time `json:"timestamp"`
	// Operation is what was asked: create, revoke, renew, download, batch,
	// failed_auth...
	Operation string `json:"operation"`
	// ResourceType is what it acts on, e.g. "certificate".
	ResourceType string `json:"resource_type"`
	// ResourceID is the resource's id; empty when none was known (a create
	// that failed, a batch).
	ResourceID string `json:"resource_id"`
	// Status is AuditSuccess (HTTP status below 400) or AuditFailure.
	Status string `json:"status"`
	// User is the account's email, or its tenant id when the email could
	// not be read; empty for a request without a valid key.
	User string `json:"user"`
	// KeyID is the API key's id; empty without a valid key.
	KeyID string `json:"key_id"`
	// IP is the client's address as the server saw it.
	IP string `json:"ip_address"`
	// Method and Route are the HTTP method and gin's route template (never
	// the path with its values, nor the query).
	Method string `json:"method"`
	Route  string `json:"route"`
	// HTTPStatus is the status code answered.
	HTTPStatus int `json:"http_status"`
	// ResponseTimeMS is the time from the request's arrival to the end of
	// its handler, in milliseconds (fractional).
	ResponseTimeMS float64 `json:"response_time_ms"`
	// Details is a JSON object the handler filled (common_name, usage,
	// counts of a batch...); never key material.
	Details json.RawMessage `json:"details"`
	// Error is the error answered on failure, empty on success.
	Error string `json:"error,omitempty"`
}
