package apiserver

import (
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/apiserver/keychest"
	"github.com/certfleet/certfleet/internal/quota"
)

// claimGet claims a generated key for email on replica i.
func (e *keyEnv) claimGet(i int, email string) v1Response {
	e.t.Helper()
	return e.call(i, http.MethodGet, "/api/v1.0/access/claim/"+url.PathEscape(email), "", "")
}

func (e *keyEnv) kcAdd(i int, key, domain string) v1Response {
	e.t.Helper()
	return e.call(i, http.MethodPost, "/api/v1.0/servers/add", "", jsonBody(e.t, map[string]string{"api_key": key, "domain": domain}))
}

func (e *keyEnv) kcExpiration(i int, key, domain string) v1Response {
	e.t.Helper()
	return e.call(i, http.MethodGet, "/api/v1.0/servers/expiration/"+url.PathEscape(domain)+"?api_key="+url.QueryEscape(key), "", "")
}

// TestHostileClaim: a key claimed for someone else's account (the default
// policy, approve) adds servers and reads only those until the account
// approves it; the account's own domains answer as another tenant's do.
func TestHostileClaim(t *testing.T) {
	e := newKeyEnv(t, Config{ClaimQuota: 2})
	victim := e.bootstrapKey("victim@example.com", "read", "write")
	e.createDomain(0, victim, map[string]any{"hostname": "private.example"})

	r := e.claimGet(1, "victim@example.com")
	stolen, _ := r.body["api_key"].(string)
	if r.code != http.StatusOK || stolen == "" {
		t.Fatalf("claim: got %d %v", r.code, r.body)
	}
	// What a key of another account gets for the victim's domain...
	other, _ := e.claimGet(0, "other@example.com").body["api_key"].(string)
	foreign := e.kcExpiration(0, other, "private.example")
	if foreign.code != http.StatusNotFound {
		t.Fatalf("another tenant reads private.example: got %d %v, want 404", foreign.code, foreign.body)
	}
	// ... is what the claimed key gets, before and after re-adding it.
	for _, step := range []string{"before re-adding", "after re-adding"} {
		got := e.kcExpiration(1, stolen, "private.example")
		if got.code != foreign.code || !reflect.DeepEqual(got.body, foreign.body) {
			t.Errorf("held key reads the account's domain %s: got %d %v, want %d %v", step, got.code, got.body, foreign.code, foreign.body)
		}
		if step == "before re-adding" {
			if a := e.kcAdd(1, stolen, "private.example"); a.code != http.StatusOK || a.body["status"] != "success" {
				t.Fatalf("re-add: got %d %v, want the answer of a new server", a.code, a.body)
			}
		}
	}
	// Its own servers: added, readable, counted against its quota.
	if a := e.kcAdd(0, stolen, "mine.example"); a.code != http.StatusOK {
		t.Fatalf("add: got %d %v", a.code, a.body)
	}
	if got := e.kcExpiration(1, stolen, "mine.example"); got.code != http.StatusOK || got.body["domain"] != "mine.example" {
		t.Fatalf("held key reads its own server: got %d %v", got.code, got.body)
	}
	e.kcAdd(0, stolen, "mine2.example")
	if a := e.kcAdd(0, stolen, "mine3.example"); a.code != http.StatusForbidden || a.body["status"] != "error" ||
		!strings.Contains(a.body["error"].(string), "at most 2 servers") {
		t.Errorf("third add over a claim quota of 2: got %d %v, want 403 naming the quota", a.code, a.body)
	}

	// The account sees the key, and its servers, and approves it.
	keys := e.call(0, http.MethodGet, "/api/v1/api-keys", victim, "").body["data"].([]any)
	var claimed map[string]any
	for _, k := range keys {
		if m := k.(map[string]any); m["kind"] == "claimed" {
			claimed = m
		}
	}
	if claimed == nil || claimed["approved"] != false {
		t.Fatalf("api-keys: got %v, want the claimed key, not approved", keys)
	}
	if r := e.call(0, http.MethodGet, "/api/v1/domains?search=mine", victim, ""); r.body["pagination"].(map[string]any)["total"] != 2.0 {
		t.Errorf("the account's list of the held key's servers: got %v, want 2", r.body)
	}
	// A read key cannot approve.
	reader := e.bootstrapKey("victim@example.com", "read")
	if r := e.call(0, http.MethodPost, "/api/v1/api-keys/"+claimed["id"].(string)+"/approve", reader, ""); r.code != http.StatusForbidden {
		t.Errorf("approve with a read key: got %d %v, want 403", r.code, r.body)
	}
	e.approveClaimed(victim)
	if got := e.kcExpiration(1, stolen, "private.example"); got.code != http.StatusOK {
		t.Errorf("approved key reads the account's domain: got %d %v, want 200", got.code, got.body)
	}
	if a := e.kcAdd(0, stolen, "mine3.example"); a.code != http.StatusOK {
		t.Errorf("approved key adds past the claim quota: got %d %v, want 200", a.code, a.body)
	}
}

func TestClaimPolicies(t *testing.T) {
	off := newKeyEnv(t, Config{Claims: keychest.ClaimsOff})
	if r := off.claimGet(0, "ops@example.com"); r.code != http.StatusForbidden || !strings.Contains(r.body["error"].(string), "turned off") {
		t.Errorf("claim with claims off: got %d %v, want 403", r.code, r.body)
	}
	open := newKeyEnv(t, Config{Claims: keychest.ClaimsOpen})
	owner := open.bootstrapKey("ops@example.com", "read", "write")
	open.createDomain(0, owner, map[string]any{"hostname": "shop.example"})
	key, _ := open.claimGet(0, "ops@example.com").body["api_key"].(string)
	if r := open.kcExpiration(1, key, "shop.example"); r.code != http.StatusOK {
		t.Errorf("open claim reads the account: got %d %v, want 200", r.code, r.body)
	}
	if cfgErr := (&Config{Claims: "sometimes"}); cfgErr.Validate() == nil {
		t.Error("claims sometimes: got a valid config")
	}
}

