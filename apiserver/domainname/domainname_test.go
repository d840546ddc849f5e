package domainname

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	ok := []struct {
		name, in string
		host     string
		port     int
	}{
		{"plain", "example.com", "example.com", 443},
		{"upper case", "WWW.Example.COM", "www.example.com", 443},
		{"trailing dot", "example.com.", "example.com", 443},
		{"port", "example.com:8443", "example.com", 8443},
		{"explicit 443", "example.com:443", "example.com", 443},
		{"trailing dot and port", "example.com.:25", "example.com", 25},
		{"port 1", "a.example:1", "a.example", 1},
		{"port 65535", "a.example:65535", "a.example", 65535},
		{"lab name", "valid.lab.certfleet.test:9443", "valid.lab.certfleet.test", 9443},
		{"hyphen and digits", "my-host2.example.co.uk", "my-host2.example.co.uk", 443},
		{"idn", "bücher.example", "xn--bcher-kva.example", 443},
		{"idn upper case", "BÜCHER.example:8443", "xn--bcher-kva.example", 8443},
		{"a-label", "xn--bcher-kva.example", "xn--bcher-kva.example", 443},
		{"63-char label", strings.Repeat("a", 63) + ".example", strings.Repeat("a", 63) + ".example", 443},
		{"253 chars", name253(), name253(), 443},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			host, port, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse(%q): got error %v, want %s:%d", tc.in, err, tc.host, tc.port)
			}
			if host != tc.host || port != tc.port {
				t.Errorf("Parse(%q): got %s:%d, want %s:%d", tc.in, host, port, tc.host, tc.port)
			}
		})
	}

	bad := []struct {
		name, in, reason string
	}{
		{"empty", "", "empty"},
		{"url", "https://example.com", "URL"},
		{"url without path", "http://example.com:8080", "URL"},
		{"path", "example.com/login", "path"},
		{"query", "example.com?x=1", "path"},
		{"userinfo", "user@example.com", "user information"},
		{"userinfo with password", "user:pw@example.com", "user information"},
		{"space inside", "exa mple.com", "white space"},
		{"leading space", " example.com", "white space"},
		{"tab", "example.com\t", "white space"},
		{"wildcard", "*.example.com", "wildcard"},
		{"ipv4", "192.0.2.1", "IP addresses"},
		{"ipv4 with port", "192.0.2.1:443", "IP addresses"},
		{"ipv6", "2001:db8::1", "IP addresses"},
		{"ipv6 bracketed", "[2001:db8::1]:443", "IP addresses"},
		{"short ipv4", "127.1", "numeric"},
		{"single label", "localhost", "fully qualified"},
		{"single label with dot", "localhost.", "fully qualified"},
		{"port 0", "example.com:0", "out of range"},
		{"port too big", "example.com:65536", "out of range"},
		{"port huge", "example.com:999999", "not a number"},
		{"port negative", "example.com:-1", "not a number"},
		{"port not a number", "example.com:https", "not a number"},
		{"empty port", "example.com:", "empty port"},
		{"two colons", "example.com:443:1", "more than one"},
		{"only port", ":443", "empty host"},
		{"only dot", ".", "empty host"},
		{"double dot", "example..com", "empty label"},
		{"leading dot", ".example.com", "empty label"},
		{"two trailing dots", "example.com..", "empty label"},
		{"underscore", "_dmarc.example.com", "only letters"},
		{"leading hyphen", "-a.example.com", "hyphen"},
		{"trailing hyphen", "a-.example.com", "hyphen"},
		{"64-char label", strings.Repeat("a", 64) + ".example", "longer than 63"},
		{"254 chars", "a" + name253(), "longer than 253"},
		{"bad a-label", "xn--zz-zzzzzz.example", "A-label"},
		{"too long input", strings.Repeat("a.", 300) + "com", "longer than 512"},
		{"bad idn", "-é.example", "internationalized"},
		{"control character", "a\x01b.example", "only letters"},
		{"percent", "ex%41.example", "only letters"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			host, port, err := Parse(tc.in)
			if err == nil {
				t.Fatalf("Parse(%q): got %s:%d, want an error about %q", tc.in, host, port, tc.reason)
			}
			if !IsInvalid(err) {
				t.Errorf("Parse(%q): got error of type %T, want *Error", tc.in, err)
			}
			if !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("Parse(%q): got error %q, want it to mention %q", tc.in, err, tc.reason)
			}
		})
	}
}

// name253 is a valid name of exactly 253 characters.
func name253() string {
	l := strings.Repeat("a", 63)
	return l + "." + l + "." + l + "." + strings.Repeat("b", 61)
}

func TestName253(t *testing.T) {
	if got := len(name253()); got != 253 {
		t.Fatalf("len(name253()): got %d, want 253", got)
	}
}

func TestFormatAndKey(t *testing.T) {
	tests := []struct {
		host        string
		port        int
		format, key string
	}{
		{"example.com", 443, "example.com", "example.com:443"},
		{"example.com", 8443, "example.com:8443", "example.com:8443"},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			if got := Format(tc.host, tc.port); got != tc.format {
				t.Errorf("Format: got %q, want %q", got, tc.format)
			}
			if got := Key(tc.host, tc.port); got != tc.key {
				t.Errorf("Key: got %q, want %q", got, tc.key)
			}
			h, p, err := Parse(Format(tc.host, tc.port))
			if err != nil || h != tc.host || p != tc.port {
				t.Errorf("Parse(Format): got %s:%d %v, want %s:%d", h, p, err, tc.host, tc.port)
			}
		})
	}
}

// A search term is a prefix of hostnames as Parse keeps them: dots at its
// ends go, case folds, and Unicode labels take their A-label form.
func TestSearchTerm(t *testing.T) {
	for in, want := range map[string]string{
		"Shop":              "shop",
		" .shop ":           "shop",
		"q1.example.com.":   "q1.example.com",
		"Bücher":            "xn--bcher-kva",
		"www.bücher.de":     "www.xn--bcher-kva.de",
		".":                 "",
		"":                  "",
		"xn--bcher-kva.exa": "xn--bcher-kva.exa",
	} {
		if got := SearchTerm(in); got != want {
			t.Errorf("SearchTerm(%q) = %q, want %q", in, got, want)
		}
	}
	// The term of a hostname is a prefix of the hostname Parse keeps.
	for _, h := range []string{"Bücher.example", "www.SHOP.example.", "ドメイン.テスト"} {
		host, _, err := Parse(h)
		if err != nil {
			t.Fatal(err)
		}
		if term := SearchTerm(h); term != host {
			t.Errorf("SearchTerm(%q) = %q, Parse keeps %q", h, term, host)
		}
	}
}
