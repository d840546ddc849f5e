package apiserver

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/apiserver/clientcerts"
	"github.com/certfleet/certfleet/internal/testenv"
)

// revocationEnv is a server with a CA whose certificates name the server's
// own address as CRL distribution point and OCSP responder.
type revocationEnv struct {
	t    *testing.T
	srv  *Server
	base string
	ca   *x509.Certificate
	dir  string
}

func newRevocationEnv(t *testing.T) *revocationEnv {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	srv, err := New(Config{CA: clientcerts.Config{Passphrase: "revocation test passphrase", Init: true, PublicURL: base}},
		testenv.Redis(t).Client(t), testenv.Logger(t))
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	hs.Listener.Close()
	hs.Listener = ln
	hs.Start()
	t.Cleanup(hs.Close)
	info, err := srv.caStore.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e := &revocationEnv{t: t, srv: srv, base: base, ca: info.Cert, dir: t.TempDir()}
	e.write("ca.pem", info.PEM)
	return e
}

func (e *revocationEnv) write(name string, data []byte) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// issue creates a certificate of tenant with a generated key and writes
// it as <name>.pem.
func (e *revocationEnv) issue(tenant, name string) (clientca.Cert, *x509.Certificate) {
	e.t.Helper()
	ctx := context.Background()
	c, err := e.srv.caStore.Create(ctx, tenant, clientca.CreateRequest{CommonName: name, GenerateKey: true, Usage: "api-mtls"})
	if err != nil {
		e.t.Fatalf("create %s: %v", name, err)
	}
	crt, err := e.srv.caStore.Download(ctx, tenant, c.ID, "crt")
	if err != nil {
		e.t.Fatal(err)
	}
	e.write(name+".pem", crt)
	block, _ := pem.Decode(crt)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		e.t.Fatal(err)
	}
	return c, cert
}

func (e *revocationEnv) revoke(tenant string, c clientca.Cert, reason string) {
	e.t.Helper()
	if _, err := e.srv.caStore.Revoke(context.Background(), tenant, c.ID, reason); err != nil {
		e.t.Fatalf("revoke %s: %v", c.ID, err)
	}
}

// get sends GET path with key as bearer (none when empty).
func (e *revocationEnv) get(path, key string, header ...string) (*http.Response, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.base+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp, body
}

// getJSON sends GET path and decodes the JSON answer into out (numbers
// kept exact).
func (e *revocationEnv) getJSON(path, key string, out any) int {
	e.t.Helper()
	resp, body := e.get(path, key)
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(out); err != nil {
		e.t.Fatalf("GET %s: got non-JSON %q (HTTP %d)", path, body, resp.StatusCode)
	}
	return resp.StatusCode
}

// openssl runs Debian's openssl in the env's directory; it returns the
// combined output and whether it exited 0.
func (e *revocationEnv) openssl(args ...string) (string, bool) {
	e.t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		e.t.Fatal("openssl not found: run scripts/deps.sh (or `go tool task test`), which installs it")
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = e.dir
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		e.t.Fatalf("openssl %s: %v", strings.Join(args, " "), err)
	}
	return string(out), err == nil
}

// expectOpenSSL runs openssl and checks its exit status and that its
// output holds every wanted line fragment.
func (e *revocationEnv) expectOpenSSL(wantOK bool, want []string, args ...string) {
	e.t.Helper()
	out, ok := e.openssl(args...)
	if ok != wantOK {
		e.t.Errorf("openssl %s: exit ok %v, want %v; output:\n%s", strings.Join(args, " "), ok, wantOK, out)
		return
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			e.t.Errorf("openssl %s: output lacks %q:\n%s", strings.Join(args, " "), w, out)
		}
	}
}

