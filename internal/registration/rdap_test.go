package registration

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func date(s string) *time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	t = t.UTC()
	return &t
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "nil"
	}
	return t.Format(time.RFC3339Nano)
}

// TestRDAPSamples reads the registries' answers in testdata/rdap (see its
// README for where each came from).
func TestRDAPSamples(t *testing.T) {
	tests := []struct {
		file                      string
		registrar                 string
		created, expires, updated *time.Time
		statuses                  int
		firstStatus               string
		nameServers               []string
	}{
		{file: "com-verisign-google.com.json", registrar: "MarkMonitor Inc.",
			created: date("1997-09-15T04:00:00Z"), expires: date("2028-09-14T04:00:00Z"), updated: date("2019-09-09T15:39:04Z"),
			statuses: 6, firstStatus: "client delete prohibited",
			nameServers: []string{"ns1.google.com", "ns2.google.com", "ns3.google.com", "ns4.google.com"}},
		{file: "org-pir-wicar.org.json", registrar: "PDR Ltd. d/b/a PublicDomainRegistry.com",
			created: date("2012-11-07T04:14:52.296Z"), expires: date("2027-11-07T04:14:52.296Z"), updated: date("2026-09-18T03:40:49.034Z"),
			statuses: 1, firstStatus: "client transfer prohibited",
			nameServers: []string{"ns.phx4.nearlyfreespeech.net", "ns.phx5.nearlyfreespeech.net"}},
		{file: "uk-nominet-bbc.co.uk.json", registrar: "British Broadcasting Corporation",
			created: date("1994-12-13T03:49:48Z"), expires: date("2034-12-13T03:49:48Z"), updated: date("2025-10-29T03:51:11.009091Z"),
			statuses: 3, firstStatus: "server delete prohibited",
			nameServers: []string{"ddns0.bbc.co.uk", "ddns0.bbc.com", "ddns1.bbc.co.uk", "ddns1.bbc.com", "dns0.bbc.co.uk", "dns0.bbc.com", "dns1.bbc.co.uk", "dns1.bbc.com"}},
		// DENIC publishes neither registrar nor expiry: nothing is guessed.
		{file: "de-denic-denic.de.json", updated: date("2024-02-08T09:43:05Z"),
			statuses: 1, firstStatus: "active",
			nameServers: []string{"ns1.denic.de", "ns2.denic.de", "ns3.denic.de", "ns4.denic.net"}},
		{file: "jp-jprs-jprs.jp.json", registrar: "Japan Registry Services Co.,Ltd.",
			created: date("2001-02-01T15:00:00Z"), expires: date("2027-02-28T14:59:59Z"), updated: date("2026-02-28T16:05:03Z"),
			statuses: 1, firstStatus: "active",
			nameServers: []string{"ns1.jprs.co.jp", "ns2.jprs.co.jp", "ns3.jprs.co.jp", "ns4.jprs.co.jp"}},
		{file: "io-identitydigital-nic.io.json", registrar: "Identity Digital Limited",
			created: date("1997-09-17T04:00:00Z"), expires: date("2030-09-16T04:00:00Z"), updated: date("2025-08-14T12:00:49.512Z"),
			statuses: 3, firstStatus: "server delete prohibited",
			nameServers: []string{"a0.nic.io", "a2.nic.io", "b0.nic.io", "c0.nic.io"}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			body, err := os.ReadFile(filepath.Join("testdata", "rdap", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseRDAP(body)
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if got.Registrar != tc.registrar {
				t.Errorf("registrar: got %q, want %q", got.Registrar, tc.registrar)
			}
			for _, d := range []struct {
				name      string
				got, want *time.Time
			}{{"created", got.CreatedAt, tc.created}, {"expires", got.ExpiresAt, tc.expires}, {"updated", got.UpdatedAt, tc.updated}} {
				if !sameTime(d.got, d.want) {
					t.Errorf("%s: got %s, want %s", d.name, fmtTime(d.got), fmtTime(d.want))
				}
			}
			if len(got.Statuses) != tc.statuses || got.Statuses[0] != tc.firstStatus {
				t.Errorf("statuses: got %q, want %d starting with %q", got.Statuses, tc.statuses, tc.firstStatus)
			}
			if !slices.Equal(got.NameServers, tc.nameServers) {
				t.Errorf("name servers: got %q, want %q", got.NameServers, tc.nameServers)
			}
		})
	}
}

func TestParseRDAPErrors(t *testing.T) {
	tests := []struct{ name, body, want string }{
		{"not json", `<html>busy</html>`, "invalid character"},
		{"truncated", `{"objectClassName": "domain", "events": [`, "unexpected end"},
		{"array", `[]`, "cannot unmarshal"},
		{"not a domain", `{"objectClassName": "entity"}`, `object class "entity"`},
		{"no object class", `{"ldhName": "example.com"}`, `object class ""`},
		{"error object", `{"errorCode": 404, "title": "Not Found"}`, `object class ""`},
		{"bad expiry", `{"objectClassName": "domain", "events": [{"eventAction": "expiration", "eventDate": "2030-13-01"}]}`, `expiration date "2030-13-01"`},
		{"events not a list", `{"objectClassName": "domain", "events": {}}`, "cannot unmarshal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRDAP([]byte(tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// Unread events and odd jCards are no errors: only the three dates count.
func TestParseRDAPLenient(t *testing.T) {
	body := `{"objectClassName": "domain",
		"events": [{"eventAction": "transfer", "eventDate": "whenever"}, {"eventAction": "EXPIRATION", "eventDate": "2030-01-02T03:04:05+01:00"}],
		"entities": [{"roles": ["technical"], "vcardArray": ["vcard", [["fn", {}, "text", "Tech"]]]},
		             {"roles": ["registrar"], "vcardArray": ["vcard", [["fn", {}, "text"], ["fn", {}, "text", " Registrar Ltd "]]]}],
		"status": ["active", "active", " "]}`
	got, err := ParseRDAP([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if !sameTime(got.ExpiresAt, date("2030-01-02T02:04:05Z")) {
		t.Errorf("expires: got %s, want 2030-01-02T02:04:05Z", fmtTime(got.ExpiresAt))
	}
	if got.Registrar != "Registrar Ltd" {
		t.Errorf("registrar: got %q, want %q", got.Registrar, "Registrar Ltd")
	}
	if !slices.Equal(got.Statuses, []string{"active"}) {
		t.Errorf("statuses: got %q, want [active]", got.Statuses)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		header string
		want   time.Duration
	}{
		{"120", 2 * time.Minute},
		{" 0 ", 0},
		{"Sat, 05 Dec 2026 12:30:00 GMT", 30 * time.Minute},
		{"Sat, 05 Dec 2026 11:00:00 GMT", 0}, // in the past: now
		{"", time.Minute},
		{"soon", time.Minute},
		{"-5", time.Minute},
		{"99999999999", 24 * time.Hour},
		{"Sat, 05 Dec 2027 12:00:00 GMT", 24 * time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.header, func(t *testing.T) {
			if got := retryAfter(tc.header, now).Sub(now); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// FuzzParseRDAP: never panics; dates come back in UTC, name servers
// lower-case without a trailing dot and without repeats.
func FuzzParseRDAP(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "rdap", "*.json"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseRDAP(b)
		if err != nil {
			return
		}
		for _, d := range []*time.Time{a.CreatedAt, a.ExpiresAt, a.UpdatedAt} {
			if d != nil && d.Location() != time.UTC {
				t.Fatalf("date %s not in UTC", d)
			}
		}
		seen := map[string]bool{}
		for _, n := range a.NameServers {
			if n == "" || n != strings.ToLower(n) || strings.HasSuffix(n, ".") || seen[n] {
				t.Fatalf("name servers %q: want lower-case, no trailing dot, no repeats", a.NameServers)
			}
			seen[n] = true
		}
	})
}
