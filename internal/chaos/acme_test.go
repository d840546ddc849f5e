package chaos

import (
	"context"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/guard"
	"github.com/certfleet/certfleet/internal/managedcert"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestACMEReplicasAndCARestart runs two coordinator processes ordering
// managed certificates from the same schedule against Pebble with real
// DNS-01, and restarts the CA while an order is solving its challenge (the
// CA forgets every account, order and authorization): every certificate
// is issued exactly once (the lease keeps the replicas off each other's
// orders), the tenant's ACME account is registered again rather than the
// order failing for good, and both processes live on.
func TestACMEReplicasAndCARestart(t *testing.T) {
	s := suite(t)
	f := newFleet(t, s)
	ca := testenv.StartACME(t)
	ctx := context.Background()
	const pass = "chaos secrets passphrase"
	for _, name := range []string{"acme-1", "acme-2"} {
		addr := f.addr()
		f.metrics[name] = "http://" + addr + "/metrics"
		f.start(name, "coordinator", "--name", name, "--metrics-listen", addr, "--clickhouse-dsn", f.ch.DSN,
			"--shards", strconv.Itoa(shards), "--stream-trim-interval", "0", "--secrets-passphrase", pass,
			"--acme-directory", ca.DirectoryURL, "--acme-ca-roots", ca.RootsFile, "--acme-dns-resolvers", ca.DNSAddr,
			"--allow-dns-targets", "127.0.0.0/8", "--acme-retry-min", "2s")
	}
	f.waitReady(time.Minute)

	store, err := managedcert.New(managedcert.Config{Passphrase: pass,
		DNSTargets: guard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}}, f.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	const tenant = "chaos-acme"
	if _, err := store.PutDNSAccount(ctx, tenant, managedcert.ProviderRFC2136, "lab", map[string]string{
		"RFC2136_NAMESERVER": ca.DNSAddr, "RFC2136_TSIG_KEY": testenv.ACMETSIGKey, "RFC2136_TSIG_SECRET": testenv.ACMETSIGSecret,
		"RFC2136_TSIG_ALGORITHM": testenv.ACMETSIGAlgorithm, "RFC2136_SEQUENCE_INTERVAL": "0"}); err != nil {
		t.Fatal(err)
	}
	domains := []string{"c1.acme.test", "c2.acme.test", "c3.acme.test"}
	start := time.Now()
	for _, d := range domains {
		if _, err := store.Create(ctx, tenant, managedcert.CreateRequest{Domain: d, DNSProvider: managedcert.ProviderRFC2136,
			AccountID: "lab", Contact: "chaos@example.com"}); err != nil {
			t.Fatal(err)
		}
	}

	// Restart the CA as soon as a challenge record is published: mid-order.
	var before managedcert.ACMEAccount
	deadline := time.Now().Add(time.Minute)
	for mid := false; !mid; {
		for _, d := range domains {
			if len(ca.Zone.TXT("_acme-challenge."+d+".")) > 0 {
				mid = true
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no challenge published within a minute of the requests")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if before, err = store.ACMEAccount(ctx, tenant, ca.DirectoryURL); err != nil {
		t.Fatalf("acme account while an order runs: %v", err)
	}
	ca.Restart()
	restarted := time.Now()

	deadline = time.Now().Add(2 * time.Minute)
	for _, d := range domains {
		for {
			c, err := store.Get(ctx, tenant, d)
			if err != nil {
				t.Fatal(err)
			}
			if c.Status == managedcert.StatusIssued {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not issued 2 min after the CA restart: %+v", d, c)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	t.Logf("three certificates issued by two replicas %s after the requests, %s after the CA restarted mid-order",
		time.Since(start).Round(time.Millisecond), time.Since(restarted).Round(time.Millisecond))

	after, err := store.ACMEAccount(ctx, tenant, ca.DirectoryURL)
	if err != nil {
		t.Fatal(err)
	}
	if string(after.KeyPEM) == string(before.KeyPEM) {
		t.Error("the acme account was not registered again after the CA forgot it")
	}
	all, err := events.ReadAllEvents(ctx, f.rdb)
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, ev := range all {
		count[ev.Name]++
	}
	if got := count[events.CertificateIssued]; got != len(domains) {
		t.Errorf("certificate.issued events: got %d, want %d (one per domain)", got, len(domains))
	}
	if got := count[events.CertificateRenewed]; got != 0 {
		t.Errorf("certificate.renewed events: got %d, want 0 (a second order of a domain)", got)
	}
	f.alive()
}
