package domainindex

import (
	"strconv"

	"github.com/certfleet/certfleet/apiserver/domainname"
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
