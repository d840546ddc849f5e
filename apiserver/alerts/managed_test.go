package alerts

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/projector"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/managedcert"
	"github.com/certfleet/certfleet/internal/testenv"
)

// seen is one region's latest scan of one IP showing leaf.
func seen(region, ip, leaf string, at time.Time) projector.ExpEntry {
	e := projector.ExpEntry{Region: region, Port: 443, ScannedAt: at}
	e.IP, e.CertificateFound, e.LeafSHA256, e.NotAfter = ip, true, leaf, at.Add(60*24*time.Hour)
	return e
}

func TestCertificateNotDeployed(t *testing.T) {
	issued := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	cfg := Config{}
	cfg.setDefaults()
	m := &managedcert.Certificate{Domain: "shop.example.com", Status: managedcert.StatusIssued, SHA256: "newleaf0000001",
		Serial: "0a1b", IssuedAt: issued, NotAfter: issued.Add(90 * 24 * time.Hour), UpdatedAt: issued}
	after := issued.Add(25 * time.Hour)
	for _, tc := range []struct {
		name        string
		entries     []projector.ExpEntry
		managed     *managedcert.Certificate
		want, known bool
		ips         []string
	}{
		{"everywhere", []projector.ExpEntry{seen("eu", "192.0.2.1", m.SHA256, after), seen("us", "192.0.2.2", m.SHA256, after)}, m, false, true, nil},
		{"one IP lags", []projector.ExpEntry{seen("eu", "192.0.2.1", m.SHA256, after), seen("us", "192.0.2.2", "oldleaf0000001", after)}, m, true, true, []string{"192.0.2.2"}},
		{"within the grace", []projector.ExpEntry{seen("us", "192.0.2.2", "oldleaf0000001", issued.Add(time.Hour))}, m, false, false, nil},
		{"not managed", []projector.ExpEntry{seen("us", "192.0.2.2", "oldleaf0000001", after)}, nil, false, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snap := projector.Snapshot{DomainID: "d1", Name: "shop.example.com:443", TenantID: "t1", Entries: tc.entries}
			v := evaluate(snap, facts{managed: tc.managed}, "shop.example.com", DefaultSettings(), cfg)
			c, raised := v.conds[events.AlertCertNotDeployed+"|"+m.SHA256]
			if raised != tc.want || v.unknown[events.AlertCertNotDeployed] == tc.known {
				t.Fatalf("raised %v (want %v), unknown %v (want %v)", raised, tc.want, v.unknown[events.AlertCertNotDeployed], !tc.known)
			}
			if raised && (strings.Join(c.ips, ",") != strings.Join(tc.ips, ",") || !strings.Contains(c.message, "oldleaf00000")) {
				t.Errorf("condition: ips %v, message %q", c.ips, c.message)
			}
		})
	}
}

func TestACMERenewalFailed(t *testing.T) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	cfg := Config{}
	cfg.setDefaults()
	base := managedcert.Certificate{Domain: "shop.example.com", Status: managedcert.StatusIssued, SHA256: "leaf",
		NotAfter: now.Add(40 * 24 * time.Hour), Error: "acme: rateLimited", RetryAt: now.Add(time.Hour), UpdatedAt: now}
	for _, tc := range []struct {
		name string
		mod  func(*managedcert.Certificate)
		want bool
		sev  string
	}{
		{"one failure far from expiry", func(c *managedcert.Certificate) { c.Attempt = 1 }, false, ""},
		{"three failures", func(c *managedcert.Certificate) { c.Attempt = 3 }, true, events.SeverityWarning},
		{"one failure near expiry", func(c *managedcert.Certificate) { c.Attempt = 1; c.NotAfter = now.Add(5 * 24 * time.Hour) }, true, events.SeverityCritical},
		{"issuance failing", func(c *managedcert.Certificate) { c.Attempt = 3; c.Status = managedcert.StatusFailed }, true, events.SeverityWarning},
		{"recovered", func(c *managedcert.Certificate) { c.Attempt = 0; c.Error = "" }, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := base
			tc.mod(&m)
			snap := projector.Snapshot{DomainID: "d1", Name: "shop.example.com:443", TenantID: "t1"}
			v := evaluate(snap, facts{managed: &m}, "shop.example.com", DefaultSettings(), cfg)
			c, raised := v.conds[events.AlertACMERenewalFailed]
			if raised != tc.want || (raised && c.severity != tc.sev) {
				t.Errorf("raised %v severity %q; want %v %q (%+v)", raised, c.severity, tc.want, tc.sev, c)
			}
		})
	}
}

