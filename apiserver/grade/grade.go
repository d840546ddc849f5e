// Package grade turns what the scans saw of a domain into the verdicts the
// API shows: an SSL Labs-like letter grade per IP and per domain, the days
// left before the first certificate expires, and the monitoring status
// (valid, warning, critical, expired, error).
//
// Grades, best first: A+, A, B, C, F. An IP gets F for an expired or not
// yet valid certificate, an invalid chain, a hostname mismatch, a weak key
// (RSA < 2048 bits, ECDSA < 256 bits) or a SHA-1/MD5 signature; C when the
// handshake negotiated TLS 1.1 or older, or when the server speaks nothing
// newer (no certificate in the scan's TLS 1.2-1.3 handshake, but one in
// the legacy TLS 1.0-1.1 handshake); at most B when it still accepts a
// deprecated protocol or the certificate expires within the critical
// threshold; A+ is A with HSTS max-age of at least 180 days. Any other IP
// without a certificate has no grade. The domain's grade is its worst IP's.
package grade

import (
	"math"
	"slices"
	"strings"
	"time"

	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
)

// Grades, best first.
const (
	APlus = "A+"
	A     = "A"
	B     = "B"
	C     = "C"
	F     = "F"
)

// order ranks the grades, best first.
var order = []string{APlus, A, B, C, F}

// Reasons a grade is not A+: a fixed vocabulary, listed in Reasons' order.
const (
	ReasonNoCertificate   = "no-certificate"    // the IP showed no certificate: no grade
	ReasonExpired         = "expired"           // notAfter is past: F
	ReasonNotYetValid     = "not-yet-valid"     // notBefore is ahead: F
	ReasonChainInvalid    = "chain-invalid"     // no valid path to a trusted root: F
	ReasonHostnameInvalid = "hostname-mismatch" // the certificate does not cover the name: F
	ReasonWeakKey         = "weak-key"          // RSA < 2048 or ECDSA < 256 bits: F
	ReasonWeakSignature   = "weak-signature"    // SHA-1 or MD5 signature: F
	ReasonOldProtocol     = "old-protocol"      // the handshake negotiated TLS 1.1 or older: C
	ReasonLegacyProtocols = "legacy-protocols"  // TLS 1.0/1.1 still accepted: at most B
	ReasonExpiresSoon     = "expires-soon"      // within the critical threshold: at most B
	ReasonNoHSTS          = "no-hsts"           // HSTS missing or max-age under 180 days: A
)

// Reasons lists every reason in the order a grade's reasons are given.
var Reasons = []string{
	ReasonNoCertificate, ReasonExpired, ReasonNotYetValid, ReasonChainInvalid,
	ReasonHostnameInvalid, ReasonWeakKey, ReasonWeakSignature, ReasonOldProtocol,
	ReasonLegacyProtocols, ReasonExpiresSoon, ReasonNoHSTS,
}

// Statuses of a domain.
const (
	StatusValid    = "valid"
	StatusWarning  = "warning"
	StatusCritical = "critical"
	StatusExpired  = "expired"
	StatusError    = "error"
)

// Statuses lists every status.
var Statuses = []string{StatusValid, StatusWarning, StatusCritical, StatusExpired, StatusError}

// HSTSMinMaxAge is the HSTS max-age, in seconds, an A+ needs: 180 days.
const HSTSMinMaxAge = 180 * 24 * 60 * 60

// Thresholds in days.
type Thresholds struct {
	// Warning: a certificate expiring within this many days is "warning".
	Warning int
	// Critical: within this many days it is "critical", and caps the grade
	// at B.
	Critical int
}

// EntryGrade is the grade of one view entry (one IP seen from one region).
type EntryGrade struct {
	Grade   string   // "" when the IP showed no certificate
	Reasons []string // why it is not A+
}

// Summary is the verdict over a domain's expiration view.
type Summary struct {
	// Grade is the worst IP's grade; "" when never scanned or when no IP
	// could be graded (none showed a certificate or spoke only TLS 1.1 or
	// older).
	Grade string
	// Reasons are why the grade is not A+, over every IP, in Reasons' order.
	Reasons []string
	// DaysRemaining counts whole days from now to the earliest notAfter
	// among the entries with a certificate (negative once expired); nil
	// when none has one, or when none that has one expires (NoExpiry).
	DaysRemaining *int
	// NoExpiry tells that every certificate seen has no well-defined
	// expiration (RFC 5280's 99991231235959Z): nothing counts down.
	NoExpiry bool
	// Status is valid|warning|critical|expired|error; "" when never scanned.
	Status string
	// CheckedAt is the latest ScannedAt; nil when never scanned.
	CheckedAt *time.Time
	// First is the entry with a certificate that expires first (ties: the
	// first in the view's order; a certificate with no expiry comes after
	// every one that has one); nil when none has a certificate.
	First *projector.ExpEntry
	// Entries grades every entry, in the order given to Summarize.
	Entries []EntryGrade
}

// DaysUntil counts whole days from now to t, rounding down: negative once
// t is past.
func DaysUntil(t, now time.Time) int {
	return int(math.Floor(t.Sub(now).Hours() / 24))
}

