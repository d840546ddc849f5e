package clientca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/testenv"
)

// tenantURIs returns the URI SANs of a stored certificate.
func tenantURIs(t *testing.T, s *Store, tenant, id string) []string {
	t.Helper()
	var out []string
	for _, u := range parsePEMCert(t, download(t, s, tenant, id, DownloadCert)).URIs {
		out = append(out, u.String())
	}
	return out
}

// csrWithURIs is a CSR for key asking for uris as URI SANs.
func csrWithURIs(t *testing.T, key *ecdsa.PrivateKey, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: "from the csr"}}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// TestTenantURI: every certificate the CA issues names its tenant in one
// URI SAN, beside the email SAN, on every path (generated key, CSR,
// renewal, auto-renewal); a CSR asking for a URI in that namespace is
// refused, another URI is not issued either (only the key of a CSR is
// used).
func TestTenantURI(t *testing.T) {
	ctx := context.Background()
	clk := newClock()
	s := newStore(t, testenv.Redis(t).Client(t), testPass, clk.Now)
	if _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	want := []string{"urn:certfleet:tenant:" + tenantA}
	check := func(name, id string) {
		t.Helper()
		if got := tenantURIs(t, s, tenantA, id); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: URI SANs got %v, want %v", name, got, want)
		}
	}

	gen, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "alice", Email: "alice@example.com", GenerateKey: true,
		DaysValid: 30, RenewalThresholdDays: 10})
	if err != nil {
		t.Fatal(err)
	}
	check("generated key", gen.ID)
	if got := parsePEMCert(t, download(t, s, tenantA, gen.ID, DownloadCert)).EmailAddresses; len(got) != 1 || got[0] != "alice@example.com" {
		t.Errorf("email SAN beside the tenant's URI: got %v, want [alice@example.com]", got)
	}
	fromCSR, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "bob", CSR: csrWithURIs(t, key, "https://bob.example.com/")})
	if err != nil {
		t.Fatal(err)
	}
	check("CSR asking for another URI", fromCSR.ID)
	renewed, err := s.Renew(ctx, tenantA, fromCSR.ID)
	if err != nil {
		t.Fatal(err)
	}
	check("renewal of a CSR's certificate", renewed.ID)
	clk.Advance(21 * 24 * time.Hour)
	auto, err := s.AutoRenew(ctx, tenantA, gen.ID)
	if err != nil {
		t.Fatal(err)
	}
	check("auto-renewal", auto.ID)

	for _, uri := range []string{
		"urn:certfleet:tenant:" + tenantB,
		"urn:certfleet:tenant:" + tenantA, // the namespace is the CA's own, whoever it names
		"URN:CertFleet:Tenant:" + tenantB,
	} {
		t.Run(uri, func(t *testing.T) {
			_, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "mallory", CSR: csrWithURIs(t, key, "https://x.example.com/", uri)})
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "urn:certfleet:tenant:") {
				t.Errorf("got %v, want ErrInvalid naming the namespace", err)
			}
		})
	}
}
