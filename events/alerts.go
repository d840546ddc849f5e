package events

import (
	"strconv"
	"time"

	"github.com/google/uuid"
)

// Alert events. The projector's alert engine (apiserver/alerts) appends
// them to the events stream in the same Lua script that changes the alert
// state, so an alert exists exactly when its event does.
const (
	AlertRaised   = "alert.raised.v1"
	AlertResolved = "alert.resolved.v1"
)

// Alert kinds (alert_type).
const (
	AlertSSLExpiry        = "ssl_expiry"
	AlertSSLExpired       = "ssl_expired"
	AlertChainInvalid     = "chain_invalid"
	AlertHostnameMismatch = "hostname_mismatch"
	AlertCertChanged      = "cert_changed"
	AlertRegionMismatch   = "region_mismatch"
	AlertScanFailing      = "scan_failing"
	// AlertDomainExpiry and AlertDomainExpired are about the registration
	// of the domain's registrable domain (registration.looked_up.v1).
	AlertDomainExpiry  = "domain_expiry"
	AlertDomainExpired = "domain_expired"
	// AlertCertNotDeployed: a managed certificate was issued (or renewed)
	// a grace period ago, and scans still see another leaf on some IPs
	// or regions. AlertACMERenewalFailed: the ACME orders of a managed
	// certificate keep failing.
	AlertCertNotDeployed   = "certificate_not_deployed"
	AlertACMERenewalFailed = "acme_renewal_failed"
)

// AlertKinds lists every alert kind.
var AlertKinds = []string{
	AlertSSLExpiry, AlertSSLExpired, AlertChainInvalid, AlertHostnameMismatch,
	AlertCertChanged, AlertRegionMismatch, AlertScanFailing, AlertDomainExpiry, AlertDomainExpired,
	AlertCertNotDeployed, AlertACMERenewalFailed,
}

// Alert severities, least urgent first.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// NamespaceAlert is the UUIDv5 namespace of alert ids.
var NamespaceAlert = uuid.MustParse("5d0c7a51-8a43-4b8e-9a43-6c3f0f1e2a04")

// AlertID is the id of the alert raised for condition (a key naming the
// kind and what it is about, e.g. "ssl_expiry|<sha256>|14") of domainID
// by the evaluation of the domain's view at version: the same evaluation
// always names its alert the same, so a retried or repeated evaluation
// cannot make a second alert, while the same condition crossing again
// later (a later version) is a new alert.
func AlertID(domainID, condition string, version int64) uuid.UUID {
	return uuid.NewSHA1(NamespaceAlert, []byte(domainID+"|"+condition+"|"+strconv.FormatInt(version, 10)))
}

// AlertResolvedEventID is the id of the alert.resolved event of alertID:
// an alert is resolved at most once.
func AlertResolvedEventID(alertID uuid.UUID) uuid.UUID {
	return uuid.NewSHA1(NamespaceAlert, []byte(alertID.String()+"|resolved"))
}

// AlertRaisedV1: a condition of a domain began (or, for a one-shot kind
// such as cert_changed, happened). EventID and AggregateID are the alert
// id; TenantID is the domain's tenant.
type AlertRaisedV1 struct {
	AlertID  string `json:"alert_id"`
	TenantID string `json:"tenant_id"`
	DomainID string `json:"domain_id"`
	Hostname string `json:"hostname"`
	Port     int    `json:"port"`
	// AlertType is one of AlertKinds.
	AlertType string `json:"alert_type"`
	// Severity is info, warning or critical.
	Severity string `json:"severity"`
	Title    string `json:"title"`
	// Message names the IPs and regions the condition was seen on.
	Message string `json:"message"`
	// ThresholdDays is the threshold crossed, for ssl_expiry and
	// domain_expiry only.
	ThresholdDays *int `json:"threshold_days"`
	// LeafSHA256 is the certificate the alert is about (hex of the DER),
	// when it is about one.
	LeafSHA256 string   `json:"leaf_sha256,omitempty"`
	IPs        []string `json:"ips"`
	Regions    []string `json:"regions"`
	// TriggeredAt is when the scan that showed the condition finished.
	TriggeredAt time.Time `json:"triggered_at"`
	// OneShot is true for an alert that is never resolved (cert_changed:
	// it tells of a change that happened, not of a state that lasts).
	OneShot bool `json:"one_shot,omitempty"`
}

// AlertResolvedV1: the condition of an alert cleared. EventID is
// AlertResolvedEventID(alert id); AggregateID is the alert id. It repeats
// what a notification needs from the raised alert.
type AlertResolvedV1 struct {
	AlertID     string    `json:"alert_id"`
	TenantID    string    `json:"tenant_id"`
	DomainID    string    `json:"domain_id"`
	Hostname    string    `json:"hostname"`
	Port        int       `json:"port"`
	AlertType   string    `json:"alert_type"`
	Severity    string    `json:"severity"`
	Title       string    `json:"title"`
	TriggeredAt time.Time `json:"triggered_at"`
	ResolvedAt  time.Time `json:"resolved_at"`
	// Reason says why it cleared: "certificate replaced", "condition
	// cleared", "domain removed", "domain renamed", "threshold removed",
	// "registration renewed".
	Reason string `json:"reason"`
}
