// Package pebble runs Pebble, Let's Encrypt's ACME test server, as a child
// process on loopback: the CA of the lab (certfleet lab) and of the
// integration tests (internal/testenv). The binary is built from the tools
// module (go build github.com/letsencrypt/pebble/v2/cmd/pebble); this
// package only configures, starts, restarts and stops it.
package pebble

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Config configures a Server.
type Config struct {
	// Binary is the pebble executable.
	Binary string
	// Dir holds its configuration, certificate files and log.
	Dir string
	// CertPEM and KeyPEM are Pebble's HTTPS certificate (for 127.0.0.1)
	// and key; Roots verify it.
	CertPEM, KeyPEM []byte
	Roots           *x509.CertPool
	// DNSServer is the host:port Pebble resolves challenges with.
	DNSServer string
	// Env is added to the process's environment (PEBBLE_* settings).
	// Pebble's validation is quick (PEBBLE_VA_NOSLEEP=1) and it never
	// reuses authorizations (PEBBLE_AUTHZREUSE=0) unless Env says so.
	Env []string
	// Startup bounds the wait for the directory. Default 20 s.
	Startup time.Duration
}

// Server is a running Pebble.
type Server struct {
	// DirectoryURL is the ACME directory; ManagementURL the management
	// interface (roots, intermediates).
	DirectoryURL, ManagementURL string

	cfg    Config
	args   []string
	client *http.Client

	mu  sync.Mutex
	cmd *exec.Cmd
	log *os.File
}

// Start configures Pebble on free loopback ports and starts it.
func Start(cfg Config) (*Server, error) {
	if cfg.Startup == 0 {
		cfg.Startup = 20 * time.Second
	}
	if cfg.Binary == "" || cfg.Dir == "" || cfg.DNSServer == "" {
		return nil, errors.New("pebble: binary, dir and dns server are required")
	}
	// The process runs in Dir: a relative path would name another file.
	bin, err := filepath.Abs(cfg.Binary)
	if err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	cfg.Binary = bin
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	write := func(name string, data []byte) (string, error) {
		p := filepath.Join(cfg.Dir, name)
		return p, os.WriteFile(p, data, 0o600)
	}
	certFile, err := write("pebble-cert.pem", cfg.CertPEM)
	if err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	keyFile, err := write("pebble-key.pem", cfg.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	conf, err := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress":                  "127.0.0.1:" + strconv.Itoa(ports[0]),
		"managementListenAddress":        "127.0.0.1:" + strconv.Itoa(ports[1]),
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       ports[2],
		"tlsPort":                        ports[3],
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"retryAfter":                     map[string]int{"authz": 1, "order": 1},
		"keyAlgorithm":                   "ecdsa",
		"profiles": map[string]any{"default": map[string]any{
			"description": "90 days, as Let's Encrypt's", "validityPeriod": 7776000}},
	}})
	if err != nil {
		return nil, err
	}
	confFile, err := write("pebble.json", conf)
	if err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	s := &Server{cfg: cfg, args: []string{"-config", confFile, "-dnsserver", cfg.DNSServer},
		DirectoryURL:  fmt.Sprintf("https://127.0.0.1:%d/dir", ports[0]),
		ManagementURL: fmt.Sprintf("https://127.0.0.1:%d", ports[1]),
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: cfg.Roots, MinVersion: tls.VersionTLS12}}}}
	return s, s.Restart()
}

// freePorts returns n ports free on 127.0.0.1 now.
func freePorts(n int) ([]int, error) {
	out := make([]int, 0, n)
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pebble: free port: %w", err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// Restart (re)starts Pebble and waits until its directory answers. A
// restarted Pebble is a new CA: it knows no account, order or certificate
// of before, and issues under a new root.
func (s *Server) Restart() error {
	s.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	log, err := os.OpenFile(filepath.Join(s.cfg.Dir, "pebble.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("pebble: %w", err)
	}
	cmd := exec.Command(s.cfg.Binary, s.args...)
	cmd.Dir = s.cfg.Dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_AUTHZREUSE=0"), s.cfg.Env...)
	setParentDeath(cmd)
	if err := cmd.Start(); err != nil {
		_ = log.Close()
		return fmt.Errorf("pebble: start %s: %w", s.cfg.Binary, err)
	}
	s.cmd, s.log = cmd, log
	deadline := time.Now().Add(s.cfg.Startup)
	for {
		resp, err := s.client.Get(s.DirectoryURL)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("directory answered %s", resp.Status)
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(filepath.Join(s.cfg.Dir, "pebble.log"))
			return fmt.Errorf("pebble did not start: %w\n%s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops Pebble; the CA is down until Restart.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	_ = s.log.Close()
	s.cmd, s.log = nil, nil
}

// IssuerRootsPEM is the root Pebble issues under now.
func (s *Server) IssuerRootsPEM(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.ManagementURL+"/roots/0", nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("pebble roots: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("pebble roots: %s %v", resp.Status, err)
	}
	return body, nil
}
