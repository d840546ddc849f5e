package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/ratelimit"
	"github.com/certfleet/certfleet/internal/testenv"
)

// now is the fixed clock of the tests.
var now = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

type env struct {
	t    *testing.T
	rdb  *redis.Client
	srv  *Server
	http *httptest.Server
}

func newEnv(t *testing.T) *env {
	t.Helper()
	return newEnvWith(t, Config{}, testenv.Redis(t).Client(t))
}

// newEnvWith is newEnv with more of the server's configuration, on rdb.
func newEnvWith(t *testing.T, cfg Config, rdb *redis.Client) *env {
	t.Helper()
	cfg.RenewalWindow, cfg.Now = 28*24*time.Hour, func() time.Time { return now }
	srv, err := New(cfg, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &env{t: t, rdb: rdb, srv: srv, http: hs}
}

// do sends a request and returns the status and the decoded JSON object.
func (e *env) do(method, path, contentType, body string) (int, map[string]any) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.http.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		e.t.Fatalf("%s %s: got non-JSON body %q (HTTP %d)", method, path, raw, resp.StatusCode)
	}
	return resp.StatusCode, out
}

func (e *env) postJSON(path string, v any) (int, map[string]any) {
	e.t.Helper()
	b, _ := json.Marshal(v)
	return e.do(http.MethodPost, path, "application/json", string(b))
}

// claim registers key for email and fails the test unless it worked.
func (e *env) claim(email, key string) {
	e.t.Helper()
	code, body := e.postJSON("/api/v1.0/access/claim", map[string]string{"email": email, "api_key": key})
	if code != http.StatusOK {
		e.t.Fatalf("claim %s: got HTTP %d %v, want 200", email, code, body)
	}
}

func (e *env) add(key, domain string) (int, map[string]any) {
	e.t.Helper()
	return e.postJSON("/api/v1.0/servers/add", map[string]string{"api_key": key, "domain": domain})
}

func (e *env) expiration(key, domain string) (int, map[string]any) {
	e.t.Helper()
	return e.do(http.MethodGet, "/api/v1.0/servers/expiration/"+url.PathEscape(domain)+"?api_key="+url.QueryEscape(key), "", "")
}

// state is what a rejected request must leave untouched.
func (e *env) state() string {
	e.t.Helper()
	ctx := context.Background()
	n, err := e.rdb.DBSize(ctx).Result()
	if err != nil {
		e.t.Fatal(err)
	}
	var l int64
	for _, stream := range events.EventStreams() {
		n, err := e.rdb.XLen(ctx, stream).Result()
		if err != nil {
			e.t.Fatal(err)
		}
		l += n
	}
	keys, _ := e.rdb.Keys(ctx, "*").Result()
	var domains int64
	for _, k := range keys {
		// A refused key counts against its address's failed
		// authentications: the one thing a refused request stores.
		if strings.HasPrefix(k, ratelimit.KeyPrefix+httpapi.ClassAuthFailure+":") {
			n--
		}
		if strings.HasPrefix(k, "tenant:") && strings.HasSuffix(k, ":ix:created") {
			d, _ := e.rdb.ZCard(ctx, k).Result()
			domains += d
		}
	}
	return fmt.Sprintf("keys=%d events=%d domains=%d", n, l, domains)
}

func checkError(t *testing.T, code int, body map[string]any, wantCode int, wantMsg string) {
	t.Helper()
	if code != wantCode {
		t.Errorf("status: got %d %v, want %d", code, body, wantCode)
	}
	if body["status"] != "error" {
		t.Errorf("body status: got %v, want error", body["status"])
	}
	if msg, _ := body["error"].(string); !strings.Contains(msg, wantMsg) {
		t.Errorf("error: got %q, want it to mention %q", msg, wantMsg)
	}
}