// openssl verify against the served CRL and openssl ocsp against the
// served responder agree with the CA: good, then revoked (with reason)
// once revoked, and unknown for a certificate the CA signed but never
// recorded.
func TestRevocationWithOpenSSL(t *testing.T) {
	e := newRevocationEnv(t)
	tenant := newCheckTenant(t, e.srv, "openssl@example.com")
	_, goodCert := e.issue(tenant.id, "good")
	bad, badCert := e.issue(tenant.id, "bad")
	for _, c := range []*x509.Certificate{goodCert, badCert} {
		if len(c.CRLDistributionPoints) != 1 || c.CRLDistributionPoints[0] != e.base+"/api/crl/download/der" ||
			len(c.OCSPServer) != 1 || c.OCSPServer[0] != e.base+"/ocsp" {
			t.Fatalf("certificate names CRL %v and OCSP %v, want this server's", c.CRLDistributionPoints, c.OCSPServer)
		}
	}
	fetchCRL := func() {
		t.Helper()
		resp, body := e.get("/api/crl/download/pem", tenant.read)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET CRL: HTTP %d %s", resp.StatusCode, body)
		}
		e.write("crl.pem", body)
		resp, body = e.get("/api/crl/download/der", "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET CRL DER: HTTP %d %s", resp.StatusCode, body)
		}
		e.write("crl.der", body)
	}
	ocspArgs := func(name string) []string {
		// The URL is the one the certificate names (its AIA).
		return []string{"ocsp", "-issuer", "ca.pem", "-cert", name + ".pem", "-url", e.base + "/ocsp", "-CAfile", "ca.pem"}
	}

	fetchCRL()
	for _, name := range []string{"good", "bad"} {
		e.expectOpenSSL(true, []string{name + ".pem: OK"}, "verify", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem", name+".pem")
		e.expectOpenSSL(true, []string{"Response verify OK", name + ".pem: good"}, ocspArgs(name)...)
	}
	e.expectOpenSSL(true, []string{"crlNumber=0x01"}, "crl", "-inform", "DER", "-in", "crl.der", "-noout", "-crlnumber")

	e.revoke(tenant.id, bad, "compromised")
	// OCSP answers revoked at once, before any CRL is built.
	e.expectOpenSSL(true, []string{"Response verify OK", "bad.pem: revoked", "Reason: keyCompromise", "Revocation Time:"}, ocspArgs("bad")...)
	e.expectOpenSSL(true, []string{"good.pem: good"}, ocspArgs("good")...)
	// The old CRL still passes it; the next one does not.
	e.expectOpenSSL(true, []string{"bad.pem: OK"}, "verify", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem", "bad.pem")
	fetchCRL()
	e.expectOpenSSL(false, []string{"certificate revoked"}, "verify", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem", "bad.pem")
	e.expectOpenSSL(true, []string{"good.pem: OK"}, "verify", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem", "good.pem")
	e.expectOpenSSL(true, []string{"crlNumber=0x02"}, "crl", "-inform", "DER", "-in", "crl.der", "-noout", "-crlnumber")
	e.expectOpenSSL(true, []string{"Serial Number: " + fmt.Sprintf("%X", badCert.SerialNumber.Bytes()), "Key Compromise"},
		"crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text")

	// Signed by the CA, never recorded: unknown.
	auth, err := e.srv.caStore.Authority(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	stray := signStray(t, auth)
	e.write("stray.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: stray.Raw}))
	e.expectOpenSSL(true, []string{"Response verify OK", "stray.pem: unknown"}, ocspArgs("stray")...)
}

// signStray signs a client certificate with the CA's key without recording
// it.
func signStray(t *testing.T, auth *clientca.Authority) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(424242), Subject: pkix.Name{CommonName: "stray"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	return testenv.Sign(t, tmpl, testenv.NewKey(t).Public(), auth.Cert, auth.Signer,
		testenv.Validity(time.Now().Add(-time.Hour), time.Now().Add(time.Hour)))
}

// checkOCSP asks the responder a certificate names whether it is good: the
// check an mTLS server does in VerifyPeerCertificate.
func checkOCSP(leaf, issuer *x509.Certificate) error {
	if len(leaf.OCSPServer) == 0 {
		return errors.New("certificate names no OCSP responder")
	}
	req, err := ocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		return err
	}
	resp, err := http.Post(leaf.OCSPServer[0], "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		return fmt.Errorf("ask OCSP: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	r, err := ocsp.ParseResponseForCert(body, leaf, issuer)
	if err != nil {
		return fmt.Errorf("OCSP response: %w", err)
	}
	switch r.Status {
	case ocsp.Good:
		return nil
	case ocsp.Revoked:
		return fmt.Errorf("certificate revoked at %s (reason %d)", r.RevokedAt, r.RevocationReason)
	default:
		return errors.New("certificate unknown to its CA")
	}
}

// An mTLS server that trusts the CA and checks OCSP on every handshake
// accepts a created certificate and refuses it once revoked; another
// certificate is still accepted.
func TestMTLSWithOCSP(t *testing.T) {
	e := newRevocationEnv(t)
	tenant := newCheckTenant(t, e.srv, "mtls@example.com")
	ctx := context.Background()

	pool := x509.NewCertPool()
	pool.AddCert(e.ca)
	serverCert, serverPool := selfSigned(t)
	mtls := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.TLS.PeerCertificates[0].Subject.CommonName)
	}))
	mtls.TLS = &tls.Config{
		Certificates: []tls.Certificate{serverCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		VerifyPeerCertificate: func(_ [][]byte, chains [][]*x509.Certificate) error {
			return checkOCSP(chains[0][0], chains[0][1])
		},
	}
	mtls.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	mtls.StartTLS()
	t.Cleanup(mtls.Close)

	clientFor := func(c clientca.Cert) *http.Client {
		crt, err := e.srv.caStore.Download(ctx, tenant.id, c.ID, "crt")
		if err != nil {
			t.Fatal(err)
		}
		key, err := e.srv.caStore.Download(ctx, tenant.id, c.ID, "key")
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(crt, key)
		if err != nil {
			t.Fatal(err)
		}
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DisableKeepAlives: true, // a handshake per request
			TLSClientConfig:   &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: serverPool},
		}}
	}
	call := func(client *http.Client) (string, error) {
		resp, err := client.Get(mtls.URL)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return string(body), err
	}

	alice, _ := e.issue(tenant.id, "alice")
	bob, _ := e.issue(tenant.id, "bob")
	aliceClient, bobClient := clientFor(alice), clientFor(bob)
	if got, err := call(aliceClient); err != nil || got != "hello alice" {
		t.Fatalf("alice before revocation: got %q, %v, want hello alice", got, err)
	}
	e.revoke(tenant.id, alice, "keyCompromise")
	if got, err := call(aliceClient); err == nil {
		t.Errorf("alice after revocation: got %q, want the handshake refused", got)
	}
	if got, err := call(bobClient); err != nil || got != "hello bob" {
		t.Errorf("bob after alice's revocation: got %q, %v, want hello bob", got, err)
	}
	// Without a client certificate: refused by RequireAndVerifyClientCert.
	anon := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serverPool}}}
	if _, err := call(anon); err == nil {
		t.Error("no client certificate: accepted, want refused")
	}
}

