package clientcerts

import (
	"strings"
	"testing"
)

// FuzzParseSerial: a serial from a URL path either parses to a positive
// number of at most maxSerialDigits digits, or is refused (as too long
// only when it has more); it never panics.
func FuzzParseSerial(f *testing.F) {
	for _, s := range []string{"135985107335735718497216355271093340307", "0x2dae8f4e", "2D:AE:8F:4E", "serial=2DAE8F4E", "0", "-5", "0x", "serial=", " 12 ", "1:2:3",
		"0x" + strings.Repeat("f", 200), strings.Repeat("9", 65), "0x" + strings.Repeat("0", 64), "0x" + strings.Repeat("0", 63) + "1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSerial(s)
		if err != nil {
			if strings.Contains(err.Error(), "too long") && len(strings.TrimSpace(s)) <= maxSerialDigits {
				t.Fatalf("parseSerial(%q): %v, but it is %d characters", s, err, len(strings.TrimSpace(s)))
			}
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

func TestParseSerialErrors(t *testing.T) {
	tests := []struct{ name, in, wantErr string }{
		{"200 hexadecimal digits", "0x" + strings.Repeat("ab", 100), "serial number too long: at most 64 digits, got 200"},
		{"65 decimal digits", strings.Repeat("9", 65), "serial number too long: at most 64 digits, got 65"},
		{"65 digits with colons", strings.Repeat("ab:", 32) + "a", "serial number too long: at most 64 digits, got 65"},
		{"long and not hexadecimal", "0x" + strings.Repeat("z", 65), "too long"},
		{"64 digits", "0x" + strings.Repeat("0", 63) + "1", ""},
		{"not a number", "hello", "must be decimal digits, or hexadecimal"},
		{"zero", "0", "must be decimal digits"},
		{"empty hexadecimal", "0x", "must be decimal digits"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseSerial(tc.in)
			if tc.wantErr == "" {
				if err != nil {
					t.Errorf("got %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}
