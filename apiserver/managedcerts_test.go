package apiserver

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/managedcert"
	"github.com/certfleet/certfleet/internal/testenv"
)

const managedPassphrase = "managed certificates test passphrase"

func managedEnv(t *testing.T) *keyEnv {
	t.Helper()
	return newKeyEnv(t, Config{Notify: NotifyConfig{SecretsPassphrase: managedPassphrase,
		DNSTargets: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}})
}

const labAccount = `{"provider":"rfc2136","account_id":"lab","credentials":{"RFC2136_NAMESERVER":"127.0.0.1:5353",
  "RFC2136_TSIG_KEY":"lab.","RFC2136_TSIG_SECRET":"c2VjcmV0LXNlY3JldC1zZWNyZXQ=","RFC2136_TSIG_ALGORITHM":"hmac-sha256."}}`

func TestDNSAccountsAPI(t *testing.T) {
	e := managedEnv(t)
	key := e.bootstrapKey("ops@example.com", "read", "write")
	readKey := e.bootstrapKey("ops@example.com", "read")
	other := e.bootstrapKey("other@example.com", "read", "write")

	r := e.call(0, http.MethodPost, "/api/v1/dns-accounts", readKey, labAccount)
	wantV1Error(t, r, http.StatusForbidden, "write")
	r = e.call(0, http.MethodPost, "/api/v1/dns-accounts", key, labAccount)
	if r.code != http.StatusCreated || r.body["provider"] != "rfc2136" || len(r.body["credential_names"].([]any)) != 4 {
		t.Fatalf("create: got %d %v", r.code, r.body)
	}
	raw, _ := json.Marshal(r.body)
	if strings.Contains(string(raw), "c2VjcmV0") {
		t.Errorf("the answer carries the secret: %s", raw)
	}
	r = e.call(1, http.MethodGet, "/api/v1/dns-accounts", readKey, "")
	if list, _ := r.body["dns_accounts"].([]any); r.code != http.StatusOK || len(list) != 1 {
		t.Errorf("list: got %d %v", r.code, r.body)
	}
	if list, _ := e.call(1, http.MethodGet, "/api/v1/dns-accounts", other, "").body["dns_accounts"].([]any); len(list) != 0 {
		t.Errorf("another tenant lists %d accounts", len(list))
	}
	r = e.call(0, http.MethodGet, "/api/v1/dns-accounts/rfc2136/lab", other, "")
	wantV1Error(t, r, http.StatusNotFound, "not found")

	for _, tc := range []struct{ name, body, want string }{
		{"metadata endpoint", `{"provider":"httpreq","account_id":"x","credentials":{"HTTPREQ_ENDPOINT":"http://169.254.169.254/"}}`, "--allow-dns-targets"},
		{"exec", `{"provider":"exec","account_id":"x","credentials":{"EXEC_PATH":"/bin/sh"}}`, "operator"},
		{"server file", `{"provider":"rfc2136","account_id":"x","credentials":{"RFC2136_NAMESERVER":"127.0.0.1","RFC2136_TSIG_FILE":"/etc/shadow"}}`, "files"},
		{"no credentials", `{"provider":"rfc2136","account_id":"x"}`, "required"},
		{"unknown field", `{"provider":"rfc2136","account_id":"x","credentials":{"A":"b"},"extra":1}`, "unknown field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantV1Error(t, e.call(0, http.MethodPost, "/api/v1/dns-accounts", key, tc.body), http.StatusBadRequest, tc.want)
		})
	}
	if code, _, body := e.raw(0, http.MethodDelete, "/api/v1/dns-accounts/rfc2136/lab", key, ""); code != http.StatusNoContent {
		t.Errorf("delete: got %d %s", code, body)
	}
	if code, _, _ := e.raw(0, http.MethodDelete, "/api/v1/dns-accounts/rfc2136/lab", key, ""); code != http.StatusNotFound {
		t.Errorf("second delete: got %d, want 404", code)
	}
}