// TestManagedCertificateAlerts: through the projector on Redis, the
// certificate.* events of the ACME worker raise and resolve
// acme_renewal_failed on the monitored domain of the certificate's name,
// without waiting for a scan; scans past the grace that still see the old
// leaf raise certificate_not_deployed, which resolves once every IP serves
// the new one.
func TestManagedCertificateAlerts(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, 1)
	accts, err := accounts.New(accounts.Config{}, f.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	const shop = "shop.example.com"
	d, _, err := accts.AddDomain(ctx, tenant, accounts.NewDomain{Host: shop, Port: 443})
	if err != nil {
		t.Fatal(err)
	}
	scanShop := func(at time.Time, r events.IPResult) events.Envelope {
		job := uuid.New()
		e, err := events.NewWithID(events.ScanEventID(job, "eu"), events.ScanCompleted, tenant, d.ID, events.ScanCompletedV1{
			JobID: job, DomainID: d.ID, Host: shop, Port: 443, Region: "eu", Agent: "eu-1",
			StartedAt: at.Add(-time.Second), FinishedAt: at, Results: []events.IPResult{r},
		})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	clock := t0
	store, err := managedcert.New(managedcert.Config{Passphrase: "managed alerts test passphrase", Now: func() time.Time { return clock }},
		f.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.PutDNSAccount(ctx, tenant, managedcert.ProviderCloudflare, "cf", map[string]string{"CLOUDFLARE_DNS_API_TOKEN": "t"}); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Create(ctx, tenant, managedcert.CreateRequest{Domain: shop, DNSProvider: managedcert.ProviderCloudflare, AccountID: "cf"}); err != nil {
		t.Fatal(err)
	}
	// newEvents returns the events the store wrote since the last call.
	var read int
	newEvents := func() []events.Envelope {
		all, err := events.ReadAllEvents(ctx, f.rdb)
		if err != nil {
			t.Fatal(err)
		}
		var out []events.Envelope
		for _, e := range all[read:] {
			if strings.HasPrefix(e.Name, "certificate.") || strings.HasPrefix(e.Name, "domain.") {
				out = append(out, e)
			}
		}
		read = len(all)
		return out
	}
	f.apply(newEvents()...)
	old := cert("192.0.2.1", "oldleaf", t0.Add(300*day))
	f.step("a scan", nil, scanShop(t0, old))

	for i := 1; i <= 3; i++ {
		clock = t0.Add(time.Duration(i) * time.Minute)
		if _, err := store.SaveFailed(ctx, tenant, shop, "acme: dns problem", clock.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	f.step("three failed orders", []string{"raised acme_renewal_failed warning"}, newEvents()...)

	clock = t0.Add(time.Hour)
	key := testenv.NewKey(t)
	ca := testenv.NewCA(t, "managed alerts ca")
	leafTLS := ca.IssueWithKey(t, key, []string{shop}, nil)
	leaf, _ := x509.ParseCertificate(leafTLS.Certificate[0])
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	m, _, err := managedcert.ParseMaterial(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	if err != nil {
		t.Fatal(err)
	}
	issued, err := store.SaveIssued(ctx, tenant, shop, m, leaf, clock.Add(60*day), "lifetime")
	if err != nil {
		t.Fatal(err)
	}
	f.step("issued", []string{"resolved acme_renewal_failed: condition cleared"}, newEvents()...)
	f.step("old leaf within the grace", nil, scanShop(clock.Add(time.Hour), old))
	f.step("old leaf after the grace", []string{"raised certificate_not_deployed warning"}, scanShop(clock.Add(25*time.Hour), old))
	fresh := cert("192.0.2.1", issued.SHA256, t0.Add(390*day))
	f.step("deployed", []string{"resolved certificate_not_deployed: condition cleared", "raised cert_changed info"}, scanShop(clock.Add(26*time.Hour), fresh))
}