// selfSigned returns a server certificate for 127.0.0.1 and a pool
// trusting it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	cert := testenv.SelfSigned(t, []string{"127.0.0.1"}, func(c *x509.Certificate) { c.Subject.CommonName = "mtls server" })
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	return cert, pool
}

// ocspStatusAnswer is /api/ocsp/status's answer or an error.
type ocspStatusAnswer struct {
	cmError
	clientcerts.OCSPStatus
}

// cmError is a CertMate error answer.
type cmError struct {
	Error  string `json:"error"`
	Code   string `json:"code"`
	Status int    `json:"status"`
}

// The CRL routes: DER without a key, PEM and info with a read key, the
// same CRL in each, a new number after a revocation, 304 on the ETag.
func TestCRLRoutes(t *testing.T) {
	e := newRevocationEnv(t)
	tenant := newCheckTenant(t, e.srv, "crl@example.com")
	other := newCheckTenant(t, e.srv, "other@example.com")

	resp, der := e.get("/api/crl/download/der", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/pkix-crl" ||
		!strings.Contains(resp.Header.Get("Content-Disposition"), "attachment") {
		t.Fatalf("DER without key: got HTTP %d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"))
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil || rl.CheckSignatureFrom(e.ca) != nil || rl.Number.Int64() != 1 {
		t.Fatalf("DER: got %v (%v), want CRL 1 signed by the CA", rl, err)
	}
	etag := resp.Header.Get("ETag")
	if resp, _ := e.get("/api/crl/download/der", "", "If-None-Match", etag); resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match %s: got HTTP %d, want 304", etag, resp.StatusCode)
	}

	var refused cmError
	if code := e.getJSON("/api/crl/download/pem", "", &refused); code != http.StatusUnauthorized || refused.Code != "UNAUTHORIZED" || refused.Status != 401 {
		t.Errorf("PEM without key: got HTTP %d %+v, want CertMate's 401", code, refused)
	}
	resp, body := e.get("/api/crl/download/pem", tenant.read)
	block, _ := pem.Decode(body)
	if resp.StatusCode != http.StatusOK || block == nil || block.Type != "X509 CRL" || !bytes.Equal(block.Bytes, der) {
		t.Errorf("PEM: got HTTP %d %q, want the DER's CRL in PEM", resp.StatusCode, body)
	}
	if got := resp.Header.Get("X-RateLimit-Limit"); got != "60" {
		t.Errorf("PEM X-RateLimit-Limit: got %q, want 60 (cm-crl)", got)
	}

	c, cert := e.issue(tenant.id, "revoked-one")
	e.revoke(tenant.id, c, "superseded")
	var got clientcerts.CRLInfo
	if code := e.getJSON("/api/crl/download/info", other.read, &got); code != http.StatusOK {
		t.Fatalf("info: HTTP %d %+v", code, got)
	}
	if got.Status != "available" || got.Issuer != e.ca.Subject.String() || got.CRLNumber != 2 || got.RevokedCount != 1 ||
		len(got.RevokedSerials) != 1 || got.RevokedSerials[0].String() != cert.SerialNumber.String() ||
		len(got.RevokedSerialNumbers) != 1 || got.RevokedSerialNumbers[0] != cert.SerialNumber.String() ||
		got.NextUpdate.Sub(got.LastUpdate) != 24*time.Hour {
		t.Errorf("info after a revocation: got %+v, want CRL 2 of 24h listing %s", got, cert.SerialNumber)
	}
	resp, der = e.get("/api/crl/download/der", "", "If-None-Match", etag)
	if rl, err := x509.ParseRevocationList(der); resp.StatusCode != http.StatusOK || err != nil || rl.Number.Int64() != 2 ||
		len(rl.RevokedCertificateEntries) != 1 || rl.RevokedCertificateEntries[0].ReasonCode != 4 {
		t.Errorf("DER after a revocation with the old ETag: got HTTP %d, %v, want CRL 2 with the entry (superseded)", resp.StatusCode, err)
	}
}

