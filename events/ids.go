package events

import (
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// Namespaces of the name-based (UUIDv5) ids. Deriving ids from names makes
// commands idempotent: the same email is the same tenant, and a job
// dispatched twice for one due time has one id.
var (
	NamespaceTenant = uuid.MustParse("5d0c7a51-8a43-4b8e-9a43-6c3f0f1e2a01")
	NamespaceDomain = uuid.MustParse("5d0c7a51-8a43-4b8e-9a43-6c3f0f1e2a02")
	NamespaceJob    = uuid.MustParse("5d0c7a51-8a43-4b8e-9a43-6c3f0f1e2a03")
)

// TenantID is the account id of the account whose identity is email. Email
// is compared without regard to case.
func TenantID(email string) string {
	return uuid.NewSHA1(NamespaceTenant, []byte(strings.ToLower(email))).String()
}

// DomainID is a name-based id for host:port of tenantID. Registered domains
// no longer use it: their ids are random so that they survive a rename
// (apiserver/accounts keeps one domain per tenant and host:port with its
// index). It remains a stable id for tests and tools that need one.
func DomainID(tenantID, host string, port int) string {
	return uuid.NewSHA1(NamespaceDomain, []byte(tenantID+"|"+host+":"+strconv.Itoa(port))).String()
}

// JobID is the id of the scan of domainID that fell due at dueUnixMS. A job
// dispatched twice for the same due time has the same id, so the duplicate
// is visible and collapses in storage.
func JobID(domainID string, dueUnixMS int64) uuid.UUID {
	return uuid.NewSHA1(NamespaceJob, []byte(domainID+"|"+strconv.FormatInt(dueUnixMS, 10)))
}
