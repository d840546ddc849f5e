package events

import "time"

// Event names of managed server certificates (issue 15): certificates
// certfleet orders from an ACME CA through DNS-01 for a tenant, and the DNS
// provider accounts that solve the challenges. No payload carries key
// material or a provider credential, sealed or not.
const (
	// CertificateRequested: a tenant asked for a certificate to be ordered
	// (created, renewal asked for) or the renewal schedule came due.
	// AggregateID is the certificate's domain.
	CertificateRequested = "certificate.requested.v1"
	// CertificateIssued: the first certificate of a managed domain was
	// issued.
	CertificateIssued = "certificate.issued.v1"
	// CertificateRenewed: a managed domain got a new certificate that
	// replaces an earlier one.
	CertificateRenewed = "certificate.renewed.v1"
	// CertificateFailed: an order failed; the worker retries with backoff.
	CertificateFailed = "certificate.failed.v1"
	// CertificateDeleted: the tenant stopped managing the domain (and had
	// its certificate revoked when Revoked is set).
	CertificateDeleted = "certificate.deleted.v1"

	// DNSAccountAdded: a tenant saved a DNS provider account (created or
	// replaced). AggregateID is "<provider>/<account_id>".
	DNSAccountAdded = "dnsaccount.added.v1"
	// DNSAccountRemoved: a tenant deleted a DNS provider account.
	DNSAccountRemoved = "dnsaccount.removed.v1"
)

// Why a certificate was requested (CertificateV1.Reason).
const (
	CertReasonCreate    = "create"    // POST /api/certificates/create
	CertReasonRenew     = "renew"     // POST /api/certificates/<domain>/renew
	CertReasonScheduled = "scheduled" // ARI window or two thirds of the lifetime
	CertReasonRetry     = "retry"     // after a failure, with backoff
)

// CertificateV1 is the payload of every certificate.* event. Fields that do
// not apply to an event are empty (omitted).
type CertificateV1 struct {
	Domain      string   `json:"domain"`
	SANs        []string `json:"san_domains,omitempty"`
	DNSProvider string   `json:"dns_provider,omitempty"`
	AccountID   string   `json:"account_id,omitempty"`
	KeyType     string   `json:"key_type,omitempty"`
	// Reason is one of the CertReason* values (requested, issued, renewed).
	Reason string `json:"reason,omitempty"`

	// The issued certificate (issued, renewed).
	Serial    string    `json:"serial,omitempty"` // hex, lower case
	SHA256    string    `json:"sha256,omitempty"` // hex of the leaf's DER
	Issuer    string    `json:"issuer,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	// PreviousSHA256 is the leaf this one replaces (renewed).
	PreviousSHA256 string `json:"previous_sha256,omitempty"`
	// NextRenewal is when the worker will renew it (issued, renewed).
	NextRenewal time.Time `json:"next_renewal,omitzero"`

	// Error is the ACME or DNS provider error (failed); Attempt counts the
	// failures in a row, RetryAt is the next attempt.
	Error   string    `json:"error,omitempty"`
	Attempt int       `json:"attempt,omitempty"`
	RetryAt time.Time `json:"retry_at,omitzero"`

	// Revoked is set on deleted when the certificate was revoked at the CA.
	Revoked bool `json:"revoked,omitempty"`
}

// DNSAccountV1 is the payload of dnsaccount.* events: names only, never a
// credential value.
type DNSAccountV1 struct {
	Provider  string `json:"provider"`
	AccountID string `json:"account_id"`
	// CredentialNames lists the credential names set (e.g.
	// RFC2136_NAMESERVER), without their values (added).
	CredentialNames []string `json:"credential_names,omitempty"`
}
