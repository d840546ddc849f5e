package acme

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/certfleet/certfleet/internal/dnszone"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/managedcert"
	"github.com/certfleet/certfleet/internal/testenv"
)

// An account whose waits are an hour each (propagation timeout, polling
// interval, the gap between names) holds a worker slot no longer than the
// order's timeout: lego sleeps them without watching the context, so
// before they were clipped one order of two names held its slot for
// hours while every other tenant's orders waited.
func TestOrderWaitsEndWithTheOrder(t *testing.T) {
	e := newEnv(t)
	w, err := New(Config{DirectoryURL: e.ca.DirectoryURL, Roots: e.ca.Roots, Resolvers: []string{e.ca.DNSAddr},
		DNSTargets: loopback, OrderTimeout: 15 * time.Second, Now: e.clock.Now}, e.store, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	e.account("t1", "slow", testenv.ACMETSIGSecret, map[string]string{"RFC2136_ZONES": testenv.ACMEZone,
		"RFC2136_PROPAGATION_TIMEOUT": "3600", "RFC2136_POLLING_INTERVAL": "3600", "RFC2136_SEQUENCE_INTERVAL": "3600",
		"RFC2136_DNS_TIMEOUT": "2"})
	e.create("t1", "hold.acme.test", "slow", "hold2.acme.test")

	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Process(context.Background(), "t1", "hold.acme.test")
	}()
	select {
	case <-done:
	case <-time.After(90 * time.Second):
		t.Fatalf("the order still holds its worker slot after 90s (order timeout 15s)")
	}
	took := time.Since(start)
	t.Logf("order ended after %v", took)
	if took > 45*time.Second {
		t.Errorf("the order held its slot %v, want about its 15s timeout", took)
	}
	if c := e.get("t1", "hold.acme.test"); c.Status != managedcert.StatusFailed || c.Error == "" {
		t.Errorf("record after the order timed out: %+v", c)
	}
}

// nsServer is a DNS server on loopback for tenant.example: its NS is
// ns1.tenant.example at 127.0.0.1 and ::1, and _acme-challenge.www.tenant.example
// has the TXT record "token". It counts the TXT questions it is asked.
func nsServer(t *testing.T) (addr string, txtAsked *atomic.Int64) {
	t.Helper()
	pc, ln, err := dnszone.ListenPair("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	txtAsked = new(atomic.Int64)
	h := dns.HandlerFunc(func(rw dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		q := r.Question[0]
		name := dns.CanonicalName(q.Name)
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Rrtype: q.Qtype, Ttl: 5}
		switch {
		case q.Qtype == dns.TypeNS && name == "tenant.example.":
			m.Answer = append(m.Answer, &dns.NS{Hdr: hdr, Ns: "ns1.tenant.example."})
		case q.Qtype == dns.TypeA && name == "ns1.tenant.example.":
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.ParseIP("127.0.0.1")})
		case q.Qtype == dns.TypeAAAA && name == "ns1.tenant.example.":
			// Refused by the tests' loopback policy (127.0.0.0/8 only):
			// the allowed address is the one asked.
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: net.ParseIP("::1")})
		case q.Qtype == dns.TypeTXT && name == "_acme-challenge.www.tenant.example.":
			txtAsked.Add(1)
			m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: []string{"token"}})
		case dns.IsSubDomain("tenant.example.", name):
			// NODATA
		default:
			m.Rcode = dns.RcodeNameError
		}
		_ = rw.WriteMsg(m)
	})
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: h}, {Listener: ln, Handler: h}} {
		go func() { _ = s.ActivateAndServe() }()
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return pc.LocalAddr().String(), txtAsked
}

// The authoritative half of the propagation check asks the zone's name
// servers, whose names the tenant's NS records give, only at addresses
// --allow-dns-targets allows: lego's own check dialed them directly,
// outside the guard, so a tenant's NS at 127.0.0.1 (or 10.x, or the
// metadata address) got queries from the worker.
func TestAuthoritativeCheckGuarded(t *testing.T) {
	ctx := context.Background()
	addr, txtAsked := nsServer(t)
	_, port, _ := net.SplitHostPort(addr)
	for _, tc := range []struct {
		name   string
		policy guard.Policy
		value  string
		ok     bool
		err    string
		asked  bool
	}{
		{"loopback name server refused", guard.Policy{}, "token", false, "--allow-dns-targets", false},
		{"allowed and propagated", loopback, "token", true, "", true},
		{"allowed, not propagated", loopback, "other", false, "does not answer", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, w := quickEnv(t, tc.policy)
			w.resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			}}
			w.nsPort = port
			before := txtAsked.Load()
			ok, err := w.authoritative(ctx, "_acme-challenge.www.tenant.example.", tc.value)
			if ok != tc.ok || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("got %v, %v; want %v and an error mentioning %q", ok, err, tc.ok, tc.err)
			}
			if asked := txtAsked.Load() > before; asked != tc.asked {
				t.Errorf("name server asked: got %v, want %v", asked, tc.asked)
			}
		})
	}
}