// CertMate's OCSP status JSON, and the responder's GET form.
func TestOCSPStatusRoute(t *testing.T) {
	e := newRevocationEnv(t)
	tenant := newCheckTenant(t, e.srv, "ocsp@example.com")
	other := newCheckTenant(t, e.srv, "other@example.com")
	c, cert := e.issue(tenant.id, "status")
	dec := cert.SerialNumber.String()
	hexSerial := fmt.Sprintf("0x%x", cert.SerialNumber)
	var colon []string
	for _, b := range cert.SerialNumber.Bytes() {
		colon = append(colon, fmt.Sprintf("%02X", b))
	}

	status := func(serial, key string) (int, ocspStatusAnswer) {
		var a ocspStatusAnswer
		code := e.getJSON("/api/ocsp/status/"+url.PathEscape(serial), key, &a)
		return code, a
	}
	openssl := fmt.Sprintf("serial=%X", cert.SerialNumber) // openssl x509 -noout -serial
	for _, serial := range []string{dec, hexSerial, strings.Join(colon, ":"), openssl} {
		code, a := status(serial, tenant.read)
		if code != http.StatusOK || a.ResponseStatus != "successful" || a.CertificateStatus != "good" ||
			a.CertificateSerial.String() != dec || a.SerialNumber != dec || a.Identifier != c.ID ||
			a.NextUpdate != nil || a.ResponderName != e.ca.Subject.String() || a.RevokedAt != nil {
			t.Errorf("status %s: got HTTP %d %+v, want good for %s", serial, code, a, dec)
		}
	}
	e.revoke(tenant.id, c, "compromised")
	if code, a := status(dec, tenant.read); code != http.StatusOK || a.CertificateStatus != "revoked" ||
		a.RevokedAt == nil || a.RevocationReason != "keyCompromise" {
		t.Errorf("after revocation: got HTTP %d %+v, want revoked, keyCompromise", code, a)
	}
	if code, a := status(dec, other.read); code != http.StatusOK || a.CertificateStatus != "unknown" || a.Identifier != "" || a.RevokedAt != nil {
		t.Errorf("another tenant's certificate: got HTTP %d %+v, want unknown and nothing about it", code, a)
	}
	if code, a := status("123456789", tenant.read); code != http.StatusOK || a.CertificateStatus != "unknown" {
		t.Errorf("never issued: got HTTP %d %+v, want unknown", code, a)
	}
	for _, bad := range []string{"abc", "-5", "0", "0x", "12ab", "serial=", "serial=xyz", "serial=-1"} {
		if code, a := status(bad, tenant.read); code != http.StatusBadRequest || a.Code != "BAD_REQUEST" || a.cmError.Status != 400 {
			t.Errorf("serial %q: got HTTP %d %+v, want CertMate's 400", bad, code, a)
		}
	}
	for _, long := range []string{"0x" + strings.Repeat("ab", 100), strings.Repeat("9", 65)} {
		if code, a := status(long, tenant.read); code != http.StatusBadRequest || !strings.HasPrefix(a.cmError.Error, "serial number too long: at most 64 digits") {
			t.Errorf("serial of %d characters: got HTTP %d %+v, want 400 serial number too long: at most 64 digits", len(long), code, a)
		}
	}
	if code, a := status(dec, ""); code != http.StatusUnauthorized || a.Code != "UNAUTHORIZED" {
		t.Errorf("no key: got HTTP %d %+v, want CertMate's 401", code, a)
	}

	// The GET form of the responder, with a base64 that needs escaping.
	req, err := ocsp.CreateRequest(cert, e.ca, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, body := e.get("/ocsp/"+url.PathEscape(base64.StdEncoding.EncodeToString(req)), "")
	if r, err := ocsp.ParseResponseForCert(body, cert, e.ca); resp.StatusCode != http.StatusOK ||
		resp.Header.Get("Content-Type") != "application/ocsp-response" || err != nil || r.Status != ocsp.Revoked {
		t.Errorf("GET /ocsp/...: got HTTP %d %q, %v, want a revoked answer", resp.StatusCode, resp.Header.Get("Content-Type"), err)
	}
	// Garbage is malformedRequest, still HTTP 200.
	r, err := http.Post(e.base+"/ocsp", "application/ocsp-request", strings.NewReader("garbage"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(r.Body)
	r.Body.Close()
	var re ocsp.ResponseError
	if _, err := ocsp.ParseResponse(body, nil); r.StatusCode != http.StatusOK || !errors.As(err, &re) || re.Status != ocsp.Malformed {
		t.Errorf("POST garbage: got HTTP %d, %v, want 200 malformedRequest", r.StatusCode, err)
	}
}

// Without a CA, the CRL is 503 in CertMate's shape and the responder says
// unauthorized.
func TestRevocationWithoutCA(t *testing.T) {
	srv, err := New(Config{}, testenv.Redis(t).Client(t), testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	resp, err := http.Get(hs.URL + "/api/crl/download/der")
	if err != nil {
		t.Fatal(err)
	}
	var body cmError
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || body.Code != "SERVICE_UNAVAILABLE" || body.Status != 503 {
		t.Errorf("CRL without CA: got HTTP %d %+v, want CertMate's 503", resp.StatusCode, body)
	}
	resp, err = http.Post(hs.URL+"/ocsp", "application/ocsp-request", bytes.NewReader(mustOCSPRequest(t)))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var re ocsp.ResponseError
	if _, err := ocsp.ParseResponse(raw, nil); !errors.As(err, &re) || re.Status != ocsp.Unauthorized {
		t.Errorf("OCSP without CA: got %v, want unauthorized", err)
	}
}

// mustOCSPRequest is a well-formed request about some certificate.
func mustOCSPRequest(t *testing.T) []byte {
	t.Helper()
	cert, _ := selfSigned(t)
	req, err := ocsp.CreateRequest(cert.Leaf, cert.Leaf, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// A certificate created and revoked through the client certificate API of
// one replica shows revoked at once in the OCSP of another, and in the next
// CRL that replica serves.
func TestRevocationAcrossReplicas(t *testing.T) {
	a := newRevocationEnv(t)
	rdb := a.srv.rdb
	b, err := New(Config{CA: clientcerts.Config{Passphrase: "revocation test passphrase", PublicURL: a.base}}, rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	hb := httptest.NewServer(b.Handler())
	t.Cleanup(hb.Close)
	replicaB := &revocationEnv{t: t, srv: b, base: hb.URL, ca: a.ca, dir: a.dir}
	tenant := newCheckTenant(t, a.srv, "replicas@example.com")

	post := func(path, body string) map[string]any {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, a.base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tenant.write)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode >= 300 {
			t.Fatalf("POST %s: HTTP %d %v (%v)", path, resp.StatusCode, out, err)
		}
		return out
	}
	created := post("/api/client-certs/create", `{"common_name":"replica-client","cert_usage":"vpn"}`)
	id, _ := created["identifier"].(string)
	serial, _ := created["serial_number"].(string)
	if id == "" || serial == "" {
		t.Fatalf("create: got %v, want identifier and serial_number", created)
	}
	var st ocspStatusAnswer
	if code := replicaB.getJSON("/api/ocsp/status/"+serial, tenant.read, &st); code != http.StatusOK || st.CertificateStatus != "good" {
		t.Fatalf("status on replica B before revocation: HTTP %d %+v, want good", code, st)
	}
	var info clientcerts.CRLInfo
	if code := replicaB.getJSON("/api/crl/download/info", tenant.read, &info); code != http.StatusOK || info.RevokedCount != 0 {
		t.Fatalf("CRL on replica B before revocation: HTTP %d %+v, want none revoked", code, info)
	}

	post("/api/client-certs/"+id+"/revoke", `{"reason":"affiliationChanged"}`)
	st = ocspStatusAnswer{}
	if code := replicaB.getJSON("/api/ocsp/status/"+serial, tenant.read, &st); code != http.StatusOK ||
		st.CertificateStatus != "revoked" || st.RevocationReason != "affiliationChanged" {
		t.Errorf("status on replica B after revocation on A: HTTP %d %+v, want revoked, affiliationChanged", code, st)
	}
	info = clientcerts.CRLInfo{}
	if code := replicaB.getJSON("/api/crl/download/info", tenant.read, &info); code != http.StatusOK ||
		info.CRLNumber != 2 || len(info.RevokedSerialNumbers) != 1 || info.RevokedSerialNumbers[0] != serial {
		t.Errorf("CRL on replica B after revocation on A: HTTP %d %+v, want CRL 2 listing %s", code, info, serial)
	}
	// Replica A serves that same CRL: it was built once.
	resp, der := a.get("/api/crl/download/der", "")
	if rl, err := x509.ParseRevocationList(der); resp.StatusCode != http.StatusOK || err != nil || rl.Number.Int64() != 2 {
		t.Errorf("CRL on replica A: HTTP %d %v, want number 2", resp.StatusCode, err)
	}
}

// CertMate's OCSP status and CRL info on the wire: every field its
// documentation shows, by its JSON name and with its JSON type (the
// serials as numbers, next_update null). The tests above read them
// through the Go types, which a renamed tag would not catch.
func TestRevocationJSONOnTheWire(t *testing.T) {
	e := newRevocationEnv(t)
	tenant := newCheckTenant(t, e.srv, "wire@example.com")
	c, cert := e.issue(tenant.id, "wire")
	e.revoke(tenant.id, c, "compromised")
	decode := func(path string) map[string]any {
		t.Helper()
		resp, body := e.get(path, tenant.read)
		d := json.NewDecoder(bytes.NewReader(body))
		d.UseNumber()
		var m map[string]any
		if resp.StatusCode != http.StatusOK || d.Decode(&m) != nil {
			t.Fatalf("%s: got HTTP %d %s", path, resp.StatusCode, body)
		}
		return m
	}
	isTime := func(v any) bool {
		s, ok := v.(string)
		_, err := time.Parse(time.RFC3339, s)
		return ok && err == nil
	}
	serial := cert.SerialNumber.String()

	st := decode("/api/ocsp/status/" + serial)
	for field, ok := range map[string]bool{
		"response_status":    st["response_status"] == "successful",
		"certificate_status": st["certificate_status"] == "revoked",
		"certificate_serial": st["certificate_serial"] == json.Number(serial),
		"this_update":        isTime(st["this_update"]),
		"next_update":        st["next_update"] == nil,
		"responder_name":     st["responder_name"] == e.ca.Subject.String(),
	} {
		if _, present := st[field]; !present || !ok {
			t.Errorf("ocsp status %s: got %#v (present %v)", field, st[field], present)
		}
	}

	info := decode("/api/crl/download/info")
	serials, _ := info["revoked_serials"].([]any)
	for field, ok := range map[string]bool{
		"status":          info["status"] == "available",
		"issuer":          info["issuer"] == e.ca.Subject.String(),
		"last_update":     isTime(info["last_update"]),
		"next_update":     isTime(info["next_update"]),
		"revoked_count":   info["revoked_count"] == json.Number("1"),
		"revoked_serials": len(serials) == 1 && serials[0] == json.Number(serial),
	} {
		if _, present := info[field]; !present || !ok {
			t.Errorf("crl info %s: got %#v (present %v)", field, info[field], present)
		}
	}
}
