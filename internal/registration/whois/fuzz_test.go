package whois

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// FuzzParse: whatever a server sends, Parse returns a record that keeps
// its promises or one of its three errors, and never panics. The seeds in
// testdata/fuzz/FuzzParse are every committed sample.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, text []byte) {
		r, err := Parse(text)
		if err != nil {
			if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrRateLimited) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("got error %v, want one of Parse's three", err)
			}
			if r.Registrar != "" || r.ExpiresAt != nil || len(r.Statuses) > 0 || len(r.NameServers) > 0 {
				t.Fatalf("got data %+v with error %v", r, err)
			}
			return
		}
		if r.empty() && len(r.Statuses) == 0 {
			t.Fatal("got no error and no field")
		}
		for _, ns := range r.NameServers {
			if !isHostName(ns) {
				t.Errorf("got name server %q, want a lower-case host name", ns)
			}
		}
		for _, s := range r.Statuses {
			if s == "" || s != strings.ToLower(s) || strings.TrimSpace(s) != s {
				t.Errorf("got status %q, want a trimmed lower-case word", s)
			}
		}
		if r.Referral != "" {
			if err := checkHostPort(r.Referral); err != nil {
				t.Errorf("got referral %q: %v", r.Referral, err)
			}
		}
		for name, at := range map[string]*time.Time{"created": r.CreatedAt, "updated": r.UpdatedAt, "expires": r.ExpiresAt} {
			if at != nil && (at.Year() < 1980 || at.Year() > 2200 || at.Location() != time.UTC) {
				t.Errorf("got %s %s, want a UTC date in 1980..2200", name, at)
			}
		}
	})
}

// FuzzParseServers: a spec either fails or gives servers New accepts.
// Seeds in testdata/fuzz/FuzzParseServers.
func FuzzParseServers(f *testing.F) {
	f.Fuzz(func(t *testing.T, spec string) {
		servers, err := ParseServers([]string{spec})
		if err != nil {
			return
		}
		var d net.Dialer
		cfg := Config{Servers: servers, DialTrusted: d.DialContext, Dial: d.DialContext}
		cfg.setDefaults()
		if err := cfg.Validate(); err != nil {
			t.Fatalf("ParseServers(%q) = %v, which Validate refuses: %v", spec, servers, err)
		}
	})
}
