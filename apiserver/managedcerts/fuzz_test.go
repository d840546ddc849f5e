package managedcerts

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzParseName feeds certificate names as tenants send them: no panic,
// and an accepted name is lower case, without port or path, and a
// wildcard only in its first label.
func FuzzParseName(f *testing.F) {
	for _, s := range []string{"shop.example.com", "*.example.com", "Shop.EXAMPLE.com", "*.*.example.com", "a.b:443",
		"bücher.example", "*.", "xn--bcher-kva.example", "exa mple.com", "https://x.example.com/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, wild, err := ParseName(s)
		if err != nil {
			return
		}
		base := strings.TrimPrefix(name, "*.")
		if name != strings.ToLower(name) || strings.ContainsAny(base, ":/*@ ") || wild != strings.HasPrefix(name, "*.") {
			t.Fatalf("ParseName(%q) = %q, %v", s, name, wild)
		}
	})
}

func TestParseName(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		wild, ok bool
	}{
		{"Shop.Example.com", "shop.example.com", false, true},
		{"*.example.com", "*.example.com", true, true},
		{"*.*.example.com", "", false, false},
		{"shop.example.com:443", "", false, false},
		{"localhost", "", false, false},
	} {
		got, wild, err := ParseName(tc.in)
		if (err == nil) != tc.ok || got != tc.want || wild != tc.wild {
			t.Errorf("ParseName(%q) = %q, %v, %v; want %q, %v, ok %v", tc.in, got, wild, err, tc.want, tc.wild, tc.ok)
		}
	}
}

// FuzzCreateBody feeds JSON bodies of POST /api/certificates/create: no
// panic, and an accepted request has a normalized domain, one normalized
// SAN per SAN sent, and monitors no wildcard.
func FuzzCreateBody(f *testing.F) {
	for _, s := range []string{
		`{"domain":"shop.example.com","dns_provider":"rfc2136","account_id":"lab"}`,
		`{"domain":"*.example.com","san_domains":["example.com","*.example.com"],"dns_provider":"cloudflare","account_id":"a","key_type":"ec256"}`,
		`{"domain":"Shop.Example.com:443","dns_provider":"x","account_id":"y"}`,
		`{"domain":"a.example","san_domains":[""],"dns_provider":"x","account_id":"y"}`,
		`{"domain":"","dns_provider":"x","account_id":"y"}`,
		`{"san_domains":null}`, `[]`, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req createRequest
		if json.Unmarshal(body, &req) != nil {
			return
		}
		domain, sans, names, err := req.parse()
		if err != nil {
			return
		}
		if domain != strings.ToLower(domain) || len(sans) != len(req.SANs) {
			t.Fatalf("parse(%q) = %q, %q", body, domain, sans)
		}
		for _, n := range names {
			if strings.HasPrefix(n, "*.") {
				t.Fatalf("parse(%q) monitors wildcard %q", body, n)
			}
		}
	})
}
