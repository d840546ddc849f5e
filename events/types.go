package events

import (
	"time"

	"github.com/google/uuid"
)

// Event names. A breaking change to a payload is a new name with v2.
const (
	AccountCreated       = "account.created.v1"
	APIKeyCreated        = "apikey.created.v1"
	APIKeyRevoked        = "apikey.revoked.v1"
	APIKeyApproved       = "apikey.approved.v1"
	DomainAdded          = "domain.added.v1"
	DomainUpdated        = "domain.updated.v1"
	DomainRemoved        = "domain.removed.v1"
	DomainCheckRequested = "domain.check_requested.v1"
	ScanRequested        = "scan.requested.v1"
	ScanCompleted        = "scan.completed.v1"
)

// AccountCreatedV1: an account (tenant) was created. AggregateID and
// TenantID are the account id.
type AccountCreatedV1 struct {
	Email string `json:"email"`
}

// APIKeyCreatedV1: an API key was registered. The secret never appears in
// events; Hash is its SHA-256 in hex, which is what the command side stores.
type APIKeyCreatedV1 struct {
	KeyID     string     `json:"key_id"`
	Hash      string     `json:"hash"`
	Prefix    string     `json:"prefix"`
	Label     string     `json:"label"`
	Scopes    []string   `json:"scopes"`
	Source    string     `json:"source"` // "keychest", "api", "cli"
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// Kind is "claimed" for a key of the KeyChest claim calls, "api" (or
	// empty, before kinds existed) for a v1 key.
	Kind string `json:"kind,omitempty"`
	// Held is a claimed key that sees only its own domains until the
	// account approves it (apikey.approved.v1).
	Held bool `json:"held,omitempty"`
	// Email is the account's address on a held key's event: the notifier
	// mails it the link that approves the key.
	Email string `json:"email,omitempty"`
}

// APIKeyApprovedV1: the account approved a held claimed key: it now reads
// all of the account, and the domains it added raise alerts.
type APIKeyApprovedV1 struct {
	KeyID string `json:"key_id"`
	// Domains are the domains the key added while held.
	Domains []string `json:"domains"`
}

// APIKeyRevokedV1: an API key was revoked.
type APIKeyRevokedV1 struct {
	KeyID string `json:"key_id"`
}

// DomainAddedV1: a tenant registered a domain for monitoring. AggregateID
// is the domain id.
type DomainAddedV1 struct {
	DomainID string   `json:"domain_id"`
	Host     string   `json:"host"`
	Port     int      `json:"port"`
	Source   string   `json:"source"` // "keychest", "api" or "import" (POST /api/v1/domains/bulk)
	Notes    string   `json:"notes,omitempty"`
	Tags     []string `json:"tags,omitempty"`
	// HeldBy is the held claimed key that added the domain: it raises no
	// alerts until that key is approved.
	HeldBy string `json:"held_by,omitempty"`
	// FirstScanDelayMS puts the domain's first scan this many milliseconds
	// after OccurredAt (the coordinator's schedule). A bulk import spreads
	// its domains' first scans with it so an import is never one burst of
	// scans; 0 (every single add) is due at once.
	FirstScanDelayMS int64 `json:"first_scan_delay_ms,omitempty"`
}

// DomainUpdatedV1: mutable attributes of a domain changed. It carries the
// full new state of those attributes.
type DomainUpdatedV1 struct {
	DomainID string   `json:"domain_id"`
	Host     string   `json:"host"`
	Port     int      `json:"port"`
	Active   bool     `json:"active"`
	Notes    string   `json:"notes"`
	Tags     []string `json:"tags"`
}

