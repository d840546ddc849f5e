package registration

import (
	"strings"
	"testing"
	"time"
)

func TestEmbeddedBootstrap(t *testing.T) {
	bs, err := ParseBootstrap(ianaDNS)
	if err != nil {
		t.Fatalf("embedded dns.json: %v", err)
	}
	if want := time.Date(2021, 5, 11, 21, 0, 2, 0, time.UTC); !bs.Publication.Equal(want) {
		t.Errorf("publication: got %s, want %s (update iana/README.md with the file)", bs.Publication, want)
	}
	tests := []struct{ domain, want string }{
		{"google.com", "https://rdap.verisign.com/com/v1/"},
		{"Example.NET.", "https://rdap.verisign.com/net/v1/"},
		{"wicar.org", "https://rdap.publicinterestregistry.net/rdap/org/"},
		{"nic.cz", "https://rdap.nic.cz/"},
		{"denic.de", ""}, // .de publishes no RDAP server in IANA's file: WHOIS
		{"jprs.jp", ""},
	}
	for _, tc := range tests {
		t.Run(tc.domain, func(t *testing.T) {
			got := ""
			if s := bs.Servers(tc.domain); len(s) > 0 {
				got = s[0].String()
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseBootstrap(t *testing.T) {
	const file = `{"version": "1.0", "publication": "2026-10-01T00:00:00Z", "services": [
		[["uk"], ["https://rdap.nominet.uk/uk"]],
		[["co.uk"], ["http://plain.example/co/", "https://secure.example/co/"]],
		[["COM", "net."], ["https://rdap.verisign.com/com/v1/"]]
	]}`
	bs, err := ParseBootstrap([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		domain string
		want   []string
	}{
		{"bbc.uk", []string{"https://rdap.nominet.uk/uk/"}},
		// The longest matching entry wins, https before http.
		{"bbc.co.uk", []string{"https://secure.example/co/", "http://plain.example/co/"}},
		{"example.com", []string{"https://rdap.verisign.com/com/v1/"}},
		{"example.net", []string{"https://rdap.verisign.com/com/v1/"}},
		{"example.org", nil},
		{"uk", []string{"https://rdap.nominet.uk/uk/"}},
	}
	for _, tc := range tests {
		t.Run(tc.domain, func(t *testing.T) {
			var got []string
			for _, u := range bs.Servers(tc.domain) {
				got = append(got, u.String())
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseBootstrapErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		want []string // every problem named
	}{
		{"not json", `<html>`, []string{"invalid character"}},
		{"empty", `{"version": "1.0", "services": []}`, []string{"no services"}},
		{"bad version and url", `{"version": "2", "services": [[["a"], ["ftp://x/"]], [["b"], ["not a url"]]]}`,
			[]string{`version "2"`, `"ftp://x/"`, `"not a url"`}},
		{"three elements", `{"version": "1.0", "services": [[["a"], ["https://x/"], ["extra"]]]}`, []string{"3 elements"}},
		{"entries not strings", `{"version": "1.0", "services": [[[1], ["https://x/"]]]}`, []string{"service 0: entries"}},
		{"no urls", `{"version": "1.0", "services": [[["a"], []]]}`, []string{"no urls"}},
		{"bad publication", `{"version": "1.0", "publication": "yesterday", "services": [[["a"], ["https://x/"]]]}`, []string{`"yesterday"`}},
		{"empty entry", `{"version": "1.0", "services": [[[""], ["https://x/"]]]}`, []string{`entry ""`}},
		{"dotted entry", `{"version": "1.0", "services": [[["a..b", ".c"], ["https://x/"]]]}`, []string{`"a..b"`, `".c"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseBootstrap([]byte(tc.file))
			if err == nil {
				t.Fatalf("got no error, want one naming %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("got %q, want it to contain %q", err, w)
				}
			}
		})
	}
}

// FuzzParseBootstrap: never panics; every server of a parsed file is an
// absolute http(s) URL ending in "/", and a TLD's lookup is stable.
func FuzzParseBootstrap(f *testing.F) {
	f.Add(ianaDNS)
	f.Fuzz(func(t *testing.T, b []byte) {
		bs, err := ParseBootstrap(b)
		if err != nil {
			return
		}
		for entry, servers := range bs.servers {
			if len(servers) == 0 {
				t.Fatalf("entry %q has no servers", entry)
			}
			for _, u := range servers {
				if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || !strings.HasSuffix(u.Path, "/") {
					t.Fatalf("entry %q: server %q is not an http(s) base URL", entry, u)
				}
			}
			if got := bs.Servers("x." + entry); len(got) == 0 {
				t.Fatalf("Servers(%q) found nothing for a listed entry", "x."+entry)
			}
		}
	})
}

// TestBootstrapOver: a file given with --rdap-bootstrap is merged over the
// embedded IANA copy: its entries win for their suffixes and every other
// TLD keeps IANA's server.
func TestBootstrapOver(t *testing.T) {
	file := []byte(`{"version": "1.0", "services": [[["test", "com"], ["http://127.0.0.1:9/rdap"]]]}`)
	bs, err := bootstrapOf(file)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ domain, want string }{
		{"lab.test", "http://127.0.0.1:9/rdap/"},                           // only in the file
		{"google.com", "http://127.0.0.1:9/rdap/"},                         // in both: the file wins
		{"wicar.org", "https://rdap.publicinterestregistry.net/rdap/org/"}, // only in IANA's: kept
		{"nothing.invalid", ""},                                            // in neither
	}
	for _, tc := range tests {
		t.Run(tc.domain, func(t *testing.T) {
			got := ""
			if s := bs.Servers(tc.domain); len(s) > 0 {
				got = s[0].String()
			}
			if got != tc.want {
				t.Errorf("servers of %s: got %q, want %q", tc.domain, got, tc.want)
			}
		})
	}
	iana, err := bootstrapOf(nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := iana.Servers("google.com"); len(got) == 0 || got[0].String() != "https://rdap.verisign.com/com/v1/" {
		t.Errorf("embedded copy changed by the merge: google.com got %v", got)
	}
}
