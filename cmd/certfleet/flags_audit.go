package main

import (
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/certfleet/certfleet/apiserver"
)

// auditOptions are the audit log's flags.
type auditOptions struct{}

// audit registers the audit log's flags.
func (f *flagSet) audit() *flagSet { return f }

// auditConfig is the apiserver's audit settings; conn is the ClickHouse
// connection the audit log is read from.
func (o *options) auditConfig(conn driver.Conn) apiserver.AuditConfig {
	return apiserver.AuditConfig{}
}
