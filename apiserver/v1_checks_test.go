package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/certfleet/certfleet/agent/lab"
	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/apiserver/projector"
	v1 "github.com/certfleet/certfleet/apiserver/v1"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/pipelinetest"
	"github.com/certfleet/certfleet/internal/presence"
	"github.com/certfleet/certfleet/internal/testenv"
)

// checkClient calls the v1 API of one replica with a bearer key.
type checkClient struct {
	t    *testing.T
	base string
}

func newCheckReplica(t *testing.T, rdb *redis.Client, cfg Config) (*Server, checkClient) {
	t.Helper()
	srv, err := New(cfg, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return srv, checkClient{t: t, base: hs.URL + "/api/v1"}
}

// call sends a request with key as bearer (none when empty) and decodes
// the JSON answer into out.
func (c checkClient) call(method, path, key, body string, out any) int {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, out); err != nil {
		c.t.Fatalf("%s %s: got non-JSON body %q (HTTP %d)", method, path, raw, resp.StatusCode)
	}
	return resp.StatusCode
}

// checkTenant is an account with a read-only and a read-write key.
type checkTenant struct {
	id, read, write string
}

func newCheckTenant(t *testing.T, srv *Server, email string) checkTenant {
	t.Helper()
	ctx := context.Background()
	tenant, err := srv.accounts.EnsureAccount(ctx, email)
	if err != nil {
		t.Fatalf("ensure account %s: %v", email, err)
	}
	r, err := srv.accounts.CreateKey(ctx, tenant, "read", []string{"read"}, nil, accounts.SourceCLI)
	if err != nil {
		t.Fatalf("create read key: %v", err)
	}
	w, err := srv.accounts.CreateKey(ctx, tenant, "write", []string{"read", "write"}, nil, accounts.SourceCLI)
	if err != nil {
		t.Fatalf("create write key: %v", err)
	}
	return checkTenant{id: tenant, read: r.Key, write: w.Key}
}

func addCheckDomain(t *testing.T, srv *Server, tenant, host string, port int) string {
	t.Helper()
	d, _, err := srv.accounts.AddDomain(context.Background(), tenant, accounts.NewDomain{Host: host, Port: port, Source: "api"})
	if err != nil {
		t.Fatalf("add %s: %v", host, err)
	}
	return d.ID
}

// sslAnswer is GET /ssl's answer or an error; the field names themselves
// are checked against the OpenAPI document (TestOpenAPISchemasMatchTypes).
type sslAnswer struct {
	Error string `json:"error"`
	v1.SSLCheck
}

type checkAnswer struct {
	Error        string         `json:"error"`
	SSL          *sslAnswer     `json:"ssl"`
	Whois        *v1.WhoisCheck `json:"whois"`
	Pending      []string       `json:"pending_regions"`
	WhoisPending bool           `json:"whois_pending"`
}

func orNil(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}

// wantWireKeys fails unless the JSON object m has every key (null
// values included): the field names a public API documents.
func wantWireKeys(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("%s: no %q on the wire, got %v", what, k, m)
		}
	}
}