func TestClaimGenerated(t *testing.T) {
	e := newEnv(t)
	code, body := e.do(http.MethodGet, "/api/v1.0/access/claim/ops@example.com", "", "")
	if code != http.StatusOK || body["status"] != "created" || body["user"] != "ops@example.com" {
		t.Fatalf("claim: got %d %v, want 200 created for ops@example.com", code, body)
	}
	key, _ := body["api_key"].(string)
	if len(key) != 32 {
		t.Fatalf("api_key: got %q, want 32 characters", key)
	}
	// The key works, and is stored only as its hash.
	if code, body := e.add(key, "example.com"); code != http.StatusOK {
		t.Errorf("add with generated key: got %d %v, want 200", code, body)
	}
	keys, _ := e.rdb.Keys(context.Background(), "*").Result()
	for _, k := range keys {
		if strings.Contains(k, key) {
			t.Errorf("redis key %q contains the api key", k)
		}
	}
	// A second GET gives the same account another key.
	_, body2 := e.do(http.MethodGet, "/api/v1.0/access/claim/ops@example.com", "", "")
	if body2["api_key"] == key || body2["status"] != "created" {
		t.Errorf("second claim: got %v, want a new key, created", body2)
	}

	before := e.state()
	for _, bad := range []string{"not-an-email", "Ops%20%3Cops@example.com%3E"} {
		code, body := e.do(http.MethodGet, "/api/v1.0/access/claim/"+bad, "", "")
		checkError(t, code, body, http.StatusBadRequest, "email")
	}
	if after := e.state(); after != before {
		t.Errorf("state after bad claims: got %s, want %s", after, before)
	}
}

func TestClaimOwnKey(t *testing.T) {
	e := newEnv(t)
	const key = "my-own-key-0123456789"
	tests := []struct {
		name        string
		contentType string
		body        string
		wantCode    int
		wantStatus  string
		wantError   string
	}{
		{"new key", "application/json", `{"email":"ops@example.com","api_key":"` + key + `"}`, 200, "created", ""},
		{"known key", "application/json", `{"email":"ops@example.com","api_key":"` + key + `"}`, 200, "success", ""},
		{"known key, email in other case", "application/json", `{"email":"OPS@example.com","api_key":"` + key + `"}`, 200, "success", ""},
		{"known key as a form", "application/x-www-form-urlencoded", "email=ops%40example.com&api_key=" + key, 200, "success", ""},
		{"json labelled as a form (curl -d)", "application/x-www-form-urlencoded", `{"email":"ops@example.com","api_key":"` + key + `"}`, 200, "success", ""},
		{"key of another account", "application/json", `{"email":"eve@example.com","api_key":"` + key + `"}`, 409, "", "another account"},
		{"bad email", "application/json", `{"email":"ops at example","api_key":"other-key-0123456789"}`, 400, "", "email"},
		{"display name", "application/json", `{"email":"Ops <ops@example.com>","api_key":"other-key-0123456789"}`, 400, "", "email"},
		{"short key", "application/json", `{"email":"ops@example.com","api_key":"short-key"}`, 400, "", "api_key"},
		{"long key", "application/json", `{"email":"ops@example.com","api_key":"` + strings.Repeat("k", 65) + `"}`, 400, "", "api_key"},
		{"bad key character", "application/json", `{"email":"ops@example.com","api_key":"my_own_key_0123456789"}`, 400, "", "api_key"},
		{"missing key", "application/json", `{"email":"ops@example.com"}`, 400, "", "api_key is required"},
		{"key not a string", "application/json", `{"email":"ops@example.com","api_key":12345678901234567}`, 400, "", "must be a string"},
		{"broken json", "application/json", `{"email":`, 400, "", "not valid JSON"},
		{"empty body", "application/json", ``, 400, "", "empty"},
		{"xml", "application/xml", `<claim/>`, 400, "", "content type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.state()
			code, body := e.do(http.MethodPost, "/api/v1.0/access/claim", tc.contentType, tc.body)
			if tc.wantError != "" {
				checkError(t, code, body, tc.wantCode, tc.wantError)
				if after := e.state(); after != before {
					t.Errorf("state after a rejected claim: got %s, want %s", after, before)
				}
				return
			}
			if code != tc.wantCode || body["status"] != tc.wantStatus || body["api_key"] != key {
				t.Errorf("claim: got %d %v, want %d status %s", code, body, tc.wantCode, tc.wantStatus)
			}
		})
	}
	// The refused claim did not move the key.
	if p, err := e.srv.accounts.Authenticate(context.Background(), key); err != nil || p.TenantID != events.TenantID("ops@example.com") {
		t.Errorf("owner of key: got %s %v, want %s", p.TenantID, err, events.TenantID("ops@example.com"))
	}
}

