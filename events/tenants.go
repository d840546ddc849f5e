package events

// TenantDeleted: an operator deleted an account and everything it kept
// (`certfleet tenant delete`). It is the record that stays: the deletion's
// ClickHouse mutations are issued before it is appended, so the sink
// writes it after them and it survives them. AggregateID and TenantID are
// the account id.
const TenantDeleted = "tenant.deleted.v1"

// TenantDeletedV1 says what the deletion removed. It names no email,
// domain or key: the account is gone, the record only shows that it was
// removed, when, and how much.
type TenantDeletedV1 struct {
	// Removed counts what was removed, by kind ("domains", "api_keys",
	// "channels", "client_certificates_revoked", ...).
	Removed map[string]int64 `json:"removed"`
	// ClickHouseTables are the tables a DELETE mutation was issued on.
	ClickHouseTables []string `json:"clickhouse_tables,omitempty"`
	// Source is who deleted it ("cli").
	Source string `json:"source"`
}
