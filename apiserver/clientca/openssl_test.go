package clientca

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/certfleet/certfleet/internal/testenv"
)

// TestOpenSSLAcceptsCertificates: Debian's openssl verifies issued
// certificates (generated key and imported-style RSA CA) for the sslclient
// purpose, and reads the extensions the way certfleet meant them.
func TestOpenSSLAcceptsCertificates(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl not found (scripts/deps.sh installs it): %v", err)
	}
	ctx := context.Background()
	for _, caKey := range []string{KeyECDSAP256, KeyRSA3072} {
		t.Run(caKey, func(t *testing.T) {
			s := newStore(t, testenv.Redis(t).Client(t), testPass, nil)
			a, err := s.Init(ctx, caKey)
			if err != nil {
				t.Fatal(err)
			}
			c, err := s.Create(ctx, tenantA, CreateRequest{CommonName: "openssl client", Email: "o@example.com",
				Organization: "ACME", GenerateKey: true, KeyType: KeyRSA2048})
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
			_ = os.WriteFile(caFile, a.PEM, 0o600)
			_ = os.WriteFile(certFile, download(t, s, tenantA, c.ID, DownloadCert), 0o600)
			_ = os.WriteFile(keyFile, download(t, s, tenantA, c.ID, DownloadKey), 0o600)
			run := func(args ...string) string {
				t.Helper()
				out, err := exec.Command(bin, args...).CombinedOutput()
				if err != nil {
					t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
				}
				return string(out)
			}
			if out := run("verify", "-purpose", "sslclient", "-x509_strict", "-CAfile", caFile, certFile); !strings.Contains(out, ": OK") {
				t.Errorf("verify: got %q, want OK", out)
			}
			text := run("x509", "-in", certFile, "-noout", "-text")
			for _, want := range []string{
				"TLS Web Client Authentication", "email:o@example.com", "URI:" + publicURL + "/api/crl/download/der",
				"OCSP - URI:" + publicURL + "/ocsp", "X509v3 Subject Key Identifier", "X509v3 Authority Key Identifier",
				"CA:FALSE", "email:o@example.com, URI:urn:certfleet:tenant:" + tenantA,
			} {
				if !strings.Contains(text, want) {
					t.Errorf("certificate text lacks %q", want)
				}
			}
			// The check docs/client-certificates.md gives relying parties.
			if out := run("x509", "-in", certFile, "-noout", "-ext", "subjectAltName"); !strings.Contains(out, "URI:"+TenantURI(tenantA)+"\n") {
				t.Errorf("-ext subjectAltName: got %q, want the tenant's URI", out)
			}
			// The downloaded key is the certificate's.
			certPub := run("x509", "-in", certFile, "-noout", "-pubkey")
			keyPub := run("pkey", "-in", keyFile, "-pubout")
			if certPub != keyPub {
				t.Errorf("downloaded key's public half %q differs from the certificate's %q", keyPub, certPub)
			}
		})
	}
}