func TestAddServer(t *testing.T) {
	e := newEnv(t)
	const key = "key-of-ops-0123456789"
	e.claim("ops@example.com", key)

	code, body := e.add(key, "Example.COM.")
	wantID, _ := body["id"].(string)
	if uuid.Validate(wantID) != nil {
		t.Fatalf("add: got id %q, want a UUID", wantID)
	}
	want := map[string]any{"status": "success", "id": wantID, "key": "example.com:443", "domain": "example.com"}
	if code != http.StatusOK || !reflect.DeepEqual(body, want) {
		t.Fatalf("add: got %d %v, want 200 %v", code, body, want)
	}
	before := e.state()
	for _, again := range []string{"example.com", "example.com:443", "EXAMPLE.com."} {
		code, body := e.add(key, again)
		if code != http.StatusOK || body["id"] != wantID {
			t.Errorf("add %q again: got %d %v, want 200 id %s", again, code, body, wantID)
		}
	}
	if after := e.state(); after != before {
		t.Errorf("state after repeated adds: got %s, want %s (idempotent)", after, before)
	}
	code, body = e.add(key, "example.com:8443")
	if code != http.StatusOK || body["id"] == wantID || body["domain"] != "example.com:8443" {
		t.Errorf("add other port: got %d %v, want a new id for example.com:8443", code, body)
	}
	code, body = e.add(key, "bücher.example")
	if code != http.StatusOK || body["domain"] != "xn--bcher-kva.example" {
		t.Errorf("add idn: got %d %v, want domain xn--bcher-kva.example", code, body)
	}

	bad := []struct {
		name, key, domain string
		wantCode          int
		wantError         string
	}{
		{"url", key, "https://example.org/", 400, "URL"},
		{"path", key, "example.org/login", 400, "path"},
		{"port out of range", key, "example.org:70000", 400, "out of range"},
		{"port zero", key, "example.org:0", 400, "out of range"},
		{"ip", key, "192.0.2.1", 400, "IP"},
		{"single label", key, "localhost", 400, "fully qualified"},
		{"wildcard", key, "*.example.org", 400, "wildcard"},
		{"userinfo", key, "user@example.org", 400, "user information"},
		{"space", key, "example .org", 400, "white space"},
		{"long label", key, strings.Repeat("a", 64) + ".org", 400, "longer than 63"},
		{"missing domain", key, "", 400, "domain is required"},
		{"unknown key", "unknown-key-0123456789", "example.org", 401, "unknown api_key"},
		{"malformed key", "x", "example.org", 401, "unknown api_key"},
	}
	// A name given twice is refused, not read as its last value.
	before = e.state()
	code, body = e.do(http.MethodPost, "/api/v1.0/servers/add", "application/json",
		`{"api_key":"`+key+`","domain":"first.example","domain":"second.example"}`)
	checkError(t, code, body, http.StatusBadRequest, `duplicate field "domain"`)
	if after := e.state(); after != before {
		t.Errorf("state after a repeated field: got %s, want %s", after, before)
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			before := e.state()
			code, body := e.add(tc.key, tc.domain)
			checkError(t, code, body, tc.wantCode, tc.wantError)
			if after := e.state(); after != before {
				t.Errorf("state after rejected add: got %s, want %s", after, before)
			}
		})
	}
}

func TestTenantIsolation(t *testing.T) {
	e := newEnv(t)
	const keyA, keyB = "key-of-alice-0123456789", "key-of-bob-0123456789"
	e.claim("alice@example.com", keyA)
	e.claim("bob@example.com", keyB)
	if code, body := e.add(keyA, "alice.example"); code != http.StatusOK {
		t.Fatalf("add: got %d %v", code, body)
	}
	if code, body := e.expiration(keyA, "alice.example"); code != http.StatusOK {
		t.Errorf("owner reads: got %d %v, want 200", code, body)
	}
	code, body := e.expiration(keyB, "alice.example")
	checkError(t, code, body, http.StatusNotFound, "not registered")
	code, body = e.expiration("unknown-key-0123456789", "alice.example")
	checkError(t, code, body, http.StatusUnauthorized, "unknown api_key")
	code, body = e.expiration("", "alice.example")
	checkError(t, code, body, http.StatusBadRequest, "api_key is required")
	code, body = e.expiration(keyA, "alice.example:8443")
	checkError(t, code, body, http.StatusNotFound, "not registered")
	code, body = e.expiration(keyA, "192.0.2.1")
	checkError(t, code, body, http.StatusBadRequest, "IP")
}

