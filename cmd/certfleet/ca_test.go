package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/apiserver"
	"github.com/certfleet/certfleet/apiserver/clientcerts"
	"github.com/certfleet/certfleet/internal/testenv"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCACommand: init, show and import through the CLI; an apiserver
// started with the same passphrase uses that CA, one with another
// passphrase refuses to start.
func TestCACommand(t *testing.T) {
	ctx := context.Background()
	passFile := writeFile(t, "pass", "a long enough passphrase\n")
	cli := func(redisURL string, args ...string) (int, string, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		code := runMain(ctx, append(args, "--redis-url", redisURL, "--log-level", "warn"), &out, &errOut)
		return code, out.String(), errOut.String()
	}
	redisSrv := testenv.Redis(t)
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string // in stdout (code 0) or stderr
	}{
		{"show before init", []string{"ca", "show"}, 1, "no client CA yet"},
		{"no action", []string{"ca"}, 2, "usage: certfleet ca"},
		{"init without passphrase", []string{"ca", "init"}, 1, "passphrase is required"},
		{"bad key type", []string{"ca", "init", "--ca-passphrase-file", passFile, "--key-type", "dsa"}, 1, "key type"},
		{"init", []string{"ca", "init", "--ca-passphrase-file", passFile, "--common-name", "ACME Client CA"}, 0, "subject:     CN=ACME Client CA,O=certfleet"},
		{"init again", []string{"ca", "init", "--ca-passphrase-file", passFile}, 1, "exists already"},
		{"show", []string{"ca", "show"}, 0, "source:      generated"},
	}
	for _, tt := range tests {
		code, out, stderr := cli(redisSrv.URL, tt.args...)
		where := out
		if code != 0 {
			where = stderr
		}
		if code != tt.wantCode || !strings.Contains(where, tt.wantOut) {
			t.Errorf("%s: exit %d, out %q, stderr %q; want exit %d with %q", tt.name, code, out, stderr, tt.wantCode, tt.wantOut)
		}
	}
	_, shown, _ := cli(redisSrv.URL, "ca", "show")
	if !strings.Contains(shown, "-----BEGIN CERTIFICATE-----") || strings.Contains(shown, "PRIVATE KEY") {
		t.Errorf("show: got %q, want the certificate and no key", shown)
	}

	// An apiserver with the same passphrase starts on this CA (--ca-init
	// finds it); one with another passphrase refuses to start.
	if _, err := apiserver.New(apiserver.Config{CA: clientcerts.Config{PassphraseFile: passFile, Init: true}},
		redisSrv.Client(t), testenv.Logger(t)); err != nil {
		t.Errorf("apiserver with the CA's passphrase: %v", err)
	}
	_, err := apiserver.New(apiserver.Config{CA: clientcerts.Config{Passphrase: "not the passphrase", Init: true}},
		redisSrv.Client(t), testenv.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "passphrase") {
		t.Errorf("apiserver with another passphrase: got %v, want a refusal naming the passphrase", err)
	}
	if _, shownAfter, _ := cli(redisSrv.URL, "ca", "show"); shownAfter != shown {
		t.Errorf("the CA changed after the apiservers started")
	}

	// Import into a fresh deployment.
	fresh := testenv.Redis(t)
	own := testenv.NewCA(t, "Own Root", testenv.Validity(time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour)),
		func(c *x509.Certificate) { c.Subject.Organization = nil })
	kder, _ := x509.MarshalPKCS8PrivateKey(own.Key)
	certFile := writeFile(t, "ca.pem", string(own.PEM()))
	keyFile := writeFile(t, "ca.key", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})))
	t.Setenv("CERTFLEET_CA_PASSPHRASE", "passphrase from the environment")
	if code, out, stderr := cli(fresh.URL, "ca", "import", "--cert", certFile); code != 1 || !strings.Contains(stderr, "--cert and --key") {
		t.Errorf("import without key: exit %d, out %q, stderr %q", code, out, stderr)
	}
	if code, out, stderr := cli(fresh.URL, "ca", "import", "--cert", keyFile, "--key", keyFile); code != 1 || !strings.Contains(stderr, "CA certificate") {
		t.Errorf("import of a key as certificate: exit %d, out %q, stderr %q", code, out, stderr)
	}
	code, out, stderr := cli(fresh.URL, "ca", "import", "--cert", certFile, "--key", keyFile)
	if code != 0 || !strings.Contains(out, "subject:     CN=Own Root") || !strings.Contains(out, "source:      imported") {
		t.Errorf("import: exit %d, out %q, stderr %q", code, out, stderr)
	}
	if code, _, stderr := cli(fresh.URL, "ca", "import", "--cert", certFile, "--key", keyFile); code != 1 || !strings.Contains(stderr, "never replaced") {
		t.Errorf("import again: exit %d, stderr %q, want a refusal", code, stderr)
	}
}
