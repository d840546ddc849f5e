package whois

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func readSample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatalf("read sample: %v", err)
	}
	return b
}

// at is a UTC time for the tables (a typo gives year 1, which no
// answer parses to, so the case fails).
func at(s string) *time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
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
	return t.Format(time.RFC3339)
}

var googleNS = []string{"ns1.google.com", "ns2.google.com", "ns3.google.com", "ns4.google.com"}

var markMonitorStatuses = []string{
	"client update prohibited", "client transfer prohibited", "client delete prohibited",
	"server update prohibited", "server transfer prohibited", "server delete prohibited",
}

// TestParseSamples checks every field read from each real-world sample.
func TestParseSamples(t *testing.T) {
	cases := []struct {
		sample  string
		want    Record
		wantErr error
	}{
		{
			sample: "com_registry_rockcreekcc.com.txt", // Verisign, thin registry
			want: Record{
				Registrar: "Tucows Domains Inc.",
				CreatedAt: at("2002-07-12T15:48:26Z"), UpdatedAt: at("2021-05-03T20:23:19Z"), ExpiresAt: at("2022-07-12T15:48:26Z"),
				Statuses:    []string{"client transfer prohibited", "client update prohibited"},
				NameServers: []string{"ns1.sterlink.net", "ns2.sterlink.net"},
				Referral:    "whois.tucows.com:43",
			},
		},
		{
			sample: "com_registrar_rockcreekcc.com.txt", // Tucows, no zone on its dates
			want: Record{
				Registrar: "TUCOWS, INC.",
				CreatedAt: at("2002-07-12T15:48:26Z"), UpdatedAt: at("2021-05-03T20:23:19Z"), ExpiresAt: at("2022-07-12T15:48:26Z"),
				Statuses:    []string{"client transfer prohibited", "client update prohibited"},
				NameServers: []string{"ns1.sterlink.net", "ns2.sterlink.net"},
				Referral:    "whois.tucows.com:43",
			},
		},
		{
			sample: "com_registrar_google.com.txt", // MarkMonitor, -0700 offsets
			want: Record{
				Registrar: "MarkMonitor, Inc.",
				CreatedAt: at("1997-09-15T07:00:00Z"), UpdatedAt: at("2019-09-09T15:39:04Z"), ExpiresAt: at("2028-09-13T07:00:00Z"),
				Statuses:    markMonitorStatuses,
				NameServers: []string{"ns2.google.com", "ns3.google.com", "ns4.google.com", "ns1.google.com"},
				Referral:    "whois.markmonitor.com:43",
			},
		},
		{
			sample: "com_registrar_git.com.txt", // Uniregistry's "2019-05-17-T23:02:50Z"
			want: Record{
				Registrar: "UNIREGISTRAR CORP",
				CreatedAt: at("2001-06-14T10:32:43Z"), UpdatedAt: at("2019-05-17T23:02:50Z"), ExpiresAt: at("2020-06-14T10:32:43Z"),
				Statuses:    []string{"client transfer prohibited"},
				NameServers: []string{"ns2.venture.com", "ns1.venture.com"},
				Referral:    "whois.uniregistrar.net:43",
			},
		},
		{
			sample: "biz_registry_google.biz.txt", // registry format, empty referral
			want: Record{
				Registrar: "MarkMonitor, Inc.",
				CreatedAt: at("2002-03-27T16:03:44Z"), UpdatedAt: at("2019-02-27T10:56:14Z"), ExpiresAt: at("2020-03-26T23:59:59Z"),
				Statuses:    []string{"client update prohibited", "client transfer prohibited", "client delete prohibited"},
				NameServers: []string{"ns1.google.com", "ns2.google.com", "ns4.google.com", "ns3.google.com"},
			},
		},
		{
			sample: "org_registrar_google.org.txt",
			want: Record{
				Registrar: "MarkMonitor, Inc.",
				CreatedAt: at("1998-10-21T07:00:00Z"), UpdatedAt: at("2019-09-18T09:31:17Z"), ExpiresAt: at("2020-10-19T07:00:00Z"),
				Statuses:    markMonitorStatuses,
				NameServers: []string{"ns1.google.com", "ns3.google.com", "ns2.google.com", "ns4.google.com"},
				Referral:    "whois.markmonitor.com:43",
			},
		},
		{
			sample: "org_registrar_apache.org.txt", // fractional seconds ".00Z"
			want: Record{
				Registrar: "NAMECHEAP INC",
				CreatedAt: at("1995-04-11T04:00:00Z"), UpdatedAt: at("2018-09-25T13:18:21Z"), ExpiresAt: at("2022-04-12T04:00:00Z"),
				Statuses:    []string{"client delete prohibited", "client transfer prohibited"},
				NameServers: []string{"ns2.surfnet.nl", "ns3.no-ip.com", "ns2.no-ip.com", "ns1.no-ip.com", "ns4.no-ip.com"},
				Referral:    "whois.namecheap.com:43",
			},
		},
		{
			sample: "io_registrar_golang.io.txt", // empty "Domain Status:" lines
			want: Record{
				Registrar: "GANDI SAS",
				CreatedAt: at("2013-01-24T18:29:21Z"), UpdatedAt: at("2019-01-17T08:47:20Z"), ExpiresAt: at("2020-01-24T18:29:21Z"),
				Statuses:    []string{"client transfer prohibited"},
				NameServers: []string{"dns103.ovh.net", "ns103.ovh.net"},
				Referral:    "whois.gandi.net:43",
			},
		},
		{
			sample: "io_registrar_google.io.txt",
			want: Record{
				Registrar: "MarkMonitor, Inc.",
				CreatedAt: at("2002-10-01T01:00:00Z"), UpdatedAt: at("2019-08-29T09:41:07Z"), ExpiresAt: at("2020-09-29T07:00:00Z"),
				Statuses:    markMonitorStatuses,
				NameServers: []string{"ns1.google.com", "ns4.google.com", "ns2.google.com", "ns3.google.com"},
				Referral:    "whois.markmonitor.com:43",
			},
		},
		{
			sample: "uk_google.uk.txt", // Nominet's indented blocks
			want: Record{
				Registrar: "Markmonitor Inc. t/a MarkMonitor Inc.",
				CreatedAt: at("2014-06-11T00:00:00Z"), UpdatedAt: at("2019-05-10T00:00:00Z"), ExpiresAt: at("2020-06-11T00:00:00Z"),
				Statuses:    []string{"registered until expiry date"},
				NameServers: []string{"ns1.googledomains.com", "ns2.googledomains.com", "ns3.googledomains.com", "ns4.googledomains.com"},
			},
		},
		{
			sample: "uk_git.uk.txt", // name servers with glue addresses
			want: Record{
				Registrar: "123-Reg Limited t/a 123-reg",
				CreatedAt: at("2017-10-22T00:00:00Z"), UpdatedAt: at("2019-06-29T00:00:00Z"), ExpiresAt: at("2019-10-22T00:00:00Z"),
				Statuses:    []string{"registered until expiry date"},
				NameServers: []string{"ns.123-reg.co.uk", "ns2.123-reg.co.uk"},
			},
		},
		{
			sample: "de_google.de.txt", // DENIC publishes no expiry
			want: Record{
				UpdatedAt:   at("2018-03-12T20:44:25Z"),
				Statuses:    []string{"connect"},
				NameServers: googleNS,
			},
		},
		{
			sample: "jp_google.jp.txt", // JPRS in English, "(JST)"
			want: Record{
				CreatedAt: at("2005-05-30T00:00:00Z"), UpdatedAt: at("2017-05-31T16:05:09Z"), ExpiresAt: at("2018-05-31T00:00:00Z"),
				Statuses:    []string{"active"},
				NameServers: googleNS,
			},
		},
		{
			sample: "jp_google.co.jp.txt", // co.jp: "[State] Connected (2024/03/31)"
			want: Record{
				CreatedAt: at("2001-03-22T00:00:00Z"), UpdatedAt: at("2023-03-31T16:05:57Z"), ExpiresAt: at("2024-03-31T00:00:00Z"),
				Statuses:    []string{"connected"},
				NameServers: googleNS,
			},
		},
		{
			sample: "jp_example.jp.iso2022jp.txt", // JPRS in Japanese, ISO-2022-JP
			want: Record{
				CreatedAt: at("2001-01-31T00:00:00Z"), UpdatedAt: at("2026-01-31T16:05:09Z"), ExpiresAt: at("2027-01-31T00:00:00Z"),
				Statuses:    []string{"active"},
				NameServers: []string{"ns1.example.jp", "ns2.example.net"},
			},
		},
		{sample: "notfound_com.txt", wantErr: ErrNotFound},
		{sample: "notfound_org.txt", wantErr: ErrNotFound},
		{sample: "notfound_uk.txt", wantErr: ErrNotFound},
		{sample: "notfound_de.txt", wantErr: ErrNotFound},
		{sample: "notfound_jp.txt", wantErr: ErrNotFound},
		{sample: "notfound_io.txt", wantErr: ErrNotFound}, // its terms speak of throttling
		{sample: "ratelimit_pir.txt", wantErr: ErrRateLimited},
		{sample: "ratelimit_query_rate.txt", wantErr: ErrRateLimited},
		{sample: "ratelimit_denic.txt", wantErr: ErrRateLimited},
		{sample: "malformed.txt", wantErr: ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.sample, func(t *testing.T) {
			got, err := Parse(readSample(t, tc.sample))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got error %v, want %v", err, tc.wantErr)
			}
			checkRecord(t, got, tc.want)
		})
	}
}