func scanEvent(t *testing.T, domainID, region string, finished time.Time, port int, results ...events.IPResult) events.Envelope {
	t.Helper()
	job := uuid.New()
	ev, err := events.NewWithID(events.ScanEventID(job, region), events.ScanCompleted, "", domainID, events.ScanCompletedV1{
		JobID: job, DomainID: domainID, Host: "shop.example", Port: port, Region: region,
		StartedAt: finished.Add(-time.Second), FinishedAt: finished, Results: results,
	})
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// KeyChest's own-key claim: a key of 16 to 64 of [a-zA-Z0-9-], exactly;
// the answer names the user, as KeyChest's does.
func TestClaimOwnKeyBounds(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		key  string
		code int
	}{
		{"ABCDEF-123456789", 200},      // 16
		{strings.Repeat("a", 64), 200}, // 64
		{"ABCDEF-12345678", 400},       // 15
		{strings.Repeat("b", 65), 400}, // 65
		{"ABCDEF-12345678.", 400},      // 16, a dot
		{"ABCDEF-1234567\u00e9", 400},  // 16, a letter outside a-z
	} {
		code, body := e.do(http.MethodPost, "/api/v1.0/access/claim", "application/json",
			`{"email":"ops@example.com","api_key":"`+tc.key+`"}`)
		if tc.code != 200 {
			checkError(t, code, body, tc.code, "api_key")
			continue
		}
		want := map[string]any{"status": "created", "user": "ops@example.com", "api_key": tc.key}
		if code != tc.code || !reflect.DeepEqual(body, want) {
			t.Errorf("key %q: got %d %v, want %d %v", tc.key, code, body, tc.code, want)
		}
	}
}