func TestSSLCheck(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	cfg := Config{Now: func() time.Time { return now }}
	srv, api := newCheckReplica(t, rdb, cfg)
	_, api2 := newCheckReplica(t, rdb, cfg)
	alice := newCheckTenant(t, srv, "alice@example.com")
	bob := newCheckTenant(t, srv, "bob@example.com")
	id := addCheckDomain(t, srv, alice.id, "shop.example", 443)

	var a sslAnswer
	if code := api.call(http.MethodGet, "/domains/"+id+"/ssl", alice.read, "", &a); code != http.StatusNotFound || a.Error != "No SSL check yet" {
		t.Fatalf("before a scan: got HTTP %d %q, want 404 %q", code, a.Error, "No SSL check yet")
	}

	base := events.IPResult{
		Outcome: events.OutcomeOK, CertificateFound: true,
		Subject: "CN=shop.example", Issuer: "CN=Test CA", SANs: []string{"shop.example", "www.shop.example"},
		Serial: "3a1b2", NotBefore: now.AddDate(0, -1, 0), NotAfter: now.AddDate(0, 0, 60),
		KeyType: "ECDSA", KeyBits: 256, SignatureAlgorithm: "ECDSA-SHA256", ChainLength: 2,
		TLSVersion: "TLS 1.3", CipherSuite: "TLS_AES_128_GCM_SHA256", ChainValid: true, HostnameValid: true,
		HTTPStatus: 200, HSTSMaxAge: 31536000, LegacyTLSChecked: true,
	}
	ip1, ip2 := base, base
	ip1.IP = "192.0.2.1"
	ip2.IP, ip2.NotAfter, ip2.Serial = "192.0.2.2", now.AddDate(0, 0, 20), "ff"
	ip2.HSTSMaxAge, ip2.LegacyTLS = 0, []string{"TLS 1.1"}
	refused := events.IPResult{IP: "192.0.2.3", Outcome: events.OutcomeConnectionRefused, ConnectMS: 3}
	eu := scanEvent(t, id, "eu", now.Add(-2*time.Hour), 443, ip1, ip2)
	us := scanEvent(t, id, "us", now.Add(-time.Hour), 443, ip1, refused)
	for _, ev := range []events.Envelope{eu, us} {
		if err := applyEvent(ctx, rdb, ev); err != nil {
			t.Fatal(err)
		}
	}

	for i, c := range []checkClient{api, api2} {
		a = sslAnswer{}
		if code := c.call(http.MethodGet, "/domains/"+id+"/ssl", alice.read, "", &a); code != http.StatusOK {
			t.Fatalf("replica %d: got HTTP %d %q, want 200", i, code, a.Error)
		}
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"id", a.ID, eu.EventID.String()},
		{"domain_id", a.DomainID, id},
		{"subject", orNil(a.Subject), "CN=shop.example"},
		{"issuer", orNil(a.Issuer), "CN=Test CA"},
		{"valid_to", a.ValidTo.Equal(ip2.NotAfter), true},
		{"valid_from", a.ValidFrom.Equal(ip2.NotBefore), true},
		{"days_remaining", *a.DaysRemaining, 20},
		{"serial_number", orNil(a.SerialNumber), "ff"},
		{"tls_version", orNil(a.TLSVersion), "TLSv1.3"},
		{"chain_valid", a.ChainValid, true},
		{"hsts", a.HSTS, false},
		{"sans", strings.Join(a.SANs, ","), "shop.example,www.shop.example"},
		{"grade", orNil(a.Grade), "B"},
		{"grade_reasons", strings.Join(a.GradeReasons, ","), "legacy-protocols,no-hsts"},
		{"status", a.Status, "warning"},
		{"checked_at", a.CheckedAt.Equal(now.Add(-time.Hour)), true},
		{"regions", strings.Join(a.Regions, ","), "eu,us"},
		{"results", len(a.Results), 4},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	// The names on the wire are SSLTrackr's (its /ssl example), whatever
	// the Go fields above are tagged.
	var wire map[string]any
	api.call(http.MethodGet, "/domains/"+id+"/ssl", alice.read, "", &wire)
	wantWireKeys(t, "ssl", wire, "id", "domain_id", "subject", "issuer", "valid_from", "valid_to", "days_remaining",
		"serial_number", "tls_version", "chain_valid", "hsts", "sans", "grade", "checked_at")
	byKey := map[string]v1.SSLResult{}
	for _, r := range a.Results {
		byKey[r.Region+"|"+r.IP] = r
	}
	if r := byKey["eu|192.0.2.1"]; orNil(r.Grade) != "A+" || orNil(r.SerialNumber) != "03:a1:b2" || !r.HSTS || r.HSTSMaxAge != 31536000 || *r.DaysRemaining != 60 {
		t.Errorf("eu 192.0.2.1: got grade %s serial %s hsts %v/%d days %v, want A+ 03:a1:b2 true/31536000 60",
			orNil(r.Grade), orNil(r.SerialNumber), r.HSTS, r.HSTSMaxAge, *r.DaysRemaining)
	}
	if r := byKey["eu|192.0.2.2"]; orNil(r.Grade) != "B" || strings.Join(r.LegacyTLS, ",") != "TLS 1.1" {
		t.Errorf("eu 192.0.2.2: got grade %s legacy %v, want B [TLS 1.1]", orNil(r.Grade), r.LegacyTLS)
	}
	if r := byKey["us|192.0.2.3"]; r.Grade != nil || r.Outcome != "connection-refused" || r.Subject != nil || r.ValidTo != nil || r.CertificateFound {
		t.Errorf("us 192.0.2.3: got %+v, want no grade, no certificate, outcome connection-refused", r)
	}

	// No registration lookup yet: 200, pending (404 is for domains the
	// key cannot see).
	var w v1.WhoisCheck
	if code := api.call(http.MethodGet, "/domains/"+id+"/whois", alice.read, "", &w); code != http.StatusOK || w.Status != "pending" || w.DaysRemaining != nil {
		t.Errorf("whois before a lookup: got HTTP %d status %q days %v, want 200 pending null", code, w.Status, w.DaysRemaining)
	}
	wire = nil
	api.call(http.MethodGet, "/domains/"+id+"/whois", alice.read, "", &wire)
	wantWireKeys(t, "whois", wire, "id", "domain_id", "registrar", "created_date", "expiry_date", "days_remaining",
		"dnssec", "nameservers", "checked_at")

	// Errors.
	tests := []struct {
		name, path, key string
		code            int
		msg             string
	}{
		{"no key", "/domains/" + id + "/ssl", "", http.StatusUnauthorized, httpapi.MsgUnauthorized},
		{"bad key", "/domains/" + id + "/ssl", "ssa_nope", http.StatusUnauthorized, httpapi.MsgUnauthorized},
		{"other tenant", "/domains/" + id + "/ssl", bob.read, http.StatusNotFound, "Domain not found"},
		{"unknown id", "/domains/6f1c1f5e-58b4-4d1e-9c43-5d9b8a4a2b11/ssl", alice.read, http.StatusNotFound, "Domain not found"},
		{"not a uuid", "/domains/nope/ssl", alice.read, http.StatusNotFound, "Domain not found"},
		{"whois other tenant", "/domains/" + id + "/whois", bob.read, http.StatusNotFound, "Domain not found"},
		{"whois no key", "/domains/" + id + "/whois", "", http.StatusUnauthorized, httpapi.MsgUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var e struct {
				Error string `json:"error"`
			}
			if code := api.call(http.MethodGet, tc.path, tc.key, "", &e); code != tc.code || e.Error != tc.msg {
				t.Errorf("got HTTP %d %q, want %d %q", code, e.Error, tc.code, tc.msg)
			}
		})
	}
}