func checkRecord(t *testing.T, got, want Record) {
	t.Helper()
	if got.Registrar != want.Registrar {
		t.Errorf("got registrar %q, want %q", got.Registrar, want.Registrar)
	}
	for _, d := range []struct {
		name      string
		got, want *time.Time
	}{{"created", got.CreatedAt, want.CreatedAt}, {"updated", got.UpdatedAt, want.UpdatedAt}, {"expires", got.ExpiresAt, want.ExpiresAt}} {
		if !sameTime(d.got, d.want) {
			t.Errorf("got %s %s, want %s", d.name, fmtTime(d.got), fmtTime(d.want))
		}
	}
	if !slices.Equal(got.Statuses, want.Statuses) {
		t.Errorf("got statuses %q, want %q", got.Statuses, want.Statuses)
	}
	if !slices.Equal(got.NameServers, want.NameServers) {
		t.Errorf("got name servers %q, want %q", got.NameServers, want.NameServers)
	}
	if got.Referral != want.Referral {
		t.Errorf("got referral %q, want %q", got.Referral, want.Referral)
	}
}

func TestParseEdgeCases(t *testing.T) {
	cases := []struct {
		name    string
		text    string
		want    Record
		wantErr error
	}{
		{name: "empty answer", text: "", wantErr: ErrMalformed},
		{name: "domain name alone is no registration", text: "Domain Name: EXAMPLE.COM\n", wantErr: ErrMalformed},
		{
			name: "a record's terms quoting limits stay a record",
			text: "Registry Expiry Date: 2027-03-12T00:00:00Z\nQueries are limited; limit exceeded answers follow abuse.\n",
			want: Record{ExpiresAt: at("2027-03-12T00:00:00Z")},
		},
		{
			name: "nominet expiry date line",
			text: "    Relevant dates:\n        Expiry date:  12-Mar-2027\n",
			want: Record{ExpiresAt: at("2027-03-12T00:00:00Z")},
		},
		{
			name: "first of repeated dates wins, registry's before registrar's",
			text: "Registry Expiry Date: 2027-01-01\nRegistrar Registration Expiration Date: 2028-01-01\n",
			want: Record{ExpiresAt: at("2027-01-01T00:00:00Z")},
		},
		{
			name: "unreadable date is nil, never a guess",
			text: "Registrar: Example Registrar\nExpiry date: before Aug-1996\n",
			want: Record{Registrar: "Example Registrar"},
		},
		{
			name: "epp ok and url forms",
			text: "Domain Status: ok https://icann.org/epp#ok\nDomain Status: serverHold (https://icann.org/epp#serverHold)\nDomain Status: pendingDelete\nName Server: NS1.EXAMPLE.COM.\nName Server: not a host\n",
			want: Record{Statuses: []string{"active", "server hold", "pending delete"}, NameServers: []string{"ns1.example.com"}},
		},
		{
			name: "referral as url with port",
			text: "Registrar WHOIS Server: rwhois://RWHOIS.Example.NET:4321/\nRegistrar: X\n",
			want: Record{Registrar: "X", Referral: "rwhois.example.net:4321"},
		},
		{
			name: "referral that is no host is dropped",
			text: "Registrar WHOIS Server: see our web site\nRegistrar: X\n",
			want: Record{Registrar: "X"},
		},
		{
			name: "latin-1 registrar",
			text: "Registrar: Soci\xe9t\xe9 Exemple\n",
			want: Record{Registrar: "Société Exemple"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.text))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got error %v, want %v", err, tc.wantErr)
			}
			checkRecord(t, got, tc.want)
		})
	}
}

