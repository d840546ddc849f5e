package testenv

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/dnszone"
	"github.com/certfleet/certfleet/internal/pebble"
)

// The lab TSIG key StartACME's zone accepts (hmac-sha256).
const (
	ACMETSIGKey       = "certfleet-test."
	ACMETSIGSecret    = "dGVzdC10c2lnLXNlY3JldC1mb3ItY2VydGZsZWV0IQ=="
	ACMETSIGAlgorithm = "hmac-sha256."
	// ACMEZone is the zone the DNS server is authoritative for.
	ACMEZone = "acme.test."
)

// ACME is a Pebble ACME server validating DNS-01 challenges against an
// RFC 2136 zone, both on loopback (StartACME).
type ACME struct {
	// DirectoryURL is Pebble's ACME directory.
	DirectoryURL string
	// RootsFile is a PEM file of the CA of Pebble's HTTPS certificate
	// (--acme-ca-roots); Roots is the same as a pool.
	RootsFile string
	Roots     *x509.CertPool
	// DNSAddr is the zone's server (host:port, UDP and TCP): the RFC 2136
	// nameserver for updates and the resolver Pebble and the propagation
	// check ask.
	DNSAddr string
	// Zone answers for ACMEZone; SetSilent makes it time out.
	Zone *dnszone.Zone

	t      testing.TB
	server *pebble.Server
}

// ACMEOptions change StartACME's Pebble.
type ACMEOptions struct {
	// AlwaysValid skips real validation (PEBBLE_VA_ALWAYS_VALID): only for
	// quick paths that are not about DNS.
	AlwaysValid bool
	// NonceReject is the percentage of good nonces Pebble rejects
	// (PEBBLE_WFE_NONCEREJECT); -1 keeps Pebble's 5 %.
	NonceReject int
}

// StartACME starts the zone's DNS server and Pebble (real DNS-01
// validation, Pebble's 5 % rejected nonces) for the test's life.
func StartACME(t testing.TB) *ACME { return StartACMEWith(t, ACMEOptions{NonceReject: -1}) }

// StartACMEWith is StartACME with options.
func StartACMEWith(t testing.TB, opts ACMEOptions) *ACME {
	t.Helper()
	bin := Pebble(t)
	zone := dnszone.New([]string{ACMEZone}, map[string]string{ACMETSIGKey: ACMETSIGSecret})
	srv, err := dnszone.Listen(zone, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })

	dir := t.TempDir()
	ca := NewCA(t, "pebble https test ca")
	leaf := ca.Issue(t, []string{"127.0.0.1", "localhost"}, nil)
	keyDER, err := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	roots := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(roots, ca.PEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	var env []string
	if opts.AlwaysValid {
		env = append(env, "PEBBLE_VA_ALWAYS_VALID=1")
	}
	if opts.NonceReject >= 0 {
		env = append(env, "PEBBLE_WFE_NONCEREJECT="+strconv.Itoa(opts.NonceReject))
	}
	server, err := pebble.Start(pebble.Config{Binary: bin, Dir: dir, DNSServer: srv.Addr, Env: env, Roots: ca.Pool(),
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(server.Stop)
	return &ACME{DirectoryURL: server.DirectoryURL, RootsFile: roots, Roots: ca.Pool(), DNSAddr: srv.Addr, Zone: zone,
		t: t, server: server}
}

// Start starts Pebble again after Stop: a new CA that knows no account,
// order or certificate of before.
func (a *ACME) Start() {
	a.t.Helper()
	if err := a.server.Restart(); err != nil {
		a.t.Fatal(err)
	}
}

// Stop stops Pebble: the CA is down until Start.
func (a *ACME) Stop() { a.server.Stop() }

// Restart is Stop then Start: a CA that forgot everything.
func (a *ACME) Restart() { a.Start() }

// IssuerRootsPEM is the root Pebble issues under now (new on every start).
func (a *ACME) IssuerRootsPEM() []byte {
	a.t.Helper()
	pem, err := a.server.IssuerRootsPEM(context.Background())
	if err != nil {
		a.t.Fatal(err)
	}
	return pem
}

// Pebble returns the path of the Pebble binary, built once from the tools
// module into .data/bin (shared by every test package and the lab).
func Pebble(t testing.TB) string {
	t.Helper()
	pebbleOnce.Do(func() {
		bin := filepath.Join(RepoRoot(), ".data", "bin", "pebble")
		if _, err := os.Stat(bin); err == nil {
			pebblePath = bin
			return
		}
		if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
			pebbleErr = err
			return
		}
		// Build beside the target and rename, so that test binaries of
		// other packages building at once never run a half-written file.
		tmp := fmt.Sprintf("%s.%d", bin, os.Getpid())
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp, "github.com/letsencrypt/pebble/v2/cmd/pebble")
		cmd.Dir = filepath.Join(RepoRoot(), "tools")
		if out, err := cmd.CombinedOutput(); err != nil {
			pebbleErr = fmt.Errorf("build pebble: %v\n%s", err, out)
			return
		}
		pebbleErr = os.Rename(tmp, bin)
		pebblePath = bin
	})
	if pebbleErr != nil {
		t.Fatal(pebbleErr)
	}
	return pebblePath
}

var (
	pebbleOnce sync.Once
	pebblePath string
	pebbleErr  error
)
