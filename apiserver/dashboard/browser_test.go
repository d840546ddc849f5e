package dashboard_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestBrowser drives headless Chromium through the dashboard: sign-in,
// every page, a read-only key, sign-out; no console errors and no request
// leaving the test server.
func TestBrowser(t *testing.T) {
	e := newEnv(t, envOptions{ClickHouse: true})
	b := newBrowser(t, e.URL)

	b.open("/")
	if loc := b.location(); !strings.Contains(loc, "/signin") {
		t.Fatalf("/ without a session: got %s, want the sign-in page", loc)
	}
	b.shot("signin")
	b.signIn(e.write)
	if got := b.text("h1"); got != "Overview" {
		t.Errorf("after sign-in: got heading %q, want Overview", got)
	}
	b.shot("overview")
	b.check()

	b.signOut()
	b.open("/")
	if loc := b.location(); !strings.Contains(loc, "/signin") {
		t.Errorf("/ after sign-out: got %s, want the sign-in page", loc)
	}
	b.check()

	t.Run("read-only key", func(t *testing.T) {
		b.signIn(e.read)
		if n := b.count(`form[method="post"]:not([action="/signout"])`); n != 0 {
			t.Errorf("read-only key: got %d forms that change things, want none", n)
		}
		if got := b.text("header.top .who"); !strings.Contains(got, "read-only") {
			t.Errorf("read-only key: got %q in the navigation, want read-only", got)
		}
		b.check()
		// The same key's POSTs are refused, CSRF token or not.
		c := e.client(t, e.read)
		c.get("/")
		if code, _ := c.post("/signout", nil); code != http.StatusSeeOther {
			t.Errorf("sign-out (read scope): got HTTP %d, want 303", code)
		}
	})
}