func TestParseDate(t *testing.T) {
	cases := []struct {
		in   string
		want *time.Time
	}{
		{"2027-03-12T10:20:30Z", at("2027-03-12T10:20:30Z")},
		{"2027-03-12T10:20:30.123Z", at("2027-03-12T10:20:30.123Z")},
		{"2027-03-12T10:20:30+02:00", at("2027-03-12T08:20:30Z")},
		{"2027-03-12T10:20:30-0700", at("2027-03-12T17:20:30Z")},
		{"2027-03-12T10:20:30", at("2027-03-12T10:20:30Z")},
		{"2027-03-12-T10:20:30Z", at("2027-03-12T10:20:30Z")},
		{"2027-03-12 10:20:30", at("2027-03-12T10:20:30Z")},
		{"2027-03-12", at("2027-03-12T00:00:00Z")},
		{"12-Mar-2027", at("2027-03-12T00:00:00Z")},
		{"12-MAR-2027", at("2027-03-12T00:00:00Z")},
		{"2027/03/12", at("2027-03-12T00:00:00Z")},
		{"2027/03/12 10:20:30 (JST)", at("2027-03-12T01:20:30Z")},
		{"2027.03.12", at("2027-03-12T00:00:00Z")},
		{"12.03.2027", at("2027-03-12T00:00:00Z")},
		{"2027-03-12 10:20:30 UTC", at("2027-03-12T10:20:30Z")},
		{"", nil},
		{"never", nil},
		{"1900-01-01", nil},
		{"9999-12-31", nil},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := parseDate(tc.in)
			var gotp *time.Time
			if ok {
				gotp = &got
			}
			if !sameTime(gotp, tc.want) {
				t.Errorf("got %s, want %s", fmtTime(gotp), fmtTime(tc.want))
			}
		})
	}
}

// TestMerge: the registry's data wins, the registrar's fills its gaps.
func TestMerge(t *testing.T) {
	registry, err := Parse(readSample(t, "de_google.de.txt"))
	if err != nil {
		t.Fatal(err)
	}
	registrar, err := Parse(readSample(t, "com_registrar_google.com.txt"))
	if err != nil {
		t.Fatal(err)
	}
	got := registry.merge(registrar)
	want := Record{
		Registrar: "MarkMonitor, Inc.",
		CreatedAt: registrar.CreatedAt, UpdatedAt: registry.UpdatedAt, ExpiresAt: registrar.ExpiresAt,
		Statuses: registry.Statuses, NameServers: registry.NameServers,
	}
	checkRecord(t, got, want)
}
