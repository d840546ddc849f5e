package testenv

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"testing"
)

func TestStartACME(t *testing.T) {
	a := StartACMEWith(t, ACMEOptions{AlwaysValid: true, NonceReject: 0})
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig(a.Roots)}}
	resp, err := c.Get(a.DirectoryURL)
	if err != nil {
		t.Fatalf("directory: %v", err)
	}
	_ = resp.Body.Close()
	root := func() *x509.Certificate {
		block, _ := pem.Decode(a.IssuerRootsPEM())
		if block == nil {
			t.Fatal("no issuing root")
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	before := root()
	a.Restart()
	if after := root(); after.Equal(before) {
		t.Errorf("a restarted CA kept its issuing root: want a new CA")
	}
}

func tlsConfig(roots *x509.CertPool) *tls.Config {
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
}
