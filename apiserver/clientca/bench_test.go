package clientca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"testing"

	"go.uber.org/zap"

	"github.com/certfleet/certfleet/internal/testenv"
)

// Costs of the CA's commands on a local Redis: go test -run - -bench . ./apiserver/clientca
func benchStore(b *testing.B, caKey string) *Store {
	b.Helper()
	s, err := New(Config{Passphrase: testPass, PublicURL: publicURL}, testenv.Redis(b).Client(b), zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := s.Init(context.Background(), caKey); err != nil {
		b.Fatal(err)
	}
	return s
}

func BenchmarkCreate(b *testing.B) {
	csrKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "b"}}, csrKey)
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	cases := []struct {
		name, caKey string
		req         CreateRequest
	}{
		{"ecdsa CA, generated ecdsa key", KeyECDSAP256, CreateRequest{CommonName: "b", GenerateKey: true}},
		{"ecdsa CA, generated rsa-2048 key", KeyECDSAP256, CreateRequest{CommonName: "b", GenerateKey: true, KeyType: KeyRSA2048}},
		{"ecdsa CA, csr", KeyECDSAP256, CreateRequest{CommonName: "b", CSR: csr}},
		{"rsa-3072 CA, generated ecdsa key", KeyRSA3072, CreateRequest{CommonName: "b", GenerateKey: true}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			s := benchStore(b, tc.caKey)
			ctx := context.Background()
			for b.Loop() {
				if _, err := s.Create(ctx, "tenant", tc.req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkRevoke(b *testing.B) {
	s := benchStore(b, KeyECDSAP256)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		c, err := s.Create(ctx, "tenant", CreateRequest{CommonName: "b", GenerateKey: true})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := s.Revoke(ctx, "tenant", c.ID, "superseded"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkList(b *testing.B) {
	s := benchStore(b, KeyECDSAP256)
	ctx := context.Background()
	for range 1000 {
		if _, err := s.Create(ctx, "tenant", CreateRequest{CommonName: "b", GenerateKey: true}); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		if got, err := s.List(ctx, "tenant", Filter{Search: "b"}); err != nil || len(got) != 1000 {
			b.Fatalf("list: got %d %v", len(got), err)
		}
	}
}

func BenchmarkInit(b *testing.B) {
	for _, kt := range []string{KeyECDSAP256, KeyRSA3072} {
		b.Run(kt, func(b *testing.B) {
			rdb := testenv.Redis(b).Client(b)
			for b.Loop() {
				b.StopTimer()
				rdb.FlushAll(context.Background())
				s, err := New(Config{Passphrase: testPass, PublicURL: publicURL}, rdb, zap.NewNop())
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				// Includes deriving the seal key (scrypt) once.
				if _, err := s.Init(context.Background(), kt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