func TestExpiration(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	const key = "key-of-ops-0123456789"
	e.claim("ops@example.com", key)
	_, body := e.add(key, "shop.example:8443")
	domainID := body["id"].(string)

	// Registered, not scanned yet.
	code, body := e.expiration(key, "shop.example:8443")
	want := map[string]any{"domain": "shop.example:8443", "certificate_found": false, "renewal_due": false,
		"expired_found": false, "results": []any{}, "status": "success"}
	if code != http.StatusOK || !reflect.DeepEqual(body, want) {
		t.Fatalf("before any scan: got %d %v, want 200 %v", code, body, want)
	}

	proj, err := projector.New(projector.Config{Consumer: "test"}, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	scanned := now.Add(-10 * time.Minute)
	valid := now.Add(60 * 24 * time.Hour)
	soon := now.Add(10 * 24 * time.Hour)
	gone := now.Add(-24 * time.Hour)
	cert := func(ip, sha string, notAfter time.Time) events.IPResult {
		return events.IPResult{IP: ip, Outcome: events.OutcomeOK, CertificateFound: true, LeafSHA256: sha, NotAfter: notAfter,
			Issuer: "CN=Lab CA", ChainValid: true, HostnameValid: true, TLSVersion: "TLS 1.3"}
	}
	for _, ev := range []events.Envelope{
		scanEvent(t, domainID, "eu-west", scanned, 8443, cert("192.0.2.1", "aa", valid),
			events.IPResult{IP: "192.0.2.9", Outcome: events.OutcomeTimeout}),
		scanEvent(t, domainID, "us-east", scanned.Add(time.Second), 8443, cert("192.0.2.1", "aa", valid)),
	} {
		if err := proj.Apply(ctx, ev); err != nil {
			t.Fatalf("apply: %v", err)
		}
	}
	code, body = e.expiration(key, "shop.example:8443")
	if code != http.StatusOK {
		t.Fatalf("expiration: got %d %v", code, body)
	}
	wantResults := []any{
		map[string]any{"ip": "192.0.2.1", "region": "eu-west", "port": 8443.0, "certificate_found": true,
			"certificate_sha256": "aa", "renewal_due": false, "expired": false, "renewal_utc": float64(valid.Unix()),
			"last_scan_utc": float64(scanned.Unix()), "chain_valid": true, "hostname_valid": true,
			"tls_version": "TLS 1.3", "issuer": "CN=Lab CA", "error": ""},
		map[string]any{"ip": "192.0.2.9", "region": "eu-west", "port": 8443.0, "certificate_found": false,
			"certificate_sha256": nil, "renewal_due": nil, "expired": nil, "renewal_utc": nil,
			"last_scan_utc": float64(scanned.Unix()), "chain_valid": false, "hostname_valid": false,
			"tls_version": "", "issuer": "", "error": "timeout"},
		map[string]any{"ip": "192.0.2.1", "region": "us-east", "port": 8443.0, "certificate_found": true,
			"certificate_sha256": "aa", "renewal_due": false, "expired": false, "renewal_utc": float64(valid.Unix()),
			"last_scan_utc": float64(scanned.Add(time.Second).Unix()), "chain_valid": true, "hostname_valid": true,
			"tls_version": "TLS 1.3", "issuer": "CN=Lab CA", "error": ""},
	}
	if !reflect.DeepEqual(body["results"], wantResults) {
		t.Errorf("results:\n got %v\nwant %v", body["results"], wantResults)
	}
	flags := func(body map[string]any) string {
		return fmt.Sprintf("found=%v due=%v expired=%v", body["certificate_found"], body["renewal_due"], body["expired_found"])
	}
	if got := flags(body); got != "found=true due=false expired=false" {
		t.Errorf("flags: got %s, want found=true due=false expired=false", got)
	}
	// The same domain spelled with the default port is another domain;
	// spelled differently, the same.
	if code, _ := e.expiration(key, "SHOP.example.:8443"); code != http.StatusOK {
		t.Errorf("other spelling: got %d, want 200", code)
	}

	tests := []struct {
		name      string
		notAfter  time.Time
		wantFlags string
		wantEntry string
	}{
		{"renewal due", soon, "found=true due=true expired=false", "due=true expired=false"},
		{"expired", gone, "found=true due=true expired=true", "due=true expired=true"},
		{"just inside the window", now.Add(28*24*time.Hour - time.Second), "found=true due=true expired=false", "due=true expired=false"},
		{"just outside the window", now.Add(28 * 24 * time.Hour), "found=true due=false expired=false", "due=false expired=false"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// A newer scan from us-east replaces its entry; eu-west still
			// has a valid certificate, so flags come from "any entry".
			ev := scanEvent(t, domainID, "us-east", scanned.Add(time.Duration(i+2)*time.Second), 8443, cert("192.0.2.1", "bb", tc.notAfter))
			if err := proj.Apply(ctx, ev); err != nil {
				t.Fatal(err)
			}
			_, body := e.expiration(key, "shop.example:8443")
			if got := flags(body); got != tc.wantFlags {
				t.Errorf("flags: got %s, want %s", got, tc.wantFlags)
			}
			results := body["results"].([]any)
			last := results[len(results)-1].(map[string]any)
			if got := fmt.Sprintf("due=%v expired=%v", last["renewal_due"], last["expired"]); got != tc.wantEntry || last["certificate_sha256"] != "bb" {
				t.Errorf("us-east entry: got %s sha %v, want %s sha bb", got, last["certificate_sha256"], tc.wantEntry)
			}
		})
	}
}

