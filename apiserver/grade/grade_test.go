package grade

import (
	"reflect"
	"testing"
	"time"

	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
)

var (
	now = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)
	th  = Thresholds{Warning: 30, Critical: 7}
)

// good is an IP result that earns A+; cases change one thing at a time.
func good() events.IPResult {
	return events.IPResult{
		IP:                 "192.0.2.1",
		Outcome:            events.OutcomeOK,
		CertificateFound:   true,
		NotBefore:          now.AddDate(0, -1, 0),
		NotAfter:           now.AddDate(0, 0, 90),
		KeyType:            "ECDSA",
		KeyBits:            256,
		SignatureAlgorithm: "ECDSA-SHA256",
		TLSVersion:         "TLS 1.3",
		ChainValid:         true,
		HostnameValid:      true,
		HTTPStatus:         200,
		HSTSMaxAge:         31536000,
		LegacyTLSChecked:   true,
	}
}

func TestGrade(t *testing.T) {
	tests := []struct {
		name    string
		change  func(r *events.IPResult)
		grade   string
		reasons []string
	}{
		{"all good", func(r *events.IPResult) {}, APlus, nil},
		{"hsts exactly 180 days", func(r *events.IPResult) { r.HSTSMaxAge = HSTSMinMaxAge }, APlus, nil},
		{"hsts short", func(r *events.IPResult) { r.HSTSMaxAge = HSTSMinMaxAge - 1 }, A, []string{ReasonNoHSTS}},
		{"no http", func(r *events.IPResult) { r.HTTPStatus, r.HSTSMaxAge = 0, 0 }, A, []string{ReasonNoHSTS}},
		{"legacy not checked", func(r *events.IPResult) { r.LegacyTLSChecked = false }, APlus, nil},
		{"legacy accepted", func(r *events.IPResult) { r.LegacyTLS = []string{"TLS 1.1"} }, B, []string{ReasonLegacyProtocols}},
		{"legacy and no hsts", func(r *events.IPResult) { r.LegacyTLS, r.HSTSMaxAge = []string{"TLS 1.0"}, 0 }, B, []string{ReasonLegacyProtocols, ReasonNoHSTS}},
		{"expires in 7 days", func(r *events.IPResult) { r.NotAfter = now.Add(7*24*time.Hour + time.Hour) }, B, []string{ReasonExpiresSoon}},
		{"expires in 8 days", func(r *events.IPResult) { r.NotAfter = now.Add(8*24*time.Hour + time.Hour) }, APlus, nil},
		{"negotiated tls 1.1", func(r *events.IPResult) { r.TLSVersion = "TLS 1.1" }, C, []string{ReasonOldProtocol}},
		{"negotiated tls 1.0 and legacy", func(r *events.IPResult) { r.TLSVersion, r.LegacyTLS = "TLS 1.0", []string{"TLS 1.0"} }, C, []string{ReasonOldProtocol, ReasonLegacyProtocols}},
		{"tls 1.2", func(r *events.IPResult) { r.TLSVersion = "TLS 1.2" }, APlus, nil},
		{"expired", func(r *events.IPResult) { r.NotAfter, r.ChainValid, r.Detail = now.Add(-time.Hour), false, "expired" }, F, []string{ReasonExpired}},
		{"expired since the scan", func(r *events.IPResult) { r.NotAfter = now.Add(-time.Second) }, F, []string{ReasonExpired}},
		{"not yet valid", func(r *events.IPResult) {
			r.NotBefore, r.ChainValid, r.Detail = now.Add(time.Hour), false, "not-yet-valid"
		}, F, []string{ReasonNotYetValid}},
		{"unknown authority", func(r *events.IPResult) { r.ChainValid, r.Detail = false, "unknown-authority" }, F, []string{ReasonChainInvalid}},
		{"hostname mismatch", func(r *events.IPResult) { r.HostnameValid, r.Detail = false, "hostname-mismatch" }, F, []string{ReasonHostnameInvalid}},
		{"rsa 1024", func(r *events.IPResult) { r.KeyType, r.KeyBits, r.SignatureAlgorithm = "RSA", 1024, "SHA256-RSA" }, F, []string{ReasonWeakKey}},
		{"rsa 2048", func(r *events.IPResult) { r.KeyType, r.KeyBits, r.SignatureAlgorithm = "RSA", 2048, "SHA256-RSA" }, APlus, nil},
		{"ecdsa 224", func(r *events.IPResult) { r.KeyBits = 224 }, F, []string{ReasonWeakKey}},
		{"ed25519", func(r *events.IPResult) { r.KeyType, r.KeyBits, r.SignatureAlgorithm = "Ed25519", 256, "Ed25519" }, APlus, nil},
		{"sha1 signature", func(r *events.IPResult) { r.SignatureAlgorithm = "SHA1-RSA" }, F, []string{ReasonWeakSignature}},
		{"ecdsa sha1 signature", func(r *events.IPResult) { r.SignatureAlgorithm = "ECDSA-SHA1" }, F, []string{ReasonWeakSignature}},
		{"md5 signature", func(r *events.IPResult) { r.SignatureAlgorithm = "MD5-RSA" }, F, []string{ReasonWeakSignature}},
		{"many faults", func(r *events.IPResult) {
			r.KeyType, r.KeyBits, r.SignatureAlgorithm, r.HostnameValid, r.LegacyTLS, r.HSTSMaxAge = "RSA", 1024, "SHA1-RSA", false, []string{"TLS 1.1"}, 0
		}, F, []string{ReasonHostnameInvalid, ReasonWeakKey, ReasonWeakSignature, ReasonLegacyProtocols, ReasonNoHSTS}},
		{"speaks only tls 1.1", func(r *events.IPResult) {
			*r = events.IPResult{IP: "192.0.2.1", Outcome: events.OutcomeHandshakeError, Detail: "protocol-version",
				LegacyTLSChecked: true, LegacyTLS: []string{"TLS 1.1"}}
		}, C, []string{ReasonOldProtocol, ReasonLegacyProtocols}},
		{"no certificate", func(r *events.IPResult) {
			*r = events.IPResult{IP: "192.0.2.1", Outcome: events.OutcomeConnectionRefused}
		}, "", []string{ReasonNoCertificate}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := good()
			tc.change(&r)
			g, reasons := Grade(r, now, th)
			if g != tc.grade {
				t.Errorf("grade: got %q, want %q", g, tc.grade)
			}
			if !reflect.DeepEqual(reasons, tc.reasons) {
				t.Errorf("reasons: got %v, want %v", reasons, tc.reasons)
			}
		})
	}
}

