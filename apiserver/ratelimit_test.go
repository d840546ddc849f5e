package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/events"
)

// TestRateLimitAcrossReplicas: a key's budget is one across both replicas.
func TestRateLimitAcrossReplicas(t *testing.T) {
	e := newKeyEnv(t, Config{RateLimitGeneral: 5, RateLimitAPIKeys: 2})
	key := e.bootstrapKey("ops@example.com", "read", "write")
	for i := range 5 {
		r := e.call(i%2, http.MethodGet, "/api/v1/api-keys", key, "")
		if r.code != http.StatusOK {
			t.Fatalf("request %d: got %d %v, want 200", i+1, r.code, r.body)
		}
		if got, want := r.header.Get("X-RateLimit-Limit"), "5"; got != want {
			t.Errorf("request %d: X-RateLimit-Limit got %q, want %q", i+1, got, want)
		}
		if got, want := r.header.Get("X-RateLimit-Remaining"), strconv.Itoa(4-i); got != want {
			t.Errorf("request %d: X-RateLimit-Remaining got %q, want %q", i+1, got, want)
		}
	}
	r := e.call(1, http.MethodGet, "/api/v1/api-keys", key, "")
	wantV1Error(t, r, http.StatusTooManyRequests, "Rate limit exceeded. Try again in 12 seconds.")
	if got := r.header.Get("Retry-After"); got != "12" {
		t.Errorf("Retry-After: got %q, want 12 (a minute / 5)", got)
	}
	if got := r.header.Get("X-RateLimit-Remaining"); got != "0" {
		t.Errorf("X-RateLimit-Remaining: got %q, want 0", got)
	}
	// Per key: another key of the same account has its own budget.
	other := e.bootstrapKey("ops@example.com", "read", "write")
	if r := e.call(0, http.MethodGet, "/api/v1/api-keys", other, ""); r.code != http.StatusOK {
		t.Errorf("other key: got %d %v, want 200", r.code, r.body)
	}
	// A refused key is not counted against anyone.
	wantV1Error(t, e.call(0, http.MethodGet, "/api/v1/api-keys", "ssa_unknown", ""), http.StatusUnauthorized, "Missing or invalid API key")

	// POST /api-keys has a stricter class besides general.
	third := e.bootstrapKey("ops@example.com", "read", "write")
	for i := range 2 {
		if r := e.call(i, http.MethodPost, "/api/v1/api-keys", third, `{"label":"k"}`); r.code != http.StatusCreated {
			t.Fatalf("create %d: got %d %v, want 201", i+1, r.code, r.body)
		}
	}
	r = e.call(0, http.MethodPost, "/api/v1/api-keys", third, `{"label":"k"}`)
	wantV1Error(t, r, http.StatusTooManyRequests, "Rate limit exceeded. Try again in 30 seconds.")
	if got := r.header.Get("Retry-After"); got != "30" {
		t.Errorf("Retry-After of apikeys: got %q, want 30", got)
	}
	if r := e.call(1, http.MethodGet, "/api/v1/api-keys", third, ""); r.code != http.StatusOK {
		t.Errorf("general still open after the apikeys limit: got %d %v, want 200", r.code, r.body)
	}
}

// TestRateLimitCheck: POST /check has its own class; requests the handler
// refuses count too, since the limit comes first.
func TestRateLimitCheck(t *testing.T) {
	e := newKeyEnv(t, Config{RateLimitCheck: 2})
	key := e.bootstrapKey("ops@example.com", "read", "write")
	const body = `{"domain_id":"00000000-0000-4000-8000-000000000000"}`
	for i := range 2 {
		if r := e.call(i, http.MethodPost, "/api/v1/check", key, body); r.code == http.StatusTooManyRequests {
			t.Fatalf("check %d: got %d %v, want it let through", i+1, r.code, r.body)
		}
	}
	r := e.call(0, http.MethodPost, "/api/v1/check", key, body)
	wantV1Error(t, r, http.StatusTooManyRequests, "Rate limit exceeded. Try again in 30 seconds.")
	if got := r.header.Get("Retry-After"); got != "30" {
		t.Errorf("Retry-After: got %q, want 30", got)
	}
}

