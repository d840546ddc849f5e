package apiserver

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/certfleet/certfleet/apiserver/accounts"
	"github.com/certfleet/certfleet/apiserver/clientca"
	"github.com/certfleet/certfleet/apiserver/clientcerts"
	"github.com/certfleet/certfleet/apiserver/httpapi"
	"github.com/certfleet/certfleet/events"
	"github.com/certfleet/certfleet/internal/quota"
	"github.com/certfleet/certfleet/internal/testenv"
)

// caTestPassphrase seals the test CA's key.
const caTestPassphrase = "correct horse battery staple"

// newCAEnv is two replicas sharing one Redis with a client CA created at
// start (as --ca-init does).
func newCAEnv(t *testing.T) *keyEnv {
	t.Helper()
	return newKeyEnv(t, Config{CA: clientcerts.Config{Passphrase: caTestPassphrase, Init: true}})
}

// raw sends a request to replica i and returns the answer's status,
// header and body undecoded.
func (e *keyEnv) raw(i int, method, path, key, body string) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(method, e.urls[i]+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// wantCMError checks a CertMate error answer: status, and exactly
// {"error", "code", "status"} with an error containing wantMsg.
func wantCMError(t *testing.T, r v1Response, wantCode int, wantMsg string) {
	t.Helper()
	msg, _ := r.body["error"].(string)
	if r.code != wantCode || len(r.body) != 3 || !strings.Contains(msg, wantMsg) ||
		r.body["code"] != (&httpapi.Error{Status: wantCode}).Code() || r.body["status"] != float64(wantCode) {
		t.Errorf("got %d %v, want %d {error: ...%q..., code: %s, status: %d}", r.code, r.body, wantCode, wantMsg, (&httpapi.Error{Status: wantCode}).Code(), wantCode)
	}
}

// createCert creates a certificate through replica i and returns its
// identifier.
func (e *keyEnv) createCert(i int, key, body string) string {
	e.t.Helper()
	r := e.call(i, http.MethodPost, "/api/client-certs/create", key, body)
	if r.code != http.StatusCreated {
		e.t.Fatalf("create %s: got %d %v, want 201", body, r.code, r.body)
	}
	return r.body["identifier"].(string)
}

func parsePEMCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("got %q, want a PEM certificate", data)
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientCertLifecycle(t *testing.T) {
	e := newCAEnv(t)
	admin := e.bootstrapKey("ops@example.com", "read", "write")

	// The CA certificate needs no key.
	code, h, caPEM := e.raw(1, http.MethodGet, "/api/ca/certificate", "", "")
	if code != http.StatusOK || h.Get("Content-Type") != "application/x-pem-file" {
		t.Fatalf("CA certificate: got %d %q, want 200 application/x-pem-file", code, h.Get("Content-Type"))
	}
	ca := parsePEMCert(t, caPEM)
	if !ca.IsCA {
		t.Errorf("CA certificate: got IsCA false")
	}

	r := e.call(0, http.MethodPost, "/api/client-certs/create", admin, `{"common_name":"user@example.com",
		"email":"user@example.com","organization":"ACME Corp","organizational_unit":"Engineering",
		"cert_usage":"api-mtls","days_valid":365,"generate_key":true,"notes":"Production certificate"}`)
	if r.code != http.StatusCreated {
		t.Fatalf("create: got %d %v, want 201", r.code, r.body)
	}
	id, _ := r.body["identifier"].(string)
	serial, _ := r.body["serial_number"].(string)
	wantCreated := map[string]any{"identifier": id, "common_name": "user@example.com", "serial_number": serial,
		"created_at": now.Format(time.RFC3339), "expires_at": now.AddDate(0, 0, 365).Format(time.RFC3339),
		"cert_usage": "api-mtls", "status": "active"}
	if !reflect.DeepEqual(r.body, wantCreated) || id == "" || serial == "" {
		t.Errorf("create:\n got %v\nwant %v", r.body, wantCreated)
	}

	// The other replica shows it, CertMate's blocks included.
	r = e.call(1, http.MethodGet, "/api/client-certs/"+id, admin, "")
	wantDetail := map[string]any{"type": "client_certificate", "identifier": id, "common_name": "user@example.com",
		"email": "user@example.com", "organization": "ACME Corp", "organizational_unit": "Engineering",
		"serial_number": serial, "created_at": now.Format(time.RFC3339), "expires_at": now.AddDate(0, 0, 365).Format(time.RFC3339),
		"cert_usage": "api-mtls", "notes": "Production certificate", "status": "active", "key_generated": true,
		"renewed_from": nil, "renewed_by": nil,
		"revocation": map[string]any{"revoked": false, "revoked_at": nil, "reason_revoked": nil},
		"renewal":    map[string]any{"renewal_enabled": true, "renewal_threshold_days": 30.0}}
	if r.code != http.StatusOK || !reflect.DeepEqual(r.body, wantDetail) {
		t.Errorf("get:\n got %d %v\nwant 200 %v", r.code, r.body, wantDetail)
	}

	// Downloads: a client certificate signed by the CA, its key, its CSR.
	code, h, crtPEM := e.raw(1, http.MethodGet, "/api/client-certs/"+id+"/download/crt", admin, "")
	if code != http.StatusOK || h.Get("Content-Disposition") != `attachment; filename="`+id+`.crt"` ||
		h.Get("Content-Type") != "application/octet-stream" {
		t.Fatalf("download crt: got %d %v", code, h)
	}
	crt := parsePEMCert(t, crtPEM)
	if err := crt.CheckSignatureFrom(ca); err != nil {
		t.Errorf("certificate not signed by the CA: %v", err)
	}
	if crt.SerialNumber.String() != serial || crt.Subject.CommonName != "user@example.com" ||
		!reflect.DeepEqual(crt.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) ||
		!reflect.DeepEqual(crt.EmailAddresses, []string{"user@example.com"}) {
		t.Errorf("certificate: got serial %s, subject %s, EKU %v, emails %v", crt.SerialNumber, crt.Subject, crt.ExtKeyUsage, crt.EmailAddresses)
	}
	code, h, keyPEM := e.raw(0, http.MethodGet, "/api/client-certs/"+id+"/download/key", admin, "")
	if code != http.StatusOK || h.Get("Content-Disposition") != `attachment; filename="`+id+`.key"` || h.Get("Cache-Control") != "no-store" {
		t.Fatalf("download key: got %d %v", code, h)
	}
	if _, err := tls.X509KeyPair(crtPEM, keyPEM); err != nil {
		t.Errorf("key does not match the certificate: %v", err)
	}
	code, _, csrPEM := e.raw(0, http.MethodGet, "/api/client-certs/"+id+"/download/csr", admin, "")
	if b, _ := pem.Decode(csrPEM); code != http.StatusOK || b == nil || b.Type != "CERTIFICATE REQUEST" {
		t.Errorf("download csr: got %d %q", code, csrPEM)
	}
	wantCMError(t, e.call(0, http.MethodGet, "/api/client-certs/"+id+"/download/pfx", admin, ""), 400, "download type must be crt, key or csr")

	// Revoke with CertMate's reason: keyCompromise, shown at once on the
	// other replica; a second revocation conflicts.
	e.clock.Add(time.Minute)
	r = e.call(0, http.MethodPost, "/api/client-certs/"+id+"/revoke", admin, `{"reason":"compromised"}`)
	revokedAt := now.Add(time.Minute).Format(time.RFC3339)
	wantRevoked := map[string]any{"message": "Certificate revoked: " + id, "revoked_at": revokedAt, "reason": "keyCompromise"}
	if r.code != http.StatusOK || !reflect.DeepEqual(r.body, wantRevoked) {
		t.Errorf("revoke: got %d %v, want 200 %v", r.code, r.body, wantRevoked)
	}
	r = e.call(1, http.MethodGet, "/api/client-certs/"+id, admin, "")
	wantRevocation := map[string]any{"revoked": true, "revoked_at": revokedAt, "reason_revoked": "keyCompromise"}
	if !reflect.DeepEqual(r.body["revocation"], wantRevocation) || r.body["status"] != "revoked" {
		t.Errorf("revoked certificate: got %v, want status revoked and %v", r.body, wantRevocation)
	}
	wantCMError(t, e.call(1, http.MethodPost, "/api/client-certs/"+id+"/revoke", admin, ""), 409, "Certificate already revoked: "+id)
	wantCMError(t, e.call(1, http.MethodPost, "/api/client-certs/"+id+"/renew", admin, ""), 409, "Certificate is revoked: "+id)

	evs := keyEvents(t, e.rdb)
	if len(evs[events.ClientCertIssued]) != 1 || len(evs[events.ClientCertRevoked]) != 1 {
		t.Errorf("events: got %d issued, %d revoked, want 1 and 1", len(evs[events.ClientCertIssued]), len(evs[events.ClientCertRevoked]))
	}
}

// csrPEM returns a PEM CSR for cn signed by a new ECDSA key, and the key.
func csrPEM(t *testing.T, cn string) (string, *ecdsa.PrivateKey) {
	t.Helper()
	csr, key := testenv.CSR(t, cn)
	return string(csr), key
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func TestClientCertFromCSR(t *testing.T) {
	e := newCAEnv(t)
	admin := e.bootstrapKey("ops@example.com", "read", "write")
	csr, key := csrPEM(t, "ignored-cn")
	id := e.createCert(0, admin, `{"common_name":"vpn-laptop","cert_usage":"vpn","generate_key":false,"csr":`+jsonString(csr)+`}`)

	code, _, crtPEM := e.raw(1, http.MethodGet, "/api/client-certs/"+id+"/download/crt", admin, "")
	crt := parsePEMCert(t, crtPEM)
	if code != http.StatusOK || !crt.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) || crt.Subject.CommonName != "vpn-laptop" {
		t.Errorf("certificate for the CSR: got %d, subject %s, want the CSR's key and the request's subject", code, crt.Subject)
	}
	if code, _, got := e.raw(1, http.MethodGet, "/api/client-certs/"+id+"/download/csr", admin, ""); code != http.StatusOK || string(got) != csr {
		t.Errorf("download csr: got %d %q, want the CSR sent", code, got)
	}
	wantCMError(t, e.call(1, http.MethodGet, "/api/client-certs/"+id+"/download/key", admin, ""), 404, "Private key not available for "+id)
	if r := e.call(0, http.MethodGet, "/api/client-certs/"+id, admin, ""); r.body["key_generated"] != false {
		t.Errorf("key_generated: got %v, want false", r.body["key_generated"])
	}

	// A CSR whose signature does not verify is refused.
	b, _ := pem.Decode([]byte(csr))
	bad := bytes.Clone(b.Bytes)
	bad[len(bad)-3] ^= 0xff
	badPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: bad}))
	r := e.call(0, http.MethodPost, "/api/client-certs/create", admin, `{"common_name":"x","generate_key":false,"csr":`+jsonString(badPEM)+`}`)
	if r.code != http.StatusBadRequest || !strings.Contains(r.body["error"].(string), "csr") {
		t.Errorf("bad CSR signature: got %d %v, want 400 about the csr", r.code, r.body)
	}
}

