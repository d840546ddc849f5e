package clientca

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ocsp"

	"github.com/certfleet/certfleet/internal/testenv"
)

// FuzzParseCSR holds parseCSR and checkCSRNames, which read the CSRs
// users send, to their promises (seeds in testdata/fuzz/FuzzParseCSR: CSRs
// of every key type, weak keys, bad signatures, other PEM types, URIs in
// the tenant namespace and out of it): an accepted CSR has a verified
// signature, a key certfleet signs for and no URI in the tenant namespace,
// and its DER re-encoded as PEM parses to the same request; a refused one
// fails with ErrInvalid, the error the API answers 400 with.
func FuzzParseCSR(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := parseCSR(data)
		if err == nil {
			if err = checkCSRNames(csr); err == nil {
				for _, u := range csr.URIs {
					if strings.HasPrefix(strings.ToLower(u.String()), TenantURIPrefix) {
						t.Fatalf("accepted a CSR asking for %s", u)
					}
				}
			}
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("refused with %v, want an ErrInvalid", err)
			}
			return
		}
		if err := csr.CheckSignature(); err != nil {
			t.Fatalf("accepted a CSR whose signature does not verify: %v", err)
		}
		switch k := csr.PublicKey.(type) {
		case *rsa.PublicKey:
			if k.N.BitLen() < 2048 {
				t.Fatalf("accepted an RSA key of %d bits", k.N.BitLen())
			}
		case *ecdsa.PublicKey:
			if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() && k.Curve != elliptic.P521() {
				t.Fatalf("accepted ECDSA curve %v", k.Curve.Params().Name)
			}
		case ed25519.PublicKey:
		default:
			t.Fatalf("accepted key type %T", k)
		}
		again, err := parseCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr.Raw}))
		if err != nil || !bytes.Equal(again.Raw, csr.Raw) {
			t.Fatalf("an accepted CSR re-encoded does not parse back: %v", err)
		}
	})
}

// FuzzParseCertPEM and FuzzParseKeyPEM hold the readers of `ca import`
// to theirs: what they accept re-encodes and parses back to the same
// certificate or key, and nothing panics.
func FuzzParseCertPEM(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		cert, err := parseCertPEM(data)
		if err != nil {
			return
		}
		again, err := parseCertPEM(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
		if err != nil || !again.Equal(cert) {
			t.Fatalf("an accepted certificate re-encoded does not parse back: %v", err)
		}
	})
}

func FuzzParseKeyPEM(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		key, err := parseKeyPEM(data)
		if err != nil {
			return
		}
		if key == nil || key.Public() == nil {
			t.Fatal("accepted a key without a public half")
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			// An accepted key certfleet cannot store again is a defect.
			t.Fatalf("accepted key of type %T does not marshal: %v", key, err)
		}
		again, err := parseKeyPEM(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		if err != nil || !publicKeysEqual(again.Public(), key.Public()) {
			t.Fatalf("an accepted key re-encoded does not parse back to the same key: %v", err)
		}
	})
}

// FuzzRespondOCSP sends any bytes to the OCSP responder of a store whose
// CA is the one in testdata: it never fails (internal errors are for
// Redis, not for requests), a request that does not parse gets
// malformedRequest, and one about this CA gets a response signed by it
// for the serial asked, which x/crypto/ocsp accepts.
func FuzzRespondOCSP(f *testing.F) {
	caPEM, err := os.ReadFile(filepath.Join("testdata", "fuzz-ca.pem"))
	if err != nil {
		f.Fatal(err)
	}
	rdb := testenv.Redis(f).Client(f)
	s, err := New(Config{Passphrase: testPass, PublicURL: publicURL}, rdb, testenv.Logger(f))
	if err != nil {
		f.Fatal(err)
	}
	auth, err := s.Import(context.Background(), caPEM, caPEM)
	if err != nil {
		f.Fatalf("import testdata/fuzz-ca.pem: %v", err)
	}
	f.Fuzz(func(t *testing.T, der []byte) {
		resp, err := s.RespondOCSP(context.Background(), der)
		if err != nil {
			t.Fatalf("error %v for a request (only a store failure may error)", err)
		}
		req, perr := ocsp.ParseRequest(der)
		if perr != nil {
			if !bytes.Equal(resp, ocsp.MalformedRequestErrorResponse) {
				t.Fatalf("request that does not parse (%v): got %x, want malformedRequest", perr, resp)
			}
			return
		}
		if ours, _ := issuedBy(req, auth.Cert); !ours {
			if !bytes.Equal(resp, ocsp.UnauthorizedErrorResponse) {
				t.Fatalf("request about another CA: got %x, want unauthorized", resp)
			}
			return
		}
		r, err := ocsp.ParseResponse(resp, auth.Cert)
		if err != nil {
			t.Fatalf("response to a request about this CA does not verify: %v", err)
		}
		if r.SerialNumber.Cmp(req.SerialNumber) != 0 || r.Status != ocsp.Unknown {
			t.Fatalf("got serial %v status %d, want serial %v unknown (never issued)", r.SerialNumber, r.Status, req.SerialNumber)
		}
	})
}