// TestRateLimitChannelTests: test messages go to addresses the tenant
// chose (any mailbox, any URL), so they are counted per tenant, across its
// keys and replicas: before, each of a tenant's keys sent 100 a minute,
// each test an email to up to 20 addresses through the operator's relay.
func TestRateLimitChannelTests(t *testing.T) {
	e := newKeyEnv(t, Config{RateLimitChannelTests: 2})
	k1 := e.bootstrapKey("ops@example.com", "read", "write")
	k2 := e.bootstrapKey("ops@example.com", "read", "write")
	other := e.bootstrapKey("other@example.com", "read", "write")
	channel := func(key string) string {
		r := e.call(0, http.MethodPost, "/api/v1/channels", key, `{"type":"webhook","url":"https://hooks.example.com/x"}`)
		id, _ := r.body["id"].(string)
		if r.code != http.StatusCreated || id == "" {
			t.Fatalf("create channel: got %d %v", r.code, r.body)
		}
		return id
	}
	mine, theirs := channel(k1), channel(other)
	for i, key := range []string{k1, k2} {
		if r := e.call(i, http.MethodPost, "/api/v1/channels/"+mine+"/test", key, ""); r.code != http.StatusAccepted {
			t.Fatalf("test %d: got %d %v, want 202", i+1, r.code, r.body)
		}
	}
	// A third, with either key, on either replica: over the tenant's 2.
	r := e.call(1, http.MethodPost, "/api/v1/channels/"+mine+"/test", k2, "")
	wantV1Error(t, r, http.StatusTooManyRequests, "Rate limit exceeded.")
	// Another tenant has its own.
	if r := e.call(0, http.MethodPost, "/api/v1/channels/"+theirs+"/test", other, ""); r.code != http.StatusAccepted {
		t.Errorf("another tenant's test: got %d %v, want 202", r.code, r.body)
	}
}

// TestRateLimitKeyChest: the KeyChest API counts per api_key against the
// general limit, across replicas, and answers in its own error shape.
func TestRateLimitKeyChest(t *testing.T) {
	e := newKeyEnv(t, Config{RateLimitGeneral: 3})
	const key, other = "key-of-ops-0123456789", "key-of-eve-0123456789"
	for _, c := range []struct{ email, key string }{{"ops@example.com", key}, {"eve@example.com", other}} {
		if _, err := e.srv[0].accounts.Claim(context.Background(), c.email, c.key); err != nil {
			t.Fatal(err)
		}
	}
	kc := func(i int, method, path, body string) (int, http.Header, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, e.urls[i]+path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var out map[string]any
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: non-JSON %q", method, path, raw)
		}
		return resp.StatusCode, resp.Header, out
	}
	add := `{"api_key":"` + key + `","domain":"example.com"}`
	if code, _, body := kc(0, http.MethodPost, "/api/v1.0/servers/add", add); code != http.StatusOK {
		t.Fatalf("add: got %d %v", code, body)
	}
	exp := "/api/v1.0/servers/expiration/example.com?api_key=" + url.QueryEscape(key)
	if code, _, body := kc(1, http.MethodGet, exp, ""); code != http.StatusOK {
		t.Fatalf("expiration: got %d %v", code, body)
	}
	// The body the limiter read is still there for the handler.
	if code, _, body := kc(1, http.MethodPost, "/api/v1.0/servers/add", add); code != http.StatusOK || body["id"] == nil {
		t.Fatalf("add again: got %d %v", code, body)
	}
	code, h, body := kc(0, http.MethodGet, exp, "")
	if code != http.StatusTooManyRequests || body["status"] != "error" || body["error"] != "Rate limit exceeded. Try again in 20 seconds." || h.Get("Retry-After") != "20" {
		t.Errorf("4th request: got %d %v Retry-After %q, want 429 in KeyChest's shape, Retry-After 20", code, body, h.Get("Retry-After"))
	}
	// Another account's key, and unknown keys (refused by the handler, not
	// counted), are not affected.
	if code, _, body := kc(1, http.MethodPost, "/api/v1.0/servers/add", `{"api_key":"`+other+`","domain":"example.com"}`); code != http.StatusOK {
		t.Errorf("other key: got %d %v, want 200", code, body)
	}
	for range 5 {
		if code, _, _ := kc(0, http.MethodPost, "/api/v1.0/servers/add", `{"api_key":"unknown-key-0123456789","domain":"example.com"}`); code != http.StatusUnauthorized {
			t.Errorf("unknown key: got %d, want 401", code)
		}
	}
	// Claims, which create keys, count per client address.
	for i := range 3 {
		if code, _, body := kc(i%2, http.MethodGet, "/api/v1.0/access/claim/new@example.com", ""); code != http.StatusOK {
			t.Fatalf("claim %d: got %d %v", i+1, code, body)
		}
	}
	if code, _, body := kc(1, http.MethodPost, "/api/v1.0/access/claim", `{"email":"new@example.com","api_key":"another-key-0123456789"}`); code != http.StatusTooManyRequests {
		t.Errorf("4th claim: got %d %v, want 429", code, body)
	}
}

