package testenv

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a throw-away certificate authority for tests: the one place tests
// mint certificates. (agent/lab has the product's demo CA; tests that need
// certificates with particular properties use this one.)
type CA struct {
	// Cert is the CA's certificate.
	Cert *x509.Certificate
	// Key signs what the CA issues.
	Key crypto.Signer
}

// CertMod changes a certificate template before it is signed: validity,
// key usages, names, extensions.
type CertMod func(*x509.Certificate)

var serial atomic.Int64

// NextSerial is a serial number unique within the test binary.
func NextSerial() *big.Int { return big.NewInt(0x1000 + serial.Add(1)) }

// NewKey returns a fresh ECDSA P-256 key: cheap to make and to handshake with.
func NewKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// NewCA creates a self-signed root valid from an hour ago for a day, that
// may sign certificates and CRLs; mods change its template.
func NewCA(t testing.TB, cn string, mods ...CertMod) *CA {
	t.Helper()
	key := NewKey(t)
	tmpl := caTemplate(cn)
	tmpl.Subject.Organization = []string{"certfleet tests"}
	tmpl.KeyUsage |= x509.KeyUsageCRLSign
	cert := Sign(t, tmpl, key.Public(), nil, key, mods...)
	return &CA{Cert: cert, Key: key}
}

// Intermediate returns a CA signed by ca.
func (ca *CA) Intermediate(t testing.TB, cn string, mods ...CertMod) *CA {
	t.Helper()
	key := NewKey(t)
	cert := Sign(t, caTemplate(cn), key.Public(), ca.Cert, ca.Key, mods...)
	return &CA{Cert: cert, Key: key}
}

func caTemplate(cn string) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
}

// PEM is the CA certificate in PEM, for a verifier's extra roots.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// Pool is a pool holding only this CA's certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issue returns a server certificate with a fresh P-256 key for names (DNS
// names or IP addresses; the first is the common name), valid from an hour
// ago for a day unless mods say otherwise, followed by the certificates of
// chain (intermediates, without the root).
func (ca *CA) Issue(t testing.TB, names []string, chain []*CA, mods ...CertMod) tls.Certificate {
	t.Helper()
	return ca.IssueWithKey(t, NewKey(t), names, chain, mods...)
}

// IssueWithKey is Issue with a key of the caller's (RSA, a weak key...).
func (ca *CA) IssueWithKey(t testing.TB, key crypto.Signer, names []string, chain []*CA, mods ...CertMod) tls.Certificate {
	t.Helper()
	leaf := Sign(t, ServerTemplate(names), key.Public(), ca.Cert, ca.Key, mods...)
	c := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	for _, ic := range chain {
		c.Certificate = append(c.Certificate, ic.Cert.Raw)
	}
	return c
}

// SelfSigned returns a server certificate for names signed by its own key,
// which no verifier trusts.
func SelfSigned(t testing.TB, names []string, mods ...CertMod) tls.Certificate {
	t.Helper()
	key := NewKey(t)
	leaf := Sign(t, ServerTemplate(names), key.Public(), nil, key, mods...)
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

// ServerTemplate is the template of a server certificate for names (DNS
// names or IP addresses; the first is the common name), valid from an hour
// ago for a day.
func ServerTemplate(names []string) *x509.Certificate {
	tmpl := &x509.Certificate{
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if len(names) > 0 {
		tmpl.Subject.CommonName = names[0]
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return tmpl
}

// Sign signs tmpl (after mods, with a fresh serial unless one is set) for
// pub with issuer's key; a nil issuer makes it self-signed.
func Sign(t testing.TB, tmpl *x509.Certificate, pub crypto.PublicKey, issuer *x509.Certificate, issuerKey crypto.Signer, mods ...CertMod) *x509.Certificate {
	t.Helper()
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = NextSerial()
	}
	for _, m := range mods {
		m(tmpl)
	}
	if issuer == nil {
		issuer = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, pub, issuerKey)
	if err != nil {
		t.Fatalf("sign certificate %q: %v", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// Validity sets a certificate's validity.
func Validity(notBefore, notAfter time.Time) CertMod {
	return func(c *x509.Certificate) { c.NotBefore, c.NotAfter = notBefore, notAfter }
}

// CSR returns a PEM certificate request for cn signed by a fresh P-256
// key, and the key.
func CSR(t testing.TB, cn string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key := NewKey(t)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), key
}
