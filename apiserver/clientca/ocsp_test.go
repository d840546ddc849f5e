package clientca

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/certfleet/certfleet/internal/testenv"
)

// certOf downloads and parses a certificate.
func certOf(t testing.TB, s *Store, c Cert) *x509.Certificate {
	t.Helper()
	p, err := s.Download(context.Background(), c.TenantID, c.ID, "crt")
	if err != nil {
		t.Fatalf("download %s: %v", c.ID, err)
	}
	block, _ := pem.Decode(p)
	if block == nil {
		t.Fatalf("download %s: no PEM", c.ID)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// foreignCert is a certificate of another CA, with the given serial.
func foreignCert(t testing.TB, serial *big.Int) (cert, issuer *x509.Certificate) {
	t.Helper()
	other := testenv.NewCA(t, "other CA")
	leaf := testenv.Sign(t, &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "x"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}, testenv.NewKey(t).Public(), other.Cert, other.Key)
	return leaf, other.Cert
}

// The responder answers good, revoked (time and reason) and unknown,
// signed by the CA, for requests hashed with SHA-1 or SHA-256, at once
// after a revocation; other issuers are unauthorized, garbage malformed.
func TestRespondOCSP(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	clock := &testClock{t: time.Now().UTC().Truncate(time.Second)}
	s := newRevocationStore(t, rdb, revocationPassphrase, clock.Now)
	if _, err := s.RespondOCSP(ctx, []byte{0x30, 0x00}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Init(ctx, ""); err != nil {
		t.Fatal(err)
	}
	auth, err := s.Authority(ctx)
	if err != nil {
		t.Fatal(err)
	}
	certs := issueN(t, s, "tenant-a", 2)
	good, revoked := certOf(t, s, certs[0]), certOf(t, s, certs[1])
	clock.Add(time.Minute)
	if _, err := s.Revoke(ctx, "tenant-a", certs[1].ID, "compromised"); err != nil {
		t.Fatal(err)
	}
	revokedAt := clock.Now()
	clock.Add(time.Minute)

	// unknown: this CA's name and key, a serial it never issued.
	unknown := *good
	unknown.SerialNumber = new(big.Int).Add(good.SerialNumber, big.NewInt(1))
	other, otherCA := foreignCert(t, good.SerialNumber)

	tests := []struct {
		name       string
		cert       *x509.Certificate
		issuer     *x509.Certificate
		hash       crypto.Hash
		wantStatus int
		wantErr    ocsp.ResponseStatus // 0: a signed answer
	}{
		{"good sha1", good, auth.Cert, crypto.SHA1, ocsp.Good, 0},
		{"good sha256", good, auth.Cert, crypto.SHA256, ocsp.Good, 0},
		{"revoked", revoked, auth.Cert, crypto.SHA1, ocsp.Revoked, 0},
		{"revoked sha256", revoked, auth.Cert, crypto.SHA256, ocsp.Revoked, 0},
		{"unknown", &unknown, auth.Cert, crypto.SHA1, ocsp.Unknown, 0},
		{"other issuer", other, otherCA, crypto.SHA1, 0, ocsp.Unauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := ocsp.CreateRequest(tc.cert, tc.issuer, &ocsp.RequestOptions{Hash: tc.hash})
			if err != nil {
				t.Fatal(err)
			}
			der, err := s.RespondOCSP(ctx, req)
			if err != nil {
				t.Fatalf("respond: %v", err)
			}
			resp, err := ocsp.ParseResponseForCert(der, tc.cert, auth.Cert)
			if tc.wantErr != 0 {
				var re ocsp.ResponseError
				if !errors.As(err, &re) || re.Status != tc.wantErr {
					t.Fatalf("got %v, want response status %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parse response (signature checked against the CA): %v", err)
			}
			if resp.Status != tc.wantStatus || resp.SerialNumber.Cmp(tc.cert.SerialNumber) != 0 {
				t.Errorf("got status %d for serial %s, want %d for %s", resp.Status, resp.SerialNumber, tc.wantStatus, tc.cert.SerialNumber)
			}
			if resp.IssuerHash != tc.hash {
				t.Errorf("response CertID hash: got %v, want the request's %v", resp.IssuerHash, tc.hash)
			}
			if !resp.ThisUpdate.Equal(clock.Now()) || !resp.NextUpdate.IsZero() {
				t.Errorf("thisUpdate %s nextUpdate %s, want %s and none", resp.ThisUpdate, resp.NextUpdate, clock.Now())
			}
			if tc.wantStatus == ocsp.Revoked {
				if !resp.RevokedAt.Equal(revokedAt) || resp.RevocationReason != ocsp.KeyCompromise {
					t.Errorf("revoked at %s for %d, want %s for keyCompromise (1)", resp.RevokedAt, resp.RevocationReason, revokedAt)
				}
			}
		})
	}

	for _, garbage := range [][]byte{nil, []byte("not a request"), {0x30, 0x03, 0x02, 0x01, 0x01}} {
		der, err := s.RespondOCSP(ctx, garbage)
		var re ocsp.ResponseError
		if _, perr := ocsp.ParseResponse(der, nil); err != nil || !errors.As(perr, &re) || re.Status != ocsp.Malformed {
			t.Errorf("request %q: got %v / %v, want malformedRequest", garbage, perr, err)
		}
	}
}

// A replica without the passphrase cannot sign: internalError, and the
// error says why.
func TestRespondOCSPWithoutPassphrase(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.Redis(t).Client(t)
	signer := newRevocationStore(t, rdb, revocationPassphrase, nil)
	auth, err := signer.Init(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	cert := certOf(t, signer, issueN(t, signer, "tenant-a", 1)[0])
	req, err := ocsp.CreateRequest(cert, auth.Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	der, err := newRevocationStore(t, rdb, "", nil).RespondOCSP(ctx, req)
	var re ocsp.ResponseError
	if _, perr := ocsp.ParseResponse(der, nil); !errors.Is(err, ErrNoPassphrase) || !errors.As(perr, &re) || re.Status != ocsp.InternalError {
		t.Errorf("got %v / %v, want internalError and ErrNoPassphrase", perr, err)
	}
}

// BenchmarkOCSP compares a signed OCSP answer with the status lookup it
// starts with (the ratio is the cost of parsing and signing).
func BenchmarkOCSP(b *testing.B) {
	ctx := context.Background()
	rdb := testenv.Redis(b).Client(b)
	s := newRevocationStore(b, rdb, revocationPassphrase, nil)
	auth, err := s.Init(ctx, "")
	if err != nil {
		b.Fatal(err)
	}
	cert := certOf(b, s, issueN(b, s, "tenant-a", 1)[0])
	req, err := ocsp.CreateRequest(cert, auth.Cert, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("lookup", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.Status(ctx, cert.SerialNumber); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("respond", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.RespondOCSP(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Under an RSA CA too, CRLs and OCSP answers verify against the CA.
func TestRevocationRSACA(t *testing.T) {
	ctx := context.Background()
	s := newRevocationStore(t, testenv.Redis(t).Client(t), revocationPassphrase, nil)
	auth, err := s.Init(ctx, KeyRSA3072)
	if err != nil {
		t.Fatal(err)
	}
	c := issueN(t, s, "tenant-a", 1)[0]
	if _, err := s.Revoke(ctx, "tenant-a", c.ID, "privilegeWithdrawn"); err != nil {
		t.Fatal(err)
	}
	crl, err := s.CRL(ctx, CRLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	entries := parseCRL(t, s, crl, 1, DefaultCRLValidity)
	if e, ok := entries[c.Serial.String()]; !ok || e.ReasonCode != ocsp.PrivilegeWithdrawn {
		t.Errorf("CRL entry: got %+v (listed %v), want privilegeWithdrawn (9)", e, ok)
	}
	cert := certOf(t, s, c)
	req, err := ocsp.CreateRequest(cert, auth.Cert, nil)
	if err != nil {
		t.Fatal(err)
	}
	der, err := s.RespondOCSP(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ocsp.ParseResponseForCert(der, cert, auth.Cert)
	if err != nil || resp.Status != ocsp.Revoked || resp.RevocationReason != ocsp.PrivilegeWithdrawn {
		t.Errorf("OCSP: got %+v, %v, want revoked, privilegeWithdrawn", resp, err)
	}
}