func TestClientCertRenew(t *testing.T) {
	e := newCAEnv(t)
	admin := e.bootstrapKey("ops@example.com", "read", "write")
	id := e.createCert(0, admin, `{"common_name":"svc-a","organization":"ACME","cert_usage":"api-mtls","days_valid":90}`)
	_, _, oldPEM := e.raw(0, http.MethodGet, "/api/client-certs/"+id+"/download/crt", admin, "")
	old := parsePEMCert(t, oldPEM)

	e.clock.Add(24 * time.Hour)
	r := e.call(1, http.MethodPost, "/api/client-certs/"+id+"/renew", admin, "")
	newID, _ := r.body["identifier"].(string)
	renewedAt := now.Add(24 * time.Hour)
	want := map[string]any{"identifier": newID, "common_name": "svc-a", "serial_number": r.body["serial_number"],
		"created_at": renewedAt.Format(time.RFC3339), "expires_at": renewedAt.AddDate(0, 0, 90).Format(time.RFC3339),
		"cert_usage": "api-mtls", "status": "active", "renewed_from": id}
	if r.code != http.StatusCreated || !reflect.DeepEqual(r.body, want) || newID == id {
		t.Fatalf("renew:\n got %d %v\nwant 201 %v", r.code, r.body, want)
	}
	_, _, newPEM := e.raw(0, http.MethodGet, "/api/client-certs/"+newID+"/download/crt", admin, "")
	renewed := parsePEMCert(t, newPEM)
	if renewed.SerialNumber.Cmp(old.SerialNumber) == 0 || renewed.Subject.String() != old.Subject.String() ||
		renewed.PublicKey.(*ecdsa.PublicKey).Equal(old.PublicKey) {
		t.Errorf("renewed: got serial %s subject %s, want a new serial, subject %s and a new key", renewed.SerialNumber, renewed.Subject, old.Subject)
	}
	if r := e.call(0, http.MethodGet, "/api/client-certs/"+id, admin, ""); r.body["renewed_by"] != newID || r.body["status"] != "active" {
		t.Errorf("old certificate: got %v, want renewed_by %s and still active", r.body, newID)
	}
	if r := e.call(0, http.MethodGet, "/api/client-certs/"+newID, admin, ""); r.body["renewed_from"] != id {
		t.Errorf("new certificate: got renewed_from %v, want %s", r.body["renewed_from"], id)
	}
	wantCMError(t, e.call(0, http.MethodPost, "/api/client-certs/"+id+"/renew", admin, ""), 409, "Certificate already renewed: "+id)
	wantCMError(t, e.call(0, http.MethodPost, "/api/client-certs/cert-00000000000000000000/renew", admin, ""), 404, "Certificate not found: cert-00000000000000000000")
}

