package main

import (
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/certfleet/certfleet/apiserver/audit"
)

// auditOptions are the audit log's flags.
type auditOptions struct {
	AuditQueryTimeout time.Duration
}

// audit registers the audit log's flags.
func (f *flagSet) audit() *flagSet {
	defer f.group("audit log")()
	f.DurationVar(&f.opts.AuditQueryTimeout, "audit-query-timeout", 10*time.Second, "longest a GET /api/audit query may run in ClickHouse")
	return f
}

// auditConfig is the apiserver's audit settings; conn is the ClickHouse
// connection the audit log is read from.
func (o *options) auditConfig(conn driver.Conn) audit.Config {
	return audit.Config{Conn: conn, QueryTimeout: o.AuditQueryTimeout}
}
