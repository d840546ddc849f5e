package acme

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/managedcert"
	"github.com/certfleet/certfleet/internal/testenv"
)

// dnsAPI is a DNS provider's HTTP API as lego's httpreq speaks to it: it
// publishes the challenge records it is sent in the test zone (by RFC 2136
// update), after checking the account's basic auth.
func dnsAPI(t *testing.T, e *env) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if u, p, ok := r.BasicAuth(); !ok || u != "acme" || p != "provider-password" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		var msg struct{ FQDN, Value string }
		if err := json.NewDecoder(r.Body).Decode(&msg); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		m := new(dns.Msg)
		m.SetUpdate(testenv.ACMEZone)
		rr := &dns.TXT{Hdr: dns.RR_Header{Name: msg.FQDN, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{msg.Value}}
		if r.URL.Path == "/present" {
			m.Insert([]dns.RR{rr})
		} else {
			m.Remove([]dns.RR{rr})
		}
		m.SetTsig(testenv.ACMETSIGKey, testenv.ACMETSIGAlgorithm, 300, time.Now().Unix())
		c := &dns.Client{Net: "tcp", TsigSecret: map[string]string{testenv.ACMETSIGKey: testenv.ACMETSIGSecret}}
		if resp, _, err := c.Exchange(m, e.ca.DNSAddr); err != nil || resp.Rcode != dns.RcodeSuccess {
			http.Error(w, "update failed", http.StatusBadGateway)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

// TestHTTPReqProvider: a certificate issued through an HTTP DNS provider
// (lego's httpreq) on an endpoint --allow-dns-targets allows; the same
// endpoint by a name that resolves to loopback is refused by the guarded
// dialer when the policy does not allow it, before any request leaves.
func TestHTTPReqProvider(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	srv, calls := dnsAPI(t, e)
	creds := map[string]string{"HTTPREQ_ENDPOINT": srv.URL, "HTTPREQ_USERNAME": "acme", "HTTPREQ_PASSWORD": "provider-password"}
	if _, err := e.store.PutDNSAccount(ctx, "t1", managedcert.ProviderHTTPReq, "api", creds); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.Create(ctx, "t1", managedcert.CreateRequest{Domain: "http.acme.test", DNSProvider: managedcert.ProviderHTTPReq, AccountID: "api"}); err != nil {
		t.Fatal(err)
	}
	e.worker().Process(ctx, "t1", "http.acme.test")
	e.verify("t1", "http.acme.test")
	if calls.Load() < 2 {
		t.Errorf("provider API calls: got %d, want present and cleanup", calls.Load())
	}

	// By name, and with a policy that allows no private range.
	strict, err := managedcert.New(managedcert.Config{Passphrase: passphrase, Now: e.clock.Now}, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]string{"HTTPREQ_ENDPOINT": strings.Replace(srv.URL, "127.0.0.1", "localhost", 1),
		"HTTPREQ_USERNAME": "acme", "HTTPREQ_PASSWORD": "provider-password"}
	if _, err := strict.PutDNSAccount(ctx, "t2", managedcert.ProviderHTTPReq, "api", byName); err != nil {
		t.Fatalf("a name is judged when dialed, not when saved: %v", err)
	}
	if _, err := strict.Create(ctx, "t2", managedcert.CreateRequest{Domain: "named.acme.test", DNSProvider: managedcert.ProviderHTTPReq, AccountID: "api"}); err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{DirectoryURL: e.ca.DirectoryURL, Roots: e.ca.Roots, Resolvers: []string{e.ca.DNSAddr},
		DNSTargets: guard.Policy{}, Now: e.clock.Now}, strict, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	before := calls.Load()
	w.Process(ctx, "t2", "named.acme.test")
	c, err := strict.Get(ctx, "t2", "named.acme.test")
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != managedcert.StatusFailed || !strings.Contains(c.Error, "loopback") {
		t.Errorf("order through a refused endpoint: status %s, error %q; want failed, naming the refused range", c.Status, c.Error)
	}
	if calls.Load() != before {
		t.Errorf("the provider API was reached %d times through a refused address", calls.Load()-before)
	}
}