// TestFailedAuthLimited: refused API keys count per client address
// across replicas and APIs; past the limit every request of the address
// is 429 with Retry-After before its key is checked (a right key looks
// like a wrong one); accepted keys count nothing.
func TestFailedAuthLimited(t *testing.T) {
	e := newKeyEnv(t, Config{RateLimitAuthFailures: 30})
	owner := e.bootstrapKey("ops@example.com", "read", "write")
	for i := range 60 {
		if r := e.call(i%2, http.MethodGet, "/api/v1/domains", owner, ""); r.code != http.StatusOK {
			t.Fatalf("accepted key %d: got %d %v, want 200", i, r.code, r.body)
		}
	}
	for i := range 29 {
		if r := e.call(i%2, http.MethodGet, "/api/v1/domains", fmt.Sprintf("ssa_guess%040d", i), ""); r.code != http.StatusUnauthorized {
			t.Fatalf("wrong key %d: got %d %v, want 401", i, r.code, r.body)
		}
	}
	// The 30th failure is a KeyChest key: one budget for every API.
	if r := e.kcExpiration(1, "guessguessguess0000000000", "shop.example"); r.code != http.StatusUnauthorized {
		t.Fatalf("wrong KeyChest key: got %d %v, want 401", r.code, r.body)
	}
	for _, r := range []v1Response{
		e.call(0, http.MethodGet, "/api/v1/domains", "ssa_onemore", ""),
		e.call(1, http.MethodGet, "/api/v1/domains", owner, ""),
		e.kcExpiration(0, "guessguessguess0000000001", "shop.example"),
	} {
		if r.code != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
			t.Errorf("past 30 failures: got %d %v (Retry-After %q), want 429 with Retry-After", r.code, r.body, r.header.Get("Retry-After"))
		}
	}
}

// TestRateLimitClaimAccounts: anyone may claim, and each new account
// brings room for held keys and the servers they add, which the agents
// scan. Claims that create an account are limited per client address
// (across replicas); claims for an account that exists are not, so many
// machines claiming for one email are not held back.
func TestRateLimitClaimAccounts(t *testing.T) {
	e := newKeyEnv(t, Config{RateLimitClaimAccounts: 2})
	claim := func(i int, email string) (int, map[string]any) {
		t.Helper()
		resp, err := http.Get(e.urls[i] + "/api/v1.0/access/claim/" + email)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, out
	}
	for i, email := range []string{"a@example.com", "b@example.com"} {
		if code, body := claim(i%2, email); code != http.StatusOK {
			t.Fatalf("claim creating account %d: got %d %v", i+1, code, body)
		}
	}
	code, body := claim(1, "c@example.com")
	if code != http.StatusTooManyRequests || body["status"] != "error" {
		t.Fatalf("third new account: got %d %v, want 429 in KeyChest's shape", code, body)
	}
	if id, _ := e.srv[0].accounts.Email(context.Background(), events.TenantID("c@example.com")); id != "" {
		t.Fatal("a refused claim created its account")
	}
	// Claims for the accounts that exist go on (up to held_api_keys).
	for i := range 3 {
		if code, body := claim(i%2, "a@example.com"); code != http.StatusOK {
			t.Fatalf("claim %d for an existing account: got %d %v", i+1, code, body)
		}
	}
	// The POST claim counts the same way.
	req, _ := http.NewRequest(http.MethodPost, e.urls[0]+"/api/v1.0/access/claim",
		strings.NewReader(`{"email":"d@example.com","api_key":"own-key-of-d-0123456789"}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("own-key claim creating an account: got %d, want 429", resp.StatusCode)
	}
}
