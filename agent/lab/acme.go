package lab

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"time"

	"github.com/miekg/dns"

	"github.com/certfleet/certfleet/internal/dnszone"
	"github.com/certfleet/certfleet/internal/pebble"
)

// TSIGKeyName and TSIGAlgorithm are the lab zone's update key; its secret
// is new on every start (TSIG).
const (
	TSIGKeyName   = "certfleet-lab."
	TSIGAlgorithm = dns.HmacSHA256
)

// newACMEZone is the zone's TXT records and updates, under a new key.
func (l *Lab) newACMEZone() error {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return fmt.Errorf("lab tsig secret: %w", err)
	}
	l.tsig = [2]string{TSIGKeyName, base64.StdEncoding.EncodeToString(b)}
	l.acme = dnszone.New([]string{l.cfg.Zone}, map[string]string{l.tsig[0]: l.tsig[1]})
	return nil
}

// startPebble runs Pebble with an HTTPS certificate of the lab's CA,
// resolving challenges with the lab's DNS server.
func (l *Lab) startPebble() error {
	now := l.cfg.Now()
	cert, err := l.ca.Issue("lab acme server", []string{"127.0.0.1", "localhost"}, now.Add(-time.Hour), now.Add(365*24*time.Hour))
	if err != nil {
		return err
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return err
	}
	if l.pebbleDir, err = os.MkdirTemp("", "certfleet-lab-pebble-"); err != nil {
		return fmt.Errorf("lab pebble: %w", err)
	}
	l.pebble, err = pebble.Start(pebble.Config{Binary: l.cfg.Pebble, Dir: l.pebbleDir, DNSServer: l.resolver, Roots: l.ca.Pool(),
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key})})
	if err != nil {
		_ = os.RemoveAll(l.pebbleDir)
		l.pebble = nil
	}
	return err
}

// ACMEDirectory is the lab's ACME directory, "" without Pebble. The lab's
// roots (RootsPEM) verify its HTTPS.
func (l *Lab) ACMEDirectory() string {
	if l.pebble == nil {
		return ""
	}
	return l.pebble.DirectoryURL
}

// RFC2136Credentials are the DNS account credentials (lego's names) that
// update the lab zone: what a tenant sends to POST /api/v1/dns-accounts
// to order certificates for lab names.
func (l *Lab) RFC2136Credentials() map[string]string {
	return map[string]string{"RFC2136_NAMESERVER": l.resolver, "RFC2136_TSIG_KEY": l.tsig[0],
		"RFC2136_TSIG_SECRET": l.tsig[1], "RFC2136_TSIG_ALGORITHM": TSIGAlgorithm, "RFC2136_SEQUENCE_INTERVAL": "1"}
}