func TestClientCertListAndStats(t *testing.T) {
	e := newCAEnv(t)
	admin := e.bootstrapKey("ops@example.com", "read", "write")
	a := e.createCert(0, admin, `{"common_name":"Alice Laptop","cert_usage":"vpn"}`)
	e.clock.Add(time.Second)
	b := e.createCert(1, admin, `{"common_name":"billing-api","cert_usage":"api-mtls","days_valid":20}`)
	e.clock.Add(time.Second)
	c := e.createCert(0, admin, `{"common_name":"alice-phone","renewal_enabled":false}`)
	e.clock.Add(time.Second)
	d := e.createCert(0, admin, `{"common_name":"old","cert_usage":"vpn","days_valid":1}`)
	if r := e.call(0, http.MethodPost, "/api/client-certs/"+c+"/revoke", admin, `{"reason":"superseded"}`); r.code != http.StatusOK {
		t.Fatalf("revoke: got %d %v", r.code, r.body)
	}
	e.clock.Add(2 * 24 * time.Hour) // d expires

	ids := func(r v1Response) []string {
		var out []string
		certs, _ := r.body["certificates"].([]any)
		for _, c := range certs {
			out = append(out, c.(map[string]any)["identifier"].(string))
		}
		if total, _ := r.body["total"].(float64); int(total) != len(out) {
			t.Errorf("total: got %v, want %d", r.body["total"], len(out))
		}
		return out
	}
	tests := []struct {
		query string
		want  []string
	}{
		{"", []string{d, c, b, a}},
		{"?usage=vpn", []string{d, a}},
		{"?usage=api", nil},
		{"?revoked=true", []string{c}},
		{"?revoked=false", []string{d, b, a}},
		{"?search=ALICE", []string{c, a}},
		{"?search=alice&revoked=false", []string{a}},
		{"?search=nobody", nil},
	}
	for _, tc := range tests {
		t.Run("list"+tc.query, func(t *testing.T) {
			r := e.call(1, http.MethodGet, "/api/client-certs"+tc.query, admin, "")
			if got := ids(r); r.code != http.StatusOK || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %d %v, want %v", r.code, got, tc.want)
			}
		})
	}
	r := e.call(0, http.MethodGet, "/api/client-certs", admin, "")
	first := r.body["certificates"].([]any)[3].(map[string]any)
	wantItem := map[string]any{"identifier": a, "common_name": "Alice Laptop", "email": "", "organization": "",
		"cert_usage": "vpn", "serial_number": first["serial_number"], "created_at": now.Format(time.RFC3339),
		"expires_at": now.AddDate(0, 0, 365).Format(time.RFC3339), "revoked": false, "status": "active"}
	if !reflect.DeepEqual(first, wantItem) {
		t.Errorf("list item:\n got %v\nwant %v", first, wantItem)
	}
	if r := e.call(0, http.MethodGet, "/api/client-certs?revoked=yes", admin, ""); r.code != http.StatusBadRequest {
		t.Errorf("revoked=yes: got %d %v, want 400", r.code, r.body)
	}

	r = e.call(1, http.MethodGet, "/api/client-certs/stats", admin, "")
	wantStats := map[string]any{"total": 4.0, "active": 2.0, "revoked": 1.0, "expired": 1.0, "expiring_soon": 1.0,
		"by_usage": map[string]any{"vpn": 2.0, "api-mtls": 1.0, "other": 1.0}, "created_count": 4.0, "renewal_enabled": 2.0}
	if r.code != http.StatusOK || !reflect.DeepEqual(r.body, wantStats) {
		t.Errorf("stats:\n got %d %v\nwant 200 %v", r.code, r.body, wantStats)
	}
}

