package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/managedcert"
	"github.com/certfleet/certfleet/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

const passphrase = "correct horse battery staple"

var loopback = guard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}

// clock is a test's time, moved by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

type env struct {
	t     *testing.T
	ca    *testenv.ACME
	rdb   *redis.Client
	store *managedcert.Store
	clock *clock
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, ca: testenv.StartACME(t), rdb: testenv.Redis(t).Client(t), clock: &clock{now: time.Now()}}
	var err error
	e.store, err = managedcert.New(managedcert.Config{Passphrase: passphrase, DNSTargets: loopback, Now: e.clock.Now},
		e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) worker() *Worker {
	e.t.Helper()
	w, err := New(Config{DirectoryURL: e.ca.DirectoryURL, Roots: e.ca.Roots, Resolvers: []string{e.ca.DNSAddr},
		DNSTargets: loopback, RetryMin: time.Minute, Now: e.clock.Now, Email: "ops@example.com"},
		e.store, e.rdb, testenv.Logger(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	return w
}

// account saves an RFC 2136 account on the test zone with secret.
func (e *env) account(tenant, id, secret string, extra map[string]string) {
	e.t.Helper()
	creds := map[string]string{"RFC2136_NAMESERVER": e.ca.DNSAddr, "RFC2136_TSIG_KEY": testenv.ACMETSIGKey,
		"RFC2136_TSIG_SECRET": secret, "RFC2136_TSIG_ALGORITHM": testenv.ACMETSIGAlgorithm, "RFC2136_SEQUENCE_INTERVAL": "0"}
	for k, v := range extra {
		creds[k] = v
	}
	if _, err := e.store.PutDNSAccount(context.Background(), tenant, managedcert.ProviderRFC2136, id, creds); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) create(tenant, domain, account string, sans ...string) {
	e.t.Helper()
	if _, err := e.store.Create(context.Background(), tenant, managedcert.CreateRequest{Domain: domain, SANs: sans,
		DNSProvider: managedcert.ProviderRFC2136, AccountID: account, Contact: "t@example.com"}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) get(tenant, domain string) managedcert.Certificate {
	e.t.Helper()
	c, err := e.store.Get(context.Background(), tenant, domain)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// verify checks the issued material: the leaf names every domain, chains
// to the CA's issuing root, and matches the private key.
func (e *env) verify(tenant, domain string, names ...string) managedcert.Certificate {
	e.t.Helper()
	c, m, err := e.store.OpenMaterial(context.Background(), tenant, domain)
	if err != nil {
		e.t.Fatalf("material of %s: %v (record %+v)", domain, err, c)
	}
	inter := x509.NewCertPool()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(e.ca.IssuerRootsPEM())
	inter.AppendCertsFromPEM([]byte(m.ChainPEM))
	block, _ := pem.Decode([]byte(m.CertPEM))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, n := range append([]string{domain}, names...) {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: n, Roots: roots, Intermediates: inter}); err != nil {
			e.t.Errorf("verify %s: %v", n, err)
		}
	}
	if _, err := tls.X509KeyPair([]byte(m.FullchainPEM()), m.PrivateKeyPEM); err != nil {
		e.t.Errorf("key does not match the certificate: %v", err)
	}
	return c
}

func eventsNamed(t *testing.T, rdb *redis.Client, name string) []events.Envelope {
	t.Helper()
	evs, err := events.ReadEventsNamed(context.Background(), rdb, name)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestIssueRenewRevoke(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	w := e.worker()
	e.account("t1", "lab", testenv.ACMETSIGSecret, nil)
	e.create("t1", "www.acme.test", "lab", "api.acme.test")

	start := time.Now()
	w.Process(ctx, "t1", "www.acme.test")
	t.Logf("first issuance took %v", time.Since(start))
	c := e.verify("t1", "www.acme.test", "api.acme.test")
	if c.Status != managedcert.StatusIssued || c.Serial == "" || !c.NextRenewal.After(c.NotBefore) {
		t.Fatalf("issued record: %+v", c)
	}
	if c.NextRenewal.After(c.NotAfter) {
		t.Errorf("next renewal %v after not_after %v", c.NextRenewal, c.NotAfter)
	}
	if len(eventsNamed(t, e.rdb, events.CertificateIssued)) != 1 {
		t.Errorf("want one certificate.issued event")
	}

	// Not due: processing again orders nothing.
	w.Process(ctx, "t1", "www.acme.test")
	if got := e.get("t1", "www.acme.test"); got.Serial != c.Serial {
		t.Errorf("a certificate not due was renewed")
	}

	// A renewal asked for: a new certificate replaces the old one.
	if _, err := e.store.RequestRenew(ctx, "t1", "www.acme.test"); err != nil {
		t.Fatal(err)
	}
	w.Process(ctx, "t1", "www.acme.test")
	r := e.verify("t1", "www.acme.test", "api.acme.test")
	if r.Serial == c.Serial || r.Renewing {
		t.Errorf("after renewal: serial %s (was %s), renewing %v", r.Serial, c.Serial, r.Renewing)
	}
	renewed := eventsNamed(t, e.rdb, events.CertificateRenewed)
	if len(renewed) != 1 {
		t.Fatalf("want one certificate.renewed event, got %d", len(renewed))
	}

	// Delete with revocation: revoked at the CA, then gone.
	if _, err := e.store.Delete(ctx, "t1", "www.acme.test", true); err != nil {
		t.Fatal(err)
	}
	w.Process(ctx, "t1", "www.acme.test")
	if _, err := e.store.Get(ctx, "t1", "www.acme.test"); err == nil {
		t.Errorf("the certificate is still managed after a revoking delete")
	}
	deleted := eventsNamed(t, e.rdb, events.CertificateDeleted)
	var p events.CertificateV1
	if len(deleted) != 1 || deleted[0].Decode(&p) != nil || !p.Revoked {
		t.Errorf("want one certificate.deleted event with revoked set, got %d (%+v)", len(deleted), p)
	}
}

func TestWrongTSIGSecret(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.account("t1", "bad", "d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmc=", nil)
	e.create("t1", "bad.acme.test", "bad")
	e.worker().Process(ctx, "t1", "bad.acme.test")
	c := e.get("t1", "bad.acme.test")
	if c.Status != managedcert.StatusFailed || c.Attempt != 1 || !c.RetryAt.After(e.clock.Now()) {
		t.Fatalf("after a refused update: %+v", c)
	}
	if !strings.Contains(strings.ToLower(c.Error), "notauth") && !strings.Contains(strings.ToLower(c.Error), "tsig") {
		t.Errorf("error %q does not say the DNS server refused the key", c.Error)
	}
	if len(e.ca.Zone.TXT("_acme-challenge.bad.acme.test.")) != 0 {
		t.Errorf("a record was stored with a wrong secret")
	}
}

func TestProviderTimeout(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.account("t1", "slow", testenv.ACMETSIGSecret, map[string]string{"RFC2136_DNS_TIMEOUT": "1", "RFC2136_PROPAGATION_TIMEOUT": "2", "RFC2136_ZONES": testenv.ACMEZone})
	e.create("t1", "slow.acme.test", "slow")
	e.ca.Zone.SetSilent(true)
	e.worker().Process(ctx, "t1", "slow.acme.test")
	c := e.get("t1", "slow.acme.test")
	if c.Status != managedcert.StatusFailed || c.Error == "" {
		t.Fatalf("after a silent DNS server: %+v", c)
	}
	t.Logf("error on the record: %s", c.Error)
}

// The CA is down when a renewal is due, then comes back having forgotten
// every account: the old certificate stays, the worker backs off, then
// registers the tenant again and renews.
func TestCADownThenRestarted(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	w := e.worker()
	e.account("t1", "lab", testenv.ACMETSIGSecret, nil)
	e.create("t1", "down.acme.test", "lab")
	w.Process(ctx, "t1", "down.acme.test")
	first := e.verify("t1", "down.acme.test")

	e.ca.Stop()
	if _, err := e.store.RequestRenew(ctx, "t1", "down.acme.test"); err != nil {
		t.Fatal(err)
	}
	w.Process(ctx, "t1", "down.acme.test")
	c := e.get("t1", "down.acme.test")
	if c.Status != managedcert.StatusIssued || c.Serial != first.Serial || c.Error == "" || c.Attempt != 1 {
		t.Fatalf("renewal with the CA down: %+v", c)
	}
	// Retried before its time: nothing happens.
	w.Process(ctx, "t1", "down.acme.test")
	if got := e.get("t1", "down.acme.test"); got.Attempt != 1 {
		t.Errorf("retried before RetryAt: attempt %d", got.Attempt)
	}

	e.ca.Start() // a new CA: it knows no account
	e.clock.Add(2 * time.Minute)
	w.Process(ctx, "t1", "down.acme.test")
	r := e.verify("t1", "down.acme.test")
	if r.Serial == first.Serial || r.Error != "" || r.Attempt != 0 {
		t.Fatalf("after the CA came back: %+v", r)
	}
}

// Two replicas process the same due domain at once: one order.
func TestTwoReplicasOneOrder(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.account("t1", "lab", testenv.ACMETSIGSecret, nil)
	e.create("t1", "race.acme.test", "lab")
	a, b := e.worker(), e.worker()
	var wg sync.WaitGroup
	wg.Go(func() { a.Process(ctx, "t1", "race.acme.test") })
	wg.Go(func() { b.Process(ctx, "t1", "race.acme.test") })
	wg.Wait()
	e.verify("t1", "race.acme.test")
	if n, _ := e.store.OrdersToday(ctx, "t1"); n != 1 {
		t.Errorf("orders placed: got %d, want 1", n)
	}
	if got := len(eventsNamed(t, e.rdb, events.CertificateIssued)); got != 1 {
		t.Errorf("certificate.issued events: got %d, want 1", got)
	}
}
