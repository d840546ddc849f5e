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

func TestBytes(t *testing.T) {
	for _, tc := range []struct{ id, member string }{
		{"ce4b8fcb-bf37-5359-bf44-24de995c8d4a", "\xce\x4b\x8f\xcb\xbf\x37\x53\x59\xbf\x44\x24\xde\x99\x5c\x8d\x4a"},
		{"CE4B8FCB-BF37-5359-BF44-24DE995C8D4A", "CE4B8FCB-BF37-5359-BF44-24DE995C8D4A"}, // not canonical: kept as text
		{"d1", "d1"},
		{"", ""},
		{"0123456789abcdef0", "0123456789abcdef0"},
	} {
		m, err := Bytes(tc.id)
		if err != nil || m != tc.member {
			t.Errorf("Bytes(%q) = %q, %v, want %q", tc.id, m, err, tc.member)
		}
		if back := FromBytes(m); back != tc.id {
			t.Errorf("FromBytes(%q) = %q, want %q", m, back, tc.id)
		}
	}
	// 16 bytes would read as a UUID: refused.
	if m, err := Bytes("0123456789abcdef"); err == nil {
		t.Errorf("Bytes of a 16-byte id = %q, want an error", m)
	}
}

// FuzzBytes: whatever an id, Bytes refuses it (16 bytes, not a UUID) or
// FromBytes reads it back, the members of two ids differ, and those of
// UUIDs are 16 bytes ordered as the text.
func FuzzBytes(f *testing.F) {
	for _, s := range [][2]string{
		{"ce4b8fcb-bf37-5359-bf44-24de995c8d4a", "d1"},
		{"0fffffff-ffff-ffff-ffff-ffffffffffff", "a0000000-0000-0000-0000-000000000000"},
		{"0123456789abcdef", "CE4B8FCB-BF37-5359-BF44-24DE995C8D4A"},
		{"", "x y z"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, x, y string) {
		mx, errx := Bytes(x)
		my, erry := Bytes(y)
		for _, c := range []struct {
			id, m string
			err   error
		}{{x, mx, errx}, {y, my, erry}} {
			if c.err != nil {
				if len(c.id) != 16 {
					t.Fatalf("Bytes(%q) refused: %v", c.id, c.err)
				}
				continue
			}
			if back := FromBytes(c.m); back != c.id {
				t.Fatalf("FromBytes(Bytes(%q)) = %q", c.id, back)
			}
		}
		if errx == nil && erry == nil {
			if (mx == my) != (x == y) {
				t.Fatalf("Bytes(%q) = %q, Bytes(%q) = %q", x, mx, y, my)
			}
			if len(mx) == 16 && len(my) == 16 && (mx < my) != (x < y) {
				t.Fatalf("members of %q and %q sort otherwise", x, y)
			}
		}
	})
}
