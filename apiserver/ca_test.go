package apiserver

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/apiserver/clientcerts"
	"github.com/certfleet/certfleet/internal/testenv"
)

// TestCAInitReplicas: apiservers starting together with --ca-init make one
// CA, and each of them signs with it.
func TestCAInitReplicas(t *testing.T) {
	ctx := context.Background()
	redisSrv := testenv.Redis(t)
	const replicas = 3
	srvs := make([]*Server, replicas)
	errs := make([]error, replicas)
	var wg sync.WaitGroup
	for i := range srvs {
		wg.Go(func() {
			srvs[i], errs[i] = New(Config{CA: clientcerts.Config{Passphrase: "a shared CA passphrase", Init: true,
				PublicURL: "https://ca.example.com"}}, redisSrv.Client(t), testenv.Logger(t))
		})
	}
	wg.Wait()
	var caPEM []byte
	for i, srv := range srvs {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		a, err := srv.caStore.Authority(ctx)
		if err != nil {
			t.Fatalf("replica %d authority: %v", i, err)
		}
		if caPEM == nil {
			caPEM = a.PEM
		}
		if !bytes.Equal(a.PEM, caPEM) {
			t.Errorf("replica %d has another CA", i)
		}
		c, err := srv.caStore.Create(ctx, "tenant", clientca.CreateRequest{CommonName: "r", GenerateKey: true})
		if err != nil {
			t.Fatalf("replica %d create: %v", i, err)
		}
		crt, _ := srv.caStore.Download(ctx, "tenant", c.ID, clientca.DownloadCert)
		if !bytes.Contains(crt, []byte("CERTIFICATE")) {
			t.Errorf("replica %d: no certificate", i)
		}
	}
}

// TestCAWithoutPassphrase: an apiserver without a CA passphrase starts
// (the rest of the API works) but its CA cannot sign.
func TestCAWithoutPassphrase(t *testing.T) {
	srv, err := New(Config{CA: clientcerts.Config{Init: true}}, testenv.Redis(t).Client(t), testenv.Logger(t))
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	if srv.caStore == nil || srv.caStore.CanSign() {
		t.Fatalf("store %v: want a store that cannot sign", srv.caStore)
	}
	if _, err := srv.caStore.Create(context.Background(), "t", clientca.CreateRequest{CommonName: "x", GenerateKey: true}); !errors.Is(err, clientca.ErrNoPassphrase) {
		t.Errorf("create: got %v, want ErrNoPassphrase", err)
	}
}

func TestCAConfig(t *testing.T) {
	good := filepath.Join(t.TempDir(), "good")
	_ = os.WriteFile(good, []byte("a long enough passphrase\n"), 0o600)
	tests := []struct {
		name string
		cfg  clientcerts.Config
		want string
	}{
		{"zero", clientcerts.Config{}, ""},
		{"both passphrases", clientcerts.Config{Passphrase: "a long enough passphrase", PassphraseFile: good}, "not both"},
		{"short passphrase", clientcerts.Config{Passphrase: "short"}, "at least 12"},
		{"key type", clientcerts.Config{KeyType: "rsa-1024"}, "key type"},
		{"public url", clientcerts.Config{PublicURL: "ca.example.com"}, "public URL"},
		{"crl validity", clientcerts.Config{CRLValidity: 1}, "CRL validity"},
	}
	for _, tt := range tests {
		cfg := Config{CA: tt.cfg}
		cfg.setDefaults()
		err := cfg.Validate()
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: got %v, want %q", tt.name, err, tt.want)
		}
	}
}

// RunRenewal is an actor: it runs until its context ends, then returns nil.
func TestRunRenewalStopsWithItsContext(t *testing.T) {
	srv, err := New(Config{CA: clientcerts.Config{Init: true}}, testenv.Redis(t).Client(t), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.RunRenewal(ctx) }()
	select {
	case err := <-done:
		t.Fatalf("renewal returned before its context ended: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("renewal after stop: got %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("renewal still running 10s after its context ended")
	}
}