// TestCheckRateLimit: POST /check has its own per-key limit, held across
// replicas, on top of the general one.
func TestCheckRateLimit(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	cfg := Config{RateLimitCheck: 2}
	srv, api := newCheckReplica(t, rdb, cfg)
	_, api2 := newCheckReplica(t, rdb, cfg)
	alice := newCheckTenant(t, srv, "alice@example.com")
	body := `{"domain_id":"6f1c1f5e-58b4-4d1e-9c43-5d9b8a4a2b11"}`
	for i, c := range []checkClient{api, api2} {
		var e checkAnswer
		if code := c.call(http.MethodPost, "/check", alice.write, body, &e); code != http.StatusNotFound {
			t.Fatalf("check %d: got HTTP %d %q, want 404", i+1, code, e.Error)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, api.base+"/check", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+alice.write)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(raw), "Rate limit exceeded") {
		t.Errorf("third check: got HTTP %d, Retry-After %q, %s; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), raw)
	}
	// The general limit still lets the key read.
	var e checkAnswer
	if code := api.call(http.MethodGet, "/domains/6f1c1f5e-58b4-4d1e-9c43-5d9b8a4a2b11/ssl", alice.read, "", &e); code != http.StatusNotFound {
		t.Errorf("ssl after the check limit: got HTTP %d %q, want 404", code, e.Error)
	}
}

// TestManualCheckNoAgent: with no agent seen lately (and no coordinator),
// a check waits its timeout and says why.
func TestManualCheckNoAgent(t *testing.T) {
	rdb := testenv.Redis(t).Client(t)
	srv, api := newCheckReplica(t, rdb, Config{CheckTimeout: 500 * time.Millisecond})
	alice := newCheckTenant(t, srv, "alice@example.com")
	id := addCheckDomain(t, srv, alice.id, "shop.example", 443)
	var a checkAnswer
	start := time.Now()
	code := api.call(http.MethodPost, "/check", alice.write, `{"domain_id":"`+id+`"}`, &a)
	if code != http.StatusGatewayTimeout || !strings.Contains(a.Error, "no agent was seen") || a.SSL != nil ||
		a.Whois == nil || a.Whois.Status != "pending" || !a.WhoisPending {
		t.Errorf("got HTTP %d %q ssl %v whois %+v pending %v, want 504 saying no agent was seen, ssl null, whois pending", code, a.Error, a.SSL, a.Whois, a.WhoisPending)
	}
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Errorf("answered after %s, want the 500ms timeout", took)
	}
}

