package dashboard_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/apiserver"
	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/dashboard"
)

// TestSignIn covers the session: sign-in with a key, the cookie's
// attributes, pages refused without a session, CSRF on every POST, a
// read key's POSTs refused, a revoked key ending its session, sign-out.
func TestSignIn(t *testing.T) {
	e := newEnv(t, envOptions{})
	anon := e.client(t, "")

	t.Run("no session", func(t *testing.T) {
		code, loc := anon.get("/")
		if code != http.StatusSeeOther || loc != "/signin?next=%2F" {
			t.Errorf("GET / without a session: got HTTP %d to %q, want 303 to /signin?next=%%2F", code, loc)
		}
		if code, _ := anon.post("/signout", nil); code != http.StatusUnauthorized {
			t.Errorf("POST /signout without a session: got HTTP %d, want 401", code)
		}
	})

	t.Run("bad keys", func(t *testing.T) {
		for _, key := range []string{"", "ssa_nope", e.write + "x"} {
			code, body := anon.signIn(key)
			if code != http.StatusUnauthorized || !strings.Contains(body, "Missing or invalid API key") {
				t.Errorf("key %q: got HTTP %d, want 401 with the message", key, code)
			}
		}
		// The sign-in form's token is checked too.
		anon.get("/signin")
		if code, _ := anon.postPath("/signin", url.Values{"api_key": {e.write}, "csrf": {"forged"}}); code != http.StatusForbidden {
			t.Errorf("sign in with a forged token: got HTTP %d, want 403", code)
		}
	})

	t.Run("cookie", func(t *testing.T) {
		c := e.client(t, "")
		c.get("/signin")
		form := url.Values{"api_key": {e.read}, "csrf": {c.csrf}, "next": {"/?x=1"}}
		resp, err := c.http.PostForm(e.URL+"/signin", form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/?x=1" {
			t.Errorf("got HTTP %d to %q, want 303 to /?x=1", resp.StatusCode, loc)
		}
		var got *http.Cookie
		for _, ck := range resp.Cookies() {
			if ck.Name == dashboard.SessionCookie {
				got = ck
			}
		}
		if got == nil || !got.HttpOnly || got.SameSite != http.SameSiteStrictMode || got.Secure || got.MaxAge != int((12*time.Hour).Seconds()) || got.Path != "/" {
			t.Errorf("session cookie: got %+v, want HttpOnly, SameSite=Strict, not Secure on plain HTTP, Max-Age 12h, Path /", got)
		}
		// The session is in Redis under the hash of its id, expiring.
		keys, err := e.rdb.Keys(context.Background(), "dashboard:session:*").Result()
		if err != nil || len(keys) == 0 {
			t.Fatalf("sessions in redis: got %v %v", keys, err)
		}
		for _, k := range keys {
			if strings.Contains(k, got.Value) {
				t.Errorf("session key %s holds the session id", k)
			}
			if ttl := e.rdb.TTL(context.Background(), k).Val(); ttl <= 0 || ttl > 12*time.Hour {
				t.Errorf("session %s: got ttl %s, want (0, 12h]", k, ttl)
			}
			if v := e.rdb.HGet(context.Background(), k, "key").Val(); v != accounts.HashKey(e.read) && v != accounts.HashKey(e.write) {
				t.Errorf("session %s: got key field %q, want the hash of a key", k, v)
			}
		}
	})

	t.Run("open redirect", func(t *testing.T) {
		for _, next := range []string{"//evil.example/", "https://evil.example/", "/\\evil.example"} {
			c := e.client(t, "")
			c.get("/signin")
			code, loc := c.postPath("/signin", url.Values{"api_key": {e.read}, "next": {next}})
			if code != http.StatusSeeOther || loc != "/" {
				t.Errorf("next %q: got HTTP %d to %q, want 303 to /", next, code, loc)
			}
		}
	})

	t.Run("read key", func(t *testing.T) {
		c := e.client(t, e.read)
		code, body := c.get("/")
		if code != http.StatusOK {
			t.Fatalf("GET /: got HTTP %d", code)
		}
		mustContain(t, "overview", body, "read-only", "Sign out", `name="csrf"`)
	})

	t.Run("csrf", func(t *testing.T) {
		c := e.client(t, e.write)
		c.get("/")
		if code, _ := c.post("/signout", url.Values{"csrf": {"forged"}}); code != http.StatusForbidden {
			t.Errorf("sign out with a forged token: got HTTP %d, want 403", code)
		}
		if code, _ := c.get("/"); code != http.StatusOK {
			t.Errorf("the session after a refused sign-out: got HTTP %d, want 200", code)
		}
	})

	t.Run("sign out", func(t *testing.T) {
		c := e.client(t, e.write)
		c.get("/")
		if code, loc := c.post("/signout", nil); code != http.StatusSeeOther || loc != "/signin" {
			t.Errorf("sign out: got HTTP %d to %q, want 303 to /signin", code, loc)
		}
		if code, _ := c.get("/"); code != http.StatusSeeOther {
			t.Errorf("GET / after sign-out: got HTTP %d, want 303", code)
		}
	})

	t.Run("revoked key", func(t *testing.T) {
		_, _, write := e.newTenant(t, "carol@example.com")
		c := e.client(t, write)
		if code, _ := c.get("/"); code != http.StatusOK {
			t.Fatalf("GET /: got HTTP %d", code)
		}
		p, err := e.accounts.AuthenticateBearer(context.Background(), write)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.accounts.RevokeKey(context.Background(), p.TenantID, p.KeyID); err != nil {
			t.Fatal(err)
		}
		if code, _ := c.get("/"); code != http.StatusSeeOther {
			t.Errorf("GET / with a revoked key's session: got HTTP %d, want 303 to sign in", code)
		}
	})

	t.Run("headers", func(t *testing.T) {
		c := e.client(t, e.read)
		resp, err := c.http.Get(e.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") ||
			resp.Header.Get("Cache-Control") != "no-store" || resp.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("got CSP %q, Cache-Control %q, X-Frame-Options %q", csp, resp.Header.Get("Cache-Control"), resp.Header.Get("X-Frame-Options"))
		}
	})
}