func TestRoutesAndHealth(t *testing.T) {
	e := newEnv(t)
	code, body := e.do(http.MethodGet, "/api/v1.0/nope", "", "")
	checkError(t, code, body, http.StatusNotFound, "no such endpoint")
	code, body = e.do(http.MethodDelete, "/api/v1.0/servers/add", "", "")
	checkError(t, code, body, http.StatusMethodNotAllowed, "method not allowed")
	code, body = e.do(http.MethodGet, "/healthz", "", "")
	if code != http.StatusOK || body["status"] != "ok" {
		t.Errorf("healthz: got %d %v, want 200 ok", code, body)
	}
	big := `{"email":"ops@example.com","api_key":"` + strings.Repeat("a", 70<<10) + `"}`
	code, body = e.do(http.MethodPost, "/api/v1.0/access/claim", "application/json", big)
	checkError(t, code, body, http.StatusRequestEntityTooLarge, "too large")

	resp, err := http.Get(e.http.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(raw), `certfleet_apiserver_requests_total{code="404",method="GET",route="unmatched"}`) {
		t.Errorf("metrics: got %d without the request counter, want 200 with it", resp.StatusCode)
	}
}

// An unknown path or method under an API answers in that API's error
// shape, which its clients parse: KeyChest's {"status":"error","error"},
// SSLTrackr's {"error"} under /api/v1, CertMate's {"error","code","status"}
// (status a number) under its paths; KeyChest's under no API.
func TestUnknownRoutesAnswerInTheirAPIsShape(t *testing.T) {
	e := newEnv(t)
	keychestShape := func(code int) map[string]any { return map[string]any{"status": "error", "error": "-"} }
	v1Shape := func(code int) map[string]any { return map[string]any{"error": "-"} }
	certmateShape := func(code int) map[string]any {
		return map[string]any{"error": "-", "code": (&httpapi.Error{Status: code}).Code(), "status": float64(code)}
	}
	for _, tc := range []struct {
		method, path string
		code         int
		shape        func(int) map[string]any
	}{
		{http.MethodGet, "/api/v1.0/nope", 404, keychestShape},
		{http.MethodGet, "/nope", 404, keychestShape},
		{http.MethodGet, "/api/v1/nope", 404, v1Shape},
		{http.MethodPut, "/api/v1/domains", 405, v1Shape},
		{http.MethodGet, "/api/crl/download/xml", 404, certmateShape},
		{http.MethodGet, "/api/ocsp/status/", 404, certmateShape},
		{http.MethodGet, "/api/client-certs/cert-1/download", 404, certmateShape},
		{http.MethodDelete, "/api/client-certs/cert-1", 405, certmateShape},
		{http.MethodGet, "/api/certificates/shop.example/nope", 404, certmateShape},
		{http.MethodGet, "/api/audit/nope", 404, certmateShape},
		{http.MethodGet, "/api/operator/nope", 404, v1Shape}, // the operator API's {"error"}
	} {
		code, body := e.do(tc.method, tc.path, "", "")
		want := tc.shape(tc.code)
		if msg, ok := body["error"].(string); ok && msg != "" {
			body["error"] = "-"
		}
		if code != tc.code || !reflect.DeepEqual(body, want) {
			t.Errorf("%s %s: got %d %v, want %d %v", tc.method, tc.path, code, body, tc.code, want)
		}
	}
}