// issue writes an issued certificate for domain the way the ACME worker
// does (managedcert's SaveIssued), signed by a test CA, and returns its
// chain's root pool.
func issue(t *testing.T, e *keyEnv, tenant, domain string) *x509.CertPool {
	t.Helper()
	st, err := managedcert.New(managedcert.Config{Passphrase: managedPassphrase}, e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	root := testenv.NewCA(t, "test root")
	inter := root.Intermediate(t, "test issuing ca")
	cert := inter.Issue(t, []string{domain}, []*testenv.CA{inter})
	var chain bytes.Buffer
	for _, der := range cert.Certificate {
		_ = pem.Encode(&chain, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	m, leaf, err := managedcert.ParseMaterial(chain.Bytes(), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.SaveIssued(context.Background(), tenant, domain, m, leaf, time.Now().Add(60*24*time.Hour), "lifetime"); err != nil {
		t.Fatal(err)
	}
	return root.Pool()
}

func TestManagedCertificatesAPI(t *testing.T) {
	e := managedEnv(t)
	key := e.bootstrapKey("ops@example.com", "read", "write")
	readKey := e.bootstrapKey("ops@example.com", "read")
	other := e.bootstrapKey("other@example.com", "read", "write")
	if r := e.call(0, http.MethodPost, "/api/v1/dns-accounts", key, labAccount); r.code != http.StatusCreated {
		t.Fatalf("dns account: %d %v", r.code, r.body)
	}
	const create = `{"domain":"Shop.Example.com","san_domains":["*.example.com"],"dns_provider":"rfc2136","account_id":"lab"}`

	if code, _, _ := e.raw(0, http.MethodPost, "/api/certificates/create", readKey, create); code != http.StatusForbidden {
		t.Errorf("create with a read key: got %d, want 403", code)
	}
	r := e.call(0, http.MethodPost, "/api/certificates/create", key, create)
	if r.code != http.StatusAccepted || r.body["status"] != "pending" || r.body["domain"] != "shop.example.com" {
		t.Fatalf("create: got %d %v", r.code, r.body)
	}
	if code, _, _ := e.raw(0, http.MethodPost, "/api/certificates/create", key, create); code != http.StatusConflict {
		t.Errorf("second create: got %d, want 409", code)
	}
	for _, bad := range []string{
		`{"domain":"shop.example.com:443","dns_provider":"rfc2136","account_id":"lab"}`,
		`{"domain":"https://x.example.com","dns_provider":"rfc2136","account_id":"lab"}`,
		`{"domain":"a.example.com","dns_provider":"rfc2136","account_id":"nope"}`,
		`{"domain":"a.example.com","dns_provider":"rfc2136","account_id":"lab","key_type":"dsa"}`,
	} {
		if code, _, body := e.raw(0, http.MethodPost, "/api/certificates/create", key, bad); code != http.StatusBadRequest {
			t.Errorf("create %s: got %d %s, want 400", bad, code, body)
		}
	}
	// The managed name is monitored; the wildcard cannot be.
	r = e.call(1, http.MethodGet, "/api/v1/domains?search=shop.example.com", readKey, "")
	if data, _ := r.body["data"].([]any); len(data) != 1 {
		t.Errorf("monitored domains: got %v, want shop.example.com", r.body)
	}

	r = e.call(1, http.MethodGet, "/api/certificates/shop.example.com", readKey, "")
	if r.code != http.StatusOK || r.body["status"] != "pending" || r.body["serial"] != nil {
		t.Errorf("get pending: %d %v", r.code, r.body)
	}
	if code, _, _ := e.raw(1, http.MethodGet, "/api/certificates/shop.example.com", other, ""); code != http.StatusNotFound {
		t.Errorf("another tenant's certificate: got %d, want 404", code)
	}
	if code, _, _ := e.raw(0, http.MethodGet, "/api/certificates/shop.example.com/download?file=cert.pem", key, ""); code != http.StatusConflict {
		t.Errorf("download before issuance: got %d, want 409", code)
	}

	tenant, err := e.srv[0].accounts.EnsureAccount(context.Background(), "ops@example.com")
	if err != nil {
		t.Fatal(err)
	}
	roots := issue(t, e, tenant, "shop.example.com")
	r = e.call(0, http.MethodGet, "/api/certificates", readKey, "")
	if list, _ := r.body["certificates"].([]any); r.code != http.StatusOK || len(list) != 1 || list[0].(map[string]any)["status"] != "issued" {
		t.Fatalf("list: %d %v", r.code, r.body)
	}

	// Downloads: public files with read, private ones with write only.
	for _, tc := range []struct {
		query string
		key   string
		want  int
	}{
		{"?file=cert.pem", readKey, 200}, {"?file=chain.pem", readKey, 200}, {"?file=fullchain.pem", readKey, 200},
		{"?file=privkey.pem", readKey, 403}, {"?file=combined.pem", readKey, 403}, {"", readKey, 403}, {"?format=json", readKey, 403},
		{"?file=privkey.pem", key, 200}, {"?file=combined.pem", key, 200}, {"?file=../../etc/passwd", key, 400},
		{"?format=xml", key, 400}, {"", other, 404},
	} {
		if code, _, body := e.raw(0, http.MethodGet, "/api/certificates/shop.example.com/download"+tc.query, tc.key, ""); code != tc.want {
			t.Errorf("download %q: got %d %s, want %d", tc.query, code, body, tc.want)
		}
	}
	code, hdr, body := e.raw(0, http.MethodGet, "/api/certificates/shop.example.com/download", key, "")
	var zr *zip.Reader
	if code != http.StatusOK || hdr.Get("Content-Type") != "application/zip" {
		t.Fatalf("zip: %d %s", code, hdr.Get("Content-Type"))
	}
	zr, err = zip.NewReader(bytes.NewReader(body), int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, f := range zr.File {
		rc, _ := f.Open()
		var b bytes.Buffer
		_, _ = b.ReadFrom(rc)
		files[f.Name] = b.Bytes()
	}
	if len(files) != 4 {
		t.Fatalf("zip files: got %d, want cert, chain, fullchain, privkey", len(files))
	}
	pair, err := tls.X509KeyPair(files["fullchain.pem"], files["privkey.pem"])
	if err != nil {
		t.Fatalf("the zip's key does not match its certificate: %v", err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	inter := x509.NewCertPool()
	inter.AppendCertsFromPEM(files["chain.pem"])
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "shop.example.com", Roots: roots, Intermediates: inter}); err != nil {
		t.Errorf("the zip's chain does not verify: %v", err)
	}
	var js map[string]string
	code, _, body = e.raw(0, http.MethodGet, "/api/certificates/shop.example.com/download?format=json", key, "")
	if code != http.StatusOK || json.Unmarshal(body, &js) != nil || js["private_key_pem"] != string(files["privkey.pem"]) || js["domain"] != "shop.example.com" {
		t.Errorf("json download: %d %s", code, body)
	}
	// CertMate's JSON form holds every PEM the zip does, under its names.
	for field, file := range map[string]string{"cert_pem": "cert.pem", "chain_pem": "chain.pem", "fullchain_pem": "fullchain.pem"} {
		if got, ok := js[field]; !ok || got == "" || got != string(files[file]) {
			t.Errorf("json download %s: got %q, want the zip's %s", field, got, file)
		}
	}
	// Every download is audited, the private ones marked.
	audits := 0
	all, _ := events.ReadAllEvents(context.Background(), e.rdb)
	for _, ev := range all {
		if ev.Name == events.AuditRecorded && strings.Contains(string(ev.Payload), `"download"`) && strings.Contains(string(ev.Payload), `"private_key":true`) {
			audits++
		}
	}
	if audits < 4 {
		t.Errorf("audit records of private key downloads: got %d, want at least 4", audits)
	}

	// Renew, then delete with revocation (left to the worker), then plainly.
	if code, _, _ := e.raw(0, http.MethodPost, "/api/certificates/shop.example.com/renew", readKey, ""); code != http.StatusForbidden {
		t.Errorf("renew with a read key: got %d", code)
	}
	r = e.call(0, http.MethodPost, "/api/certificates/shop.example.com/renew", key, "")
	if r.code != http.StatusAccepted || r.body["renewing"] != true {
		t.Errorf("renew: %d %v", r.code, r.body)
	}
	r = e.call(0, http.MethodDelete, "/api/certificates/shop.example.com?revoke=true", key, "")
	if r.code != http.StatusAccepted {
		t.Errorf("delete with revoke: %d %v", r.code, r.body)
	}
	if code, _, _ := e.raw(0, http.MethodDelete, "/api/certificates/shop.example.com?revoke=maybe", key, ""); code != http.StatusBadRequest {
		t.Errorf("revoke=maybe: got %d", code)
	}
}
