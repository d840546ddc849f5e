// Package managedcert keeps the server certificates certfleet orders over
// ACME for tenants (issue 15): the certificate records with their sealed
// private keys, the tenants' DNS provider accounts with sealed credentials,
// the tenants' ACME accounts, and the renewal schedule. The API
// (apiserver/certificates) writes requests and reads certificates through
// it; the ACME worker (coordinator/acme) alone orders, renews and revokes,
// and writes what it got through it.
//
// Redis layout ({tNN} is events.TenantTag(tenant); every key of one tenant
// shares that slot with the tenant's event stream, so a write and its event
// are one script):
//
//	mcert:{tNN}:<tenant>:<domain>       hash: rec (JSON Certificate), cert_pem,
//	                                    chain_pem, sealed_key (the private key)
//	mcerts:{tNN}:<tenant>               zset: domains by creation time (list)
//	mcert:due:{tNN}                     zset: "<tenant>|<domain>" by due time (ms)
//	mcert:lease:{tNN}:<tenant>:<domain> the worker's lease on one order
//	mcert:orders:{tNN}:<tenant>:<day>   orders placed that UTC day (quota)
//	dnsacct:{tNN}:<tenant>:<provider>:<account_id>
//	                                    hash: rec (JSON DNSAccount), sealed_creds
//	dnsaccts:{tNN}:<tenant>             set: "<provider>:<account_id>"
//	acmeacct:{tNN}:<tenant>:<dir>       hash: the tenant's ACME account on one
//	                                    directory (<dir>: DirectoryID), sealed key
//
// Private keys and credentials are sealed (internal/seal) with the secrets
// passphrase, bound to the key they are stored under (the AAD functions
// below), and never appear in clear in Redis, ClickHouse, logs or events.
package managedcert

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"github.com/certfleet/certfleet/events"
)

// Status of a managed certificate, as the API shows it.
type Status string

// The statuses. A certificate being renewed stays issued (Renewing is set)
// until the new one replaces it; a failed renewal of an issued
// certificate keeps it issued with Error set.
const (
	StatusPending Status = "pending" // ordered, never issued yet
	StatusIssued  Status = "issued"  // a certificate is there to download
	StatusFailed  Status = "failed"  // never issued; Error says why, RetryAt when next
)

// Key types of ordered certificates (--acme-key-type, per request).
const (
	KeyEC256   = "ec256"
	KeyRSA2048 = "rsa2048"
	KeyRSA4096 = "rsa4096"
)

// Providers tenants may configure. lego's "exec" runs a program on the
// server, so it is never a tenant account (and no operator hook exists
// yet: docs/dns-providers.md).
const (
	ProviderRFC2136    = "rfc2136"
	ProviderCloudflare = "cloudflare"
	ProviderRoute53    = "route53"
	ProviderHTTPReq    = "httpreq"
)

// Certificate is the record of one managed domain: what was asked, and the
// current certificate's facts. No key material.
type Certificate struct {
	Tenant      string   `json:"tenant"`
	Domain      string   `json:"domain"`                // lower case; may be "*.example.com"
	SANs        []string `json:"san_domains,omitempty"` // besides Domain
	DNSProvider string   `json:"dns_provider"`
	AccountID   string   `json:"account_id"`
	KeyType     string   `json:"key_type"`
	// Contact is the tenant's email, the contact of its ACME account when
	// the worker registers one ("" : the operator's --acme-email).
	Contact string `json:"contact,omitempty"`

	Status Status `json:"status"`
	// Renewing is set while a renewal is due or running.
	Renewing bool `json:"renewing,omitempty"`
	// Error is the last failure (ACME problem, DNS provider error), empty
	// after a success. Attempt counts failures in a row; RetryAt is when
	// the worker tries again.
	Error   string    `json:"error,omitempty"`
	Attempt int       `json:"attempt,omitempty"`
	RetryAt time.Time `json:"retry_at,omitzero"`

	// The current certificate (status issued).
	Serial    string    `json:"serial,omitempty"` // hex, lower case
	SHA256    string    `json:"sha256,omitempty"` // hex of the leaf's DER
	Issuer    string    `json:"issuer,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	IssuedAt  time.Time `json:"issued_at,omitzero"`
	// NextRenewal is when the worker renews it: inside the CA's ARI window
	// when it offers one, else at two thirds of the lifetime.
	NextRenewal time.Time `json:"next_renewal,omitzero"`
	// RenewalSource is "ari" or "lifetime".
	RenewalSource string `json:"renewal_source,omitempty"`

	// Deleting is set by DELETE ?revoke=true: the worker revokes the
	// certificate, then removes the record.
	Deleting bool `json:"deleting,omitempty"`

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Material is a certificate's PEM files, opened for a download or a
// deployment. PrivateKeyPEM is secret: never log it or put it in an event.
type Material struct {
	CertPEM       string // the leaf
	ChainPEM      string // the intermediates, leaf excluded
	PrivateKeyPEM []byte
}

// FullchainPEM is the leaf followed by the chain.
func (m Material) FullchainPEM() string { return m.CertPEM + m.ChainPEM }

// DNSAccount is a tenant's DNS provider account. Credentials are opened
// only for the worker building the provider; the API never returns them.
type DNSAccount struct {
	Tenant    string `json:"tenant"`
	Provider  string `json:"provider"`
	AccountID string `json:"account_id"`
	// CredentialNames lists the names set, sorted (shown by GET).
	CredentialNames []string  `json:"credential_names"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
	// Credentials are the opened values by lego's names; never stored in
	// clear, never serialized.
	Credentials map[string]string `json:"-"`
}