func TestDaysUntil(t *testing.T) {
	tests := []struct {
		name string
		t    time.Time
		want int
	}{
		{"now", now, 0},
		{"in 23h", now.Add(23 * time.Hour), 0},
		{"in 24h", now.Add(24 * time.Hour), 1},
		{"in 45.5 days", now.Add(45*24*time.Hour + 12*time.Hour), 45},
		{"an hour ago", now.Add(-time.Hour), -1},
		{"a day and an hour ago", now.Add(-25 * time.Hour), -2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := DaysUntil(tc.t, now); got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	scanned := now.Add(-time.Hour)
	entry := func(region, ip string, change func(r *events.IPResult)) projector.ExpEntry {
		r := good()
		r.IP = ip
		change(&r)
		return projector.ExpEntry{Region: region, Port: 443, ScannedAt: scanned, EventID: region + ip, IPResult: r}
	}
	same := func(r *events.IPResult) {}
	days := func(d int) func(r *events.IPResult) {
		return func(r *events.IPResult) { r.NotAfter = now.Add(time.Duration(d)*24*time.Hour + time.Hour) }
	}
	noExpiry := func(r *events.IPResult) { r.NotAfter = events.NoExpiry }
	refused := func(r *events.IPResult) {
		*r = events.IPResult{IP: r.IP, Outcome: events.OutcomeConnectionRefused}
	}
	tests := []struct {
		name    string
		entries []projector.ExpEntry
		grade   string
		reasons []string
		days    *int
		status  string
		first   string // EventID of Summary.First
	}{
		{name: "never scanned"},
		{"one good", []projector.ExpEntry{entry("a", "1", same)}, APlus, nil, ptr(90), StatusValid, "a1"},
		{"warning at 30 days", []projector.ExpEntry{entry("a", "1", days(30))}, APlus, nil, ptr(30), StatusWarning, "a1"},
		{"valid at 31 days", []projector.ExpEntry{entry("a", "1", days(31))}, APlus, nil, ptr(31), StatusValid, "a1"},
		{"critical at 7 days", []projector.ExpEntry{entry("a", "1", days(7))}, B, []string{ReasonExpiresSoon}, ptr(7), StatusCritical, "a1"},
		{"warning at 8 days", []projector.ExpEntry{entry("a", "1", days(8))}, APlus, nil, ptr(8), StatusWarning, "a1"},
		{"earliest of two ips", []projector.ExpEntry{entry("a", "1", same), entry("a", "2", days(20))}, APlus, nil, ptr(20), StatusWarning, "a2"},
		{"worst ip wins", []projector.ExpEntry{
			entry("a", "1", same),
			entry("b", "1", func(r *events.IPResult) { r.LegacyTLS = []string{"TLS 1.1"} }),
		}, B, []string{ReasonLegacyProtocols}, ptr(90), StatusValid, "a1"},
		{"expired wins over invalid", []projector.ExpEntry{
			entry("a", "1", func(r *events.IPResult) { r.HostnameValid = false }),
			entry("a", "2", func(r *events.IPResult) { r.NotAfter, r.ChainValid, r.Detail = now.Add(-time.Hour), false, "expired" }),
		}, F, []string{ReasonExpired, ReasonHostnameInvalid}, ptr(-1), StatusExpired, "a2"},
		{"no expiry: nothing counts down", []projector.ExpEntry{entry("a", "1", noExpiry)}, APlus, nil, nil, StatusValid, "a1"},
		{"an expiring certificate beside one without", []projector.ExpEntry{entry("a", "1", noExpiry), entry("a", "2", days(5))},
			B, []string{ReasonExpiresSoon}, ptr(5), StatusCritical, "a2"},
		{"chain invalid is error", []projector.ExpEntry{
			entry("a", "1", same),
			entry("b", "1", func(r *events.IPResult) { r.ChainValid, r.Detail = false, "unknown-authority" }),
		}, F, []string{ReasonChainInvalid}, ptr(90), StatusError, "a1"},
		{"no certificate anywhere", []projector.ExpEntry{entry("a", "1", refused), entry("b", "", refused)}, "", []string{ReasonNoCertificate}, nil, StatusError, ""},
		{"only legacy tls", []projector.ExpEntry{entry("a", "1", func(r *events.IPResult) {
			*r = events.IPResult{IP: r.IP, Outcome: events.OutcomeHandshakeError, LegacyTLSChecked: true, LegacyTLS: []string{"TLS 1.0"}}
		})}, C, []string{ReasonNoCertificate, ReasonOldProtocol, ReasonLegacyProtocols}, nil, StatusError, ""},
		{"legacy-only ip beside a good one", []projector.ExpEntry{entry("a", "1", same), entry("a", "2", func(r *events.IPResult) {
			*r = events.IPResult{IP: r.IP, Outcome: events.OutcomeHandshakeError, LegacyTLSChecked: true, LegacyTLS: []string{"TLS 1.1"}}
		})}, C, []string{ReasonOldProtocol, ReasonLegacyProtocols}, ptr(90), StatusValid, "a1"},
		{"one ip refused, one good", []projector.ExpEntry{entry("a", "1", refused), entry("a", "2", same)}, APlus, nil, ptr(90), StatusValid, "a2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := Summarize(tc.entries, now, th)
			if s.Grade != tc.grade {
				t.Errorf("grade: got %q, want %q", s.Grade, tc.grade)
			}
			if !reflect.DeepEqual(s.Reasons, tc.reasons) {
				t.Errorf("reasons: got %v, want %v", s.Reasons, tc.reasons)
			}
			if !reflect.DeepEqual(s.DaysRemaining, tc.days) {
				t.Errorf("days remaining: got %v, want %v", deref(s.DaysRemaining), deref(tc.days))
			}
			if s.Status != tc.status {
				t.Errorf("status: got %q, want %q", s.Status, tc.status)
			}
			first := ""
			if s.First != nil {
				first = s.First.EventID
			}
			if first != tc.first {
				t.Errorf("first: got %q, want %q", first, tc.first)
			}
			if len(s.Entries) != len(tc.entries) {
				t.Errorf("entry grades: got %d, want %d", len(s.Entries), len(tc.entries))
			}
			if len(tc.entries) == 0 {
				if s.CheckedAt != nil {
					t.Errorf("checked at: got %v, want nil", *s.CheckedAt)
				}
			} else if s.CheckedAt == nil || !s.CheckedAt.Equal(scanned) {
				t.Errorf("checked at: got %v, want %v", s.CheckedAt, scanned)
			}
		})
	}
}

func TestSummarizeCheckedAtIsLatest(t *testing.T) {
	later := now.Add(-time.Minute)
	entries := []projector.ExpEntry{
		{Region: "a", ScannedAt: now.Add(-time.Hour), IPResult: good()},
		{Region: "b", ScannedAt: later, IPResult: good()},
	}
	s := Summarize(entries, now, th)
	if s.CheckedAt == nil || !s.CheckedAt.Equal(later) {
		t.Errorf("got %v, want %v", s.CheckedAt, later)
	}
}

func TestWorse(t *testing.T) {
	tests := []struct{ a, b, want string }{
		{"", "", ""}, {"", F, F}, {A, "", A}, {APlus, A, A}, {B, A, B}, {C, F, F}, {F, APlus, F},
	}
	for _, tc := range tests {
		if got := Worse(tc.a, tc.b); got != tc.want {
			t.Errorf("Worse(%q, %q): got %q, want %q", tc.a, tc.b, got, tc.want)
		}
	}
}

func ptr(n int) *int { return &n }

func deref(p *int) any {
	if p == nil {
		return nil
	}
	return *p
}
