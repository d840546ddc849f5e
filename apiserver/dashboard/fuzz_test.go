package dashboard

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzSafeNext: whatever the sign-in form's next says, the redirect stays
// on this site (a path, never a scheme, a host or a protocol-relative URL).
func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"/", "/domains?tag=a", "//evil.example", "https://evil.example/", "/\\evil", "javascript:alert(1)", "", "/%2F/evil"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, next string) {
		got := safeNext(next)
		u, err := url.Parse(got)
		if err != nil || u.Scheme != "" || u.Host != "" || !strings.HasPrefix(got, "/") || strings.HasPrefix(got, "//") || strings.ContainsAny(got, "\\\r\n") {
			t.Errorf("safeNext(%q) = %q: not a path of this site", next, got)
		}
		if got != "/" && got != next {
			t.Errorf("safeNext(%q) = %q: changed a path it kept", next, got)
		}
	})
}

// FuzzForms: the domain forms' fields parse or fail without panicking.
func FuzzForms(f *testing.F) {
	for _, s := range []string{"443", "", " 8443 ", "x", "99999999999999999999", "a, b,,c", " , "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if p, err := portField(s); err == nil && p != nil && strings.TrimSpace(s) == "" {
			t.Errorf("portField(%q) = %d, want nil for empty", s, *p)
		}
		for _, tag := range splitTags(s) {
			if tag == "" || strings.TrimSpace(tag) != tag || strings.Contains(tag, ",") {
				t.Errorf("splitTags(%q) has %q", s, tag)
			}
		}
	})
}