// Grade grades what one handshake with one IP showed, at now.
func Grade(r events.IPResult, now time.Time, th Thresholds) (string, []string) {
	if !r.CertificateFound {
		// The scan's handshake offers TLS 1.2 and 1.3 only, so a server
		// that speaks nothing newer than TLS 1.1 shows no certificate
		// there and agrees in the legacy handshake.
		if len(r.LegacyTLS) > 0 {
			return C, []string{ReasonOldProtocol, ReasonLegacyProtocols}
		}
		return "", []string{ReasonNoCertificate}
	}
	var reasons []string
	expired := now.After(r.NotAfter)
	if expired {
		reasons = append(reasons, ReasonExpired)
	}
	if now.Before(r.NotBefore) {
		reasons = append(reasons, ReasonNotYetValid)
	}
	// A chain that failed only because the certificate was out of its
	// validity window at scan time is already told by the dates.
	if !r.ChainValid && !(r.Detail == "expired" || r.Detail == "not-yet-valid") {
		reasons = append(reasons, ReasonChainInvalid)
	}
	if !r.HostnameValid {
		reasons = append(reasons, ReasonHostnameInvalid)
	}
	if weakKey(r.KeyType, r.KeyBits) {
		reasons = append(reasons, ReasonWeakKey)
	}
	if weakSignature(r.SignatureAlgorithm) {
		reasons = append(reasons, ReasonWeakSignature)
	}
	if oldProtocol(r.TLSVersion) {
		reasons = append(reasons, ReasonOldProtocol)
	}
	if len(r.LegacyTLS) > 0 {
		reasons = append(reasons, ReasonLegacyProtocols)
	}
	if !expired && DaysUntil(r.NotAfter, now) <= th.Critical {
		reasons = append(reasons, ReasonExpiresSoon)
	}
	if r.HSTSMaxAge < HSTSMinMaxAge {
		reasons = append(reasons, ReasonNoHSTS)
	}
	g := APlus
	for _, reason := range reasons {
		g = worse(g, capOf(reason))
	}
	return g, reasons
}

// capOf is the best grade an IP with reason can get.
func capOf(reason string) string {
	switch reason {
	case ReasonExpired, ReasonNotYetValid, ReasonChainInvalid, ReasonHostnameInvalid, ReasonWeakKey, ReasonWeakSignature:
		return F
	case ReasonOldProtocol:
		return C
	case ReasonLegacyProtocols, ReasonExpiresSoon:
		return B
	case ReasonNoHSTS:
		return A
	}
	return APlus
}

func weakKey(keyType string, bits int) bool {
	switch keyType {
	case "RSA":
		return bits < 2048
	case "ECDSA":
		return bits < 256
	}
	return false
}

// weakSignature tells x509.SignatureAlgorithm names over SHA-1, MD5 or MD2
// ("SHA1-RSA", "ECDSA-SHA1", "MD5-RSA", ...).
func weakSignature(alg string) bool {
	alg = strings.ToUpper(alg)
	return strings.Contains(alg, "SHA1") || strings.Contains(alg, "MD5") || strings.Contains(alg, "MD2")
}

// oldProtocol tells versions as tls.VersionName writes them older than
// TLS 1.2.
func oldProtocol(v string) bool {
	switch v {
	case "TLS 1.1", "TLS 1.0", "SSLv3", "SSL 3.0":
		return true
	}
	return false
}

// Worse returns the worse of two grades; "" (no grade) loses to any grade.
func Worse(a, b string) string { return worse(a, b) }

func worse(a, b string) string {
	if a == "" {
		return b
	}
	if b == "" {
		return a
	}
	if slices.Index(order, b) > slices.Index(order, a) {
		return b
	}
	return a
}

// Summarize gives the verdict over a domain's expiration view at now.
//
// Status: expired when the earliest notAfter is past; else error when no
// entry has a certificate, or an entry with one has an invalid chain or
// hostname; else critical within th.Critical days, warning within
// th.Warning, valid beyond.
func Summarize(entries []projector.ExpEntry, now time.Time, th Thresholds) Summary {
	var s Summary
	if len(entries) == 0 {
		return s
	}
	s.Entries = make([]EntryGrade, len(entries))
	reasons := map[string]bool{}
	first, invalid := projector.Leading(entries)
	s.First = first
	for i := range entries {
		e := &entries[i]
		if s.CheckedAt == nil || e.ScannedAt.After(*s.CheckedAt) {
			at := e.ScannedAt
			s.CheckedAt = &at
		}
		g, rs := Grade(e.IPResult, now, th)
		s.Entries[i] = EntryGrade{Grade: g, Reasons: rs}
		if g != "" {
			s.Grade = worse(s.Grade, g)
			for _, r := range rs {
				reasons[r] = true
			}
		}
	}
	if s.First == nil {
		reasons[ReasonNoCertificate] = true
	}
	for _, r := range Reasons {
		if reasons[r] {
			s.Reasons = append(s.Reasons, r)
		}
	}
	if s.First == nil {
		s.Status = StatusError
		return s
	}
	days := DaysUntil(s.First.NotAfter, now)
	s.NoExpiry = s.First.HasNoExpiry()
	if !s.NoExpiry {
		s.DaysRemaining = &days
	}
	switch {
	case s.NoExpiry && invalid:
		s.Status = StatusError
	case s.NoExpiry:
		s.Status = StatusValid
	case now.After(s.First.NotAfter):
		s.Status = StatusExpired
	case invalid:
		s.Status = StatusError
	case days <= th.Critical:
		s.Status = StatusCritical
	case days <= th.Warning:
		s.Status = StatusWarning
	default:
		s.Status = StatusValid
	}
	return s
}