// TestWrongMethod: a method a path's routes lack is a 405 with an Allow
// header naming the methods they have, in the shape of the path's API,
// on every API and the dashboard alike. The router decides it before any
// key check, so a request without a key, or with a bad one, gets the same
// 405, never a 401: CertMate routes with Werkzeug, which raises its 405
// while matching, before a view's require_auth runs. An unknown path stays
// a 404 without Allow.
//
// GET /api/client-certs/create is not a wrong method: the path is also
// GET /api/client-certs/<identifier>, and Werkzeug (3.1, CertMate's
// client-certificates namespace) routes it there as certificate "create",
// so CertMate answers 401 without a key and 404 "Certificate not found:
// create" with one. certfleet answers the same; a 405 there would part
// from CertMate, whose document lists no 405 at all.
func TestWrongMethod(t *testing.T) {
	e := newCAEnv(t)
	key := e.bootstrapKey("ops@example.com", "read", "write")
	const (
		certmate405 = `{"error":"method not allowed","code":"METHOD_NOT_ALLOWED","status":405}`
		keychest405 = `{"status":"error","error":"method not allowed"}`
		v1405       = `{"error":"method not allowed"}`
	)
	for _, tc := range []struct {
		method, path, allow, body string
	}{
		{http.MethodPut, "/api/client-certs/create", "GET, POST", certmate405},
		{http.MethodDelete, "/api/client-certs/cert-1", "GET", certmate405},
		{http.MethodPost, "/api/client-certs/stats", "GET", certmate405},
		{http.MethodGet, "/api/client-certs/cert-1/revoke", "POST", certmate405},
		{http.MethodPost, "/api/crl/download/pem", "GET", certmate405},
		{http.MethodGet, "/api/v1.0/servers/add", "POST", keychest405},
		{http.MethodDelete, "/api/v1/domains", "GET, POST", v1405},
		{http.MethodGet, "/signout", "POST", keychest405}, // the dashboard: KeyChest's, as its unknown paths
	} {
		for _, k := range []string{"", "ssa_not_a_key", key} {
			code, h, b := e.raw(0, tc.method, tc.path, k, "")
			if code != http.StatusMethodNotAllowed || h.Get("Allow") != tc.allow || string(b) != tc.body {
				t.Errorf("%s %s (key %t): got %d Allow %q %s, want 405 Allow %q %s",
					tc.method, tc.path, k != "", code, h.Get("Allow"), b, tc.allow, tc.body)
			}
		}
	}
	for _, tc := range []struct {
		method, path, key string
		code              int
		body              string
	}{
		{http.MethodGet, "/api/client-certs/create", "", 401, `{"error":"Missing or invalid API key","code":"UNAUTHORIZED","status":401}`},
		{http.MethodGet, "/api/client-certs/create", key, 404, `{"error":"Certificate not found: create","code":"NOT_FOUND","status":404}`},
		{http.MethodGet, "/api/client-certs/batch", key, 404, `{"error":"Certificate not found: batch","code":"NOT_FOUND","status":404}`},
		{http.MethodPost, "/api/client-certs/cert-1/nope", key, 404, `{"error":"no such endpoint","code":"NOT_FOUND","status":404}`},
		{http.MethodPost, "/api/v1.0/nope", "", 404, `{"status":"error","error":"no such endpoint"}`},
		{http.MethodDelete, "/api/v1/nope", key, 404, `{"error":"no such endpoint"}`},
		{http.MethodDelete, "/no-such-page", "", 404, `{"status":"error","error":"no such endpoint"}`},
	} {
		code, h, b := e.raw(0, tc.method, tc.path, tc.key, "")
		if code != tc.code || h.Get("Allow") != "" || string(b) != tc.body {
			t.Errorf("%s %s (key %t): got %d Allow %q %s, want %d without Allow %s",
				tc.method, tc.path, tc.key != "", code, h.Get("Allow"), b, tc.code, tc.body)
		}
	}
}

// A panicking handler answers 500 in the shape of its API (styleOf).
func TestRecoveryAnswersInTheAPIsShape(t *testing.T) {
	s := &Server{logger: testenv.Logger(t)}
	r := gin.New()
	r.Use(s.recovery())
	for _, p := range []string{"/api/v1.0/boom", "/api/v1/boom", "/api/client-certs/boom"} {
		r.GET(p, func(*gin.Context) { panic("boom") })
	}
	for path, want := range map[string]string{
		"/api/v1.0/boom":         `{"status":"error","error":"internal error"}`,
		"/api/v1/boom":           `{"error":"internal error"}`,
		"/api/client-certs/boom": `{"error":"internal error","code":"INTERNAL_ERROR","status":500}`,
	} {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		if w.Code != http.StatusInternalServerError || w.Body.String() != want {
			t.Errorf("%s: got %d %s, want 500 %s", path, w.Code, w.Body, want)
		}
	}
}

func TestRunServesAndStops(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	srv, err := New(Config{Listen: addr}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("healthz: got %d, want 200", resp.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not come up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: got %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Error("server still answers after shutdown")
	}
}

func TestConfigValidate(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	_, err := New(Config{Listen: "nonsense", RenewalWindow: -time.Hour}, rdb, testenv.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "listen") || !strings.Contains(err.Error(), "renewal window") {
		t.Errorf("New with bad config: got %v, want errors about listen and renewal window", err)
	}
}