// applyEvent applies one event to the views as the projector does.
func applyEvent(ctx context.Context, rdb *redis.Client, ev events.Envelope) error {
	p, err := projector.New(projector.Config{Consumer: "test"}, rdb, zap.NewNop())
	if err != nil {
		return err
	}
	// A running projector has applied the domain events on the streams
	// before any scan or lookup of the domains: they name the views'
	// tenants and join the registration indexes. Applying them again is
	// harmless.
	all, err := events.ReadAllEvents(ctx, rdb)
	if err != nil {
		return err
	}
	var batch []events.Envelope
	for _, e := range all {
		if strings.HasPrefix(e.Name, "domain.") {
			batch = append(batch, e)
		}
	}
	return p.ApplyBatch(ctx, append(batch, ev))
}

// TestManualCheck runs a coordinator, an agent in region "eu" and the
// projector against the lab, in-process on one Redis, and asks two
// replicas for manual checks: one answers fresh results from a real scan,
// the other times out waiting for a region whose agent is not running.
// The coordinator and agent run 16 shards and the API servers know none:
// a manual check is an event, so the API needs no shard count (when it
// wrote the schedule itself, an API on 4 shards beside coordinators on 16
// answered 504 after its whole timeout, every time).
func TestManualCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real scans")
	}
	ctx := t.Context()
	rdb := testenv.Redis(t).Client(t)
	fleet := pipelinetest.Start(t, rdb, pipelinetest.Config{Shards: 16, Regions: []string{"eu"}, Evaluators: []projector.Evaluator{nil}})
	var target, legacy lab.Target
	for _, tg := range fleet.Targets() {
		switch tg.Name {
		case "valid":
			target = tg
		case "legacy-tls":
			legacy = tg
		}
	}
	if target.Host == "" || legacy.Host == "" {
		t.Fatalf("lab targets: got valid %q and legacy-tls %q, want both", target.Host, legacy.Host)
	}

	srv, api := newCheckReplica(t, rdb, Config{CheckTimeout: 20 * time.Second, RateLimitCheck: 100})
	_, short := newCheckReplica(t, rdb, Config{CheckTimeout: 1500 * time.Millisecond, RateLimitCheck: 100})
	alice := newCheckTenant(t, srv, "alice@example.com")
	bob := newCheckTenant(t, srv, "bob@example.com")
	id := addCheckDomain(t, srv, alice.id, target.Host, target.Port)
	body := `{"domain_id":"` + id + `"}`
	// The lab's registration was looked up a minute ago: younger than
	// an hour, so the checks answer it as stored (TestManualCheckWhois
	// has the waiting case).
	regExp := time.Now().AddDate(0, 0, 200)
	for _, h := range []string{target.Host, legacy.Host} {
		publishLookup(t, rdb, projector.RegistrableOf(h), events.RegistrationOK, time.Now().Add(-time.Minute), &regExp)
	}

	// A check right after the add waits for the domain's first scan.
	var first checkAnswer
	start := time.Now()
	if code := api.call(http.MethodPost, "/check", alice.write, body, &first); code != http.StatusOK || first.SSL == nil {
		t.Fatalf("first check: got HTTP %d %q, want 200 with ssl", code, first.Error)
	}
	t.Logf("first check (domain just added) answered in %s", time.Since(start).Round(time.Millisecond))

	var second checkAnswer
	start = time.Now()
	if code := api.call(http.MethodPost, "/check", alice.write, body, &second); code != http.StatusOK || second.SSL == nil {
		t.Fatalf("second check: got HTTP %d %q, want 200 with ssl", code, second.Error)
	}
	took := time.Since(start)
	t.Logf("manual check of a scheduled domain answered in %s", took.Round(time.Millisecond))
	s := second.SSL
	if s.ID == first.SSL.ID || !s.CheckedAt.After(first.SSL.CheckedAt) {
		t.Errorf("second check: got scan %s at %s, want a newer scan than %s at %s", s.ID, s.CheckedAt, first.SSL.ID, first.SSL.CheckedAt)
	}
	if w := second.Whois; w == nil || w.Status != "valid" || w.DaysRemaining == nil || *w.DaysRemaining != 199 || orNil(w.Registrar) != "Lab Registrar" {
		t.Errorf("whois: got %+v, want the stored registration: valid, 199 days, Lab Registrar", w)
	}
	x := target.Expect[0]
	if len(s.Results) != len(target.Expect) || !s.ValidTo.Equal(x.NotAfter) || !s.ChainValid || orNil(s.Issuer) != x.Issuer ||
		orNil(s.TLSVersion) != "TLSv1.3" || s.Status != "valid" || orNil(s.Grade) != "A+" || !s.HSTS {
		t.Errorf("second check: got %d results, valid_to %v, chain_valid %v, issuer %q, tls %q, status %q, grade %s %v, hsts %v; want %d, %v, true, %q, TLSv1.3, valid, A+, true",
			len(s.Results), s.ValidTo, s.ChainValid, orNil(s.Issuer), orNil(s.TLSVersion), s.Status, orNil(s.Grade), s.GradeReasons, s.HSTS, len(target.Expect), x.NotAfter, x.Issuer)
	}
	for _, r := range s.Results {
		if r.HTTPStatus == nil || r.HSTSMaxAge != x.HSTSMaxAge || !r.LegacyTLSChecked || len(r.LegacyTLS) != 0 {
			t.Errorf("%s %s: got http_status %v, hsts_max_age %d, legacy checked %v %v; want a status, %d, true []",
				r.Region, r.IP, r.HTTPStatus, r.HSTSMaxAge, r.LegacyTLSChecked, r.LegacyTLS, x.HSTSMaxAge)
		}
	}

	// The same as GET /ssl says afterwards.
	var after sslAnswer
	if code := api.call(http.MethodGet, "/domains/"+id+"/ssl", alice.read, "", &after); code != http.StatusOK || after.ID != s.ID {
		t.Errorf("ssl after check: got HTTP %d id %s, want 200 id %s", code, after.ID, s.ID)
	}

	// Errors.
	tests := []struct {
		name, key, body string
		code            int
		msg             string
	}{
		{"read key", alice.read, body, http.StatusForbidden, "This API key lacks the write permission"},
		{"no key", "", body, http.StatusUnauthorized, httpapi.MsgUnauthorized},
		{"other tenant", bob.write, body, http.StatusNotFound, "Domain not found"},
		{"unknown domain", alice.write, `{"domain_id":"6f1c1f5e-58b4-4d1e-9c43-5d9b8a4a2b11"}`, http.StatusNotFound, "Domain not found"},
		{"missing domain_id", alice.write, `{}`, http.StatusBadRequest, `field "domain_id" is required`},
		{"unknown field", alice.write, `{"domain_id":"` + id + `","force":true}`, http.StatusBadRequest, `unknown field "force"`},
		{"wrong type", alice.write, `{"domain_id":5}`, http.StatusBadRequest, `field "domain_id" must be a string`},
		{"empty body", alice.write, ``, http.StatusBadRequest, "request body is empty; send a JSON object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var e checkAnswer
			if code := api.call(http.MethodPost, "/check", tc.key, tc.body, &e); code != tc.code || e.Error != tc.msg {
				t.Errorf("got HTTP %d %q, want %d %q", code, e.Error, tc.code, tc.msg)
			}
		})
	}

	// A server still accepting TLS 1.1 gets B at best.
	legacyID := addCheckDomain(t, srv, alice.id, legacy.Host, legacy.Port)
	var lc checkAnswer
	if code := api.call(http.MethodPost, "/check", alice.write, `{"domain_id":"`+legacyID+`"}`, &lc); code != http.StatusOK || lc.SSL == nil {
		t.Fatalf("legacy-tls check: got HTTP %d %q, want 200 with ssl", code, lc.Error)
	}
	if orNil(lc.SSL.Grade) != "B" || !slices.Contains(lc.SSL.GradeReasons, "legacy-protocols") {
		t.Errorf("legacy-tls: got grade %s %v, want B with legacy-protocols", orNil(lc.SSL.Grade), lc.SSL.GradeReasons)
	}

	// A region that is active but has no agent running: 504 with what the
	// view has.
	if err := presence.Seen(ctx, rdb, "ghost", time.Now()); err != nil {
		t.Fatal(err)
	}
	var timedOut checkAnswer
	start = time.Now()
	code := short.call(http.MethodPost, "/check", alice.write, body, &timedOut)
	took = time.Since(start)
	if code != http.StatusGatewayTimeout || !strings.HasPrefix(timedOut.Error, "Timed out waiting for a fresh scan from every region") {
		t.Fatalf("ghost region: got HTTP %d %q, want 504 %q", code, timedOut.Error, "Timed out waiting for a fresh scan from every region")
	}
	if took < 1500*time.Millisecond || took > 5*time.Second {
		t.Errorf("ghost region: answered after %s, want about the 1.5s timeout", took)
	}
	if strings.Join(timedOut.Pending, ",") != "ghost" || timedOut.SSL == nil || strings.Join(timedOut.SSL.Regions, ",") != "eu" {
		t.Errorf("ghost region: got pending %v and ssl %+v, want pending [ghost] and eu's results", timedOut.Pending, timedOut.SSL)
	}

	// An inactive domain is not scanned, so it cannot be checked.
	inactive := false
	if _, err := srv.accounts.UpdateDomain(ctx, alice.id, id, accounts.DomainPatch{Active: &inactive}); err != nil {
		t.Fatal(err)
	}
	var e checkAnswer
	if code := api.call(http.MethodPost, "/check", alice.write, body, &e); code != http.StatusConflict || e.Error != "This domain is not active; set is_active to true to check it" {
		t.Errorf("inactive: got HTTP %d %q, want 409 %q", code, e.Error, "This domain is not active; set is_active to true to check it")
	}
}

