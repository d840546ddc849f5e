package domainname

import (
	"strings"
	"testing"
)

// FuzzParse holds Parse to its promises on any input: an accepted domain is
// in the one normalized form (lower-case ASCII, no trailing dot, at most 253
// characters, a port of 1-65535) and reads back as itself from both of its
// written forms; a rejected one fails with an *Error that names the input.
// Seeds: testdata/fuzz/FuzzParse (IDNs, IPs, ports, URLs, bad labels).
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		host, port, err := Parse(s)
		if err != nil {
			if !IsInvalid(err) {
				t.Fatalf("Parse(%q): error %v is not an *Error", s, err)
			}
			if !strings.HasPrefix(err.Error(), "invalid domain ") || err.(*Error).Reason == "" {
				t.Fatalf("Parse(%q): error %q does not say what is wrong", s, err)
			}
			return
		}
		if port < 1 || port > 65535 {
			t.Fatalf("Parse(%q): port %d out of range", s, port)
		}
		if host == "" || len(host) > maxName || strings.HasSuffix(host, ".") || host != strings.ToLower(host) || !isASCII(host) {
			t.Fatalf("Parse(%q): host %q is not normalized", s, host)
		}
		for _, form := range []string{Format(host, port), Key(host, port)} {
			h2, p2, err := Parse(form)
			if err != nil || h2 != host || p2 != port {
				t.Fatalf("Parse(%q) = %q, %d; its form %q parses as %q, %d, %v", s, host, port, form, h2, p2, err)
			}
		}
	})
}