var (
	// ErrNotFound is a certificate or account that does not exist or
	// belongs to another tenant.
	ErrNotFound = errors.New("not found")
	// ErrExists is a domain already managed by the tenant.
	ErrExists = errors.New("already managed")
	// ErrNoPassphrase: keys and credentials cannot be sealed because the
	// server has no secrets passphrase.
	ErrNoPassphrase = errors.New("managed certificates are disabled: the server has no secrets passphrase (--secrets-passphrase)")
)

// CertKey is the hash of one managed domain.
func CertKey(tenant, domain string) string {
	return "mcert:" + events.TenantTag(tenant) + ":" + tenant + ":" + domain
}

// CertsKey lists a tenant's managed domains by creation time.
func CertsKey(tenant string) string { return "mcerts:" + events.TenantTag(tenant) + ":" + tenant }

// DueKey is the renewal schedule of one partition tag (events.TenantTags):
// members DueMember(tenant, domain), scored by due time in Unix ms.
func DueKey(tag string) string { return "mcert:due:" + tag }

// DueMember names one managed domain in DueKey.
func DueMember(tenant, domain string) string { return tenant + "|" + domain }

// LeaseKey is the worker's lease on ordering one domain (internal/lease):
// two replicas never order the same certificate at once.
func LeaseKey(tenant, domain string) string {
	return "mcert:lease:" + events.TenantTag(tenant) + ":" + tenant + ":" + domain
}

// OrdersKey counts the orders a tenant placed on one UTC day (quota).
func OrdersKey(tenant string, day time.Time) string {
	return "mcert:orders:" + events.TenantTag(tenant) + ":" + tenant + ":" + day.UTC().Format("20060102")
}

// DNSAccountKey is the hash of one DNS provider account.
func DNSAccountKey(tenant, provider, accountID string) string {
	return "dnsacct:" + events.TenantTag(tenant) + ":" + tenant + ":" + provider + ":" + accountID
}

// DNSAccountsKey is the set of a tenant's accounts, "<provider>:<account_id>".
func DNSAccountsKey(tenant string) string {
	return "dnsaccts:" + events.TenantTag(tenant) + ":" + tenant
}

// DirectoryID names an ACME directory URL in keys.
func DirectoryID(directoryURL string) string {
	sum := sha256.Sum256([]byte(directoryURL))
	return hex.EncodeToString(sum[:8])
}

// ACMEAccountKey is the hash of a tenant's ACME account on a directory.
func ACMEAccountKey(tenant, directoryURL string) string {
	return "acmeacct:" + events.TenantTag(tenant) + ":" + tenant + ":" + DirectoryID(directoryURL)
}

// saltKey holds the salt of the key sealing this package's secrets.
const saltKey = "mcert:salt"

// The additional data each sealed value is bound to: a value copied to
// another key does not open.
func keyAAD(tenant, domain string) []byte { return []byte("mcert:" + tenant + ":" + domain + ":key") }

func credsAAD(tenant, provider, accountID string) []byte {
	return []byte("dnsacct:" + tenant + ":" + provider + ":" + accountID + ":creds")
}

func acmeKeyAAD(tenant, directoryURL string) []byte {
	return []byte("acmeacct:" + tenant + ":" + DirectoryID(directoryURL) + ":key")
}
