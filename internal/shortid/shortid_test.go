package shortid

import (
	"encoding/base64"
	"strings"
	"testing"
)

var sortable = With(base64.NewEncoding("-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz").WithPadding(base64.NoPadding))

func TestEncode(t *testing.T) {
	for _, tc := range []struct{ id, url string }{
		{"", "="},
		{"ce4b8fcb-bf37-5359-bf44-24de995c8d4a", "zkuPy783U1m_RCTemVyNSg"},
		{"CE4B8FCB-BF37-5359-BF44-24DE995C8D4A", "=CE4B8FCB-BF37-5359-BF44-24DE995C8D4A"}, // not canonical: kept as it is
		{"tenant-1", "=tenant-1"},
		{"=x", "==x"},
	} {
		got := URL.Encode(tc.id)
		if got != tc.url {
			t.Errorf("Encode(%q) = %q, want %q", tc.id, got, tc.url)
		}
		if back, err := URL.Decode(got); err != nil || back != tc.id {
			t.Errorf("Decode(%q) = %q, %v, want %q", got, back, err, tc.id)
		}
	}
	for _, bad := range []string{"zkuPy783U1m_RCTemVyNS", "zkuPy783U1m_RCTemVyNSh", "zkuPy783U1m/RCTemVyNSg", "short"} {
		if id, err := URL.Decode(bad); err == nil {
			t.Errorf("Decode(%q) = %q, want an error", bad, id)
		}
	}
}

// FuzzRoundTrip: whatever an id, what Encode writes decodes to it with
// either alphabet, and Decode never accepts two spellings of one id.
func FuzzRoundTrip(f *testing.F) {
	for _, s := range []string{"", "ce4b8fcb-bf37-5359-bf44-24de995c8d4a", "=x", "zkuPy783U1m_RCTemVyNSg", "tenant|1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, c := range []Codec{URL, sortable} {
			enc := c.Encode(s)
			if back, err := c.Decode(enc); err != nil || back != s {
				t.Fatalf("Decode(Encode(%q)) = %q, %v", s, back, err)
			}
			if id, err := c.Decode(s); err == nil && c.Encode(id) != s && !strings.HasPrefix(s, "=") && s != "" {
				t.Fatalf("Decode(%q) = %q, which encodes as %q: two spellings", s, id, c.Encode(id))
			}
		}
	})
}
