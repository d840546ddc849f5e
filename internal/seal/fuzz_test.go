package seal

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// FuzzOpen feeds sealed values, which come back from clients (a claim
// link's token) and from Redis, to Open: it never panics, a refusal is
// ErrOpen, nothing but a value Seal made opens, and only in its one spelling, and plain (any bytes)
// survives Seal and Open under its aad and under no other.
func FuzzOpen(f *testing.F) {
	b, err := New(bytes.Repeat([]byte{1}, KeySize))
	if err != nil {
		f.Fatal(err)
	}
	aad, claim := []byte("claim-link"), []byte(`{"tenant_id":"t","key_id":"k"}`)
	sealed, err := b.Seal(claim, aad)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{sealed, "v1.", "v1.AAAA", "v2." + strings.TrimPrefix(sealed, "v1."), sealed[:len(sealed)-1], sealed + "=", "v1.!!!!"} {
		f.Add(s, []byte("whsec_0123456789"))
	}
	f.Fuzz(func(t *testing.T, value string, plain []byte) {
		if got, err := b.Open(value, aad); err != nil {
			if !errors.Is(err, ErrOpen) {
				t.Fatalf("%q: got %v, want ErrOpen", value, err)
			}
		} else if !bytes.Equal(got, claim) {
			t.Fatalf("%q opened to %q: a value Seal did not make", value, got)
		} else if raw, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(value, prefix)); prefix+base64.RawURLEncoding.EncodeToString(raw) != value {
			t.Fatalf("%q opened, but is not the canonical encoding of its bytes: one sealed value has several spellings", value)
		}
		s, err := b.Seal(plain, aad)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := b.Open(s, aad); err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("round trip of %q: got %q, %v", plain, got, err)
		}
		if _, err := b.Open(s, []byte("other")); !errors.Is(err, ErrOpen) {
			t.Fatalf("opened under another aad: %v", err)
		}
	})
}