// Once the order's context has ended, the check stops lego's wait loop at
// once (true with the context's error) instead of answering "not yet"
// until the tenant's propagation timeout.
func TestPreCheckEndsWithTheOrder(t *testing.T) {
	_, w := quickEnv(t, loopback)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	stop, err := w.preCheck(ctx, "www.tenant.example", "_acme-challenge.www.tenant.example.", "token",
		func(context.Context, string, string) (bool, error) { called = true; return false, nil })
	if !stop || err == nil || called {
		t.Errorf("after the order ended: got %v, %v (lego's check called: %v); want true and the context's error", stop, err, called)
	}
}

// One worker slot, two tenants: a hostile account whose waits are an hour
// each does not keep another tenant's certificate from being issued.
func TestSlowTenantDoesNotStarveOthers(t *testing.T) {
	e := newEnv(t)
	w, err := New(Config{DirectoryURL: e.ca.DirectoryURL, Roots: e.ca.Roots, Resolvers: []string{e.ca.DNSAddr},
		DNSTargets: loopback, OrderTimeout: 15 * time.Second, Workers: 1, PollInterval: 100 * time.Millisecond,
		Now: e.clock.Now}, e.store, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	e.account("hostile", "slow", testenv.ACMETSIGSecret, map[string]string{"RFC2136_ZONES": testenv.ACMEZone,
		"RFC2136_PROPAGATION_TIMEOUT": "3600", "RFC2136_POLLING_INTERVAL": "3600", "RFC2136_SEQUENCE_INTERVAL": "3600",
		"RFC2136_DNS_TIMEOUT": "2"})
	e.create("hostile", "slow1.acme.test", "slow", "slow2.acme.test")
	e.account("victim", "lab", testenv.ACMETSIGSecret, nil)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("the worker still runs an order 30s after it was stopped")
		}
	}()
	// The hostile order holds the one slot once its record is published.
	deadline := time.Now().Add(30 * time.Second)
	for len(e.ca.Zone.TXT("_acme-challenge.slow1.acme.test."))+len(e.ca.Zone.TXT("_acme-challenge.slow2.acme.test.")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the hostile order published no challenge within 30s: %+v", e.get("hostile", "slow1.acme.test"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.create("victim", "victim.acme.test", "lab")
	deadline = time.Now().Add(60 * time.Second)
	for e.get("victim", "victim.acme.test").Status != managedcert.StatusIssued {
		if time.Now().After(deadline) {
			t.Fatalf("the victim's certificate is not issued after 60s: %+v", e.get("victim", "victim.acme.test"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A failed order's error, which the tenant reads, names neither the
// operator's recursive resolver (lego says "ns=..." and dials it) nor
// the worker's own address.
func TestFailedOrderErrorNamesNoOperatorAddress(t *testing.T) {
	e, _ := quickEnv(t, loopback)
	w, err := New(Config{DirectoryURL: "https://127.0.0.1:1/dir", Resolvers: []string{"10.255.255.53:53"}, DNSTargets: loopback,
		Now: e.clock.Now}, e.store, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	resolver := &net.UDPAddr{IP: net.ParseIP("10.255.255.53"), Port: 53}
	local := &net.UDPAddr{IP: net.ParseIP("10.0.0.5"), Port: 34567}
	cause := fmt.Errorf("dns01: time limit exceeded: last error: initial recursive nameserver: DNS call error: %w [ns=%s, question='_acme-challenge.x.example. IN TXT']",
		&net.OpError{Op: "read", Net: "udp", Source: local, Addr: resolver, Err: errors.New("i/o timeout")}, resolver)
	got := w.describe(cause)
	if strings.Contains(got, "10.") || !strings.Contains(got, "ns=resolver") {
		t.Errorf("describe = %q, want it without the operator's addresses", got)
	}
}
