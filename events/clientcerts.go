package events

import "time"

// Event names of the private CA (issue 5). Key material never appears in
// these payloads: no private key, sealed or not, no CSR.
const (
	// CACreated: the deployment's issuing CA was generated or imported.
	// TenantID is empty (the CA is the operator's); AggregateID is the
	// CA certificate's SHA-256.
	CACreated = "ca.created.v1"
	// ClientCertIssued: a client certificate was signed for a tenant.
	// AggregateID is the certificate id.
	ClientCertIssued = "clientcert.issued.v1"
	// ClientCertRevoked: a client certificate was revoked. AggregateID is
	// the certificate id.
	ClientCertRevoked = "clientcert.revoked.v1"
	// ClientCertRenewed: a certificate was replaced by a new one (same
	// subject, new serial and key). AggregateID is the old certificate's
	// id; the new one also has its own clientcert.issued event.
	ClientCertRenewed = "clientcert.renewed.v1"
)

// CACreatedV1: the issuing CA exists from now on.
type CACreatedV1 struct {
	Subject   string    `json:"subject"`
	KeyType   string    `json:"key_type"` // "ecdsa-p256", "rsa-3072", ...
	Serial    string    `json:"serial"`   // decimal
	SHA256    string    `json:"sha256"`   // hex of the DER
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	Source    string    `json:"source"` // "generated" or "imported"
}

// ClientCertIssuedV1: a client certificate was signed.
type ClientCertIssuedV1 struct {
	CertID             string    `json:"cert_id"`
	CommonName         string    `json:"common_name"`
	Email              string    `json:"email,omitempty"`
	Organization       string    `json:"organization,omitempty"`
	OrganizationalUnit string    `json:"organizational_unit,omitempty"`
	Usage              string    `json:"cert_usage,omitempty"`
	Serial             string    `json:"serial"` // decimal
	SHA256             string    `json:"sha256"` // hex of the DER
	NotBefore          time.Time `json:"not_before"`
	NotAfter           time.Time `json:"not_after"`
	KeyGenerated       bool      `json:"key_generated"`
	RenewalEnabled     bool      `json:"renewal_enabled"`
	// RenewedFrom is the id of the certificate this one renews, if any.
	RenewedFrom string `json:"renewed_from,omitempty"`
}

// ClientCertRevokedV1: a client certificate was revoked.
type ClientCertRevokedV1 struct {
	CertID    string    `json:"cert_id"`
	Serial    string    `json:"serial"` // decimal
	Reason    string    `json:"reason"` // RFC 5280 reason name
	RevokedAt time.Time `json:"revoked_at"`
}

// ClientCertRenewedV1: CertID was renewed by NewCertID.
type ClientCertRenewedV1 struct {
	CertID    string `json:"cert_id"`
	NewCertID string `json:"new_cert_id"`
	OldSerial string `json:"old_serial"` // decimal
	NewSerial string `json:"new_serial"` // decimal
	// Automatic is true when the auto-renewal loop renewed it.
	Automatic bool `json:"automatic,omitempty"`
}
