package alerts

import (
	"maps"
	"strings"
	"testing"
)

// FuzzLeaves: decodeLeaves reads any stored value without panicking, in
// either layout (16 hex digits and IPs as text, or compact keys and
// IPCode's IPs); what it reads, written by encodeLeaves, reads back the
// same, with every key in leafKey's form.
func FuzzLeaves(f *testing.F) {
	for _, s := range []string{
		"a1a1a1a1a1a1a1a1=198.51.100.1,198.51.100.2 b2b2b2b2b2b2b2b2=2001:db8::1",
		"cP5WcP5WcP3=lYCZ-F,lYCZ-V gf9mgf9mgf7=lYCZ-V",
		"k=,=a%2Cb,abc,AAAAAA",
		"x=::ffff:1.2.3.4 =1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		leaves, err := decodeLeaves(v)
		if err != nil {
			return
		}
		for ip, k := range leaves {
			if len(k) == 2*leafLen {
				t.Fatalf("%q: leaf of %q kept as %q, not converted", v, ip, k)
			}
		}
		again, err := decodeLeaves(strings.Join(encodeLeaves(leaves), " "))
		if err != nil || !maps.Equal(again, leaves) {
			t.Fatalf("%q: read %q, written and read again %q (%v)", v, leaves, again, err)
		}
	})
}