// TestRoutesUntouched checks the dashboard leaves the server's other
// routes alone.
func TestRoutesUntouched(t *testing.T) {
	e := newEnv(t, envOptions{})
	for path, want := range map[string]int{"/healthz": 200, "/metrics": 200, "/api/v1/domains": 401, "/api/openapi.json": 200,
		"/no-such-page": 404, "/assets/style.css": 200, "/assets/nope.css": 404} {
		resp, err := http.Get(e.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: got HTTP %d, want %d", path, resp.StatusCode, want)
		}
	}
	// A missing asset is answered as every unknown path is, not with an
	// empty body.
	get := func(path string) string {
		resp, err := http.Get(e.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	want := get("/no-such-page")
	if !strings.HasSuffix(want, `{"status":"error","error":"no such endpoint"}`) {
		t.Errorf("GET /no-such-page: got %q, want 404 no such endpoint", want)
	}
	for _, path := range []string{"/assets/nope.css", "/assets/", "/assets/sub/style.css", "/assets/style.css/", "/assets/nope.js?v=1"} {
		if got := get(path); got != want {
			t.Errorf("GET %s: got %q, want %q (as /no-such-page)", path, got, want)
		}
	}
}

// TestSecureCookies: behind a TLS-terminating proxy the session cookie is
// Secure although the server speaks plain HTTP.
func TestSecureCookies(t *testing.T) {
	e := newEnv(t, envOptions{Dashboard: dashboard.Config{SecureCookies: true}})
	c := e.client(t, "")
	c.get("/signin")
	resp, err := c.http.PostForm(e.URL+"/signin", url.Values{"api_key": {e.read}, "csrf": {c.csrf}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var secure bool
	for _, ck := range resp.Cookies() {
		if ck.Name == dashboard.SessionCookie {
			secure = ck.Secure && ck.HttpOnly
		}
	}
	if resp.StatusCode != http.StatusSeeOther || !secure {
		t.Errorf("got HTTP %d, secure HttpOnly session cookie %v; want 303 and true", resp.StatusCode, secure)
	}
}

// TestSignInFailuresLimited: wrong keys at the sign-in form count against
// the client address's failed authentications (30 a minute by default);
// past them even the right key is answered 429 with Retry-After.
func TestSignInFailuresLimited(t *testing.T) {
	e := newEnv(t, envOptions{})
	anon := e.client(t, "")
	for i := range 30 {
		if code, _ := anon.signIn(fmt.Sprintf("ssa_wrong%d", i)); code != http.StatusUnauthorized {
			t.Fatalf("wrong key %d: got HTTP %d, want 401", i, code)
		}
	}
	anon.get("/signin")
	resp, err := anon.http.PostForm(e.URL+"/signin", url.Values{"api_key": {e.read}, "csrf": {anon.csrf}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Errorf("right key after 30 wrong ones: got HTTP %d (Retry-After %q), want 429 with Retry-After",
			resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// TestOversizedForm: a form over the server's body limit is a 413 saying
// so on the dashboard's error page, as on the APIs, not a form read as
// empty (a stale-token 403) nor a 400; and it changes nothing: no domain
// added, no sign-out, no session. URL-encoded, multipart and chunked
// (no Content-Length, so the limit trips while the form is read) alike.
func TestOversizedForm(t *testing.T) {
	e := newEnv(t, envOptions{Configure: func(c *apiserver.Config) { c.MaxBodyBytes = 4096 }})
	c := e.client(t, e.write)
	c.get("/domains")
	big := strings.Repeat("n", 8192)
	const want = "request body too large: at most 4096 bytes"
	// send posts body as contentType, chunked when chunked is set, and
	// checks the answer is the error page's 413.
	send := func(what, path, contentType string, body []byte, chunked bool) {
		t.Helper()
		var r io.Reader = bytes.NewReader(body)
		if chunked {
			r = io.MultiReader(r) // neither a *bytes.Reader nor a known length
		}
		req, err := http.NewRequest(http.MethodPost, e.URL+path, r)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		resp, err := c.http.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
			!strings.Contains(string(b), `<p class="flash flash-error" role="alert">`+want+`</p>`) {
			t.Errorf("%s (%d bytes): got HTTP %d %s, want 413 and the error page saying %q",
				what, len(body), resp.StatusCode, resp.Header.Get("Content-Type"), want)
		}
	}
	form := func(v url.Values) url.Values { v.Set("csrf", c.csrf); return v }
	const urlencoded = "application/x-www-form-urlencoded"
	for _, path := range []string{"/domains/add", "/signout"} {
		body := []byte(form(url.Values{"hostname": {"big.example"}, "notes": {big}}).Encode())
		send("POST "+path, path, urlencoded, body, false)
		send("chunked POST "+path, path, urlencoded, body, true)
	}
	var mp bytes.Buffer
	w := multipart.NewWriter(&mp)
	for k, v := range form(url.Values{"hostname": {"multi.example"}, "notes": {big}}) {
		_ = w.WriteField(k, v[0])
	}
	_ = w.Close()
	send("multipart POST /domains/add", "/domains/add", w.FormDataContentType(), mp.Bytes(), false)

	// Nothing changed: still signed in (the sign-outs were refused), and
	// no domain added.
	if code, _ := c.get("/domains"); code != http.StatusOK {
		t.Errorf("GET /domains after the refused sign-outs: got HTTP %d, want 200 (still signed in)", code)
	}
	if ds, err := e.accounts.ListDomains(context.Background(), e.tenant); err != nil || len(ds) != 0 {
		t.Errorf("domains after the refused adds: got %d (%v), want none", len(ds), err)
	}

	anon := e.client(t, "")
	anon.get("/signin")
	if code, body := anon.post("/signin", url.Values{"api_key": {e.read}, "next": {big}}); code != http.StatusRequestEntityTooLarge ||
		!strings.Contains(body, want) {
		t.Errorf("POST /signin of 8 KiB: got HTTP %d, want 413", code)
	}
	if code, loc := anon.get("/domains"); code != http.StatusSeeOther || !strings.HasPrefix(loc, "/signin") {
		t.Errorf("GET /domains after the refused sign-in: got HTTP %d %s, want 303 to /signin (no session)", code, loc)
	}
	// Within the limit the form still works.
	if code, _ := c.post("/domains/add", url.Values{"hostname": {"small.example"}}); code != http.StatusSeeOther {
		t.Errorf("POST /domains/add within the limit: got HTTP %d, want 303", code)
	}
}