func TestClientCertBatch(t *testing.T) {
	e := newCAEnv(t)
	admin := e.bootstrapKey("ops@example.com", "read", "write")
	r := e.call(0, http.MethodPost, "/api/client-certs/batch", admin, `{
		"headers": ["common_name", "email", "organization", "cert_usage", "days_valid"],
		"rows": [
			["user1@example.com", "user1@example.com", "ACME Corp", "api-mtls", "365"],
			["", "nobody@example.com", "ACME Corp", "vpn", "365"],
			["user3@example.com", "not an address", "ACME Corp", "vpn", "365"],
			["user4@example.com", "user4@example.com", "ACME Corp", "vpn", 30],
			["user5@example.com", "user5@example.com", "ACME Corp", "vpn", "a year"],
			["user6@example.com", "user6@example.com"],
			["user7@example.com", null, null, null, 0],
			["user8@example.com", {"x":1}, "ACME Corp", "vpn", "365"],
			["user9@example.com", null, "ACME Corp", "vpn", null]
		]}`)
	if r.code != http.StatusCreated {
		t.Fatalf("batch: got %d %v, want 201", r.code, r.body)
	}
	if r.body["total"] != 9.0 || r.body["successful"] != 3.0 || r.body["failed"] != 6.0 {
		t.Errorf("counts: got total %v successful %v failed %v, want 9, 3, 6", r.body["total"], r.body["successful"], r.body["failed"])
	}
	wantErrors := []any{
		map[string]any{"row": 2.0, "common_name": "", "error": "common_name is required"},
		map[string]any{"row": 3.0, "common_name": "user3@example.com", "error": `email "not an address" is not a valid address`},
		map[string]any{"row": 5.0, "common_name": "user5@example.com", "error": `days_valid must be a whole number, got "a year"`},
		map[string]any{"row": 6.0, "common_name": "user6@example.com", "error": "row has 2 cells, want 5 (one per header)"},
		map[string]any{"row": 7.0, "common_name": "user7@example.com", "error": "days_valid must be 1 to 3650, got 0"},
		map[string]any{"row": 8.0, "common_name": "user8@example.com", "error": "email must be a string, number or boolean"},
	}
	if !reflect.DeepEqual(r.body["errors"], wantErrors) {
		t.Errorf("errors:\n got %v\nwant %v", r.body["errors"], wantErrors)
	}
	certs, _ := r.body["certificates"].([]any)
	var rows []float64
	for _, c := range certs {
		m := c.(map[string]any)
		rows = append(rows, m["row"].(float64))
		// Each one is there, as the batch said.
		got := e.call(1, http.MethodGet, "/api/client-certs/"+m["identifier"].(string), admin, "")
		if got.code != http.StatusOK || got.body["common_name"] != m["common_name"] || got.body["serial_number"] != m["serial_number"] {
			t.Errorf("created %v: got %d %v", m, got.code, got.body)
		}
	}
	if !reflect.DeepEqual(rows, []float64{1, 4, 9}) {
		t.Errorf("created rows: got %v, want 1, 4, 9", rows)
	}
	if r := e.call(0, http.MethodGet, "/api/client-certs/"+certs[1].(map[string]any)["identifier"].(string), admin, ""); r.body["expires_at"] != now.AddDate(0, 0, 30).Format(time.RFC3339) {
		t.Errorf("days_valid as a number: got expiry %v, want 30 days", r.body["expires_at"])
	}
	if n := len(keyEvents(t, e.rdb)[events.ClientCertIssued]); n != 3 {
		t.Errorf("issued events: got %d, want 3", n)
	}

	// Nothing created: 200 with the errors.
	r = e.call(1, http.MethodPost, "/api/client-certs/batch", admin, `{"headers":["common_name"],"rows":[[""]]}`)
	if r.code != http.StatusOK || r.body["successful"] != 0.0 || r.body["failed"] != 1.0 || !reflect.DeepEqual(r.body["certificates"], []any{}) {
		t.Errorf("all rows bad: got %d %v, want 200 with one error", r.code, r.body)
	}

	rows100 := strings.TrimSuffix(strings.Repeat(`["x"],`, clientcerts.MaxBatchRows+1), ",")
	tests := []struct{ name, body, wantMsg string }{
		{"unknown column", `{"headers":["common_name","password"],"rows":[["a","b"]]}`, `unknown column "password"`},
		{"repeated column", `{"headers":["common_name","common_name"],"rows":[["a","b"]]}`, `column "common_name" appears twice`},
		{"no common_name", `{"headers":["email"],"rows":[["a@example.com"]]}`, "headers must name the common_name column"},
		{"no headers", `{"rows":[["a"]]}`, "headers is required"},
		{"no rows", `{"headers":["common_name"],"rows":[]}`, "rows is required"},
		{"too many rows", `{"headers":["common_name"],"rows":[` + rows100 + `]}`, "at most 100 rows in one batch, got 101"},
		{"rows not arrays", `{"headers":["common_name"],"rows":["a"]}`, `field "rows" must be`},
		{"unknown field", `{"headers":["common_name"],"rows":[["a"]],"mode":"x"}`, `unknown field "mode"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantCMError(t, e.call(0, http.MethodPost, "/api/client-certs/batch", admin, tc.body), http.StatusBadRequest, tc.wantMsg)
		})
	}
}

func TestClientCertTenancyAndScopes(t *testing.T) {
	e := newCAEnv(t)
	alice := e.bootstrapKey("alice@example.com", "read", "write")
	bob := e.bootstrapKey("bob@example.com", "read", "write")
	aliceReader := e.bootstrapKey("alice@example.com", "read")
	aliceWriter := e.bootstrapKey("alice@example.com", "write")
	id := e.createCert(0, alice, `{"common_name":"alice-only"}`)

	for _, path := range []string{"/api/client-certs/" + id, "/api/client-certs/" + id + "/download/crt", "/api/client-certs/" + id + "/download/key"} {
		wantCMError(t, e.call(1, http.MethodGet, path, bob, ""), http.StatusNotFound, "Certificate not found: "+id)
	}
	wantCMError(t, e.call(1, http.MethodPost, "/api/client-certs/"+id+"/revoke", bob, ""), http.StatusNotFound, "Certificate not found: "+id)
	wantCMError(t, e.call(1, http.MethodPost, "/api/client-certs/"+id+"/renew", bob, ""), http.StatusNotFound, "Certificate not found: "+id)
	wantCMError(t, e.call(1, http.MethodGet, "/api/client-certs/not-an-id", bob, ""), http.StatusNotFound, "Certificate not found: not-an-id")
	if r := e.call(1, http.MethodGet, "/api/client-certs", bob, ""); r.body["total"] != 0.0 {
		t.Errorf("bob's list: got %v, want none", r.body)
	}
	if r := e.call(1, http.MethodGet, "/api/client-certs/stats", bob, ""); r.body["total"] != 0.0 {
		t.Errorf("bob's stats: got %v, want none", r.body)
	}
	// Bob's failed revocation changed nothing.
	if r := e.call(0, http.MethodGet, "/api/client-certs/"+id, alice, ""); r.body["status"] != "active" {
		t.Errorf("alice's certificate: got %v, want active", r.body)
	}

	tests := []struct {
		name, method, path, key, body string
		wantCode                      int
	}{
		{"read key cannot create", http.MethodPost, "/api/client-certs/create", aliceReader, `{"common_name":"x"}`, 403},
		{"read key cannot batch", http.MethodPost, "/api/client-certs/batch", aliceReader, `{"headers":["common_name"],"rows":[["x"]]}`, 403},
		{"read key cannot revoke", http.MethodPost, "/api/client-certs/" + id + "/revoke", aliceReader, "", 403},
		{"read key cannot renew", http.MethodPost, "/api/client-certs/" + id + "/renew", aliceReader, "", 403},
		{"write-only key cannot list", http.MethodGet, "/api/client-certs", aliceWriter, "", 403},
		{"write-only key cannot get", http.MethodGet, "/api/client-certs/" + id, aliceWriter, "", 403},
		{"write-only key cannot download", http.MethodGet, "/api/client-certs/" + id + "/download/key", aliceWriter, "", 403},
		{"write-only key cannot read stats", http.MethodGet, "/api/client-certs/stats", aliceWriter, "", 403},
		{"no key", http.MethodGet, "/api/client-certs", "", "", 401},
		{"no key to create", http.MethodPost, "/api/client-certs/create", "", `{"common_name":"x"}`, 401},
		{"read key cannot download the private key", http.MethodGet, "/api/client-certs/" + id + "/download/key", aliceReader, "", 403},
		{"read key downloads the certificate", http.MethodGet, "/api/client-certs/" + id + "/download/crt", aliceReader, "", 200},
		{"read key downloads the CSR", http.MethodGet, "/api/client-certs/" + id + "/download/csr", aliceReader, "", 200},
		{"read and write key downloads the private key", http.MethodGet, "/api/client-certs/" + id + "/download/key", alice, "", 200},
		{"write-only key creates", http.MethodPost, "/api/client-certs/create", aliceWriter, `{"common_name":"x"}`, 201},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := e.raw(0, tc.method, tc.path, tc.key, tc.body)
			if code != tc.wantCode {
				t.Fatalf("got %d %s, want %d", code, body, tc.wantCode)
			}
			var got map[string]any
			_ = json.Unmarshal(body, &got)
			switch code {
			case 401:
				wantCMError(t, v1Response{code: code, body: got}, code, "Missing or invalid API key")
			case 403:
				wantCMError(t, v1Response{code: code, body: got}, code, "API key lacks the")
			}
			if strings.HasSuffix(tc.path, "/download/key") && tc.key == aliceReader {
				wantCMError(t, v1Response{code: code, body: got}, code,
					"API key lacks the write permission, which downloading a private key needs (read is enough for crt and csr)")
			}
			if tc.wantCode == 200 && strings.HasSuffix(tc.path, "/download/key") && !bytes.Contains(body, []byte("PRIVATE KEY")) {
				t.Errorf("got %q, want the private key", body)
			}
		})
	}
}

func TestClientCertCreateValidation(t *testing.T) {
	e := newKeyEnv(t, Config{MaxBodyBytes: 4096, CA: clientcerts.Config{Passphrase: caTestPassphrase, Init: true}})
	admin := e.bootstrapKey("ops@example.com", "read", "write")
	tests := []struct{ name, body, wantMsg string }{
		{"no common_name", `{"email":"a@example.com"}`, "common_name is required"},
		{"blank common_name", `{"common_name":"  "}`, "common_name is required"},
		{"long common_name", `{"common_name":"` + strings.Repeat("x", 65) + `"}`, "common_name must be at most 64 characters"},
		{"control character", `{"common_name":"a\nb"}`, "common_name must not contain control characters"},
		{"control character in notes", `{"common_name":"a","notes":"line\nnext\u001b[2J"}`, "notes must not contain control characters"},
		{"right-to-left override", `{"common_name":"evil\u202egpj.exe"}`, "common_name must not contain control characters"},
		{"bad email", `{"common_name":"a","email":"Alice <a@example.com>"}`, "is not a valid address"},
		{"days_valid 0", `{"common_name":"a","days_valid":0}`, "days_valid must be 1 to 3650, got 0"},
		{"days_valid too long", `{"common_name":"a","days_valid":3651}`, "days_valid must be 1 to 3650"},
		{"days_valid not a number", `{"common_name":"a","days_valid":"365"}`, `field "days_valid" must be a whole number`},
		{"generate_key not a boolean", `{"common_name":"a","generate_key":"yes"}`, `field "generate_key" must be a boolean`},
		{"csr without generate_key false", `{"common_name":"a","csr":"x"}`, "csr must not be given with generate_key true"},
		{"no csr", `{"common_name":"a","generate_key":false}`, "csr is required when generate_key is false"},
		{"csr not PEM", `{"common_name":"a","generate_key":false,"csr":"hello"}`, "csr"},
		{"unknown key type", `{"common_name":"a","key_type":"dsa"}`, "key_type must be"},
		{"threshold 0", `{"common_name":"a","renewal_threshold_days":0}`, "renewal_threshold_days must be 1 to 365"},
		{"threshold over validity", `{"common_name":"a","days_valid":10,"renewal_threshold_days":10}`, "renewal_threshold_days must be 1 to 365 and below days_valid"},
		{"long notes", `{"common_name":"a","notes":"` + strings.Repeat("n", 1001) + `"}`, "notes must be at most 1000 characters"},
		{"two problems", `{"common_name":"","days_valid":4000}`, "common_name is required; days_valid must be 1 to 3650"},
		{"unknown field", `{"common_name":"a","usage":"vpn"}`, `unknown field "usage"`},
		{"repeated field", `{"common_name":"a","days_valid":30,"common_name":"b"}`, `duplicate field "common_name"`},
		{"empty body", ``, "request body is empty"},
		{"not JSON", `common_name=a`, "not valid JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantCMError(t, e.call(0, http.MethodPost, "/api/client-certs/create", admin, tc.body), http.StatusBadRequest, tc.wantMsg)
		})
	}
	// A body over the limit is a 413 in the CertMate shape (TestOversizedBodiesAre413 for every route).
	wantCMError(t, e.call(0, http.MethodPost, "/api/client-certs/create", admin, `{"common_name":"`+strings.Repeat("x", 5000)+`"}`),
		http.StatusRequestEntityTooLarge, "request body too large: at most 4096 bytes")
	if n := len(keyEvents(t, e.rdb)[events.ClientCertIssued]); n != 0 {
		t.Errorf("issued events after refused creates: got %d, want 0", n)
	}
	// Revoke's body is optional, and checked when given.
	id := e.createCert(0, admin, `{"common_name":"a"}`)
	wantCMError(t, e.call(0, http.MethodPost, "/api/client-certs/"+id+"/revoke", admin, `{"reason":"lost it"}`), 400, `reason must be one of unspecified, keyCompromise`)
	wantCMError(t, e.call(0, http.MethodPost, "/api/client-certs/"+id+"/revoke", admin, `{"why":"x"}`), 400, `unknown field "why"`)
	if r := e.call(0, http.MethodPost, "/api/client-certs/"+id+"/revoke", admin, " "); r.code != http.StatusOK || r.body["reason"] != "unspecified" {
		t.Errorf("revoke without a body: got %d %v, want 200 unspecified", r.code, r.body)
	}
}

// TestClientCertRateLimits: creation is limited to 30 a minute per key
// across replicas, batches to 10; a 429 is CertMate's.
func TestClientCertRateLimits(t *testing.T) {
	e := newCAEnv(t)
	admin := e.bootstrapKey("ops@example.com", "read", "write")
	for i := range clientcerts.RateCreate {
		e.createCert(i%2, admin, `{"common_name":"c`+strconv.Itoa(i)+`"}`)
	}
	r := e.call(1, http.MethodPost, "/api/client-certs/create", admin, `{"common_name":"one too many"}`)
	retry, _ := strconv.Atoi(r.header.Get("Retry-After"))
	want := map[string]any{"error": "Rate limit exceeded", "message": "Too many requests. Please try again later.", "retry_after": float64(retry)}
	if r.code != http.StatusTooManyRequests || retry < 1 || retry > 2 || !reflect.DeepEqual(r.body, want) {
		t.Errorf("create over the limit: got %d %v (Retry-After %q), want 429 %v", r.code, r.body, r.header.Get("Retry-After"), want)
	}
	// Reads still go (cm-general: 100).
	if r := e.call(0, http.MethodGet, "/api/client-certs", admin, ""); r.code != http.StatusOK || r.body["total"] != float64(clientcerts.RateCreate) {
		t.Errorf("list after the create limit: got %d total %v, want 200 %d", r.code, r.body["total"], clientcerts.RateCreate)
	}

	batcher := e.bootstrapKey("ops@example.com", "read", "write")
	for i := range clientcerts.RateBatch {
		if r := e.call(i%2, http.MethodPost, "/api/client-certs/batch", batcher, `{"headers":["common_name"],"rows":[[""]]}`); r.code != http.StatusOK {
			t.Fatalf("batch %d: got %d %v", i+1, r.code, r.body)
		}
	}
	r = e.call(0, http.MethodPost, "/api/client-certs/batch", batcher, `{"headers":["common_name"],"rows":[[""]]}`)
	if r.code != http.StatusTooManyRequests || r.body["error"] != "Rate limit exceeded" || r.header.Get("X-RateLimit-Limit") != strconv.Itoa(clientcerts.RateBatch) {
		t.Errorf("batch over the limit: got %d %v %v, want 429 with X-RateLimit-Limit %d", r.code, r.body, r.header, clientcerts.RateBatch)
	}
}

func TestClientCertAutoRenewal(t *testing.T) {
	ctx := context.Background()
	e := newCAEnv(t)
	admin := e.bootstrapKey("ops@example.com", "read", "write")
	soon := e.createCert(0, admin, `{"common_name":"soon","days_valid":10,"renewal_threshold_days":3}`)
	later := e.createCert(0, admin, `{"common_name":"later","days_valid":30,"renewal_threshold_days":3}`)
	off := e.createCert(0, admin, `{"common_name":"off","days_valid":10,"renewal_threshold_days":3,"renewal_enabled":false}`)
	gone := e.createCert(0, admin, `{"common_name":"gone","days_valid":10,"renewal_threshold_days":3}`)
	if r := e.call(0, http.MethodPost, "/api/client-certs/"+gone+"/revoke", admin, ""); r.code != http.StatusOK {
		t.Fatalf("revoke: got %d %v", r.code, r.body)
	}
	if n, err := e.srv[0].certs.RenewDue(ctx); err != nil || n != 0 {
		t.Fatalf("pass before anything is due: got %d %v, want 0", n, err)
	}

	// 7 days on, soon is due (3 days before its expiry); two replicas
	// renew it once between them.
	e.clock.Add(7 * 24 * time.Hour)
	var wg sync.WaitGroup
	counts := make([]int, len(e.srv))
	for i, srv := range e.srv {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := srv.certs.RenewDue(ctx)
			if err != nil {
				t.Errorf("replica %d: %v", i, err)
			}
			counts[i] = n
		}()
	}
	wg.Wait()
	if counts[0]+counts[1] != 1 {
		t.Errorf("renewed by the replicas: got %v, want 1 in all", counts)
	}
	r := e.call(1, http.MethodGet, "/api/client-certs/"+soon, admin, "")
	newID, _ := r.body["renewed_by"].(string)
	if newID == "" {
		t.Fatalf("soon: got %v, want renewed_by", r.body)
	}
	r = e.call(1, http.MethodGet, "/api/client-certs/"+newID, admin, "")
	if r.body["common_name"] != "soon" || r.body["renewed_from"] != soon || r.body["expires_at"] != now.Add(17*24*time.Hour).Format(time.RFC3339) {
		t.Errorf("renewal: got %v, want soon renewed for 10 more days", r.body)
	}
	for _, id := range []string{later, off, gone} {
		if r := e.call(1, http.MethodGet, "/api/client-certs/"+id, admin, ""); r.body["renewed_by"] != nil {
			t.Errorf("%s: got renewed_by %v, want none", r.body["common_name"], r.body["renewed_by"])
		}
	}
	renewed := keyEvents(t, e.rdb)[events.ClientCertRenewed]
	var payload events.ClientCertRenewedV1
	if len(renewed) != 1 || json.Unmarshal(renewed[0].Payload, &payload) != nil || !payload.Automatic || payload.CertID != soon || payload.NewCertID != newID {
		t.Errorf("renewed events: got %v, want one automatic for %s", renewed, soon)
	}
	// The renewal is audited as the system's doing, for the account.
	var audited []events.AuditRecordedV1
	for _, ev := range keyEvents(t, e.rdb)[events.AuditRecorded] {
		var rec events.AuditRecordedV1
		if err := json.Unmarshal(ev.Payload, &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Operation == "auto_renew" {
			audited = append(audited, rec)
		}
	}
	if len(audited) != 1 || audited[0].ResourceID != soon || audited[0].User != "system" || audited[0].Status != events.AuditSuccess ||
		!strings.Contains(string(audited[0].Details), newID) {
		t.Errorf("auto_renew audit records: got %+v, want one success by system for %s naming %s", audited, soon, newID)
	}

	// The loop renews what comes due: later, 20 days on.
	e.clock.Add(20 * 24 * time.Hour)
	// A replica whose loop looks every 20 ms.
	looping, err := New(Config{Now: e.clock.Now, CA: clientcerts.Config{Passphrase: caTestPassphrase, RenewalEvery: 20 * time.Millisecond}},
		e.rdb, testenv.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	loopCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := looping.RunRenewal(loopCtx); err != nil {
			t.Errorf("renewal loop: %v", err)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := e.call(0, http.MethodGet, "/api/client-certs/"+later, admin, "")
		if r.body["renewed_by"] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("later: not renewed by the loop within 5s: %v", r.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	// The renewal of soon, due again by now, was renewed too; nothing
	// else. Every pass released the lease.
	if n := len(keyEvents(t, e.rdb)[events.ClientCertRenewed]); n != 3 {
		t.Errorf("renewed events: got %d, want 3 (soon, later, soon's renewal)", n)
	}
	if n, _ := e.rdb.Exists(ctx, clientcerts.RenewalLeaseKey).Result(); n != 0 {
		t.Errorf("lease: still held after the loop stopped")
	}
}

// TestClientCertAudit: creations, downloads and refused keys are audit
// records on the events stream.
func TestClientCertAudit(t *testing.T) {
	e := newCAEnv(t)
	admin := e.bootstrapKey("ops@example.com", "read", "write")
	reader := e.bootstrapKey("ops@example.com", "read")
	id := e.createCert(0, admin, `{"common_name":"audited","cert_usage":"vpn"}`)
	e.raw(1, http.MethodGet, "/api/client-certs/"+id+"/download/key", admin, "")
	e.call(1, http.MethodPost, "/api/client-certs/"+id+"/revoke", reader, "")
	e.call(1, http.MethodGet, "/api/client-certs", "ssa_wrong", "")

	var recs []events.AuditRecordedV1
	for _, ev := range keyEvents(t, e.rdb)[events.AuditRecorded] {
		var rec events.AuditRecordedV1
		if err := json.Unmarshal(ev.Payload, &rec); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	// The refused unknown key names no tenant, so its record is on another
	// partition of the events stream than the account's: reading every
	// partition gives no order between them. Order by what was done.
	rank := map[int]int{201: 0, 200: 1, 403: 2, 401: 3}
	sort.SliceStable(recs, func(i, j int) bool { return rank[recs[i].HTTPStatus] < rank[recs[j].HTTPStatus] })
	type summary struct {
		Operation, ResourceID, Status string
		HTTPStatus                    int
	}
	var got []summary
	for _, r := range recs {
		got = append(got, summary{r.Operation, r.ResourceID, r.Status, r.HTTPStatus})
	}
	want := []summary{
		{"create", id, events.AuditSuccess, 201},
		{"download", id, events.AuditSuccess, 200},
		{events.AuditOperationFailedAuth, id, events.AuditFailure, 403},
		{events.AuditOperationFailedAuth, "", events.AuditFailure, 401},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("audit records:\n got %+v\nwant %+v", got, want)
	}
	detailsOf := func(i int) map[string]any {
		var d map[string]any
		if err := json.Unmarshal(recs[i].Details, &d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	if d := detailsOf(0); d["common_name"] != "audited" || d["usage"] != "vpn" || recs[0].User != "ops@example.com" {
		t.Errorf("create record: got user %q details %v, want ops@example.com, common_name and usage", recs[0].User, d)
	}
	if d := detailsOf(1); d["type"] != "key" {
		t.Errorf("download record: got details %v, want type key", d)
	}
	// The refused write names its account and the missing scope; the
	// refused read the operation it attempted.
	if d := detailsOf(2); recs[2].User != "ops@example.com" || d["attempted_operation"] != "revoke" || d["reason"] != "API key lacks the write permission" {
		t.Errorf("403 record: got user %q details %v", recs[2].User, d)
	}
	if d := detailsOf(3); recs[3].User != "" || d["attempted_operation"] != "list" || d["reason"] != "missing or invalid API key" {
		t.Errorf("401 record: got user %q details %v", recs[3].User, d)
	}
}

// TestClientCertNoCA: a replica without the passphrase reads but cannot
// sign; a deployment without a CA has no CA certificate to serve.
func TestClientCertNoCA(t *testing.T) {
	e := newKeyEnv(t, Config{})
	admin := e.bootstrapKey("ops@example.com", "read", "write")
	wantCMError(t, e.call(0, http.MethodGet, "/api/ca/certificate", "", ""), http.StatusServiceUnavailable, "The client CA is not initialised")
	wantCMError(t, e.call(0, http.MethodPost, "/api/client-certs/create", admin, `{"common_name":"a"}`), http.StatusServiceUnavailable, "no CA passphrase")
	wantCMError(t, e.call(0, http.MethodPost, "/api/client-certs/batch", admin, `{"headers":["common_name"],"rows":[["a"],["b"]]}`),
		http.StatusServiceUnavailable, "no CA passphrase")
	if r := e.call(1, http.MethodGet, "/api/client-certs", admin, ""); r.code != http.StatusOK || r.body["total"] != 0.0 {
		t.Errorf("list: got %d %v, want 200 and none", r.code, r.body)
	}
}

// newCABenchServer is a server with a CA on its own Redis, serving over
// HTTP, and an account for the benchmark.
func newCABenchServer(b *testing.B) (*Server, *httptest.Server, string) {
	b.Helper()
	srv, err := New(Config{CA: clientcerts.Config{Passphrase: caTestPassphrase, Init: true}}, testenv.Redis(b).Client(b), zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	b.Cleanup(hs.Close)
	tenant, err := srv.accounts.EnsureAccount(context.Background(), "bench@example.com")
	if err != nil {
		b.Fatal(err)
	}
	return srv, hs, tenant
}

// BenchmarkClientCertBatch times POST /client-certs/batch of 100 rows
// against its baseline in the same run: the same 100 creations by the
// store directly (signing, sealing, the Lua step). The ratio is what HTTP,
// the key, the limits, the audit record and the row parsing cost on top.
// Batches are limited to 10 a minute per key: a new key every 10, off the
// clock.
func BenchmarkClientCertBatch(b *testing.B) {
	ctx := context.Background()
	srv, hs, tenant := newCABenchServer(b)
	var rows []string
	for i := range clientcerts.MaxBatchRows {
		rows = append(rows, fmt.Sprintf(`["user%d@example.com","user%d@example.com","ACME Corp","vpn","365"]`, i, i))
	}
	body := `{"headers":["common_name","email","organization","cert_usage","days_valid"],"rows":[` + strings.Join(rows, ",") + `]}`

	b.Run("http-batch", func(b *testing.B) {
		var key string
		for i := 0; b.Loop(); i++ {
			if i%clientcerts.RateBatch == 0 {
				b.StopTimer()
				k, err := srv.accounts.CreateKey(ctx, tenant, "bench", []string{"write"}, nil, accounts.SourceCLI)
				if err != nil {
					b.Fatal(err)
				}
				key = k.Key
				b.StartTimer()
			}
			req, _ := http.NewRequest(http.MethodPost, hs.URL+"/api/client-certs/batch", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated || !bytes.Contains(raw, []byte(`"successful":100`)) {
				b.Fatalf("got %d %.200s", resp.StatusCode, raw)
			}
		}
		b.ReportMetric(float64(b.N*clientcerts.MaxBatchRows)/b.Elapsed().Seconds(), "certs/s")
	})
	b.Run("store-baseline", func(b *testing.B) {
		for b.Loop() {
			for i := range clientcerts.MaxBatchRows {
				days := 365
				_, err := srv.caStore.Create(ctx, tenant, clientca.CreateRequest{CommonName: fmt.Sprintf("user%d@example.com", i),
					Email: fmt.Sprintf("user%d@example.com", i), Organization: "ACME Corp", Usage: "vpn", DaysValid: days, GenerateKey: true})
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.N*clientcerts.MaxBatchRows)/b.Elapsed().Seconds(), "certs/s")
	})
}

// BenchmarkClientCertList times GET /client-certs and /client-certs/stats
// of an account with 1,000 certificates against the store's List of them
// (the baseline: one pipelined read per 500 records).
func BenchmarkClientCertList(b *testing.B) {
	ctx := context.Background()
	srv, hs, tenant := newCABenchServer(b)
	for i := range 1000 {
		if _, err := srv.caStore.Create(ctx, tenant, clientca.CreateRequest{CommonName: fmt.Sprintf("c%d", i),
			Usage: []string{"vpn", "api-mtls"}[i%2], GenerateKey: true}); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct{ name, path string }{{"http-list", "/api/client-certs"}, {"http-stats", "/api/client-certs/stats"}} {
		path := bc.path
		b.Run(bc.name, func(b *testing.B) {
			var key string
			for i := 0; b.Loop(); i++ {
				if i%(clientcerts.RateGeneral-1) == 0 {
					b.StopTimer()
					k, err := srv.accounts.CreateKey(ctx, tenant, "bench", []string{"read"}, nil, accounts.SourceCLI)
					if err != nil {
						b.Fatal(err)
					}
					key = k.Key
					b.StartTimer()
				}
				req, _ := http.NewRequest(http.MethodGet, hs.URL+path, nil)
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("got %d", resp.StatusCode)
				}
			}
		})
	}
	b.Run("store-baseline", func(b *testing.B) {
		for b.Loop() {
			if certs, err := srv.caStore.List(ctx, tenant, clientca.Filter{}); err != nil || len(certs) != 1000 {
				b.Fatalf("got %d %v", len(certs), err)
			}
		}
	})
}

// TestClientCertTenantURI: two tenants issue certificates with the same
// subject under the one CA; each certificate, on every path of the API
// (create, CSR, batch, renew), names its own tenant in a URI SAN, so a
// relying party tells them apart. A CSR asking for another tenant's URI is
// refused.
func TestClientCertTenantURI(t *testing.T) {
	e := newCAEnv(t)
	alice := e.bootstrapKey("alice@example.com", "read", "write")
	bob := e.bootstrapKey("bob@example.com", "read", "write")
	aliceURI := clientca.TenantURI(events.TenantID("alice@example.com"))
	bobURI := clientca.TenantURI(events.TenantID("bob@example.com"))
	uris := func(key, id string) []string {
		t.Helper()
		code, _, crt := e.raw(0, http.MethodGet, "/api/client-certs/"+id+"/download/crt", key, "")
		if code != http.StatusOK {
			t.Fatalf("download %s: got %d %s", id, code, crt)
		}
		c := parsePEMCert(t, crt)
		out := []string{}
		for _, u := range c.URIs {
			out = append(out, u.String())
		}
		return append(out, c.EmailAddresses...)
	}
	same := `{"common_name":"ops","email":"ops@example.com","organization":"ACME"}`
	csr, _ := csrPEM(t, "ops")
	batch := e.call(1, http.MethodPost, "/api/client-certs/batch", alice,
		`{"headers":["common_name","email","organization"],"rows":[["ops","ops@example.com","ACME"]]}`)
	if batch.code != http.StatusCreated {
		t.Fatalf("batch: got %d %v", batch.code, batch.body)
	}
	created := e.createCert(0, alice, same)
	renew := e.call(1, http.MethodPost, "/api/client-certs/"+created+"/renew", alice, "")
	if renew.code != http.StatusCreated {
		t.Fatalf("renew: got %d %v", renew.code, renew.body)
	}
	paths := []struct{ name, key, id, want string }{
		{"create", alice, created, aliceURI},
		{"csr", alice, e.createCert(1, alice, `{"common_name":"ops","email":"ops@example.com","generate_key":false,"csr":`+jsonString(csr)+`}`), aliceURI},
		{"batch", alice, batch.body["certificates"].([]any)[0].(map[string]any)["identifier"].(string), aliceURI},
		{"renew", alice, renew.body["identifier"].(string), aliceURI},
		{"another tenant, same subject", bob, e.createCert(0, bob, same), bobURI},
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			if got, want := uris(p.key, p.id), []string{p.want, "ops@example.com"}; !reflect.DeepEqual(got, want) {
				t.Errorf("SANs: got %v, want %v", got, want)
			}
		})
	}
	if aliceURI == bobURI {
		t.Fatalf("two tenants share the URI %s", aliceURI)
	}

	// Mallory (alice here) asks for bob's URI in her CSR.
	key := testenv.NewKey(t)
	u, _ := url.Parse(bobURI)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	forged := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	wantCMError(t, e.call(0, http.MethodPost, "/api/client-certs/create", alice,
		`{"common_name":"ops","generate_key":false,"csr":`+jsonString(forged)+`}`), http.StatusBadRequest,
		"csr must not ask for a URI SAN under urn:certfleet:tenant:")
}

// TestClientCertQuota: the server's client_certificates quota (its
// default, and an account's override) refuses a creation with 403 and a
// batch's rows past it one by one; a revocation frees room; GET
// /api/v1/quotas shows the limit and the active certificates.
func TestClientCertQuota(t *testing.T) {
	e := newKeyEnv(t, Config{Quotas: quota.Limits{quota.ClientCerts: 2},
		CA: clientcerts.Config{Passphrase: caTestPassphrase, Init: true}})
	alice := e.bootstrapKey("alice@example.com", "read", "write")
	bob := e.bootstrapKey("bob@example.com", "read", "write")
	first := e.createCert(0, alice, `{"common_name":"a1"}`)
	r := e.call(1, http.MethodPost, "/api/client-certs/batch", alice, `{"headers":["common_name"],"rows":[["a2"],["a3"],["a4"]]}`)
	wantErrors := []any{
		map[string]any{"row": 2.0, "common_name": "a3", "error": "quota exceeded: this account may have at most 2 client_certificates; remove some or ask the operator to raise the quota"},
		map[string]any{"row": 3.0, "common_name": "a4", "error": "quota exceeded: this account may have at most 2 client_certificates; remove some or ask the operator to raise the quota"},
	}
	if r.code != http.StatusCreated || r.body["successful"] != 1.0 || !reflect.DeepEqual(r.body["errors"], wantErrors) {
		t.Errorf("batch past the quota: got %d %v, want 201 with rows 2 and 3 refused", r.code, r.body)
	}
	wantCMError(t, e.call(0, http.MethodPost, "/api/client-certs/create", alice, `{"common_name":"a5"}`),
		http.StatusForbidden, "at most 2 client_certificates")
	wantCMError(t, e.call(0, http.MethodPost, "/api/client-certs/"+first+"/renew", alice, ""),
		http.StatusForbidden, "at most 2 client_certificates")
	e.createCert(1, bob, `{"common_name":"b1"}`) // bob has his own

	q := e.call(0, http.MethodGet, "/api/v1/quotas", alice, "")
	if got := q.body["client_certificates"]; !reflect.DeepEqual(got, map[string]any{"limit": 2.0, "used": 2.0}) {
		t.Errorf("quotas: got %v, want limit 2, used 2", got)
	}
	if r := e.call(0, http.MethodPost, "/api/client-certs/"+first+"/revoke", alice, `{"reason":"superseded"}`); r.code != http.StatusOK {
		t.Fatalf("revoke: got %d %v", r.code, r.body)
	}
	e.createCert(0, alice, `{"common_name":"a6"}`)

	// An account's override wins over the server's default.
	if err := quota.Set(context.Background(), e.rdb, events.TenantID("alice@example.com"), quota.Limits{quota.ClientCerts: 3}); err != nil {
		t.Fatal(err)
	}
	e.createCert(1, alice, `{"common_name":"a7"}`)
	wantCMError(t, e.call(0, http.MethodPost, "/api/client-certs/create", alice, `{"common_name":"a8"}`),
		http.StatusForbidden, "at most 3 client_certificates")
}

// TestClientCertRevokeCAReasons: a tenant's revocation may not claim the
// shared CA compromised.
func TestClientCertRevokeCAReasons(t *testing.T) {
	e := newCAEnv(t)
	admin := e.bootstrapKey("ops@example.com", "read", "write")
	id := e.createCert(0, admin, `{"common_name":"x"}`)
	for _, reason := range []string{"cACompromise", "aACompromise", "ca_compromise"} {
		wantCMError(t, e.call(1, http.MethodPost, "/api/client-certs/"+id+"/revoke", admin, `{"reason":"`+reason+`"}`),
			http.StatusBadRequest, "reason must be one of unspecified, keyCompromise, affiliationChanged, superseded, cessationOfOperation, certificateHold, privilegeWithdrawn (or compromised), got \""+reason+"\"")
	}
	if r := e.call(0, http.MethodGet, "/api/client-certs/"+id, admin, ""); r.body["status"] != "active" {
		t.Errorf("after refused reasons: got %v, want active", r.body["status"])
	}
}
