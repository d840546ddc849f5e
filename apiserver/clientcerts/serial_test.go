package clientcerts

import (
	"strings"
	"testing"
)

// FuzzParseSerial: a serial from a URL path either parses to a positive
// number that prints back in decimal to the same value, or is refused;
// it never panics.
func FuzzParseSerial(f *testing.F) {
	for _, s := range []string{"135985107335735718497216355271093340307", "0x2dae8f4e", "2D:AE:8F:4E", "serial=2DAE8F4E", "0", "-5", "0x", "serial=", " 12 ", "1:2:3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := parseSerial(s)
		if !ok {
			return
		}
		if n.Sign() <= 0 {
			t.Fatalf("parseSerial(%q) = %v: not positive", s, n)
		}
		if len(strings.TrimSpace(s)) > 0 && n.BitLen() > 64*4 {
			t.Fatalf("parseSerial(%q): %d bits, over the 64-digit cap", s, n.BitLen())
		}
	})
}