// DomainRemovedV1: a domain is no longer monitored.
type DomainRemovedV1 struct {
	DomainID string `json:"domain_id"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
}

// DomainCheckRequestedV1: a tenant asked for an active domain to be
// scanned now (POST /api/v1/check). The coordinator makes it due at once;
// one already due earlier keeps its due time. AggregateID is the domain id.
type DomainCheckRequestedV1 struct {
	DomainID string `json:"domain_id"`
}

// ScanRequestedV1 is a scan job on a jobs:{NN} stream: scan this domain
// once from every region. AggregateID is the domain id.
type ScanRequestedV1 struct {
	JobID       uuid.UUID `json:"job_id"`
	DomainID    string    `json:"domain_id"`
	Host        string    `json:"host"`
	Port        int       `json:"port"`
	ScheduledAt time.Time `json:"scheduled_at"`
	// Manual is true for a scan a user asked for (not the schedule).
	Manual bool `json:"manual,omitempty"`
}

// ScanCompletedV1 is the result of one job seen from one region: one entry
// per IP the domain resolved to. When resolution itself fails there is one
// entry with an empty IP and the resolution outcome. The event id is
// ScanEventID(JobID, Region).
type ScanCompletedV1 struct {
	JobID    uuid.UUID `json:"job_id"`
	DomainID string    `json:"domain_id"`
	Host     string    `json:"host"`
	Port     int       `json:"port"`
	Region   string    `json:"region"`
	Agent    string    `json:"agent"`
	// ScheduledAt is the job's ScheduledAt: the same for every delivery
	// of the job, so that a rescan after a redelivery stores as the same
	// scan_results rows. Zero in events of agents that predate it.
	ScheduledAt time.Time  `json:"scheduled_at,omitempty"`
	StartedAt   time.Time  `json:"started_at"`
	FinishedAt  time.Time  `json:"finished_at"`
	Results     []IPResult `json:"results"`
	// SkippedIPs counts the addresses the domain resolved to beyond the
	// agent's --max-ips-per-domain: not scanned, and not in Results.
	SkippedIPs int `json:"skipped_ips,omitempty"`
}

// IPResult is what one handshake with one IP showed.
type IPResult struct {
	IP      string  `json:"ip"`
	Outcome Outcome `json:"outcome"`
	// Detail refines the outcome with a fixed vocabulary (a TLS alert name,
	// an x509 error kind such as "unknown-authority"); never raw error text.
	Detail string `json:"detail,omitempty"`

	// Certificate facts of the leaf; zero when no certificate was seen.
	CertificateFound bool      `json:"certificate_found"`
	Subject          string    `json:"subject,omitempty"`
	Issuer           string    `json:"issuer,omitempty"`
	SANs             []string  `json:"sans,omitempty"`
	Serial           string    `json:"serial,omitempty"` // hex, lower case
	NotBefore        time.Time `json:"not_before,omitempty"`
	// NotAfter is the certificate's notAfter as it reads, also past 2106;
	// NoExpiry (9999-12-31T23:59:59Z) means it has none (see HasNoExpiry).
	NotAfter           time.Time `json:"not_after,omitempty"`
	LeafSHA256         string    `json:"leaf_sha256,omitempty"` // hex of the DER
	KeyType            string    `json:"key_type,omitempty"`    // "RSA", "ECDSA", "Ed25519"
	KeyBits            int       `json:"key_bits,omitempty"`
	SignatureAlgorithm string    `json:"signature_algorithm,omitempty"`
	ChainLength        int       `json:"chain_length,omitempty"` // certificates the server sent, at most MaxChainLength

	TLSVersion    string `json:"tls_version,omitempty"` // "TLS 1.3"
	CipherSuite   string `json:"cipher_suite,omitempty"`
	ChainValid    bool   `json:"chain_valid"`
	HostnameValid bool   `json:"hostname_valid"`

	ConnectMS   int64 `json:"connect_ms"`
	HandshakeMS int64 `json:"handshake_ms"`

	// HTTP facts from one HEAD / sent over the same TLS connection (HTTP/2
	// when ALPN chose h2). HTTPStatus is 0 when the port did not answer
	// HTTP; then the HSTS fields say nothing.
	HTTPStatus int `json:"http_status,omitempty"`
	// HSTSMaxAge is the max-age of a valid Strict-Transport-Security
	// header, in seconds; 0 when there was none (or max-age=0).
	HSTSMaxAge            int64 `json:"hsts_max_age,omitempty"`
	HSTSIncludeSubdomains bool  `json:"hsts_include_subdomains,omitempty"`

	// LegacyTLSChecked tells a second handshake offering only TLS 1.0 and
	// 1.1 was tried; LegacyTLS lists the version it agreed on, if any
	// ("TLS 1.1"): a server still accepting deprecated protocols.
	LegacyTLSChecked bool     `json:"legacy_tls_checked,omitempty"`
	LegacyTLS        []string `json:"legacy_tls,omitempty"`
}

// Outcome classifies how a scan of one IP ended. It is a fixed vocabulary:
// the data never carries raw error text.
type Outcome string

// Outcomes. "ok" means a handshake completed and a certificate was read; a
// certificate that fails validation is still "ok" with ChainValid or
// HostnameValid false.
const (
	OutcomeOK                Outcome = "ok"
	OutcomeDNSError          Outcome = "dns-error"
	OutcomeNXDomain          Outcome = "nxdomain"
	OutcomeNoAddresses       Outcome = "no-addresses"
	OutcomeConnectionRefused Outcome = "connection-refused"
	OutcomeConnectionReset   Outcome = "connection-reset"
	OutcomeUnreachable       Outcome = "unreachable"
	OutcomeTimeout           Outcome = "timeout"
	OutcomeHandshakeError    Outcome = "handshake-error"
	OutcomeBlockedTarget     Outcome = "blocked-target"
	OutcomeInternalError     Outcome = "internal-error"
)

// Outcomes lists every outcome, for validation and documentation.
var Outcomes = []Outcome{
	OutcomeOK, OutcomeDNSError, OutcomeNXDomain, OutcomeNoAddresses,
	OutcomeConnectionRefused, OutcomeConnectionReset, OutcomeUnreachable,
	OutcomeTimeout, OutcomeHandshakeError, OutcomeBlockedTarget, OutcomeInternalError,
}
