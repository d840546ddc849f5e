package domainindex

import (
	"strconv"

	"github.com/certfleet/certfleet/apiserver/domainname"
	"github.com/certfleet/certfleet/events"
)

// A domain record (apiserver/accounts) leaves out its port when it is
// domainname.DefaultPort, as most are (about 9 bytes of each record's
// listpack). Every reader of the field, Go and Lua, reads it through
// RecordPort or record_port.

// RecordPortLua defines RECORD_PORT, the default port as the record would
// hold it, and record_port(v): a record's port as HMGET reads it (false
// when left out).
var RecordPortLua = `
local RECORD_PORT = '` + strconv.Itoa(domainname.DefaultPort) + `'
local function record_port(v) return v or RECORD_PORT end
`

// RecordPort is a record's port from its field's value ("" when left
// out).
func RecordPort(v string) (int, error) {
	if v == "" {
		return domainname.DefaultPort, nil
	}
	return strconv.Atoi(v)
}

// recordKeyStart starts every domain record's key: RecordPrefix.
const recordKeyStart = "domain:"

// RecordPrefix starts the key of every domain record of tenantID (its
// id follows), in the slot of the tenant's index (events.TenantTag): the
// index's scripts reach a domain's record from the index's Prefix
// (IndexLua's ix_record), so accounts names its records by it.
func RecordPrefix(tenantID string) string {
	return recordKeyStart + events.TenantTag(tenantID) + ":"
}