// A check still waiting when the server shuts down answers 503 at once
// rather than holding the shutdown up for its whole timeout.
func TestManualCheckEndsOnShutdown(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	addr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	srv, err := New(Config{Listen: addr, CheckTimeout: time.Minute, ShutdownTimeout: 20 * time.Second}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	alice := newCheckTenant(t, srv, "alice@example.com")
	id := addCheckDomain(t, srv, alice.id, "shop.example", 443)
	// A region that is alive but never answers keeps the check waiting.
	if err := presence.Seen(ctx, rdb, "ghost", time.Now()); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(runCtx) }()
	api := checkClient{t: t, base: "http://" + addr + "/api/v1"}
	eventually := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(eventually) {
			t.Fatalf("server did not come up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	type answer struct {
		code int
		body checkAnswer
	}
	answered := make(chan answer, 1)
	go func() {
		var a checkAnswer
		code := api.call(http.MethodPost, "/check", alice.write, `{"domain_id":"`+id+`"}`, &a)
		answered <- answer{code, a}
	}()
	time.Sleep(300 * time.Millisecond) // the check is waiting
	start := time.Now()
	stop()
	select {
	case a := <-answered:
		if a.code != http.StatusServiceUnavailable || a.body.Error != "The server is shutting down; ask again (another replica will answer)" || strings.Join(a.body.Pending, ",") != "ghost" {
			t.Errorf("got HTTP %d %q pending %v, want 503 %q pending [ghost]", a.code, a.body.Error, a.body.Pending, "The server is shutting down; ask again (another replica will answer)")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting check did not answer within 5s of shutdown")
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Errorf("run: got %v, want nil", err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("shutdown took %s, want well under the 1m check timeout", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return within 10s of cancel")
	}
}