// TestClaimFlood: claims past held_api_keys are refused in KeyChest's
// error shape, and never take the owner's room: it still creates keys and
// adds domains.
func TestClaimFlood(t *testing.T) {
	e := newKeyEnv(t, Config{Quotas: quota.Limits{quota.APIKeys: 2, quota.Domains: 1}})
	owner := e.bootstrapKey("victim@example.com", "read", "write")
	limit := int(quota.Defaults[quota.HeldAPIKeys])
	for i := range limit {
		r := e.claimGet(i%2, "victim@example.com")
		key, _ := r.body["api_key"].(string)
		if r.code != http.StatusOK || key == "" {
			t.Fatalf("claim %d: got %d %v, want 200", i, r.code, r.body)
		}
		if a := e.kcAdd(0, key, fmt.Sprintf("h%d.example", i)); a.code != http.StatusOK {
			t.Fatalf("add by held key %d: got %d %v, want 200", i, a.code, a.body)
		}
	}
	r := e.claimGet(0, "victim@example.com")
	if msg, _ := r.body["error"].(string); r.code != http.StatusForbidden || r.body["status"] != "error" ||
		!strings.Contains(msg, "waiting for its approval") {
		t.Errorf("claim past held_api_keys: got %d %v, want 403 {status: error} naming the held keys", r.code, r.body)
	}
	if r := e.call(1, http.MethodPost, "/api/v1/api-keys", owner, `{"label":"ci","permissions":["read"]}`); r.code != http.StatusCreated {
		t.Errorf("owner's key after the flood: got %d %v, want 201", r.code, r.body)
	}
	e.createDomain(0, owner, map[string]any{"hostname": "own.example"})
}

func TestQuotasAndPaging(t *testing.T) {
	e := newKeyEnv(t, Config{Quotas: quota.Limits{quota.Domains: 1}})
	key := e.bootstrapKey("ops@example.com", "read", "write")
	e.createDomain(0, key, map[string]any{"hostname": "one.example"})
	r := e.call(1, http.MethodPost, "/api/v1/domains", key, `{"hostname":"two.example"}`)
	wantV1Error(t, r, http.StatusForbidden, "at most 1 domains")
	// A held key's add counts against held_domains, not domains.
	claimed, _ := e.claimGet(0, "ops@example.com").body["api_key"].(string)
	if a := e.kcAdd(0, claimed, "two.example"); a.code != http.StatusOK {
		t.Errorf("KeyChest add by a held key at the domains quota: got %d %v, want 200", a.code, a.body)
	}

	q := e.call(0, http.MethodGet, "/api/v1/quotas", key, "")
	want := map[string]any{
		"domains":                    map[string]any{"limit": 1.0, "used": 1.0},
		"channels":                   map[string]any{"limit": float64(quota.Defaults[quota.Channels]), "used": 0.0},
		"api_keys":                   map[string]any{"limit": float64(quota.Defaults[quota.APIKeys]), "used": 1.0},
		"held_api_keys":              map[string]any{"limit": float64(quota.Defaults[quota.HeldAPIKeys]), "used": 1.0},
		"held_domains":               map[string]any{"limit": float64(quota.Defaults[quota.HeldDomains]), "used": 1.0},
		"requests_in_flight":         map[string]any{"limit": float64(quota.Defaults[quota.InFlight]), "used": 1.0},
		"managed_certificates":       map[string]any{"limit": float64(quota.Defaults[quota.ManagedCerts]), "used": 0.0},
		"certificate_orders_per_day": map[string]any{"limit": float64(quota.Defaults[quota.CertOrders]), "used": 0.0},
		"client_certificates":        map[string]any{"limit": float64(quota.Defaults[quota.ClientCerts]), "used": 0.0},
	}
	if q.code != http.StatusOK || !reflect.DeepEqual(q.body, want) {
		t.Errorf("quotas:\n got %d %v\nwant %v", q.code, q.body, want)
	}

	for _, path := range []string{"/api/v1/domains", "/api/v1/alerts"} {
		for query, code := range map[string]int{
			"page=9223372036854775807":  http.StatusBadRequest,
			"page=100002&per_page=100":  http.StatusBadRequest,
			"page=100001&per_page=100":  http.StatusOK, // the deepest page: empty
			"page=9223372036854775808":  http.StatusBadRequest,
			"page=2&per_page=100":       http.StatusOK,
			"page=-9223372036854775808": http.StatusBadRequest,
		} {
			r := e.call(0, http.MethodGet, path+"?"+query, key, "")
			if r.code != code {
				t.Errorf("%s?%s: got %d %v, want %d", path, query, r.code, r.body, code)
			}
			if data, _ := r.body["data"].([]any); code == http.StatusOK && len(data) != 0 {
				t.Errorf("%s?%s: got %d items, want an empty page", path, query, len(data))
			}
		}
	}

	// A webhook naming a refused IP literal is refused when written.
	r = e.call(0, http.MethodPost, "/api/v1/channels", key, `{"type":"webhook","url":"http://169.254.169.254/latest"}`)
	wantV1Error(t, r, http.StatusBadRequest, "--allow-webhook-targets")
}
