package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/certfleet/certfleet/internal/dnszone"
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

	t        testing.TB
	dir      string
	mgmt     string
	bin      string
	args     []string
	env      []string
	mu       sync.Mutex
	cmd      *exec.Cmd
	mgmtHTTP *http.Client
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
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile := write("cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]}))
	keyFile := write("key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	a := &ACME{RootsFile: write("roots.pem", ca.PEM()), Roots: ca.Pool(), DNSAddr: srv.Addr, Zone: zone, t: t, dir: dir}
	port, mgmt := FreePort(t), FreePort(t)
	a.DirectoryURL = fmt.Sprintf("https://127.0.0.1:%d/dir", port)
	a.mgmt = fmt.Sprintf("https://127.0.0.1:%d", mgmt)
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":                  "127.0.0.1:" + strconv.Itoa(port),
		"managementListenAddress":        "127.0.0.1:" + strconv.Itoa(mgmt),
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       FreePort(t),
		"tlsPort":                        FreePort(t),
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description": "90 days", "validityPeriod": 7776000}},
	}}
	body, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := write("pebble.json", body)
	a.env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_AUTHZREUSE=0")
	if opts.AlwaysValid {
		a.env = append(a.env, "PEBBLE_VA_ALWAYS_VALID=1")
	}
	if opts.NonceReject >= 0 {
		a.env = append(a.env, "PEBBLE_WFE_NONCEREJECT="+strconv.Itoa(opts.NonceReject))
	}
	a.bin, a.args = bin, []string{"-config", cfgFile, "-dnsserver", srv.Addr}
	a.mgmtHTTP = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}}}
	a.Start()
	t.Cleanup(a.Stop)
	return a
}

// Start starts Pebble (again, after Stop: a new CA that knows no account,
// order or certificate of before) and waits until its directory answers.
func (a *ACME) Start() {
	a.t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.cmd = startEnv(a.t, a.dir, a.env, a.bin, a.args...)
	err := waitFor(20*time.Second, func() error {
		resp, err := a.mgmtHTTP.Get(a.DirectoryURL)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("directory: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		out, _ := os.ReadFile(filepath.Join(a.dir, "stdout.log"))
		a.t.Fatalf("pebble did not start: %v\n%s", err, out)
	}
}

// Stop stops Pebble: the CA is down until Start.
func (a *ACME) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	stop(a.cmd)
	a.cmd = nil
}

// Restart is Stop then Start: a CA that forgot everything.
func (a *ACME) Restart() {
	a.Stop()
	a.Start()
}

// IssuerRootsPEM is the root Pebble issues under now (new on every start).
func (a *ACME) IssuerRootsPEM() []byte {
	a.t.Helper()
	resp, err := a.mgmtHTTP.Get(a.mgmt + "/roots/0")
	if err != nil {
		a.t.Fatalf("pebble roots: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		a.t.Fatalf("pebble roots: %s %v", resp.Status, err)
	}
	return body
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
