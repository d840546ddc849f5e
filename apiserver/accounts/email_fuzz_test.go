package accounts

import (
	"errors"
	"net/mail"
	"testing"
	"unicode/utf8"

	"github.com/certfleet/certfleet/internal/printable"
)

// FuzzParseEmail feeds account emails, which anyone claiming a key sends
// (GET /access/claim/{email}), to ParseEmail: it never panics, a refusal
// is ErrBadEmail, and what it accepts is a bare address of at most 254
// bytes of UTF-8 without a control character, which operators' terminals
// print (certfleet tenant delete, apikey list) and mail headers carry.
func FuzzParseEmail(f *testing.F) {
	for _, s := range []string{
		"ops@example.com", "Ops <ops@example.com>", "<ops@example.com>", `"ops"@example.com`, "ops@[192.0.2.1]",
		"é@example.com", "ops@exam\u009bple.com", "o\u009bps@example.com", "o\xffps@example.com", "o\u202eps@example.com", "ops\x00@example.com", "", "@", "a@b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseEmail(s)
		if err != nil {
			if !errors.Is(err, ErrBadEmail) {
				t.Fatalf("%q: got %v, want ErrBadEmail", s, err)
			}
			return
		}
		if got != s || len(s) > maxEmailLen || !utf8.ValidString(s) || printable.HasControl(s) {
			t.Fatalf("accepted %q", s)
		}
		if a, err := mail.ParseAddress(s); err != nil || a.Address != s || a.Name != "" {
			t.Fatalf("accepted %q, which is not a bare address", s)
		}
	})
}
